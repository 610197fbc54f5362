package stripesim_test

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestIdempotentReplayReturnsSameObject(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{Seed: 1})

	// The same parameters, encoded in a different order.
	first := request(t, srv, "POST", "/v1/payment_intents", testKey, "k1",
		"amount=2000&currency=usd&payment_method=pm_card_visa&confirm=true&payment_method_types[0]=card&metadata[a]=1&metadata[b]=2")
	second := request(t, srv, "POST", "/v1/payment_intents", testKey, "k1",
		"metadata[b]=2&metadata[a]=1&payment_method_types[0]=card&confirm=true&payment_method=pm_card_visa&currency=usd&amount=2000")

	if first.status != 200 || second.status != 200 {
		t.Fatalf("statuses = %d, %d, want 200, 200: %s", first.status, second.status, second.raw)
	}
	if got, want := second.id(t), first.id(t); got != want {
		t.Errorf("replayed id = %q, want %q", got, want)
	}
	if got := first.header.Get("Idempotent-Replayed"); got != "" {
		t.Errorf("first answer has Idempotent-Replayed = %q", got)
	}
	if got := second.header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if got, want := second.header.Get("Original-Request"), first.header.Get("Request-Id"); got != want {
		t.Errorf("Original-Request = %q, want the first Request-Id %q", got, want)
	}
	if a, b := first.header.Get("Request-Id"), second.header.Get("Request-Id"); !strings.HasPrefix(b, "req_") || a == b {
		t.Errorf("Request-Ids = %q, %q; want distinct req_ ids", a, b)
	}
	if got := string(second.raw); got != string(first.raw) {
		t.Errorf("replayed body differs:\n%s\n%s", first.raw, second.raw)
	}
	st := sim.Stats()
	if st.PaymentIntentsCreated != 1 || st.Replays != 1 || len(sim.PaymentIntents()) != 1 {
		t.Errorf("created=%d replays=%d snapshots=%d, want 1, 1, 1", st.PaymentIntentsCreated, st.Replays, len(sim.PaymentIntents()))
	}
	if got := sim.PaymentIntents()[0].IdempotencyKey; got != "k1" {
		t.Errorf("snapshot IdempotencyKey = %q, want k1", got)
	}
}

func TestIdempotencyMismatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		path        string
		form        url.Values
		wantMessage string
	}{
		{"different amount", "/v1/payment_intents", charge("pm_card_visa", "amount", "2001"), "same parameters"},
		{"extra metadata", "/v1/payment_intents", charge("pm_card_visa", "metadata[x]", "y"), "same parameters"},
		{"different endpoint", "/v1/customers", url.Values{"email": {"a@example.com"}}, "same endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			if r := post(t, srv, "/v1/payment_intents", "key", charge("pm_card_visa")); r.status != 200 {
				t.Fatalf("first status = %d: %s", r.status, r.raw)
			}
			r := post(t, srv, tt.path, "key", tt.form)
			if r.status != 400 {
				t.Fatalf("status = %d, want 400: %s", r.status, r.raw)
			}
			e := r.errBody(t)
			if e.Type != "idempotency_error" || !strings.Contains(e.Message, tt.wantMessage) {
				t.Errorf("error = %+v, want idempotency_error mentioning %q", e, tt.wantMessage)
			}
			st := sim.Stats()
			if st.PaymentIntentsCreated != 1 || st.CustomersCreated != 0 || st.IdempotencyMismatches != 1 {
				t.Errorf("stats = %+v, want 1 payment intent, no customer, 1 mismatch", st)
			}
		})
	}
}

func TestIdempotencyKeysAreScopedPerAPIKey(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	body := charge("pm_card_visa").Encode()
	a := request(t, srv, "POST", "/v1/payment_intents", "sk_test_aaaaaaaaaaaa", "shared", body)
	b := request(t, srv, "POST", "/v1/payment_intents", "sk_test_bbbbbbbbbbbb", "shared", body)
	if a.status != 200 || b.status != 200 {
		t.Fatalf("statuses = %d, %d", a.status, b.status)
	}
	if a.id(t) == b.id(t) || b.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("second API key got a replay of the first's key")
	}
	if got := len(sim.PaymentIntents()); got != 2 {
		t.Errorf("payment intents = %d, want 2", got)
	}
}

func TestIdempotencyKeyInUse(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{Faults: stripesim.Faults{Latency: 300 * time.Millisecond}})

	var first result
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		first = post(t, srv, "/v1/payment_intents", "busy", charge("pm_card_visa"))
	}()
	waitFor(t, "the first request to hold its key", func() bool { return sim.Stats().InFlight == 1 })

	dup := post(t, srv, "/v1/payment_intents", "busy", charge("pm_card_visa"))
	wg.Wait()

	if dup.status != http.StatusConflict {
		t.Fatalf("duplicate status = %d, want 409: %s", dup.status, dup.raw)
	}
	if e := dup.errBody(t); e.Type != "invalid_request_error" || e.Code != "idempotency_key_in_use" {
		t.Errorf("duplicate error = %+v, want invalid_request_error idempotency_key_in_use", e)
	}
	if first.status != 200 {
		t.Fatalf("first status = %d: %s", first.status, first.raw)
	}
	after := post(t, srv, "/v1/payment_intents", "busy", charge("pm_card_visa"))
	if after.status != 200 || after.id(t) != first.id(t) || after.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("after completion: status %d replayed %q; want a replay of %s", after.status, after.header.Get("Idempotent-Replayed"), first.id(t))
	}
	if st := sim.Stats(); st.PaymentIntentsCreated != 1 || st.KeysInUse != 1 || st.InFlight != 0 {
		t.Errorf("stats = %+v, want 1 created, 1 in-use answer, 0 in flight", st)
	}
}

// Stripe has answered a key in use with either error type; the simulator
// answers whichever the test asks for, and the same code either way.
func TestIdempotencyKeyInUseErrorType(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, cfg, want string
	}{
		{"default", "", "invalid_request_error"},
		{"invalid_request_error", stripesim.InUseInvalidRequest, "invalid_request_error"},
		{"idempotency_error", stripesim.InUseIdempotency, "idempotency_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{InUseErrorType: tt.cfg, Faults: stripesim.Faults{Latency: 300 * time.Millisecond}})
			done := make(chan result, 1)
			go func() { done <- post(t, srv, "/v1/payment_intents", "busy", charge("pm_card_visa")) }()
			waitFor(t, "the first request to hold its key", func() bool { return sim.Stats().InFlight == 1 })
			dup := post(t, srv, "/v1/payment_intents", "busy", charge("pm_card_visa"))
			if first := <-done; first.status != 200 {
				t.Fatalf("first = %d %s", first.status, first.raw)
			}
			if dup.status != http.StatusConflict {
				t.Fatalf("duplicate = %d %s, want 409", dup.status, dup.raw)
			}
			if e := dup.errBody(t); e.Type != tt.want || e.Code != "idempotency_key_in_use" {
				t.Errorf("409 error = %+v, want type %s code idempotency_key_in_use", e, tt.want)
			}
		})
	}
}

func TestIdempotencyCachesExecutedErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		path       string
		form       url.Values
		wantStatus int
		wantCode   string
		wantPIs    int
	}{
		{"card declined", "/v1/payment_intents", charge("pm_card_chargeDeclined"), 402, "card_declined", 1},
		{"unknown customer", "/v1/payment_intents", charge("pm_card_visa", "customer", "cus_nope"), 400, "resource_missing", 0},
		{"unknown payment method", "/v1/payment_intents", charge("pm_card_nope"), 400, "resource_missing", 0},
		{"amount too small", "/v1/payment_intents", charge("pm_card_visa", "amount", "49"), 400, "amount_too_small", 0},
		{"unknown price", "/v1/subscriptions", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_nope"}}, 400, "resource_missing", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			first := post(t, srv, tt.path, "k", tt.form)
			second := post(t, srv, tt.path, "k", tt.form)
			for i, r := range []result{first, second} {
				if r.status != tt.wantStatus {
					t.Fatalf("answer %d status = %d, want %d: %s", i, r.status, tt.wantStatus, r.raw)
				}
				if got := r.errBody(t).Code; got != tt.wantCode {
					t.Errorf("answer %d code = %q, want %q", i, got, tt.wantCode)
				}
			}
			if got := second.header.Get("Idempotent-Replayed"); got != "true" {
				t.Errorf("second answer Idempotent-Replayed = %q, want true (executed errors are cached)", got)
			}
			if string(first.raw) != string(second.raw) {
				t.Errorf("replayed error body differs")
			}
			if got := len(sim.PaymentIntents()); got != tt.wantPIs {
				t.Errorf("payment intents = %d, want %d", got, tt.wantPIs)
			}
		})
	}
}

func TestCustomerMaxSubscriptionsIsCached(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	form := url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}
	for i := range stripesim.DefaultMaxSubscriptionsPerCustomer {
		if r := post(t, srv, "/v1/subscriptions", "", form); r.status != 200 {
			t.Fatalf("subscription %d status = %d: %s", i, r.status, r.raw)
		}
	}
	first := post(t, srv, "/v1/subscriptions", "over", form)
	second := post(t, srv, "/v1/subscriptions", "over", form)
	if first.status != 400 || first.errBody(t).Code != "customer_max_subscriptions" || first.errBody(t).Type != "invalid_request_error" {
		t.Fatalf("26th subscription: %d %s", first.status, first.raw)
	}
	if second.status != 400 || second.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: status %d replayed %q, want cached 400", second.status, second.header.Get("Idempotent-Replayed"))
	}
	if got := len(sim.Subscriptions()); got != stripesim.DefaultMaxSubscriptionsPerCustomer {
		t.Errorf("subscriptions = %d, want %d", got, stripesim.DefaultMaxSubscriptionsPerCustomer)
	}
}

func TestIdempotencyDoesNotCacheUnexecutedAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		setup      func(*stripesim.Sim)
		form       url.Values
		wantStatus int
		wantCode   string
	}{
		{"missing amount", nil, charge("pm_card_visa", "amount", ""), 400, "parameter_missing"},
		{"non-integer amount", nil, charge("pm_card_visa", "amount", "12.5"), 400, "parameter_invalid_integer"},
		{"unknown currency", nil, charge("pm_card_visa", "currency", "xyz"), 400, ""},
		{"unknown parameter", nil, charge("pm_card_visa", "amout", "5"), 400, "parameter_unknown"},
		{"rate limited", func(s *stripesim.Sim) { s.FailNext("/v1/payment_intents", stripesim.FaultRateLimit, 1) }, charge("pm_card_visa"), 429, "rate_limit"},
		{"unavailable", func(s *stripesim.Sim) { s.FailNext("/v1/payment_intents", stripesim.FaultUnavailable, 1) }, charge("pm_card_visa"), 503, ""},
		{"lock timeout", func(s *stripesim.Sim) { s.FailNext("/v1/payment_intents", stripesim.FaultLockTimeout, 1) }, charge("pm_card_visa"), 429, "lock_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			if tt.setup != nil {
				tt.setup(sim)
			}
			r := post(t, srv, "/v1/payment_intents", "k", tt.form)
			if r.status != tt.wantStatus || r.errBody(t).Code != tt.wantCode {
				t.Fatalf("got %d %s, want %d code %q", r.status, r.raw, tt.wantStatus, tt.wantCode)
			}
			// The corrected (or simply retried) request with the same key executes.
			ok := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
			if ok.status != 200 || ok.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("retry: status %d replayed %q, want a fresh 200: %s", ok.status, ok.header.Get("Idempotent-Replayed"), ok.raw)
			}
			if got := len(sim.PaymentIntents()); got != 1 {
				t.Errorf("payment intents = %d, want 1", got)
			}
		})
	}
}

func TestServerErrorAfterProcessingIsCached(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	sim.FailNext("/v1/payment_intents", stripesim.FaultServerError, 1)

	first := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
	if first.status != 500 || first.errBody(t).Type != "api_error" {
		t.Fatalf("first = %d %s, want 500 api_error", first.status, first.raw)
	}
	again := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
	if again.status != 500 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry = %d replayed %q, want the cached 500", again.status, again.header.Get("Idempotent-Replayed"))
	}
	pis := sim.PaymentIntents()
	if len(pis) != 1 || pis[0].Status != "succeeded" {
		t.Fatalf("payment intents = %+v, want one succeeded (processed before the 500)", pis)
	}
	// Reconciliation finds it by metadata.
	found := get(t, srv, "/v1/payment_intents/search?query="+url.QueryEscape("metadata['billingd_request_key']:'rk_pm_card_visa'"))
	data, _ := found.object(t)["data"].([]any)
	if len(data) != 1 || data[0].(map[string]any)["id"] != pis[0].ID {
		t.Errorf("search after 500 = %s, want %s", found.raw, pis[0].ID)
	}
}

func TestDropAfterProcessing(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 1)

	first := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
	if first.err == nil {
		t.Fatalf("first request answered %d, want a dropped connection", first.status)
	}
	pis := sim.PaymentIntents()
	if len(pis) != 1 {
		t.Fatalf("payment intents = %d, want 1: the drop came after processing", len(pis))
	}
	retry := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
	if retry.status != 200 || retry.id(t) != pis[0].ID || retry.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry = %d %s (replayed %q), want a replay of %s", retry.status, retry.id(t), retry.header.Get("Idempotent-Replayed"), pis[0].ID)
	}
	if got := sim.Stats().Count("POST", "/v1/payment_intents", 0); got != 1 {
		t.Errorf("dropped requests in stats = %d, want 1", got)
	}
}

func TestFaultsBeforeProcessingLeaveNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		fault           stripesim.Fault
		wantStatus      int // 0: connection dropped
		wantShouldRetry string
	}{
		{"drop before", stripesim.FaultDropBefore, 0, ""},
		{"unavailable", stripesim.FaultUnavailable, 503, "true"},
		{"should retry false", stripesim.FaultShouldRetryFalse, 503, "false"},
		{"rate limit", stripesim.FaultRateLimit, 429, ""},
		{"lock timeout", stripesim.FaultLockTimeout, 429, "true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			sim.FailNext("/v1/payment_intents", tt.fault, 1)
			r := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
			if tt.wantStatus == 0 {
				if r.err == nil {
					t.Fatalf("answered %d, want a dropped connection", r.status)
				}
			} else if r.status != tt.wantStatus || r.header.Get("Stripe-Should-Retry") != tt.wantShouldRetry {
				t.Fatalf("got %d Stripe-Should-Retry=%q, want %d %q", r.status, r.header.Get("Stripe-Should-Retry"), tt.wantStatus, tt.wantShouldRetry)
			}
			if got := len(sim.PaymentIntents()); got != 0 {
				t.Fatalf("payment intents = %d, want 0", got)
			}
			retry := post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa"))
			if retry.status != 200 || retry.header.Get("Idempotent-Replayed") != "" {
				t.Errorf("retry = %d replayed %q, want a first execution", retry.status, retry.header.Get("Idempotent-Replayed"))
			}
			if got := sim.Stats().Faults[tt.fault]; got != 1 {
				t.Errorf("faults fired = %d, want 1", got)
			}
		})
	}
}

func TestIdempotencyKeyExpiresAfter24Hours(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock})

	first := post(t, srv, "/v1/payment_intents", "old", charge("pm_card_visa"))
	clock.Advance(stripesim.IdempotencyKeyTTL - time.Second)
	replay := post(t, srv, "/v1/payment_intents", "old", charge("pm_card_visa"))
	if replay.id(t) != first.id(t) || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("just under 24 h: got %s, want a replay of %s", replay.id(t), first.id(t))
	}
	clock.Advance(time.Second)
	fresh := post(t, srv, "/v1/payment_intents", "old", charge("pm_card_visa"))
	if fresh.status != 200 || fresh.id(t) == first.id(t) || fresh.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("at 24 h: got %d %s, want a new execution", fresh.status, fresh.id(t))
	}
	if got := len(sim.PaymentIntents()); got != 2 {
		t.Errorf("payment intents = %d, want 2 (the pruned key charged again)", got)
	}
}

func TestIdempotencyKeyTooLong(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	r := post(t, srv, "/v1/payment_intents", strings.Repeat("k", 256), charge("pm_card_visa"))
	if r.status != 400 || r.errBody(t).Type != "invalid_request_error" {
		t.Errorf("got %d %s, want 400 invalid_request_error", r.status, r.raw)
	}
	if got := len(sim.PaymentIntents()); got != 0 {
		t.Errorf("payment intents = %d, want 0", got)
	}
}
