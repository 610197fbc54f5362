package interceptors_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/billingd/billingd/interceptors"
)

// manualNow is a clock the test moves.
type manualNow struct {
	mu sync.Mutex
	t  time.Time
}

func (m *manualNow) now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.t }
func (m *manualNow) add(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.t = m.t.Add(d)
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	clock := &manualNow{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	isReplay := func(_ context.Context, _ string, req any) bool { return req == "replay" }
	limit := interceptors.RateLimit(interceptors.Budget{Rate: 2, Burst: 2},
		interceptors.WithReplayBudget(interceptors.Budget{Rate: 1, Burst: 1}, isReplay),
		interceptors.WithRateClock(clock.now))
	call := func(caller string, req any) error {
		ctx := t.Context()
		if caller != "" {
			ctx = interceptors.WithCaller(ctx, caller)
		}
		_, err := limit(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/billing.v1.BillingService/Charge"},
			func(context.Context, any) (any, error) { return "ok", nil })
		return err
	}

	for i := range 2 {
		if err := call("caller_a", "new"); err != nil {
			t.Fatalf("call %d within burst: %v", i+1, err)
		}
	}
	err := call("caller_a", "new")
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("over budget: %v, want RESOURCE_EXHAUSTED", err)
	}
	var (
		reason string
		quota  *errdetails.QuotaFailure
		retry  *errdetails.RetryInfo
	)
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.QuotaFailure:
			quota = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if reason != "RATE_LIMITED" || len(quota.GetViolations()) != 1 || quota.GetViolations()[0].GetSubject() != "caller" {
		t.Errorf("details: reason %q, quota %v", reason, quota)
	}
	// Two per second, bucket empty: the next token is due in 500 ms.
	if got, want := retry.GetRetryDelay().AsDuration(), 500*time.Millisecond; got != want {
		t.Errorf("RetryInfo delay = %v, want %v", got, want)
	}

	// Another caller has its own bucket; so does "anonymous".
	if err := call("caller_b", "new"); err != nil {
		t.Errorf("caller_b limited by caller_a: %v", err)
	}
	if err := call("", "new"); err != nil {
		t.Errorf("anonymous limited by caller_a: %v", err)
	}

	// A replay draws on its own budget, once.
	if err := call("caller_a", "replay"); err != nil {
		t.Errorf("replay over the main budget: %v", err)
	}
	if err := call("caller_a", "replay"); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second replay past the replay burst: %v, want RESOURCE_EXHAUSTED", err)
	}

	// Time refills the bucket.
	clock.add(500 * time.Millisecond)
	if err := call("caller_a", "new"); err != nil {
		t.Errorf("after RetryInfo's delay: %v", err)
	}
}

func TestRateLimitOff(t *testing.T) {
	t.Parallel()
	limit := interceptors.RateLimit(interceptors.Budget{})
	for i := range 100 {
		if _, err := limit(t.Context(), "new", &grpc.UnaryServerInfo{},
			func(context.Context, any) (any, error) { return nil, nil }); err != nil {
			t.Fatalf("call %d with the limit off: %v", i, err)
		}
	}
}
