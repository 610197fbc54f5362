package stripesim_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
)

// outcomes runs n sequential charges and records what each got: a status,
// or 0 for a dropped connection, plus the created ids.
func outcomes(t *testing.T, cfg stripesim.Config, n int) (statuses []int, ids []string) {
	t.Helper()
	sim, srv := newSim(t, cfg)
	for i := range n {
		r := post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", i), charge("pm_card_visa"))
		statuses = append(statuses, r.status)
	}
	for _, pi := range sim.PaymentIntents() {
		ids = append(ids, pi.ID)
	}
	return statuses, ids
}

func TestSeededFaultsAreReproducible(t *testing.T) {
	t.Parallel()
	faults := stripesim.Faults{RateLimit: 0.1, Unavailable: 0.1, DropBeforeProcessing: 0.1, DropAfterProcessing: 0.1, ServerErrorAfterProcessing: 0.1}
	s1, ids1 := outcomes(t, stripesim.Config{Seed: 7, Faults: faults, ReproducibleIDs: true}, 60)
	s2, ids2 := outcomes(t, stripesim.Config{Seed: 7, Faults: faults, ReproducibleIDs: true}, 60)
	s3, _ := outcomes(t, stripesim.Config{Seed: 8, Faults: faults, ReproducibleIDs: true}, 60)
	s4, ids4 := outcomes(t, stripesim.Config{Seed: 7, Faults: faults}, 60)

	if !slices.Equal(s1, s2) || !slices.Equal(ids1, ids2) {
		t.Errorf("same seed, different runs:\n%v\n%v", s1, s2)
	}
	if !slices.Equal(s1, s4) {
		t.Errorf("same seed without ReproducibleIDs, different faults:\n%v\n%v", s1, s4)
	}
	for i := range min(len(ids1), len(ids4)) {
		if ids1[i] == ids4[i] {
			t.Errorf("id %s handed out again by a simulator without ReproducibleIDs", ids4[i])
		}
	}
	if slices.Equal(s1, s3) {
		t.Errorf("seeds 7 and 8 gave the same fault sequence %v", s1)
	}
	seen := map[int]bool{}
	for _, s := range s1 {
		seen[s] = true
	}
	for _, want := range []int{0, 200, 429, 500, 503} {
		if !seen[want] {
			t.Errorf("60 requests at 50%% faults never produced %d: %v", want, s1)
		}
	}
}

func TestFailNextQueuesInOrder(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	sim.FailNext("/v1/payment_intents", stripesim.FaultRateLimit, 2)
	sim.FailNext("/v1/payment_intents", stripesim.FaultUnavailable, 1)
	sim.FailNext("GET /v1/payment_intents/search", stripesim.FaultUnavailable, 1)

	var got []int
	for range 4 {
		got = append(got, post(t, srv, "/v1/payment_intents", "k", charge("pm_card_visa")).status)
	}
	if want := []int{429, 429, 503, 200}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	// Other paths are unaffected; the scripted GET fault fires once.
	if r := post(t, srv, "/v1/customers", "", nil); r.status != 200 {
		t.Errorf("customers: %d", r.status)
	}
	search := "/v1/payment_intents/search?query=status:'succeeded'"
	if a, b := get(t, srv, search).status, get(t, srv, search).status; a != 503 || b != 200 {
		t.Errorf("search statuses = %d, %d, want 503, 200", a, b)
	}
	st := sim.Stats()
	if st.Faults[stripesim.FaultRateLimit] != 2 || st.Faults[stripesim.FaultUnavailable] != 2 {
		t.Errorf("faults = %v", st.Faults)
	}
	if st.Count("POST", "/v1/payment_intents", 429) != 2 || st.Count("POST", "/v1/payment_intents", 200) != 1 ||
		st.Count("GET", "/v1/payment_intents/search", 503) != 1 {
		t.Errorf("requests = %v", st.Requests)
	}
}

func TestLatencyIsCutShortByTheClient(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{Faults: stripesim.Faults{Latency: 5 * time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := requestCtx(ctx, t, srv, http.MethodPost, "/v1/payment_intents", testKey, "gone", charge("pm_card_visa").Encode())
	if r.err == nil {
		t.Fatalf("answered %d despite the client's timeout", r.status)
	}
	// The request reached Stripe, so it executes anyway, and a retry with
	// the same key gets its result.
	waitFor(t, "the abandoned request to execute", func() bool { return len(sim.PaymentIntents()) == 1 })
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("the handler waited %v; latency should stop when the client leaves", elapsed)
	}
	sim.SetFaults(stripesim.Faults{})
	retry := post(t, srv, "/v1/payment_intents", "gone", charge("pm_card_visa"))
	if retry.status != 200 || retry.header.Get("Idempotent-Replayed") != "true" || retry.id(t) != sim.PaymentIntents()[0].ID {
		t.Errorf("retry = %d %s", retry.status, retry.raw)
	}
}

func TestConcurrentDuplicatesChargeOnce(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{Faults: stripesim.Faults{Latency: 5 * time.Millisecond, LatencyJitter: 5 * time.Millisecond}})
	const keys, copies = 8, 8
	var wg sync.WaitGroup
	statuses := make([][]int, keys)
	for k := range keys {
		statuses[k] = make([]int, copies)
		for c := range copies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[k][c] = post(t, srv, "/v1/payment_intents", fmt.Sprintf("dup-%d", k), charge("pm_card_visa")).status
			}()
		}
	}
	wg.Wait()
	for k, ss := range statuses {
		for _, s := range ss {
			if s != 200 && s != 409 {
				t.Errorf("key %d: statuses %v, want only 200 and 409", k, ss)
				break
			}
		}
	}
	st := sim.Stats()
	if got := len(sim.PaymentIntents()); got != keys || st.PaymentIntentsCreated != keys {
		t.Errorf("payment intents = %d (stats %d), want exactly %d, one per key", got, st.PaymentIntentsCreated, keys)
	}
	if st.InFlight != 0 {
		t.Errorf("in flight after all answered = %d", st.InFlight)
	}
}

func TestRateLimitAboveRate(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(time.Unix(1_700_000_000, 0))
	sim, srv := newSim(t, stripesim.Config{Clock: clock, Faults: stripesim.Faults{Rate: 10, RateBurst: 3}})
	var got []int
	send := func(i int) result {
		var r result
		if i%2 == 0 { // reads count too
			r = get(t, srv, "/v1/customers/cus_demo")
		} else {
			r = post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", i), charge("pm_card_visa"))
		}
		got = append(got, r.status)
		return r
	}
	// Five at one instant: the burst of 3 passes, the rest are 429.
	for i := range 5 {
		r := send(i)
		if r.status == http.StatusTooManyRequests {
			if e := r.errBody(t); e.Code != "rate_limit" || e.Type != "invalid_request_error" {
				t.Errorf("429 body = %+v, want invalid_request_error rate_limit", e)
			}
			if h := r.header.Get("Stripe-Should-Retry"); h != "" {
				t.Errorf("429 rate_limit has Stripe-Should-Retry %q, want none", h)
			}
		}
	}
	clock.Advance(100 * time.Millisecond) // one token at 10/s
	send(5)
	send(7)
	if want := []int{200, 200, 200, 429, 429, 200, 429}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if n := sim.Stats().Faults[stripesim.FaultRateLimit]; n != 3 {
		t.Errorf("Stats().Faults[rate_limit] = %d, want 3", n)
	}
	if n := len(sim.PaymentIntents()); n != 2 {
		t.Errorf("PaymentIntents = %d, want 2: a 429 processes nothing", n)
	}
}

func TestParseFaults(t *testing.T) {
	t.Parallel()
	for spec, want := range map[string]stripesim.Faults{
		"": {},
		"unavailable=0.1,drop_after=0.02,server_error=0.01,rate_limit=0.03,drop_before=0.04,latency=5ms": {
			Unavailable: 0.1, DropAfterProcessing: 0.02, ServerErrorAfterProcessing: 0.01,
			RateLimit: 0.03, DropBeforeProcessing: 0.04, Latency: 5 * time.Millisecond,
		},
		"rate=50, rate_burst=10": {Rate: 50, RateBurst: 10},
	} {
		if got, err := stripesim.ParseFaults(spec); err != nil || got != want {
			t.Errorf("ParseFaults(%q) = %+v, %v; want %+v", spec, got, err, want)
		}
	}
}

func TestParseFaultsRefuses(t *testing.T) {
	t.Parallel()
	for spec, want := range map[string]string{
		"unavailable":    `"unavailable" is not name=value`,
		"unavailable=2":  "unavailable must be a rate from 0 to 1",
		"bogus=0.1":      `unknown fault "bogus"`,
		"latency=fast":   `latency: time: invalid duration "fast"`,
		"rate=-1":        "rate must be requests a second, 0 or more",
		"rate=fast":      "rate must be requests a second, 0 or more",
		"rate_burst=1.5": "rate_burst must be a whole number, 0 or more",
	} {
		if _, err := stripesim.ParseFaults(spec); err == nil || err.Error() != want {
			t.Errorf("ParseFaults(%q) error = %v, want %q", spec, err, want)
		}
	}
}
