package stripesim_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
)

// These tests drive the simulator through stripe-go, the client billingd
// uses, to prove the JSON decodes into its types.

func cardCharge(pm, requestKey string) *stripe.PaymentIntentParams {
	p := &stripe.PaymentIntentParams{
		Amount:             stripe.Int64(1999),
		Currency:           stripe.String(string(stripe.CurrencyUSD)),
		Customer:           stripe.String("cus_demo"),
		PaymentMethod:      stripe.String(pm),
		PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
		Confirm:            stripe.Bool(true),
		OffSession:         stripe.Bool(true),
		Description:        stripe.String("order 42"),
	}
	p.AddMetadata("billingd_request_key", requestKey)
	p.AddMetadata("billingd_caller", "shop")
	return p
}

func TestStripeGoPaymentIntent(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	sc := stripeAPI(t, srv, testKey)

	params := cardCharge("pm_card_visa", "rk1")
	params.SetIdempotencyKey("bd1_abc")
	pi, err := sc.PaymentIntents.New(params)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if pi.Status != stripe.PaymentIntentStatusSucceeded || pi.Amount != 1999 || pi.Currency != stripe.CurrencyUSD ||
		pi.AmountReceived != 1999 || pi.Customer == nil || pi.Customer.ID != "cus_demo" ||
		pi.PaymentMethod == nil || pi.PaymentMethod.ID != "pm_card_visa" ||
		pi.LatestCharge == nil || !strings.HasPrefix(pi.LatestCharge.ID, "ch_") ||
		pi.Metadata["billingd_request_key"] != "rk1" || pi.Description != "order 42" ||
		pi.Object != "payment_intent" || pi.Created != sim.PaymentIntents()[0].Created.Unix() {
		t.Errorf("decoded payment intent = %+v", pi)
	}
	if !strings.HasPrefix(pi.ID, "pi_") || !strings.HasPrefix(pi.ClientSecret, pi.ID+"_secret_") {
		t.Errorf("id %q client_secret %q", pi.ID, pi.ClientSecret)
	}
	if !strings.HasPrefix(pi.LastResponse.RequestID, "req_") || pi.LastResponse.IdempotencyKey != "bd1_abc" {
		t.Errorf("LastResponse request id %q idempotency key %q", pi.LastResponse.RequestID, pi.LastResponse.IdempotencyKey)
	}

	again, err := sc.PaymentIntents.New(params)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if again.ID != pi.ID || again.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay id %s header %q, want %s and true", again.ID, again.LastResponse.Header.Get("Idempotent-Replayed"), pi.ID)
	}

	fetched, err := sc.PaymentIntents.Get(pi.ID, nil)
	if err != nil || fetched.ID != pi.ID || fetched.Status != pi.Status {
		t.Errorf("get = %+v, %v", fetched, err)
	}
}

func TestStripeGoCardErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pm              string
		wantCode        stripe.ErrorCode
		wantDeclineCode stripe.DeclineCode
	}{
		{"pm_card_chargeDeclined", stripe.ErrorCodeCardDeclined, stripe.DeclineCodeGenericDecline},
		{"pm_card_chargeDeclinedInsufficientFunds", stripe.ErrorCodeCardDeclined, stripe.DeclineCodeInsufficientFunds},
		{"pm_card_chargeDeclinedExpiredCard", stripe.ErrorCodeExpiredCard, stripe.DeclineCodeExpiredCard},
		{"pm_card_authenticationRequired", stripe.ErrorCodeAuthenticationRequired, stripe.DeclineCodeAuthenticationRequired},
	}
	for _, tt := range tests {
		t.Run(tt.pm, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			sc := stripeAPI(t, srv, testKey)
			_, err := sc.PaymentIntents.New(cardCharge(tt.pm, "rk"))
			var se *stripe.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *stripe.Error", err)
			}
			if se.HTTPStatusCode != 402 || se.Type != stripe.ErrorTypeCard || se.Code != tt.wantCode || se.DeclineCode != tt.wantDeclineCode {
				t.Errorf("error = status %d type %s code %s decline %s", se.HTTPStatusCode, se.Type, se.Code, se.DeclineCode)
			}
			var ce *stripe.CardError
			if !errors.As(err, &ce) || ce.DeclineCode != tt.wantDeclineCode {
				t.Errorf("typed error = %T, want *stripe.CardError with decline code", se.Err)
			}
			if !strings.HasPrefix(se.RequestID, "req_") || se.LastResponse == nil || se.LastResponse.Header.Get("Request-Id") != se.RequestID {
				t.Errorf("request id %q / LastResponse %+v", se.RequestID, se.LastResponse)
			}
			pis := sim.PaymentIntents()
			if se.PaymentIntent == nil || len(pis) != 1 || se.PaymentIntent.ID != pis[0].ID ||
				se.PaymentIntent.Status != stripe.PaymentIntentStatusRequiresPaymentMethod ||
				se.PaymentIntent.ClientSecret == "" || se.PaymentIntent.LastPaymentError == nil ||
				se.PaymentIntent.LastPaymentError.Code != tt.wantCode {
				t.Errorf("embedded payment intent = %+v, snapshots %+v", se.PaymentIntent, pis)
			}
			if se.PaymentMethod == nil || se.PaymentMethod.ID != tt.pm || se.PaymentMethod.Card == nil {
				t.Errorf("embedded payment method = %+v", se.PaymentMethod)
			}
		})
	}
}

func TestStripeGoErrorTypes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		key        string
		setup      func(*stripesim.Sim)
		params     func() *stripe.PaymentIntentParams
		wantStatus int
		wantType   stripe.ErrorType
		wantCode   stripe.ErrorCode
		wantParam  string
	}{
		{"unknown customer", testKey, nil, func() *stripe.PaymentIntentParams {
			p := cardCharge("pm_card_visa", "rk")
			p.Customer = stripe.String("cus_missing")
			return p
		}, 400, stripe.ErrorTypeInvalidRequest, stripe.ErrorCodeResourceMissing, "customer"},
		{"amount too small", testKey, nil, func() *stripe.PaymentIntentParams {
			p := cardCharge("pm_card_visa", "rk")
			p.Amount = stripe.Int64(10)
			return p
		}, 400, stripe.ErrorTypeInvalidRequest, stripe.ErrorCodeAmountTooSmall, "amount"},
		{"rate limited", testKey, func(s *stripesim.Sim) { s.FailNext("/v1/payment_intents", stripesim.FaultRateLimit, 1) },
			func() *stripe.PaymentIntentParams { return cardCharge("pm_card_visa", "rk") },
			429, stripe.ErrorTypeInvalidRequest, stripe.ErrorCodeRateLimit, ""},
		{"server error", testKey, func(s *stripesim.Sim) { s.FailNext("/v1/payment_intents", stripesim.FaultServerError, 1) },
			func() *stripe.PaymentIntentParams { return cardCharge("pm_card_visa", "rk") },
			500, stripe.ErrorTypeAPI, "", ""},
		{"bad key", "sk_test_wrongwrongwrong1234", nil,
			func() *stripe.PaymentIntentParams { return cardCharge("pm_card_visa", "rk") },
			401, stripe.ErrorTypeInvalidRequest, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{APIKeys: []string{testKey}})
			if tt.setup != nil {
				tt.setup(sim)
			}
			_, err := stripeAPI(t, srv, tt.key).PaymentIntents.New(tt.params())
			var se *stripe.Error
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want *stripe.Error", err)
			}
			if se.HTTPStatusCode != tt.wantStatus || se.Type != tt.wantType || se.Code != tt.wantCode || se.Param != tt.wantParam {
				t.Errorf("error = status %d type %s code %s param %q; want %d %s %s %q",
					se.HTTPStatusCode, se.Type, se.Code, se.Param, tt.wantStatus, tt.wantType, tt.wantCode, tt.wantParam)
			}
			if strings.Contains(se.Msg, tt.key) {
				t.Errorf("message %q echoes the API key", se.Msg)
			}
		})
	}
}

func TestStripeGoIdempotencyError(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	sc := stripeAPI(t, srv, testKey)
	p := cardCharge("pm_card_visa", "rk")
	p.SetIdempotencyKey("same")
	if _, err := sc.PaymentIntents.New(p); err != nil {
		t.Fatal(err)
	}
	p2 := cardCharge("pm_card_visa", "rk")
	p2.Amount = stripe.Int64(5000)
	p2.SetIdempotencyKey("same")
	_, err := sc.PaymentIntents.New(p2)
	var ie *stripe.IdempotencyError
	var se *stripe.Error
	if !errors.As(err, &ie) || !errors.As(err, &se) || se.Type != stripe.ErrorTypeIdempotency || se.HTTPStatusCode != 400 {
		t.Errorf("err = %v, want a 400 idempotency_error", err)
	}
}

func TestStripeGoSubscriptions(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock, SearchLag: 30 * time.Second})
	sc := stripeAPI(t, srv, testKey)

	create := func(customer, key string) (*stripe.Subscription, error) {
		p := &stripe.SubscriptionParams{
			Customer: stripe.String(customer),
			Items:    []*stripe.SubscriptionItemsParams{{Price: stripe.String("price_pro_monthly"), Quantity: stripe.Int64(2)}},
		}
		p.AddMetadata("billingd_request_key", key)
		return sc.Subscriptions.New(p)
	}
	active, err := create("cus_demo", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if active.Status != stripe.SubscriptionStatusActive || active.Customer == nil || active.Customer.ID != "cus_demo" ||
		active.Items == nil || len(active.Items.Data) != 1 || active.Items.Data[0].Price.ID != "price_pro_monthly" ||
		active.Items.Data[0].Price.UnitAmount != 2900 || active.Items.Data[0].Quantity != 2 ||
		active.Items.Data[0].Price.Recurring == nil || active.Items.Data[0].Price.Recurring.Interval != stripe.PriceRecurringIntervalMonth ||
		active.CurrentPeriodEnd != epoch.AddDate(0, 1, 0).Unix() || active.Metadata["billingd_request_key"] != "s1" {
		t.Errorf("active subscription = %+v", active)
	}
	incomplete, err := create("cus_declined", "s2")
	if err != nil {
		t.Fatal(err)
	}
	if incomplete.Status != stripe.SubscriptionStatusIncomplete {
		t.Errorf("declined customer's subscription status = %s, want incomplete", incomplete.Status)
	}
	if got, err := sc.Subscriptions.Get(active.ID, nil); err != nil || got.ID != active.ID {
		t.Errorf("get = %v, %v", got, err)
	}

	search := func() []string {
		it := sc.Subscriptions.Search(&stripe.SubscriptionSearchParams{SearchParams: stripe.SearchParams{
			Query: "metadata['billingd_request_key']:'s2'"}})
		var ids []string
		for it.Next() {
			ids = append(ids, it.Subscription().ID)
		}
		if err := it.Err(); err != nil {
			t.Fatalf("search: %v", err)
		}
		return ids
	}
	if ids := search(); len(ids) != 0 {
		t.Errorf("search before lag = %v, want nothing yet", ids)
	}
	clock.Advance(30 * time.Second)
	if ids := search(); len(ids) != 1 || ids[0] != incomplete.ID {
		t.Errorf("search after lag = %v, want [%s]", ids, incomplete.ID)
	}
	if got := len(sim.Subscriptions()); got != 2 {
		t.Errorf("subscriptions = %d, want 2", got)
	}
}

func TestStripeGoCustomers(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	sc := stripeAPI(t, srv, testKey)

	demo, err := sc.Customers.Get("cus_demo", nil)
	if err != nil {
		t.Fatal(err)
	}
	if demo.Email != "demo@example.com" || demo.InvoiceSettings == nil || demo.InvoiceSettings.DefaultPaymentMethod == nil ||
		demo.InvoiceSettings.DefaultPaymentMethod.ID != "pm_card_visa" {
		t.Errorf("cus_demo = %+v", demo)
	}
	p := &stripe.CustomerParams{
		Email:           stripe.String("new@example.com"),
		PaymentMethod:   stripe.String("pm_card_mastercard"),
		InvoiceSettings: &stripe.CustomerInvoiceSettingsParams{DefaultPaymentMethod: stripe.String("pm_card_mastercard")},
	}
	p.AddMetadata("tier", "gold")
	c, err := sc.Customers.New(p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(c.ID, "cus_") || c.Metadata["tier"] != "gold" || c.InvoiceSettings.DefaultPaymentMethod.ID != "pm_card_mastercard" {
		t.Errorf("new customer = %+v", c)
	}

	it := sc.Customers.Search(&stripe.CustomerSearchParams{SearchParams: stripe.SearchParams{Query: `email:"new@example.com"`}})
	var found []string
	for it.Next() {
		found = append(found, it.Customer().ID)
	}
	if it.Err() != nil || len(found) != 1 || found[0] != c.ID {
		t.Errorf("search = %v, %v", found, it.Err())
	}

	list := sc.Customers.List(&stripe.CustomerListParams{})
	var all []string
	for list.Next() {
		all = append(all, list.Customer().ID)
	}
	if list.Err() != nil || len(all) != 3 || all[0] != c.ID {
		t.Errorf("list = %v, %v; want 3 customers, newest first", all, list.Err())
	}

	// A charge to the new customer's card works end to end.
	charge := cardCharge("pm_card_mastercard", "x")
	charge.Customer = stripe.String(c.ID)
	charge.Context = context.Background()
	if pi, err := sc.PaymentIntents.New(charge); err != nil || pi.Status != stripe.PaymentIntentStatusSucceeded {
		t.Errorf("charge new customer = %v, %v", pi, err)
	}
}

func TestStripeGoPaymentIntentSearch(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	_, srv := newSim(t, stripesim.Config{Clock: clock, SearchLag: time.Minute})
	sc := stripeAPI(t, srv, testKey)

	var want []string
	for i := 0; i < 3; i++ {
		pi, err := sc.PaymentIntents.New(cardCharge("pm_card_visa", "shared"))
		if err != nil {
			t.Fatal(err)
		}
		want = append([]string{pi.ID}, want...) // newest first
	}
	if _, err := sc.PaymentIntents.New(cardCharge("pm_card_visa", "other")); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)

	params := &stripe.PaymentIntentSearchParams{SearchParams: stripe.SearchParams{
		Query: "metadata['billingd_request_key']:'shared' AND status:'succeeded'",
		Limit: stripe.Int64(2), // forces a second page
	}}
	it := sc.PaymentIntents.Search(params)
	var got []string
	for it.Next() {
		got = append(got, it.PaymentIntent().ID)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("search = %v, want %v", got, want)
	}
}
