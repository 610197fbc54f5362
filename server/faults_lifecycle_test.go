package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// TestRandomFaultsExactlyOnceLifecycle is TestRandomFaultsExactlyOnce for
// refunds, captures and cancellations: with a quarter of Stripe's answers
// faulted at random (seeded), impatient callers and concurrent duplicates,
// every request, retried with its request_id until definitive, leaves
// exactly one refund (or capture, or cancellation) at Stripe; none doubled,
// none lost; an over-refund is refused with nothing created.
func TestRandomFaultsExactlyOnceLifecycle(t *testing.T) {
	t.Parallel()
	const (
		groups   = 150 // each: a paid charge refunded twice and over-refunded once, an authorisation captured, one canceled
		workers  = 24
		maxTries = 80
		seed     = 20261206
	)
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{Seed: seed, Faults: stripesim.Faults{
		RateLimit:                  0.05,
		Unavailable:                0.05,
		DropBeforeProcessing:       0.05,
		DropAfterProcessing:        0.05,
		ServerErrorAfterProcessing: 0.05,
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var calls atomic.Int64
	var byCode sync.Map
	// until retries call with the same request until its answer is definitive.
	until := func(rng *rand.Rand, call func(context.Context) error) error {
		for try := 0; try < maxTries; try++ {
			budget := 10 * time.Second
			if rng.IntN(20) == 0 {
				budget = 5 * time.Millisecond
			}
			cctx, ccancel := context.WithTimeout(ctx, budget)
			err := call(cctx)
			ccancel()
			calls.Add(1)
			v, _ := byCode.LoadOrStore(status.Code(err), new(atomic.Int64))
			v.(*atomic.Int64).Add(1)
			switch status.Code(err) {
			case codes.Unavailable, codes.DeadlineExceeded:
				if _, ei := statusInfo(err); ei.GetReason() == "OUTCOME_PENDING_RECONCILIATION" {
					// Stripe answered 5xx: a lookup decides, and "nothing
					// found" counts only after the lookup lag (a minute for
					// refunds, captures and cancellations): let it pass.
					h.clock.Advance(30 * time.Second)
				}
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
				continue
			}
			return err
		}
		return fmt.Errorf("no definitive answer in %d tries", maxTries)
	}
	// twice runs a request as two concurrent callers now and then (a double
	// click) and wants the same answer from both.
	twice := func(rng *rand.Rand, i int, call func(context.Context) (string, error)) (string, error) {
		var id string
		one := func(rng *rand.Rand) (string, error) {
			var got string
			err := until(rng, func(ctx context.Context) error {
				var err error
				got, err = call(ctx)
				return err
			})
			return got, err
		}
		if rng.IntN(10) != 0 {
			return one(rng)
		}
		var dup string
		var dupErr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); dup, dupErr = one(rand.New(rand.NewPCG(seed, uint64(i)+1<<20))) }()
		id, err := one(rng)
		wg.Wait()
		if err == nil && dupErr == nil && id != dup {
			return "", fmt.Errorf("duplicate answers differ: %s vs %s", id, dup)
		}
		if err == nil {
			err = dupErr
		}
		return id, err
	}

	out := make([]lifecycleGroup, groups)
	failures := make(chan error, 8*groups)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				i := int(next.Add(1)) - 1
				if i >= groups || ctx.Err() != nil {
					return
				}
				g, err := runGroup(i, rng, h, twice)
				if err != nil {
					failures <- fmt.Errorf("group %d: %w", i, err)
					continue
				}
				out[i] = g
			}
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}

	// Stripe's truth.
	refundsByKey := map[string][]stripesim.Refund{}
	for _, r := range h.sim.Refunds() {
		k := r.Metadata[service.MetadataRequestKey]
		refundsByKey[k] = append(refundsByKey[k], r)
	}
	pis := map[string]stripesim.PaymentIntent{}
	for _, pi := range h.sim.PaymentIntents() {
		pis[pi.ID] = pi
	}
	var duplicates, lost, mismatched int
	for i, g := range out {
		for j, id := range g.refunds {
			got := refundsByKey[service.RequestKey(caller, fmt.Sprintf("refund-%04d-%d", i, j))]
			switch {
			case len(got) == 0:
				lost++
				t.Errorf("group %d refund %d: nothing at Stripe", i, j)
			case len(got) > 1:
				duplicates++
				t.Errorf("group %d refund %d: %d refunds", i, j, len(got))
			case got[0].ID != id || got[0].Amount != 500 || got[0].PaymentIntent != g.paid:
				mismatched++
				t.Errorf("group %d refund %d: answered %s, Stripe holds %+v", i, j, id, got[0])
			}
		}
		if got := refundsByKey[service.RequestKey(caller, fmt.Sprintf("over-%04d", i))]; len(got) != 0 || !g.overRefused {
			t.Errorf("group %d: the over-refund made %d refunds (refused %v)", i, len(got), g.overRefused)
		}
		if pi := pis[g.authCapture]; pi.Status != "succeeded" || g.captured != g.authCapture {
			mismatched++
			t.Errorf("group %d: captured %s, Stripe holds %s %s", i, g.captured, pi.ID, pi.Status)
		}
		if pi := pis[g.authCancel]; pi.Status != "canceled" || g.canceled != g.authCancel {
			mismatched++
			t.Errorf("group %d: canceled %s, Stripe holds %s %s", i, g.canceled, pi.ID, pi.Status)
		}
	}
	if got, want := len(h.sim.Refunds()), 2*groups; got != want {
		t.Errorf("refunds at Stripe = %d, want %d", got, want)
	}
	t.Logf("random faults (lifecycle): %d groups (%d refunds, %d over-refunds, %d captures, %d cancellations), %d RPCs; duplicates %d, lost %d, mismatched %d; faults %v",
		groups, 2*groups, groups, groups, groups, calls.Load(), duplicates, lost, mismatched, h.sim.Stats().Faults)
	byCode.Range(func(k, v any) bool {
		t.Logf("  answers %v: %d", k, v.(*atomic.Int64).Load())
		return true
	})
}

// statusInfo returns err's status and ErrorInfo (nil if none).
func statusInfo(err error) (*status.Status, *errdetails.ErrorInfo) {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return st, ei
		}
	}
	return st, nil
}

// lifecycleGroup is what one group's requests were answered.
type lifecycleGroup struct {
	paid, authCapture, authCancel string // PaymentIntents
	refunds                       [2]string
	overRefused                   bool
	captured, canceled            string
}

// runGroup makes group i's charges and then its refunds, capture and
// cancellation, each through twice.
func runGroup(i int, rng *rand.Rand, h *harness, twice func(*rand.Rand, int, func(context.Context) (string, error)) (string, error)) (g lifecycleGroup, err error) {
	charge := func(id string, manual bool) (string, error) {
		req := visa(id)
		req.Amount = 1000
		if manual {
			req.CaptureMethod = "manual"
		}
		return twice(rng, i, func(ctx context.Context) (string, error) {
			resp, err := h.client.Charge(ctx, req)
			return resp.GetPaymentIntentId(), err
		})
	}
	if g.paid, err = charge(fmt.Sprintf("paid-%04d", i), false); err != nil {
		return g, fmt.Errorf("charge: %w", err)
	}
	if g.authCapture, err = charge(fmt.Sprintf("auth-c-%04d", i), true); err != nil {
		return g, fmt.Errorf("authorise: %w", err)
	}
	if g.authCancel, err = charge(fmt.Sprintf("auth-x-%04d", i), true); err != nil {
		return g, fmt.Errorf("authorise: %w", err)
	}
	for j := range g.refunds {
		req := &billingv1.RefundRequest{RequestId: fmt.Sprintf("refund-%04d-%d", i, j), PaymentIntentId: g.paid, Amount: 500}
		if g.refunds[j], err = twice(rng, i, func(ctx context.Context) (string, error) {
			resp, err := h.client.Refund(ctx, req)
			return resp.GetRefundId(), err
		}); err != nil {
			return g, fmt.Errorf("refund %d: %w", j, err)
		}
	}
	over := &billingv1.RefundRequest{RequestId: fmt.Sprintf("over-%04d", i), PaymentIntentId: g.paid, Amount: 1}
	_, err = twice(rng, i, func(ctx context.Context) (string, error) {
		resp, err := h.client.Refund(ctx, over)
		return resp.GetRefundId(), err
	})
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition {
		return g, fmt.Errorf("over-refund: %v, want FAILED_PRECONDITION", err)
	}
	g.overRefused = true
	capture := &billingv1.CapturePaymentRequest{RequestId: fmt.Sprintf("capture-%04d", i), PaymentIntentId: g.authCapture}
	if g.captured, err = twice(rng, i, func(ctx context.Context) (string, error) {
		resp, err := h.client.CapturePayment(ctx, capture)
		return resp.GetPaymentIntentId(), err
	}); err != nil {
		return g, fmt.Errorf("capture: %w", err)
	}
	cancelReq := &billingv1.CancelPaymentRequest{RequestId: fmt.Sprintf("cancel-%04d", i), PaymentIntentId: g.authCancel}
	if g.canceled, err = twice(rng, i, func(ctx context.Context) (string, error) {
		resp, err := h.client.CancelPayment(ctx, cancelReq)
		return resp.GetPaymentIntentId(), err
	}); err != nil {
		return g, fmt.Errorf("cancel: %w", err)
	}
	return g, nil
}
