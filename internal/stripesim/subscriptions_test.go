package stripesim_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
)

func TestCreateSubscription(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		form        url.Values
		wantStatus  int
		wantCode    string
		wantParam   string
		wantSubStat string // "" when no subscription may be created
	}{
		{"default method succeeds", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}, 200, "", "", "active"},
		{"default method declines", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}}, 200, "", "", "incomplete"},
		{"explicit method overrides default", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}, "default_payment_method": {"pm_card_visa"}}, 200, "", "", "active"},
		{"default_incomplete", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"default_incomplete"}}, 200, "", "", "incomplete"},
		{"error_if_incomplete declines", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"error_if_incomplete"}}, 402, "card_declined", "", ""},
		{"unknown customer", url.Values{"customer": {"cus_nope"}, "items[0][price]": {"price_basic_monthly"}}, 400, "resource_missing", "customer", ""},
		{"unknown price", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_nope"}}, 400, "resource_missing", "items[0][price]", ""},
		{"unknown second price", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "items[1][price]": {"price_nope"}}, 400, "resource_missing", "items[1][price]", ""},
		{"unknown default method", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "default_payment_method": {"pm_nope"}}, 400, "resource_missing", "default_payment_method", ""},
		{"missing customer", url.Values{"items[0][price]": {"price_basic_monthly"}}, 400, "parameter_missing", "customer", ""},
		{"missing items", url.Values{"customer": {"cus_demo"}}, 400, "parameter_missing", "items", ""},
		{"item without price", url.Values{"customer": {"cus_demo"}, "items[0][quantity]": {"2"}}, 400, "parameter_missing", "items[0][price]", ""},
		{"bad quantity", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "items[0][quantity]": {"two"}}, 400, "parameter_invalid_integer", "items[0][quantity]", ""},
		{"unsimulated parameter", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "trial_period_days": {"7"}}, 400, "parameter_unknown", "trial_period_days", ""},
		{"pending_if_incomplete on create", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"pending_if_incomplete"}}, 400, "", "payment_behavior", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/subscriptions", "", tt.form)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.raw)
			}
			if tt.wantStatus != 200 {
				if e := r.errBody(t); e.Code != tt.wantCode || e.Param != tt.wantParam {
					t.Errorf("error = %+v, want code %q param %q", e, tt.wantCode, tt.wantParam)
				}
			}
			subs := sim.Subscriptions()
			if tt.wantSubStat == "" {
				if len(subs) != 0 {
					t.Errorf("subscriptions = %+v, want none", subs)
				}
				return
			}
			if len(subs) != 1 || subs[0].Status != tt.wantSubStat || r.object(t)["status"] != tt.wantSubStat || subs[0].ID != r.id(t) {
				t.Errorf("subscriptions = %+v, answer %s; want one %s", subs, r.raw, tt.wantSubStat)
			}
		})
	}
}

func TestMaxSubscriptionsPerCustomerIsConfigurable(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{MaxSubscriptionsPerCustomer: 2})
	form := url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}
	var statuses []int
	for range 3 {
		statuses = append(statuses, post(t, srv, "/v1/subscriptions", "", form).status)
	}
	if statuses[0] != 200 || statuses[1] != 200 || statuses[2] != 400 {
		t.Errorf("statuses = %v, want [200 200 400]", statuses)
	}
	// The cap is per customer.
	other := url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}}
	if r := post(t, srv, "/v1/subscriptions", "", other); r.status != 200 {
		t.Errorf("other customer: %d %s", r.status, r.raw)
	}
}

func TestAddPriceAndCustomer(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	price, err := sim.AddPrice(stripesim.Price{Currency: "EUR", UnitAmount: 1200, Interval: "year"})
	if err != nil {
		t.Fatal(err)
	}
	cus, err := sim.AddCustomer(stripesim.Customer{Email: "x@example.com", DefaultPaymentMethod: "pm_card_mastercard"})
	if err != nil {
		t.Fatal(err)
	}
	r := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {cus.ID}, "items[0][price]": {price.ID}})
	if r.status != 200 || r.object(t)["status"] != "active" || r.object(t)["currency"] != "eur" {
		t.Errorf("subscription = %d %s", r.status, r.raw)
	}

	errTests := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate customer", second(sim.AddCustomer(stripesim.Customer{ID: "cus_demo"})), stripesim.ErrExists},
		{"unknown payment method", second(sim.AddCustomer(stripesim.Customer{DefaultPaymentMethod: "pm_nope"})), stripesim.ErrUnknownPaymentMethod},
		{"duplicate price", second(sim.AddPrice(stripesim.Price{ID: "price_basic_monthly", Currency: "usd"})), stripesim.ErrExists},
		{"unknown currency", second(sim.AddPrice(stripesim.Price{Currency: "zzz"})), stripesim.ErrUnknownCurrency},
		{"bad interval", second(sim.AddPrice(stripesim.Price{Currency: "usd", Interval: "fortnight"})), stripesim.ErrInvalidFixture},
	}
	for _, tt := range errTests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }

// cancel_at_period_end, as billingd sends it through stripe-go: the
// subscription stays active with cancel_at and canceled_at set, and ends
// when the clock passes its period end.
func TestCancelAtPeriodEnd(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock})
	sc := stripeAPI(t, srv, testKey)
	created := newSubscription(t, sc.Subscriptions, "cus_demo", "")

	clock.Advance(time.Hour)
	p := &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}
	p.AddExpand("latest_invoice")
	p.SetIdempotencyKey("bd1_cancel_1")
	sub, err := sc.Subscriptions.Update(created.ID, p)
	if err != nil {
		t.Fatalf("update: %v", err)
	}
	periodEnd := created.CurrentPeriodEnd
	if sub.Status != created.Status || !sub.CancelAtPeriodEnd || sub.CancelAt != periodEnd ||
		sub.CanceledAt != epoch.Add(time.Hour).Unix() || sub.EndedAt != 0 ||
		sub.LatestInvoice == nil || sub.LatestInvoice.Status != stripe.InvoiceStatusOpen {
		t.Errorf("updated = status %s cancel_at_period_end %v cancel_at %d canceled_at %d ended_at %d latest_invoice %+v; want cancel_at %d",
			sub.Status, sub.CancelAtPeriodEnd, sub.CancelAt, sub.CanceledAt, sub.EndedAt, sub.LatestInvoice, periodEnd)
	}
	again, err := sc.Subscriptions.Update(created.ID, p)
	if err != nil {
		t.Errorf("retry with the key: %v", err)
	} else if got := again.LastResponse.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("retry with the key: Idempotent-Replayed %q, want true", got)
	}

	// An incomplete subscription expires first; use an active one for the period end.
	active, err := sc.Subscriptions.New(&stripe.SubscriptionParams{Customer: stripe.String("cus_demo"),
		Items: []*stripe.SubscriptionItemsParams{{Price: stripe.String("price_basic_monthly")}}})
	if err != nil || active.Status != stripe.SubscriptionStatusActive {
		t.Fatalf("create active = %+v, %v", active, err)
	}
	if _, err := sc.Subscriptions.Update(active.ID, &stripe.SubscriptionParams{CancelAtPeriodEnd: stripe.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	clock.Set(time.Unix(active.CurrentPeriodEnd, 0).Add(-time.Second))
	sim.ApplyDueTransitions()
	if got, _ := sc.Subscriptions.Get(active.ID, nil); got.Status != stripe.SubscriptionStatusActive {
		t.Errorf("a second before period end: %s, want active", got.Status)
	}
	clock.Advance(time.Second)
	got, err := sc.Subscriptions.Get(active.ID, nil) // the request applies the transition
	if err != nil || got.Status != stripe.SubscriptionStatusCanceled || got.EndedAt != active.CurrentPeriodEnd ||
		got.CanceledAt != epoch.Add(time.Hour).Unix() || !got.CancelAtPeriodEnd || got.CancelAt != active.CurrentPeriodEnd {
		t.Errorf("at period end = %+v, %v; want canceled, ended at %d", got, err, active.CurrentPeriodEnd)
	}
	if n := sim.ApplyDueTransitions(); n != 0 {
		t.Errorf("%d transitions left, want 0", n)
	}
}

// Taking cancel_at_period_end back clears cancel_at and canceled_at, and
// the period end passes without ending the subscription.
func TestCancelAtPeriodEndTakenBack(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock})
	id := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}).id(t)
	for _, v := range []string{"true", "false"} {
		if r := post(t, srv, "/v1/subscriptions/"+id, "", url.Values{"cancel_at_period_end": {v}}); r.status != 200 {
			t.Fatalf("cancel_at_period_end=%s: %d %s", v, r.status, r.raw)
		}
	}
	obj := get(t, srv, "/v1/subscriptions/"+id).object(t)
	if obj["cancel_at_period_end"] != false || obj["cancel_at"] != nil || obj["canceled_at"] != nil || obj["status"] != "active" {
		t.Errorf("after taking it back: %v", obj)
	}
	clock.Set(sim.Subscriptions()[0].CurrentPeriodEnd.Add(time.Hour))
	sim.ApplyDueTransitions()
	if s := sim.Subscriptions()[0]; s.Status != "active" || s.CancelAtPeriodEnd || !s.EndedAt.IsZero() {
		t.Errorf("after the period end: %+v, want active", s)
	}
}

func TestUpdateSubscriptionErrors(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	id := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}).id(t)
	ended := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}).id(t)
	request(t, srv, "DELETE", "/v1/subscriptions/"+ended, testKey, "", "")
	tests := []struct {
		name       string
		id         string
		form       url.Values
		wantStatus int
		wantCode   string
		wantParam  string
	}{
		{"unknown subscription", "sub_nope", url.Values{"cancel_at_period_end": {"true"}}, 404, "resource_missing", "id"},
		{"unsimulated parameter", id, url.Values{"items[0][price]": {"price_pro_monthly"}}, 400, "parameter_unknown", "items[0][price]"},
		{"metadata", id, url.Values{"metadata[k]": {"v"}}, 400, "parameter_unknown", "metadata[k]"},
		{"not a boolean", id, url.Values{"cancel_at_period_end": {"yes"}}, 400, "", "cancel_at_period_end"},
		{"canceled", ended, url.Values{"cancel_at_period_end": {"true"}}, 400, "", ""},
	}
	for _, tt := range tests {
		r := post(t, srv, "/v1/subscriptions/"+tt.id, "", tt.form)
		if e := r.errBody(t); r.status != tt.wantStatus || e.Code != tt.wantCode || e.Param != tt.wantParam {
			t.Errorf("%s: %d %+v, want %d code %q param %q", tt.name, r.status, e, tt.wantStatus, tt.wantCode, tt.wantParam)
		}
	}
	if obj := get(t, srv, "/v1/subscriptions/"+id).object(t); obj["cancel_at_period_end"] != false || obj["status"] != "active" {
		t.Errorf("subscription changed by failed updates: %v", obj)
	}
}
