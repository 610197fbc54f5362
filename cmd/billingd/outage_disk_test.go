package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// mountSmallFS mounts a tmpfs of size (e.g. "4m") for the test and unmounts
// it at cleanup, after the processes the test starts later are gone. It
// skips the test where mounting is not allowed (not root, no CAP_SYS_ADMIN).
func mountSmallFS(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Skipf("needs to mount a small tmpfs (root or CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// fill writes path until the filesystem refuses (ENOSPC) and returns how
// much it wrote.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// TestDiskFullFailsClosed runs billingd on a bbolt file on a 4 MiB tmpfs,
// fills the filesystem with another file, and charges until writes fail:
// every request that cannot be recorded must answer UNAVAILABLE
// STORAGE_UNAVAILABLE with RetryInfo at once, health must say NOT_SERVING,
// and nothing may reach Stripe without its record. Then the other file is
// deleted: health must turn SERVING without a restart, and every request,
// retried with its request_id, must end with exactly one PaymentIntent.
func TestDiskFullFailsClosed(t *testing.T) {
	t.Parallel()
	dir := mountSmallFS(t, "4m")
	const (
		before  = 40  // charges recorded before the disk fills
		maxFull = 600 // new charges tried on the full disk, at most
		workers = 8
		perTry  = 2 * time.Second
		key     = "sk_test_billingd_diskfull"
		caller  = "anonymous"
	)
	sim := stripesim.New(stripesim.Config{Seed: 7, APIKeys: []string{key}})
	creates := &createLog{next: sim}
	hs := httptest.NewServer(creates)
	t.Cleanup(hs.Close)

	addr := freeAddr(t)
	dbPath := filepath.Join(dir, "billingd.db")
	p := execBillingd(t, "billingd", []string{"STRIPE_SECRET_KEY=" + key},
		"--listen", addr, "--db", dbPath, "--stripe-url", hs.URL,
		"--reconcile-interval", "250ms", "--shutdown-grace", "5s")
	conn := dial(t, addr)
	client := billingv1.NewBillingServiceClient(conn)
	waitServing(t, conn, p, p.exited)

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	charge := func(i int) *billingv1.ChargeRequest {
		req := &billingv1.ChargeRequest{RequestId: fmt.Sprintf("disk-%04d", i), Amount: int64(100 + i),
			Currency: "usd", PaymentMethodId: "pm_card_visa", Description: "a description that makes the record bigger"}
		if i%10 == 0 {
			req.PaymentMethodId = "pm_card_chargeDeclined"
		}
		return req
	}
	var reqs []*billingv1.ChargeRequest
	for i := range before {
		reqs = append(reqs, charge(i))
		_, err := client.Charge(ctx, reqs[i])
		if c := status.Code(err); c != codes.OK && c != codes.FailedPrecondition {
			t.Fatalf("charge before the disk filled: %v", err)
		}
	}

	filler := filepath.Join(dir, "filler")
	filled := fill(t, filler)

	// Charge new requests, one try each, until writes fail for a while.
	var (
		tally      outageTally
		recorded   atomic.Int64 // answered OK or CARD_DECLINED on the full disk
		failedAt   atomic.Int64 // unix ns of the first STORAGE_UNAVAILABLE
		unrecorded sync.Map     // request_id → true: answered STORAGE_UNAVAILABLE
		next       atomic.Int64
		storageErr atomic.Int64
		wg         sync.WaitGroup
		mu         sync.Mutex
	)
	next.Store(before)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for storageErr.Load() < 100 {
				i := int(next.Add(1)) - 1
				if i >= before+maxFull || ctx.Err() != nil {
					return
				}
				req := charge(i)
				mu.Lock()
				reqs = append(reqs, req)
				mu.Unlock()
				cctx, ccancel := context.WithTimeout(ctx, perTry)
				began := time.Now()
				_, err := client.Charge(cctx, req)
				took := time.Since(began)
				ccancel()
				switch c := status.Code(err); {
				case c == codes.OK || (c == codes.FailedPrecondition && errorInfo(err).GetReason() == "CARD_DECLINED"):
					recorded.Add(1) // the record was written: a commit found room
				default:
					tally.add(req.GetRequestId(), outageAnswer{key: answerKey(err), took: took, err: err}, perTry)
					if errorInfo(err).GetReason() == "STORAGE_UNAVAILABLE" {
						failedAt.CompareAndSwap(0, time.Now().UnixNano())
						storageErr.Add(1)
						unrecorded.Store(req.GetRequestId(), true)
					}
				}
			}
		}()
	}
	wg.Wait()
	tally.check(t)
	if storageErr.Load() == 0 {
		t.Fatalf("no write failed on the full disk (%d charges recorded): the outage is untested", recorded.Load())
	}
	// The failing calls turned health NOT_SERVING at once, and it stays so
	// while the disk is full: pings that probe with a write fail too.
	notServing, _ := healthOf(conn)
	if notServing != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health while the disk is full = %v, want NOT_SERVING", notServing)
	}
	for range 25 { // 2.5 probe intervals
		if got, err := healthOf(conn); err != nil || got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("health while the disk is still full = %v, %v; want NOT_SERVING", got, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Nothing reached Stripe without its record: a request answered
	// STORAGE_UNAVAILABLE either has no record and no PaymentIntent, or its
	// claim was written and only a later write failed.
	byKey := paymentIntentsByKey(sim)
	noRecord, claimedOnly := 0, 0
	unrecorded.Range(func(k, _ any) bool {
		id := k.(string)
		_, err := client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: id})
		switch status.Code(err) {
		case codes.NotFound:
			noRecord++
			if pis := byKey[service.RequestKey(caller, id)]; len(pis) != 0 {
				t.Errorf("%s: no record, but Stripe holds %s", id, pis[0].ID)
			}
		case codes.OK:
			claimedOnly++
		default:
			t.Errorf("GetOperation %s: %v", id, err)
		}
		return true
	})

	// Free the space: health comes back without a restart.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	backIn := waitHealth(t, "billingd", conn, healthpb.HealthCheckResponse_SERVING, 5*time.Second)

	// Every request, retried with its request_id, ends definitively.
	callers := &retrier{perTry: perTry}
	answers := make([]answer, len(reqs))
	rng := rand.New(rand.NewPCG(7, 1))
	for i, req := range reqs {
		a, err := callers.charge(ctx, req, rng, func(int) (billingv1.BillingServiceClient, string) { return client, "billingd" })
		if err != nil {
			t.Fatal(err)
		}
		answers[i] = a
	}
	p.stop(t)
	db, err := storage.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v := checkExactlyOnce(ctx, t, sim, db, caller, reqs, answers)

	t.Logf("disk full (tmpfs 4 MiB, filler %d KiB): %d requests; on the full disk %d recorded by commits that found room, %d failed closed (%d without a record, %d with only their claim)",
		filled>>10, len(reqs), recorded.Load(), storageErr.Load(), noRecord, claimedOnly)
	t.Logf("  answers on the full disk: %s; health NOT_SERVING at the first failure and after, SERVING %v after the space was freed",
		&tally, backIn.Round(time.Millisecond))
	t.Logf("  Stripe: %d PaymentIntents; duplicates %d, lost %d, mismatched %d, records not final %d",
		sim.Stats().PaymentIntentsCreated, v.duplicates, v.lost, v.mismatched, v.open)
}
