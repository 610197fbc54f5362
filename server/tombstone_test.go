package server_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/postgres/pgtest"
)

// A request_id repeated after its record was swept (a queue redelivering an
// old message) is refused REQUEST_ID_EXPIRED from the tombstone, with the
// original PaymentIntent and state, and nothing goes to Stripe: one
// PaymentIntent in all. Past the tombstone horizon the id is free again.
func TestRequestIDExpiredAfterSweep(t *testing.T) {
	t.Parallel()
	stores := []struct {
		name string
		opts func(t *testing.T) harnessOpts
	}{
		{"bbolt", func(*testing.T) harnessOpts { return harnessOpts{} }},
		{"postgres", func(t *testing.T) harnessOpts { return harnessOpts{postgres: pgtest.DSN(t)} }},
	}
	for _, store := range stores {
		t.Run(store.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, store.opts(t))
			ctx := h.ctx()
			first, err := h.client.Charge(ctx, visa("old-order"))
			if err != nil {
				t.Fatalf("Charge: %v", err)
			}
			cfg := service.DefaultSweeperConfig()
			sw := service.NewSweeper(h.store, h.clock, cfg, nil)
			h.clock.Advance(cfg.Retention + time.Hour)
			if n, err := sw.Sweep(ctx); err != nil || n != 1 {
				t.Fatalf("Sweep = %d, %v; want the one record", n, err)
			}
			sent := posts(h.sim)

			// The same request, and one with other parameters: both refused
			// from the tombstone, the same way every time.
			other := visa("old-order")
			other.Amount = 999
			for _, req := range []*billingv1.ChargeRequest{visa("old-order"), visa("old-order"), other} {
				_, err := h.client.Charge(ctx, req)
				st, ei := errInfo(t, err, codes.FailedPrecondition)
				if ei.GetReason() != "REQUEST_ID_EXPIRED" {
					t.Fatalf("reason = %s (%s)", ei.GetReason(), st.Message())
				}
				if got := ei.GetMetadata()["stripe_object_id"]; got != first.GetPaymentIntentId() {
					t.Errorf("stripe_object_id = %q, want the original %q", got, first.GetPaymentIntentId())
				}
				if got := ei.GetMetadata()["state"]; got != "SUCCEEDED" {
					t.Errorf("state = %q, want SUCCEEDED", got)
				}
			}
			if got := posts(h.sim); got != sent {
				t.Errorf("create POSTs %d → %d: nothing may be sent for an expired request_id", sent, got)
			}
			if pis := h.intentsFor(caller, "old-order"); len(pis) != 1 || pis[0].ID != first.GetPaymentIntentId() {
				t.Errorf("PaymentIntents = %+v, want the one original", pis)
			}
			if _, found := h.record(caller, "old-order"); found {
				t.Error("a refused request left a record")
			}
			// GetOperation: NOT_FOUND, saying why.
			_, err = h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "old-order"})
			if st, ei := errInfo(t, err, codes.NotFound); ei.GetReason() != "NOT_FOUND" || !strings.Contains(st.Message(), "expired") {
				t.Errorf("GetOperation = %s %q", ei.GetReason(), st.Message())
			}

			// Past the tombstone horizon the request_id is a new operation.
			h.clock.Advance(cfg.TombstoneRetention + time.Hour)
			if _, err := sw.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			again, err := h.client.Charge(ctx, visa("old-order"))
			if err != nil || again.GetReplayed() || again.GetPaymentIntentId() == first.GetPaymentIntentId() {
				t.Fatalf("Charge past the tombstone horizon = %v, %v; want a new PaymentIntent", again, err)
			}
			if pis := h.intentsFor(caller, "old-order"); len(pis) != 2 {
				t.Errorf("PaymentIntents = %d, want 2 (the id was free again)", len(pis))
			}
		})
	}
}
