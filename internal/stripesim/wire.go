package stripesim

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The *Wire types are the JSON shapes of Stripe objects (API version
// 2023-10-16, the one stripe-go v76 pins). Expandable references are ids,
// nullable fields are pointers so they encode as null like Stripe's.

type apmWire struct {
	AllowRedirects string `json:"allow_redirects"`
	Enabled        bool   `json:"enabled"`
}

// nextActionWire is next_action of a card payment awaiting 3-D Secure:
// use_stripe_sdk when confirmed server-side without return_url (its
// contents are for Stripe.js only; here they name the hosted test page),
// redirect_to_url when the confirmation carried return_url.
type nextActionWire struct {
	Type          string            `json:"type"`
	RedirectToURL *redirectWire     `json:"redirect_to_url,omitempty"`
	UseStripeSDK  *useStripeSDKWire `json:"use_stripe_sdk,omitempty"`
}

type redirectWire struct {
	ReturnURL string `json:"return_url"`
	URL       string `json:"url"`
}

type useStripeSDKWire struct {
	Type     string `json:"type"`
	StripeJS string `json:"stripe_js"`
}

type paymentIntentWire struct {
	ID                      string            `json:"id"`
	Object                  string            `json:"object"`
	Amount                  int64             `json:"amount"`
	AmountCapturable        int64             `json:"amount_capturable"`
	AmountReceived          int64             `json:"amount_received"`
	Application             *string           `json:"application"`
	ApplicationFeeAmount    *int64            `json:"application_fee_amount"`
	AutomaticPaymentMethods *apmWire          `json:"automatic_payment_methods"`
	CanceledAt              *int64            `json:"canceled_at"`
	CancellationReason      *string           `json:"cancellation_reason"`
	CaptureMethod           string            `json:"capture_method"`
	ClientSecret            string            `json:"client_secret"`
	ConfirmationMethod      string            `json:"confirmation_method"`
	Created                 int64             `json:"created"`
	Currency                string            `json:"currency"`
	Customer                *string           `json:"customer"`
	Description             *string           `json:"description"`
	Invoice                 *string           `json:"invoice"`
	LastPaymentError        *apiError         `json:"last_payment_error"`
	LatestCharge            *string           `json:"latest_charge"`
	Livemode                bool              `json:"livemode"`
	Metadata                map[string]string `json:"metadata"`
	NextAction              *nextActionWire   `json:"next_action"`
	OnBehalfOf              *string           `json:"on_behalf_of"`
	PaymentMethod           *string           `json:"payment_method"`
	PaymentMethodTypes      []string          `json:"payment_method_types"`
	ReceiptEmail            *string           `json:"receipt_email"`
	SetupFutureUsage        *string           `json:"setup_future_usage"`
	Status                  string            `json:"status"`
	TransferGroup           *string           `json:"transfer_group"`
}

type cardWire struct {
	Brand    string `json:"brand"`
	Country  string `json:"country"`
	ExpMonth int64  `json:"exp_month"`
	ExpYear  int64  `json:"exp_year"`
	Funding  string `json:"funding"`
	Last4    string `json:"last4"`
}

type billingDetailsWire struct {
	Address *struct{} `json:"address"`
	Email   *string   `json:"email"`
	Name    *string   `json:"name"`
	Phone   *string   `json:"phone"`
}

type paymentMethodWire struct {
	ID             string             `json:"id"`
	Object         string             `json:"object"`
	BillingDetails billingDetailsWire `json:"billing_details"`
	Card           cardWire           `json:"card"`
	Created        int64              `json:"created"`
	Customer       *string            `json:"customer"`
	Livemode       bool               `json:"livemode"`
	Metadata       map[string]string  `json:"metadata"`
	Type           string             `json:"type"`
}

type invoiceSettingsWire struct {
	CustomFields         *struct{} `json:"custom_fields"`
	DefaultPaymentMethod *string   `json:"default_payment_method"`
	Footer               *string   `json:"footer"`
	RenderingOptions     *struct{} `json:"rendering_options"`
}

type customerWire struct {
	ID                  string              `json:"id"`
	Object              string              `json:"object"`
	Address             *struct{}           `json:"address"`
	Balance             int64               `json:"balance"`
	Created             int64               `json:"created"`
	Currency            *string             `json:"currency"`
	DefaultSource       *string             `json:"default_source"`
	Delinquent          bool                `json:"delinquent"`
	Description         *string             `json:"description"`
	Discount            *struct{}           `json:"discount"`
	Email               *string             `json:"email"`
	InvoicePrefix       string              `json:"invoice_prefix"`
	InvoiceSettings     invoiceSettingsWire `json:"invoice_settings"`
	Livemode            bool                `json:"livemode"`
	Metadata            map[string]string   `json:"metadata"`
	Name                *string             `json:"name"`
	NextInvoiceSequence int64               `json:"next_invoice_sequence"`
	Phone               *string             `json:"phone"`
	PreferredLocales    []string            `json:"preferred_locales"`
	Shipping            *struct{}           `json:"shipping"`
	TaxExempt           string              `json:"tax_exempt"`
	TestClock           *string             `json:"test_clock"`
}

type recurringWire struct {
	AggregateUsage *string `json:"aggregate_usage"`
	Interval       string  `json:"interval"`
	IntervalCount  int64   `json:"interval_count"`
	UsageType      string  `json:"usage_type"`
}

type priceWire struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	Active            bool              `json:"active"`
	BillingScheme     string            `json:"billing_scheme"`
	Created           int64             `json:"created"`
	Currency          string            `json:"currency"`
	Livemode          bool              `json:"livemode"`
	LookupKey         *string           `json:"lookup_key"`
	Metadata          map[string]string `json:"metadata"`
	Nickname          *string           `json:"nickname"`
	Product           string            `json:"product"`
	Recurring         recurringWire     `json:"recurring"`
	TaxBehavior       string            `json:"tax_behavior"`
	Type              string            `json:"type"`
	UnitAmount        int64             `json:"unit_amount"`
	UnitAmountDecimal string            `json:"unit_amount_decimal"`
}

type subscriptionItemWire struct {
	ID           string            `json:"id"`
	Object       string            `json:"object"`
	Created      int64             `json:"created"`
	Metadata     map[string]string `json:"metadata"`
	Price        json.RawMessage   `json:"price"`
	Quantity     int64             `json:"quantity"`
	Subscription string            `json:"subscription"`
}

type subscriptionItemListWire struct {
	Object     string                 `json:"object"`
	Data       []subscriptionItemWire `json:"data"`
	HasMore    bool                   `json:"has_more"`
	TotalCount int                    `json:"total_count"`
	URL        string                 `json:"url"`
}

type subscriptionDetailsWire struct {
	Metadata map[string]string `json:"metadata"`
}

type invoiceWire struct {
	ID                  string                  `json:"id"`
	Object              string                  `json:"object"`
	AccountCountry      string                  `json:"account_country"`
	AmountDue           int64                   `json:"amount_due"`
	AmountPaid          int64                   `json:"amount_paid"`
	AmountRemaining     int64                   `json:"amount_remaining"`
	AttemptCount        int64                   `json:"attempt_count"`
	Attempted           bool                    `json:"attempted"`
	AutoAdvance         bool                    `json:"auto_advance"`
	BillingReason       string                  `json:"billing_reason"`
	CollectionMethod    string                  `json:"collection_method"`
	Created             int64                   `json:"created"`
	Currency            string                  `json:"currency"`
	Customer            string                  `json:"customer"`
	Description         *string                 `json:"description"`
	HostedInvoiceURL    *string                 `json:"hosted_invoice_url"`
	Livemode            bool                    `json:"livemode"`
	Metadata            map[string]string       `json:"metadata"`
	Paid                bool                    `json:"paid"`
	PaymentIntent       *string                 `json:"payment_intent"`
	PeriodEnd           int64                   `json:"period_end"`
	PeriodStart         int64                   `json:"period_start"`
	Status              string                  `json:"status"`
	Subscription        string                  `json:"subscription"`
	SubscriptionDetails subscriptionDetailsWire `json:"subscription_details"`
	Subtotal            int64                   `json:"subtotal"`
	Total               int64                   `json:"total"`
}

type subscriptionWire struct {
	ID                   string                   `json:"id"`
	Object               string                   `json:"object"`
	Application          *string                  `json:"application"`
	BillingCycleAnchor   int64                    `json:"billing_cycle_anchor"`
	CancelAt             *int64                   `json:"cancel_at"`
	CancelAtPeriodEnd    bool                     `json:"cancel_at_period_end"`
	CanceledAt           *int64                   `json:"canceled_at"`
	CollectionMethod     string                   `json:"collection_method"`
	Created              int64                    `json:"created"`
	Currency             string                   `json:"currency"`
	CurrentPeriodEnd     int64                    `json:"current_period_end"`
	CurrentPeriodStart   int64                    `json:"current_period_start"`
	Customer             string                   `json:"customer"`
	DefaultPaymentMethod *string                  `json:"default_payment_method"`
	Description          *string                  `json:"description"`
	EndedAt              *int64                   `json:"ended_at"`
	Items                subscriptionItemListWire `json:"items"`
	LatestInvoice        *string                  `json:"latest_invoice"`
	Livemode             bool                     `json:"livemode"`
	Metadata             map[string]string        `json:"metadata"`
	StartDate            int64                    `json:"start_date"`
	Status               string                   `json:"status"`
	TrialEnd             *int64                   `json:"trial_end"`
	TrialStart           *int64                   `json:"trial_start"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func unixOrNil(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	u := t.Unix()
	return &u
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value passed here is one of our own wire structs.
		panic(fmt.Sprintf("stripesim: encode %T: %v", v, err))
	}
	return b
}

func encodePaymentMethod(c testCard, created time.Time) []byte {
	return mustJSON(paymentMethodWire{
		ID: c.id, Object: "payment_method",
		Card:    cardWire{Brand: c.brand, Country: "US", ExpMonth: 12, ExpYear: int64(created.Year() + 3), Funding: c.funding, Last4: c.last4},
		Created: created.Unix(), Metadata: map[string]string{}, Type: "card",
	})
}

// piEncoding carries what the wire form needs beyond the snapshot.
type piEncoding struct {
	apm      *apmWire
	pmTypes  []string
	sfu      string
	receipt  string
	failedPM json.RawMessage // the failed payment method, for last_payment_error
}

func encodePaymentIntent(p *piState) []byte {
	w := paymentIntentWire{
		ID: p.ID, Object: "payment_intent", Amount: p.Amount,
		AmountCapturable: p.AmountCapturable, AmountReceived: p.AmountReceived,
		AutomaticPaymentMethods: p.enc.apm, CaptureMethod: p.CaptureMethod,
		CancellationReason: nullable(p.CancellationReason),
		ClientSecret:       p.ClientSecret, ConfirmationMethod: "automatic",
		Created: p.Created.Unix(), Currency: p.Currency,
		Customer: nullable(p.Customer), Description: nullable(p.Description),
		Invoice:      nullable(p.Invoice),
		LatestCharge: nullable(p.LatestCharge), Metadata: nonNil(p.Metadata),
		PaymentMethod: nullable(p.PaymentMethod), PaymentMethodTypes: p.enc.pmTypes,
		ReceiptEmail: nullable(p.enc.receipt), SetupFutureUsage: nullable(p.enc.sfu), Status: p.Status,
	}
	if !p.CanceledAt.IsZero() {
		t := p.CanceledAt.Unix()
		w.CanceledAt = &t
	}
	switch p.NextAction {
	case "redirect_to_url":
		w.NextAction = &nextActionWire{Type: p.NextAction, RedirectToURL: &redirectWire{ReturnURL: p.returnURL, URL: p.hostedURL}}
	case "use_stripe_sdk":
		w.NextAction = &nextActionWire{Type: p.NextAction, UseStripeSDK: &useStripeSDKWire{Type: "three_d_secure_redirect", StripeJS: p.hostedURL}}
	}
	if le := p.LastPaymentError; le != nil {
		w.LastPaymentError = &apiError{Type: le.Type, Code: le.Code, DeclineCode: le.DeclineCode,
			Message: le.Message, DocURL: docURL(le.Code), Charge: le.Charge, PaymentMethod: p.enc.failedPM}
	}
	return mustJSON(w)
}

func encodeInvoice(in *Invoice) []byte {
	w := invoiceWire{
		ID: in.ID, Object: "invoice", AccountCountry: "US",
		AmountDue: in.AmountDue, AmountPaid: in.AmountPaid, AmountRemaining: in.AmountDue - in.AmountPaid,
		AutoAdvance: in.Status == "draft", BillingReason: "subscription_create", CollectionMethod: "charge_automatically",
		Created: in.Created.Unix(), Currency: in.Currency, Customer: in.Customer,
		Metadata: map[string]string{}, Paid: in.Status == "paid",
		PeriodEnd: in.PeriodEnd.Unix(), PeriodStart: in.PeriodStart.Unix(),
		Status: in.Status, Subscription: in.Subscription,
		SubscriptionDetails: subscriptionDetailsWire{Metadata: nonNil(in.SubscriptionMetadata)},
		Subtotal:            in.AmountDue, Total: in.AmountDue,
	}
	if in.Status != "draft" {
		w.PaymentIntent = nullable(in.PaymentIntent)
	}
	return mustJSON(w)
}

func encodeCustomer(c *Customer) []byte {
	return mustJSON(customerWire{
		ID: c.ID, Object: "customer", Created: c.Created.Unix(),
		Description: nullable(c.Description), Email: nullable(c.Email),
		InvoicePrefix:       invoicePrefix(c.ID),
		InvoiceSettings:     invoiceSettingsWire{DefaultPaymentMethod: nullable(c.DefaultPaymentMethod)},
		Metadata:            nonNil(c.Metadata),
		Name:                nullable(c.Name),
		NextInvoiceSequence: 1,
		Phone:               nullable(c.Phone),
		PreferredLocales:    []string{},
		TaxExempt:           "none",
	})
}

// invoicePrefix derives a stable prefix from the id, so fixtures need no RNG.
func invoicePrefix(id string) string {
	var h uint32 = 2166136261
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, 8)
	for i := range b {
		b[i] = letters[h%uint32(len(letters))]
		h = h/uint32(len(letters)) + uint32(i)*2654435761
	}
	return string(b)
}

func encodePrice(p *Price) []byte {
	return mustJSON(priceWire{
		ID: p.ID, Object: "price", Active: true, BillingScheme: "per_unit",
		Created: p.Created.Unix(), Currency: p.Currency, Metadata: map[string]string{},
		Nickname: nullable(p.Nickname), Product: p.Product,
		Recurring:   recurringWire{Interval: p.Interval, IntervalCount: p.IntervalCount, UsageType: "licensed"},
		TaxBehavior: "unspecified", Type: "recurring",
		UnitAmount: p.UnitAmount, UnitAmountDecimal: strconv.FormatInt(p.UnitAmount, 10),
	})
}

func encodeSubscription(st *subState) []byte {
	s, prices := &st.Subscription, st.prices
	items := make([]subscriptionItemWire, len(s.Items))
	for i, it := range s.Items {
		items[i] = subscriptionItemWire{ID: it.ID, Object: "subscription_item", Created: s.Created.Unix(),
			Metadata: map[string]string{}, Price: prices[i], Quantity: it.Quantity, Subscription: s.ID}
	}
	return mustJSON(subscriptionWire{
		ID: s.ID, Object: "subscription",
		BillingCycleAnchor: s.Created.Unix(), CollectionMethod: "charge_automatically",
		Created: s.Created.Unix(), Currency: s.Currency,
		CurrentPeriodEnd: s.CurrentPeriodEnd.Unix(), CurrentPeriodStart: s.Created.Unix(),
		Customer: s.Customer, DefaultPaymentMethod: nullable(s.DefaultPaymentMethod),
		Items: subscriptionItemListWire{Object: "list", Data: items, TotalCount: len(items),
			URL: "/v1/subscription_items?subscription=" + s.ID},
		LatestInvoice: nullable(s.LatestInvoice),
		Metadata:      nonNil(s.Metadata), StartDate: s.Created.Unix(), Status: s.Status,
		CancelAt: unixOrNil(s.CancelAt), CancelAtPeriodEnd: s.CancelAtPeriodEnd,
		CanceledAt: unixOrNil(s.CanceledAt), EndedAt: unixOrNil(s.EndedAt),
	})
}

type refundWire struct {
	ID                        string            `json:"id"`
	Object                    string            `json:"object"`
	Amount                    int64             `json:"amount"`
	BalanceTransaction        *string           `json:"balance_transaction"`
	Charge                    string            `json:"charge"`
	Created                   int64             `json:"created"`
	Currency                  string            `json:"currency"`
	FailureBalanceTransaction *string           `json:"failure_balance_transaction,omitempty"`
	FailureReason             string            `json:"failure_reason,omitempty"`
	Metadata                  map[string]string `json:"metadata"`
	PaymentIntent             string            `json:"payment_intent"`
	Reason                    *string           `json:"reason"`
	ReceiptNumber             *string           `json:"receipt_number"`
	SourceTransferReversal    *string           `json:"source_transfer_reversal"`
	Status                    string            `json:"status"`
	TransferReversal          *string           `json:"transfer_reversal"`
}

func encodeRefund(r *refundState) []byte {
	return mustJSON(refundWire{
		ID: r.ID, Object: "refund", Amount: r.Amount, BalanceTransaction: nullable(r.txn),
		Charge: r.Charge, Created: r.Created.Unix(), Currency: r.Currency,
		FailureBalanceTransaction: nullable(r.failureTxn), FailureReason: r.FailureReason,
		Metadata: nonNil(r.Metadata), PaymentIntent: r.PaymentIntent, Reason: nullable(r.Reason),
		Status: r.Status,
	})
}

// chargeWire is a PaymentIntent's latest charge, as charge.refunded
// carries it. The simulator keeps no charge objects: this is derived from
// the PaymentIntent when an event needs it.
type chargeWire struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	Amount             int64             `json:"amount"`
	AmountCaptured     int64             `json:"amount_captured"`
	AmountRefunded     int64             `json:"amount_refunded"`
	BalanceTransaction *string           `json:"balance_transaction"`
	Captured           bool              `json:"captured"`
	Created            int64             `json:"created"`
	Currency           string            `json:"currency"`
	Customer           *string           `json:"customer"`
	Description        *string           `json:"description"`
	Disputed           bool              `json:"disputed"`
	FailureCode        *string           `json:"failure_code"`
	FailureMessage     *string           `json:"failure_message"`
	Invoice            *string           `json:"invoice"`
	Livemode           bool              `json:"livemode"`
	Metadata           map[string]string `json:"metadata"`
	Paid               bool              `json:"paid"`
	PaymentIntent      string            `json:"payment_intent"`
	PaymentMethod      *string           `json:"payment_method"`
	Refunded           bool              `json:"refunded"`
	Status             string            `json:"status"`
}

// encodeCharge is the succeeded charge of a PaymentIntent with what its
// refunds have given back.
func encodeCharge(p *PaymentIntent) []byte {
	return mustJSON(chargeWire{
		ID: p.LatestCharge, Object: "charge", Amount: p.Amount, AmountCaptured: p.AmountReceived,
		AmountRefunded: p.AmountRefunded, Captured: true, Created: p.Created.Unix(), Currency: p.Currency,
		Customer: nullable(p.Customer), Description: nullable(p.Description), Invoice: nullable(p.Invoice),
		Metadata: nonNil(p.Metadata), Paid: true, PaymentIntent: p.ID, PaymentMethod: nullable(p.PaymentMethod),
		Refunded: p.AmountRefunded >= p.AmountReceived, Status: "succeeded",
	})
}
