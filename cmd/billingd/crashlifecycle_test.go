package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// TestCrashSIGKILLLifecycleExactlyOnce is the crash test for refunds,
// captures and cancellations: the real billingd, on a bbolt file, against a
// simulator faulting a quarter of its answers, is SIGKILLed at seeded
// moments while callers refund, capture and cancel, retrying with their
// request_ids until definitive. Stripe must hold exactly one refund per
// refund request, every capture and cancellation done once, every answer
// matching, every record final.
func TestCrashSIGKILLLifecycleExactlyOnce(t *testing.T) {
	t.Parallel()
	const (
		groups  = 60
		workers = 8
		kills   = 5
		key     = "sk_test_billingd_crash_lifecycle"
		anon    = "anonymous"
	)
	seed := int64(20261207)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	sim := stripesim.New(stripesim.Config{Seed: seed, APIKeys: []string{key}, Faults: stripesim.Faults{
		RateLimit: 0.05, Unavailable: 0.05, DropBeforeProcessing: 0.05, DropAfterProcessing: 0.05,
		ServerErrorAfterProcessing: 0.05, Latency: 10 * time.Millisecond, LatencyJitter: 30 * time.Millisecond,
	}})
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	db := filepath.Join(t.TempDir(), "billingd.db")
	addr := freeAddr(t)
	conn := dial(t, addr)
	client := billingv1.NewBillingServiceClient(conn)
	lives := 0
	start := func() *instance {
		lives++
		p := execBillingd(t, fmt.Sprintf("billingd-lifecycle-%d", lives),
			[]string{"STRIPE_SECRET_KEY=" + key, "BILLINGD_STORE="},
			"--listen", addr, "--db", db, "--stripe-url", hs.URL, "--stripe-rate", "off", "--reconcile-interval", "100ms", "--shutdown-grace", "5s",
			// A refused over-refund answered 5xx is settled NOT_CREATED once
			// a lookup finds nothing after the lag: keep the test short.
			"--search-lag", "1s")
		waitServing(t, conn, p, p.exited)
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	callers := &retrier{perTry: 2 * time.Second, maxTries: 400, opts: []grpc.CallOption{grpc.WaitForReady(true)}}
	proc := start()

	// The objects to act on, made before the kills begin.
	paid, capt, canc := make([]string, groups), make([]string, groups), make([]string, groups)
	for i := range groups {
		for _, c := range []struct {
			id     string
			manual bool
			into   *string
		}{{fmt.Sprintf("paid-%03d", i), false, &paid[i]}, {fmt.Sprintf("auth-c-%03d", i), true, &capt[i]}, {fmt.Sprintf("auth-x-%03d", i), true, &canc[i]}} {
			req := &billingv1.ChargeRequest{RequestId: c.id, Amount: 1000, Currency: "usd", PaymentMethodId: "pm_card_visa"}
			if c.manual {
				req.CaptureMethod = "manual"
			}
			err := callers.until(ctx, c.id, rng, func(ctx context.Context, opts ...grpc.CallOption) error {
				resp, err := client.Charge(ctx, req, opts...)
				*c.into = resp.GetPaymentIntentId()
				return err
			})
			if err != nil {
				t.Fatalf("charge %s: %v", c.id, err)
			}
		}
	}

	refunds := make([][2]string, groups)
	var answered, next atomic.Int64
	failures := make(chan error, 8*groups)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w+1)))
			for {
				i := int(next.Add(1)) - 1
				if i >= groups || ctx.Err() != nil {
					return
				}
				for j := range 2 {
					req := &billingv1.RefundRequest{RequestId: fmt.Sprintf("refund-%03d-%d", i, j), PaymentIntentId: paid[i], Amount: 400}
					if err := callers.until(ctx, req.RequestId, rng, func(ctx context.Context, opts ...grpc.CallOption) error {
						resp, err := client.Refund(ctx, req, opts...)
						refunds[i][j] = resp.GetRefundId()
						return err
					}); err != nil {
						failures <- fmt.Errorf("%s: %w", req.RequestId, err)
					}
				}
				over := &billingv1.RefundRequest{RequestId: fmt.Sprintf("over-%03d", i), PaymentIntentId: paid[i], Amount: 201}
				err := callers.until(ctx, over.RequestId, rng, func(ctx context.Context, opts ...grpc.CallOption) error {
					_, err := client.Refund(ctx, over, opts...)
					return err
				})
				if status.Code(err) != codes.FailedPrecondition {
					failures <- fmt.Errorf("%s: %v, want FAILED_PRECONDITION", over.RequestId, err)
				}
				capture := &billingv1.CapturePaymentRequest{RequestId: fmt.Sprintf("capture-%03d", i), PaymentIntentId: capt[i]}
				if err := callers.until(ctx, capture.RequestId, rng, func(ctx context.Context, opts ...grpc.CallOption) error {
					_, err := client.CapturePayment(ctx, capture, opts...)
					return err
				}); err != nil {
					failures <- fmt.Errorf("%s: %w", capture.RequestId, err)
				}
				cancelReq := &billingv1.CancelPaymentRequest{RequestId: fmt.Sprintf("cancel-%03d", i), PaymentIntentId: canc[i]}
				if err := callers.until(ctx, cancelReq.RequestId, rng, func(ctx context.Context, opts ...grpc.CallOption) error {
					_, err := client.CancelPayment(ctx, cancelReq, opts...)
					return err
				}); err != nil {
					failures <- fmt.Errorf("%s: %w", cancelReq.RequestId, err)
				}
				answered.Add(1)
			}
		}()
	}
	for k := range kills {
		target := int64(groups * (k + 1) / (kills + 1))
		for ctx.Err() == nil && answered.Load() < target {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
		proc.kill(t)
		proc = start()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	proc.stop(t)

	byKey := map[string][]stripesim.Refund{}
	for _, r := range sim.Refunds() {
		k := r.Metadata[service.MetadataRequestKey]
		byKey[k] = append(byKey[k], r)
	}
	pis := map[string]stripesim.PaymentIntent{}
	for _, pi := range sim.PaymentIntents() {
		pis[pi.ID] = pi
	}
	var duplicates, lost, mismatched int
	for i := range groups {
		for j := range 2 {
			got := byKey[service.RequestKey(anon, fmt.Sprintf("refund-%03d-%d", i, j))]
			switch {
			case len(got) == 0:
				lost++
			case len(got) > 1:
				duplicates++
			case got[0].ID != refunds[i][j] || got[0].Amount != 400:
				mismatched++
				t.Errorf("refund %d-%d: answered %s, Stripe holds %+v", i, j, refunds[i][j], got[0])
			}
		}
		if got := byKey[service.RequestKey(anon, fmt.Sprintf("over-%03d", i))]; len(got) != 0 {
			t.Errorf("over-refund %d created %d refunds", i, len(got))
		}
		if pis[capt[i]].Status != "succeeded" || pis[canc[i]].Status != "canceled" {
			mismatched++
			t.Errorf("group %d: captured %s, canceled %s", i, pis[capt[i]].Status, pis[canc[i]].Status)
		}
	}
	if duplicates+lost > 0 {
		t.Errorf("refunds: %d duplicated, %d lost", duplicates, lost)
	}
	store, err := storage.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// Every operation's record is final. (The authorised charges they acted
	// on are followed to their end by the reconciler on its backoff.)
	for i := range groups {
		for _, id := range []string{fmt.Sprintf("refund-%03d-0", i), fmt.Sprintf("refund-%03d-1", i),
			fmt.Sprintf("over-%03d", i), fmt.Sprintf("capture-%03d", i), fmt.Sprintf("cancel-%03d", i)} {
			rec, found, err := store.Get(ctx, anon, id)
			if err != nil || !found || !rec.State.Final() {
				t.Errorf("record %s: %v %v, %v", id, rec.State, found, err)
			}
		}
	}
	t.Logf("crash (lifecycle): %d groups, %d refunds at Stripe, %d SIGKILLs; duplicates %d, lost %d, mismatched %d; faults %v",
		groups, len(sim.Refunds()), kills, duplicates, lost, mismatched, sim.Stats().Faults)
	callers.logCodes(t)
}
