package stripesim_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"
)

// newSubscription creates a default_incomplete subscription through
// stripe-go, expanded as billingd asks for it.
func newSubscription(t *testing.T, sc interface {
	New(*stripe.SubscriptionParams) (*stripe.Subscription, error)
}, customer, pm string) *stripe.Subscription {
	t.Helper()
	p := &stripe.SubscriptionParams{
		Customer:        stripe.String(customer),
		Items:           []*stripe.SubscriptionItemsParams{{Price: stripe.String("price_basic_monthly"), Quantity: stripe.Int64(2)}},
		PaymentBehavior: stripe.String("default_incomplete"),
	}
	if pm != "" {
		p.DefaultPaymentMethod = stripe.String(pm)
	}
	p.AddMetadata("billingd_request_key", "sub-"+customer+pm)
	p.AddExpand("latest_invoice.payment_intent")
	sub, err := sc.New(p)
	if err != nil {
		t.Fatalf("create subscription: %v", err)
	}
	return sub
}

func TestDefaultIncompleteSubscriptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		pm        string   // default_payment_method, "" for the customer's (pm_card_visa)
		outcomes  []string // authentications, in order
		wantPIs   []stripe.PaymentIntentStatus
		wantSub   stripe.SubscriptionStatus
		wantInv   stripe.InvoiceStatus
		wantError stripe.ErrorCode // last_payment_error at the end
	}{
		{"card succeeds", "", []string{"succeed"},
			[]stripe.PaymentIntentStatus{"succeeded"}, "active", "paid", ""},
		{"3DS card", "pm_card_threeDSecure2Required", []string{"succeed", "succeed"},
			[]stripe.PaymentIntentStatus{"requires_action", "succeeded"}, "active", "paid", ""},
		{"3DS card fails authentication", "pm_card_threeDSecure2Required", []string{"succeed", "fail"},
			[]stripe.PaymentIntentStatus{"requires_action", "requires_payment_method"}, "incomplete", "open", "payment_intent_authentication_failure"},
		{"declining card", "pm_card_chargeDeclinedInsufficientFunds", []string{"succeed"},
			[]stripe.PaymentIntentStatus{"requires_payment_method"}, "incomplete", "open", "card_declined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			sc := stripeAPI(t, srv, testKey)
			sub := newSubscription(t, sc.Subscriptions, "cus_demo", tt.pm)
			inv := sub.LatestInvoice
			if sub.Status != stripe.SubscriptionStatusIncomplete || inv == nil || inv.PaymentIntent == nil {
				t.Fatalf("created %+v, want incomplete with an expanded invoice and payment intent", sub)
			}
			pi := inv.PaymentIntent
			if inv.Status != stripe.InvoiceStatusOpen || inv.AmountDue != 1800 || inv.Currency != "usd" ||
				inv.Subscription == nil || inv.Subscription.ID != sub.ID || inv.Customer == nil || inv.Customer.ID != "cus_demo" ||
				inv.SubscriptionDetails == nil || inv.SubscriptionDetails.Metadata["billingd_request_key"] != sub.Metadata["billingd_request_key"] {
				t.Errorf("invoice = %+v", inv)
			}
			if pi.Status != stripe.PaymentIntentStatusRequiresConfirmation || pi.Amount != 1800 || pi.ClientSecret == "" ||
				pi.Invoice == nil || pi.Invoice.ID != inv.ID {
				t.Errorf("payment intent = %+v, want requires_confirmation for 1800 with a client secret", pi)
			}
			for i, o := range tt.outcomes {
				r := authenticate(t, srv, pi.ID, o)
				if r.status != 200 || r.pi(t).Status != string(tt.wantPIs[i]) {
					t.Fatalf("authenticate %d (%s) = %d %s, want %s", i, o, r.status, r.raw, tt.wantPIs[i])
				}
			}
			got, err := sc.Subscriptions.Get(sub.ID, &stripe.SubscriptionParams{Expand: []*string{stripe.String("latest_invoice.payment_intent")}})
			if err != nil {
				t.Fatal(err)
			}
			lpe := got.LatestInvoice.PaymentIntent.LastPaymentError
			if got.Status != tt.wantSub || got.LatestInvoice.Status != tt.wantInv || got.LatestInvoice.PaymentIntent.NextAction != nil ||
				(tt.wantError == "") != (lpe == nil) || lpe != nil && lpe.Code != tt.wantError {
				t.Errorf("after: subscription %s invoice %s payment intent %+v; want %s %s error %q",
					got.Status, got.LatestInvoice.Status, got.LatestInvoice.PaymentIntent, tt.wantSub, tt.wantInv, tt.wantError)
			}
			if subs := sim.Subscriptions(); len(subs) != 1 || subs[0].Status != string(tt.wantSub) || subs[0].LatestInvoice != inv.ID {
				t.Errorf("snapshots = %+v", subs)
			}
			// Search expands with the data. prefix.
			it := sc.Subscriptions.Search(&stripe.SubscriptionSearchParams{
				SearchParams: stripe.SearchParams{Query: "metadata['billingd_request_key']:'" + sub.Metadata["billingd_request_key"] + "'"},
				Expand:       []*string{stripe.String("data.latest_invoice.payment_intent")}})
			if !it.Next() || it.Subscription().LatestInvoice == nil || it.Subscription().LatestInvoice.PaymentIntent == nil ||
				it.Subscription().LatestInvoice.PaymentIntent.Status != tt.wantPIs[len(tt.wantPIs)-1] {
				t.Errorf("search = %+v, %v", it.Subscription(), it.Err())
			}
		})
	}
}

func TestSubscriptionExpandLevels(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	base := url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"default_incomplete"}}
	id := post(t, srv, "/v1/subscriptions", "", base).id(t)
	tests := []struct {
		query       string
		wantInvoice bool // an object rather than an id
		wantPI      bool
	}{
		{"", false, false},
		{"?expand[]=latest_invoice", true, false},
		{"?expand[]=latest_invoice.payment_intent", true, true},
	}
	for _, tt := range tests {
		m := get(t, srv, "/v1/subscriptions/"+id+tt.query).object(t)
		inv, isObj := m["latest_invoice"].(map[string]any)
		if isObj != tt.wantInvoice {
			t.Errorf("%q: latest_invoice = %v", tt.query, m["latest_invoice"])
			continue
		}
		if !isObj {
			continue
		}
		pi, isObj := inv["payment_intent"].(map[string]any)
		if isObj != tt.wantPI || inv["object"] != "invoice" || (isObj && pi["client_secret"] == nil) {
			t.Errorf("%q: invoice = %v", tt.query, inv)
		}
	}
}

func TestIncompleteSubscriptionsExpire(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock})
	form := url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}}
	incomplete := post(t, srv, "/v1/subscriptions", "", form).id(t)
	active := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}).id(t)
	clock.Advance(stripesim.IncompleteWindow)
	if n := sim.ApplyDueTransitions(); n != 1 {
		t.Errorf("applied %d, want 1", n)
	}
	m := get(t, srv, "/v1/subscriptions/"+incomplete+"?expand[]=latest_invoice.payment_intent").object(t)
	inv := m["latest_invoice"].(map[string]any)
	pi := inv["payment_intent"].(map[string]any)
	if m["status"] != "incomplete_expired" || inv["status"] != "void" || pi["status"] != "canceled" || pi["cancellation_reason"] != "void_invoice" {
		t.Errorf("expired: subscription %v invoice %v payment intent %v %v", m["status"], inv["status"], pi["status"], pi["cancellation_reason"])
	}
	if m := get(t, srv, "/v1/subscriptions/"+active).object(t); m["status"] != "active" {
		t.Errorf("active subscription became %v", m["status"])
	}
	// DELETE cancels now; a second DELETE is refused.
	r := request(t, srv, "DELETE", "/v1/subscriptions/"+active, testKey, "", "")
	if m := r.object(t); r.status != 200 || m["status"] != "canceled" || m["canceled_at"] == nil {
		t.Errorf("DELETE = %d %s", r.status, r.raw)
	}
	if r := request(t, srv, "DELETE", "/v1/subscriptions/"+active, testKey, "", ""); r.status != 400 {
		t.Errorf("second DELETE = %d %s", r.status, r.raw)
	}
	if r := request(t, srv, "DELETE", "/v1/subscriptions/sub_nope", testKey, "", ""); r.status != 404 {
		t.Errorf("DELETE missing = %d %s", r.status, r.raw)
	}
}

// eventSink is a webhook endpoint recording the verified events.
type eventSink struct {
	mu     sync.Mutex
	events []stripe.Event
}

func newEventSink(t *testing.T, secret string) (*eventSink, *httptest.Server) {
	t.Helper()
	es := &eventSink{}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ev, err := webhook.ConstructEvent(b, r.Header.Get("Stripe-Signature"), secret)
		if err != nil {
			t.Errorf("ConstructEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		es.mu.Lock()
		es.events = append(es.events, ev)
		es.mu.Unlock()
	}))
	t.Cleanup(hook.Close)
	return es, hook
}

// wait returns the type and data.object status of the first n events.
func (es *eventSink) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es.mu.Lock()
		got := len(es.events)
		es.mu.Unlock()
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events, want %d: %v", got, n, es.summary())
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let any extra event arrive, to be seen
	return es.summary()
}

func (es *eventSink) summary() []string {
	es.mu.Lock()
	defer es.mu.Unlock()
	out := make([]string, len(es.events))
	for i, ev := range es.events {
		out[i] = string(ev.Type) + " " + ev.GetObjectValue("status")
	}
	return out
}

func TestWebhooksForTransitions(t *testing.T) {
	t.Parallel()
	const secret = "whsec_transitions"
	tests := []struct {
		name string
		run  func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, clock *stripesim.ManualClock)
		want []string
	}{
		{"3DS then success", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, _ *stripesim.ManualClock) {
			id := post(t, srv, "/v1/payment_intents", "", charge("pm_card_threeDSecure2Required")).id(t)
			if err := sim.Authenticate(id, true); err != nil {
				t.Fatal(err)
			}
		}, []string{"payment_intent.created requires_action", "payment_intent.requires_action requires_action", "payment_intent.succeeded succeeded"}},
		{"3DS failed", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, _ *stripesim.ManualClock) {
			id := post(t, srv, "/v1/payment_intents", "", charge("pm_card_authenticationRequired")).id(t)
			if err := sim.Authenticate(id, false); err != nil {
				t.Fatal(err)
			}
		}, []string{"payment_intent.created requires_action", "payment_intent.requires_action requires_action", "payment_intent.payment_failed requires_payment_method"}},
		{"processing", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, _ *stripesim.ManualClock) {
			id := post(t, srv, "/v1/payment_intents", "", charge(stripesim.SimProcessingPaymentMethod)).id(t)
			if err := sim.Settle(id, false); err != nil {
				t.Fatal(err)
			}
		}, []string{"payment_intent.created processing", "payment_intent.processing processing", "payment_intent.payment_failed requires_payment_method"}},
		{"capture, and an authorisation expiring", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, clock *stripesim.ManualClock) {
			id := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "capture_method", "manual")).id(t)
			post(t, srv, "/v1/payment_intents/"+id+"/capture", "", nil)
			post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "capture_method", "manual"))
			clock.Advance(stripesim.AuthorizationValidity)
			sim.ApplyDueTransitions()
		}, []string{"payment_intent.created requires_capture", "payment_intent.amount_capturable_updated requires_capture",
			"payment_intent.succeeded succeeded",
			"payment_intent.created requires_capture", "payment_intent.amount_capturable_updated requires_capture",
			"payment_intent.canceled canceled"}},
		{"subscription paid later", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, _ *stripesim.ManualClock) {
			r := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"},
				"payment_behavior": {"default_incomplete"}})
			if err := sim.Authenticate(sim.Invoices()[0].PaymentIntent, true); err != nil {
				t.Fatal(err, string(r.raw))
			}
		}, []string{"customer.subscription.created incomplete", "invoice.created draft", "invoice.finalized open",
			"payment_intent.created requires_confirmation",
			"payment_intent.succeeded succeeded", "invoice.paid paid", "invoice.payment_succeeded paid", "customer.subscription.updated active"}},
		{"subscription paid at once, then canceled", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, _ *stripesim.ManualClock) {
			id := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}).id(t)
			request(t, srv, "DELETE", "/v1/subscriptions/"+id, testKey, "", "")
		}, []string{"customer.subscription.created active", "invoice.created draft", "invoice.finalized open",
			"payment_intent.created succeeded", "payment_intent.succeeded succeeded", "invoice.paid paid", "invoice.payment_succeeded paid",
			"customer.subscription.deleted canceled"}},
		{"subscription declined, then expired", func(t *testing.T, sim *stripesim.Sim, srv *httptest.Server, clock *stripesim.ManualClock) {
			post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}})
			clock.Advance(stripesim.IncompleteWindow)
			sim.ApplyDueTransitions()
		}, []string{"customer.subscription.created incomplete", "invoice.created draft", "invoice.finalized open",
			"payment_intent.created requires_payment_method", "payment_intent.payment_failed requires_payment_method", "invoice.payment_failed open",
			"customer.subscription.updated incomplete_expired", "invoice.voided void", "payment_intent.canceled canceled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sink, hook := newEventSink(t, secret)
			clock := stripesim.NewManualClock(epoch)
			sim, srv := newSim(t, stripesim.Config{Clock: clock, WebhookURL: hook.URL, WebhookSecret: secret})
			t.Cleanup(sim.Close)
			tt.run(t, sim, srv, clock)
			got := sink.wait(t, len(tt.want))
			if len(got) != len(tt.want) {
				t.Fatalf("events:\n%v\nwant:\n%v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("event %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}
