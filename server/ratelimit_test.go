package server_test

import (
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
)

func quotaFailure(st *status.Status) *errdetails.QuotaFailure {
	for _, d := range st.Details() {
		if q, ok := d.(*errdetails.QuotaFailure); ok {
			return q
		}
	}
	return nil
}

// TestRateLimitPerCaller: a caller over its budget is refused before
// anything is recorded or sent, another caller is not, and replays of final
// records still get their answers. The budgets refill so slowly (one token
// per 1000 s) that no refill can happen during the test.
func TestRateLimitPerCaller(t *testing.T) {
	t.Parallel()
	cfg := authConfig(t)
	cfg.RateLimit = interceptors.Budget{Rate: 0.001, Burst: 3}
	cfg.ReplayRateLimit = interceptors.Budget{Rate: 0.001, Burst: 3}
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := as(h.ctx(), tokenA)

	first, err := h.client.Charge(ctx, visa("rl-1"))
	if err != nil {
		t.Fatal(err)
	}
	decline := visa("rl-2")
	decline.PaymentMethodId = "pm_card_chargeDeclined"
	_, declineErr := h.client.Charge(ctx, decline)
	if status.Code(declineErr) != codes.FailedPrecondition {
		t.Fatalf("decline = %v", declineErr)
	}
	if _, err := h.client.Charge(ctx, visa("rl-3")); err != nil {
		t.Fatal(err)
	}
	stats := h.sim.Stats()

	// Budget spent: a new request is refused with QuotaFailure and RetryInfo.
	_, err = h.client.Charge(ctx, visa("rl-4"))
	st, ei := errInfo(t, err, codes.ResourceExhausted)
	if ei.GetReason() != "RATE_LIMITED" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	if q := quotaFailure(st); len(q.GetViolations()) != 1 || q.GetViolations()[0].GetSubject() != "caller" {
		t.Errorf("QuotaFailure = %v", q)
	}
	if ri := retryInfo(st); ri.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("RetryInfo = %v, want a positive delay", ri)
	}
	if _, found := h.record("caller_a", "rl-4"); found {
		t.Error("refused call wrote a record")
	}
	if after := h.sim.Stats(); after.PaymentIntentsCreated != stats.PaymentIntentsCreated || len(after.Requests) != len(stats.Requests) {
		t.Errorf("refused call reached the simulator: %v → %v", stats.Requests, after.Requests)
	}

	// Replays of final records (a success, a decline) and reads still answer.
	if r, err := h.client.Charge(ctx, visa("rl-1")); err != nil || !r.GetReplayed() || r.GetPaymentIntentId() != first.GetPaymentIntentId() {
		t.Errorf("replay of rl-1 = %v, %v", r, err)
	}
	_, err = h.client.Charge(ctx, decline)
	if got, want := status.Convert(err).Proto(), status.Convert(declineErr).Proto(); got.GetCode() != want.GetCode() || got.GetMessage() != want.GetMessage() {
		t.Errorf("replay of the decline = %v, want %v", got, want)
	}
	if op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "rl-3"}); err != nil || op.GetStripeObjectId() == "" {
		t.Errorf("GetOperation = %v, %v", op, err)
	}
	// ...until the replay budget is spent too.
	if _, err := h.client.Charge(ctx, visa("rl-1")); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("fourth replay: %v, want RESOURCE_EXHAUSTED", err)
	}
	// A new request is not a replay, whatever budget is left.
	if _, err := h.client.Charge(ctx, visa("rl-5")); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("new request: %v, want RESOURCE_EXHAUSTED", err)
	}

	// caller_b has its own budget.
	if _, err := h.client.Charge(as(h.ctx(), tokenB), visa("rl-4")); err != nil {
		t.Errorf("caller_b: %v", err)
	}
	if got := len(h.intentsFor("caller_a", "rl-4")) + len(h.intentsFor("caller_a", "rl-5")); got != 0 {
		t.Errorf("caller_a's refused requests created %d PaymentIntents", got)
	}
	if got := len(h.intentsFor("caller_b", "rl-4")); got != 1 {
		t.Errorf("caller_b's rl-4: %d PaymentIntents, want 1", got)
	}
}
