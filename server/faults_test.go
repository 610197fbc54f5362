package server_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// TestRandomFaultsExactlyOnce drives a few thousand operations through a
// simulator that fails at random (seeded), with callers that give up early and
// fire duplicates, each retrying with the same request_id until the answer is
// definitive. Stripe's truth must match every answer: no operation charged
// twice, none lost.
func TestRandomFaultsExactlyOnce(t *testing.T) {
	t.Parallel()
	const (
		ops       = 3000
		workers   = 32
		maxTries  = 60
		seed      = 20261123
		declineIn = 10 // one operation in declineIn uses a declining card
	)
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{Seed: seed, Faults: stripesim.Faults{
		RateLimit:                  0.04,
		Unavailable:                0.05,
		DropBeforeProcessing:       0.03,
		DropAfterProcessing:        0.05,
		ServerErrorAfterProcessing: 0.02,
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	type answer struct {
		piID     string
		declined bool
	}
	var (
		answers  = make([]answer, ops)
		calls    atomic.Int64
		byCode   sync.Map // codes.Code → *atomic.Int64
		failures = make(chan error, ops)
	)
	count := func(c codes.Code) {
		v, _ := byCode.LoadOrStore(c, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	request := func(i int) *billingv1.ChargeRequest {
		r := visa(fmt.Sprintf("soak-%05d", i))
		r.Amount = int64(100 + i)
		if i%declineIn == 0 {
			r.PaymentMethodId = "pm_card_chargeDeclined"
		}
		return r
	}
	// one runs operation i to a definitive answer; rng decides impatience.
	one := func(i int, rng *rand.Rand) (answer, error) {
		req := request(i)
		for try := 0; try < maxTries; try++ {
			budget := 10 * time.Second
			if rng.IntN(20) == 0 {
				budget = 5 * time.Millisecond // a caller that gives up
			}
			cctx, ccancel := context.WithTimeout(ctx, budget)
			resp, err := h.client.Charge(cctx, req)
			ccancel()
			calls.Add(1)
			count(status.Code(err))
			switch status.Code(err) {
			case codes.OK:
				return answer{piID: resp.GetPaymentIntentId()}, nil
			case codes.FailedPrecondition:
				_, ei := errInfo(t, err, codes.FailedPrecondition)
				if ei.GetReason() != "CARD_DECLINED" {
					return answer{}, fmt.Errorf("op %d: %v", i, err)
				}
				return answer{piID: ei.GetMetadata()["stripe_object_id"], declined: true}, nil
			case codes.Unavailable, codes.DeadlineExceeded:
				time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
				continue
			default:
				return answer{}, fmt.Errorf("op %d: unexpected %v", i, err)
			}
		}
		return answer{}, fmt.Errorf("op %d: no definitive answer after %d tries", i, maxTries)
	}

	start := time.Now()
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for {
				i := int(next.Add(1)) - 1
				if i >= ops || ctx.Err() != nil {
					return
				}
				if rng.IntN(10) == 0 {
					// A double click: the same operation twice at once.
					var dup answer
					var dupErr error
					var dwg sync.WaitGroup
					dwg.Add(1)
					go func() {
						defer dwg.Done()
						dup, dupErr = one(i, rand.New(rand.NewPCG(seed, uint64(i))))
					}()
					a, err := one(i, rng)
					dwg.Wait()
					if err == nil && dupErr == nil && a != dup {
						err = fmt.Errorf("op %d: duplicate answers differ: %+v vs %+v", i, a, dup)
					}
					if err == nil {
						err = dupErr
					}
					if err != nil {
						failures <- err
						continue
					}
					answers[i] = a
					continue
				}
				a, err := one(i, rng)
				if err != nil {
					failures <- err
					continue
				}
				answers[i] = a
			}
		}()
	}
	wg.Wait()
	close(failures)
	elapsed := time.Since(start)
	for err := range failures {
		t.Error(err)
	}

	// Stripe's truth, by the metadata billingd tagged each object with.
	byKey := map[string][]stripesim.PaymentIntent{}
	for _, pi := range h.sim.PaymentIntents() {
		k := pi.Metadata[service.MetadataRequestKey]
		byKey[k] = append(byKey[k], pi)
	}
	var duplicates, lost, mismatched int
	for i := range ops {
		pis := byKey[service.RequestKey(caller, request(i).GetRequestId())]
		switch {
		case len(pis) == 0:
			lost++
			t.Errorf("op %d: nothing at Stripe (answer %+v)", i, answers[i])
			continue
		case len(pis) > 1:
			duplicates++
			t.Errorf("op %d: %d PaymentIntents", i, len(pis))
			continue
		}
		pi, a := pis[0], answers[i]
		wantDeclined := i%declineIn == 0
		if pi.ID != a.piID || a.declined != wantDeclined || (pi.Status == "succeeded") == wantDeclined {
			mismatched++
			t.Errorf("op %d: answer %+v, Stripe holds %s %s", i, a, pi.ID, pi.Status)
		}
		rec, found := h.record(caller, request(i).GetRequestId())
		if !found || !rec.State.Final() {
			t.Errorf("op %d: record %+v not final", i, rec)
		}
	}
	st := h.sim.Stats()
	t.Logf("random faults: %d operations, %d RPCs in %v (%.0f RPC/s); Stripe: %d PaymentIntents, %d idempotent replays, faults %v; duplicates %d, lost %d, mismatched %d",
		ops, calls.Load(), elapsed.Round(time.Millisecond), float64(calls.Load())/elapsed.Seconds(),
		st.PaymentIntentsCreated, st.Replays, st.Faults, duplicates, lost, mismatched)
	byCode.Range(func(k, v any) bool {
		t.Logf("  answers %v: %d", k, v.(*atomic.Int64).Load())
		return true
	})
	if st.PaymentIntentsCreated != ops {
		t.Errorf("PaymentIntentsCreated = %d, want %d", st.PaymentIntentsCreated, ops)
	}
}
