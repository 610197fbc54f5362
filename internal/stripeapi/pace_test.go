package stripeapi

// White-box: the pace's clock is internal, and these tests move it.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/billingd/billingd/internal/stripehttp"
	"github.com/billingd/billingd/service"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time                   { return c.t }
func (c *fakeClock) add(d time.Duration)              { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock                        { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }
func (c *fakeClock) pacer(r rate.Limit, b int) *pacer { return newPacer(r, b, c.now) }

func TestPaceLimitsRate(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	p := clk.pacer(10, 2)
	// Take tokens as fast as they are granted, never waiting: the ones due
	// within one second are the burst plus one second of the rate.
	due := 0
	for range 50 {
		_, delay, ok := p.reserve(0, false)
		if !ok {
			t.Fatal("reserve refused an unbounded call")
		}
		if delay <= time.Second {
			due++
		}
	}
	if got, want := due, 2+10; got != want {
		t.Errorf("tokens due within 1 s = %d, want %d", got, want)
	}
	// A bounded call whose patience is shorter than the wait takes nothing.
	clk.add(time.Hour) // the bucket is full again
	for range 2 {
		if _, _, ok := p.reserve(0, true); !ok {
			t.Fatal("burst token refused")
		}
	}
	if _, delay, ok := p.reserve(50*time.Millisecond, true); ok || delay != 100*time.Millisecond {
		t.Errorf("reserve past patience = ok %v, delay %v; want refused, 100ms", ok, delay)
	}
	if _, delay, ok := p.reserve(150*time.Millisecond, true); !ok || delay != 100*time.Millisecond {
		t.Errorf("after a refusal the next token = ok %v, delay %v; want 100ms (the refused one was given back)", ok, delay)
	}
}

func TestPaceCutsOn429AndRecovers(t *testing.T) {
	t.Parallel()
	clk := newFakeClock()
	p := clk.pacer(40, 8)
	check := func(step string, want rate.Limit) {
		t.Helper()
		if got := p.rate(); got != want {
			t.Errorf("%s: rate %v, want %v", step, got, want)
		}
		if got := p.lim.Limit(); got != want {
			t.Errorf("%s: limiter at %v, want %v", step, got, want)
		}
	}
	check("start", 40)
	p.saw429()
	check("first 429", 20)
	p.saw429() // same burst: not cut again
	clk.add(500 * time.Millisecond)
	p.saw429()
	check("429s within a second of the cut", 20)
	clk.add(600 * time.Millisecond)
	p.saw429()
	check("429 a second after the cut", 10)
	for range 5 {
		clk.add(cutEvery)
		p.saw429()
	}
	check("floor", 4) // a tenth of 40
	// 40→20→10→5→4, then a 429 every second takes back the one step of
	// recovery each second earned: 6→4 three times.
	if got, want := p.cuts.Load(), uint64(7); got != want {
		t.Errorf("cuts = %d, want %d", got, want)
	}
	// Recovery: 2/s (a twentieth of 40) for every second without a 429.
	clk.add(999 * time.Millisecond)
	check("under a second after the last 429", 4)
	clk.add(time.Millisecond)
	check("1 s", 6)
	clk.add(4 * time.Second)
	check("5 s", 14)
	p.saw429() // cuts (the last cut was 5 s ago) and restarts the count
	check("429 while recovering", 7)
	clk.add(10 * time.Second)
	check("10 s", 27)
	clk.add(time.Hour)
	check("an hour", 40)
}

func TestRetriesTakeTokens(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if n.Add(1) <= 2 {
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write([]byte(`{"error":{"type":"invalid_request_error","code":"rate_limit","message":"slow down"}}`))
			return
		}
		_, _ = w.Write([]byte(`{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":100,"currency":"usd"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Key: "sk_test_x", URL: srv.URL, Rate: 100, Burst: 10,
		RetryOptions: []stripehttp.RetryOption{stripehttp.WithJitter(func(time.Duration) time.Duration { return 0 })}})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	c.pace.now = clk.now // frozen: no token comes back while the call runs
	if _, err := c.GetPaymentIntent(context.Background(), "pi_1"); err != nil {
		t.Fatal(err)
	}
	if got, want := n.Load(), int32(3); got != want {
		t.Fatalf("attempts = %d, want %d", got, want)
	}
	if got, want := c.pace.lim.TokensAt(clk.now()), 10.0-3; got != want {
		t.Errorf("tokens left = %v, want %v: every attempt takes one", got, want)
	}
	st := c.Pace()
	if st.Cuts != 1 || st.Rate != 50 || st.Limit != 100 {
		t.Errorf("Pace() = %+v, want one cut to 50 of 100 (the two 429s came together)", st)
	}
}

func TestDeadlineTooNearForToken(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":100,"currency":"usd"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Key: "sk_test_x", URL: srv.URL, Rate: 1, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	clk := newFakeClock()
	c.pace.now = clk.now // frozen: the next token is 1 s away
	if _, err := c.GetPaymentIntent(context.Background(), "pi_1"); err != nil {
		t.Fatal(err)
	}
	// The caller's deadline leaves 0.5 s: too little for the 1 s wait.
	ctx := service.WithCallerDeadline(context.Background(), clk.now().Add(500*time.Millisecond))
	_, err = c.GetPaymentIntent(ctx, "pi_1")
	ue, ok := err.(*service.UpstreamError)
	if !ok || ue.Kind != service.UpstreamRateLimited || ue.HTTPStatus != 0 || ue.RetryAfter != time.Second {
		t.Fatalf("err = %#v, want UpstreamRateLimited, nothing sent, RetryAfter 1s", err)
	}
	if got := n.Load(); got != 1 {
		t.Errorf("requests at Stripe = %d, want 1: the refused call sent nothing", got)
	}
	if got := c.Pace().Refused; got != 1 {
		t.Errorf("Refused = %d, want 1", got)
	}
	// With 2 s left the wait fits: the call goes.
	clk.add(time.Second) // its token is due now
	ctx = service.WithCallerDeadline(context.Background(), clk.now().Add(2*time.Second))
	if _, err := c.GetPaymentIntent(ctx, "pi_1"); err != nil {
		t.Fatal(err)
	}
	if got := n.Load(); got != 2 {
		t.Errorf("requests at Stripe = %d, want 2", got)
	}
}

// TestAdmitHoldsTheSlotForTheFirstCall: the slot Admit takes is the one the
// drive's first call uses (with one slot, no deadlock), is given back once,
// and a caller whose expected wait for a slot outlasts its deadline is
// refused at once, with that wait as RetryAfter and nothing sent.
func TestAdmitHoldsTheSlotForTheFirstCall(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":100,"currency":"usd"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{Key: "sk_test_x", URL: srv.URL, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, release, err := c.Admit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if inFlight, _, _ := c.Slots(); inFlight != 1 {
		t.Fatalf("after Admit %d slots taken, want 1", inFlight)
	}
	if _, err := c.GetPaymentIntent(ctx, "pi_1"); err != nil { // the admitted slot, not a second one
		t.Fatal(err)
	}
	release() // used already: nothing to give back
	if inFlight, _, _ := c.Slots(); inFlight != 0 {
		t.Fatalf("after the call and release %d slots taken, want 0", inFlight)
	}
	_, release, err = c.Admit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	release()
	release()
	if inFlight, _, _ := c.Slots(); inFlight != 0 {
		t.Fatalf("after an unused admission's release %d slots taken, want 0", inFlight)
	}

	// The slot is taken and calls hold theirs for an hour: a caller with
	// 30 s left cannot make it and is told so at once.
	_, hold, err := c.Admit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer hold()
	c.holdMean.Store(int64(time.Hour))
	dctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	refused := make(chan error, 1)
	go func() { _, _, err := c.Admit(dctx); refused <- err }()
	select {
	case err := <-refused:
		ue, ok := err.(*service.UpstreamError)
		if !ok || ue.Kind != service.UpstreamRateLimited || ue.HTTPStatus != 0 || ue.RetryAfter != time.Hour {
			t.Fatalf("err = %#v, want UpstreamRateLimited, nothing sent, RetryAfter 1h", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a caller who could not get a slot in time waited instead of being refused at once")
	}
	if got := n.Load(); got != 1 {
		t.Errorf("requests at Stripe = %d, want 1", got)
	}
	if got := c.Pace().Refused; got != 1 {
		t.Errorf("Refused = %d, want 1", got)
	}
}
