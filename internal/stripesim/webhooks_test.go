package stripesim_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/billingd/billingd/internal/stripesim"
)

// Events verify with stripe-go's own webhook package, carry the object, and
// a failing endpoint is retried.
func TestWebhooksAreSignedAndRetried(t *testing.T) {
	t.Parallel()
	const secret = "whsec_sim"
	var (
		mu     sync.Mutex
		events []stripe.Event
		calls  int
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 { // the first delivery fails: it must come again
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		ev, err := webhook.ConstructEvent(b, r.Header.Get("Stripe-Signature"), secret)
		if err != nil {
			t.Errorf("ConstructEvent: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		events = append(events, ev)
	}))
	t.Cleanup(hook.Close)
	sim, srv := newSim(t, stripesim.Config{Clock: stripesim.NewManualClock(epoch), WebhookURL: hook.URL, WebhookSecret: secret})
	t.Cleanup(sim.Close)
	api := stripeAPI(t, srv, "sk_test_x")
	pi, err := api.PaymentIntents.New(&stripe.PaymentIntentParams{
		Amount: stripe.Int64(100), Currency: stripe.String("usd"), PaymentMethod: stripe.String("pm_card_visa"),
		Confirm: stripe.Bool(true), Metadata: map[string]string{"k": "v"},
		AutomaticPaymentMethods: &stripe.PaymentIntentAutomaticPaymentMethodsParams{Enabled: stripe.Bool(true), AllowRedirects: stripe.String("never")},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d events, stats %+v", n, sim.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if events[0].Type != "payment_intent.created" || events[1].Type != "payment_intent.succeeded" {
		t.Errorf("types = %s, %s", events[0].Type, events[1].Type)
	}
	var got stripe.PaymentIntent
	if err := got.UnmarshalJSON(events[1].Data.Raw); err != nil || got.ID != pi.ID || got.Metadata["k"] != "v" || events[1].Created != epoch.Unix() {
		t.Errorf("event object = %+v, %v", got, err)
	}
	// The worker counts a delivery once the response is back, just after the
	// endpoint has seen the event: wait for the count, then check them all.
	waitFor(t, "two deliveries counted", func() bool { return sim.Stats().WebhooksDelivered == 2 })
	if st := sim.Stats(); st.WebhooksDelivered != 2 || st.WebhooksQueued != 2 || st.WebhooksDropped != 0 {
		t.Errorf("stats = %+v", st)
	}
}
