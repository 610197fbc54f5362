package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/storage/postgres"
	"github.com/billingd/billingd/storage/postgres/pgtest"
)

// replica is one billingd process of the replica test, with its own client.
type replica struct {
	*instance
	conn   *grpc.ClientConn
	client billingv1.BillingServiceClient
}

// startReplica execs billingd serve on the shared database and simulator.
// The DSN and the Stripe key travel in the environment, never in arguments.
func startReplica(t *testing.T, name, dsn, simURL, key string) *replica {
	t.Helper()
	addr := freeAddr(t)
	p := execBillingd(t, name, []string{"BILLINGD_STORE=" + dsn, "STRIPE_SECRET_KEY=" + key},
		"--listen", addr, "--stripe-url", simURL, "--stripe-rate", "off",
		"--lease-ttl", "1s", "--reconcile-interval", "250ms", "--shutdown-grace", "5s")
	conn := dial(t, addr)
	return &replica{instance: p, conn: conn, client: billingv1.NewBillingServiceClient(conn)}
}

// TestReplicasExactlyOnceThroughSIGKILL is the multi-replica acceptance
// test: three billingd processes on one PostgreSQL database and one Stripe
// simulator that fails at random; callers spray the same request_ids at all
// three at once, each retrying (at the next replica) until its answer is
// definitive; one replica is SIGKILLed mid-run while it holds leases.
// Afterwards Stripe must hold exactly one object per operation (no
// duplicate, none lost), every answer must match it, every record must be
// final, and the records the killed replica was driving must have been
// taken over once their leases expired.
func TestReplicasExactlyOnceThroughSIGKILL(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	const (
		ops       = 1000
		workers   = 16
		declineIn = 10
		seed      = 20261123
		key       = "sk_test_billingd_replicas"
		anonymous = "anonymous" // no caller tokens: loopback, one caller
	)
	sim := stripesim.New(stripesim.Config{Seed: seed, APIKeys: []string{key}, Faults: stripesim.Faults{
		RateLimit:                  0.03,
		Unavailable:                0.04,
		DropBeforeProcessing:       0.02,
		DropAfterProcessing:        0.04,
		ServerErrorAfterProcessing: 0.02,
		Latency:                    20 * time.Millisecond,
		LatencyJitter:              30 * time.Millisecond,
	}})
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)

	var reps []*replica
	for i := range 3 {
		reps = append(reps, startReplica(t, fmt.Sprintf("replica-%d", i), dsn, hs.URL, key))
	}
	for _, r := range reps {
		waitServing(t, r.conn, r, r.exited)
	}
	victim := reps[2]

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reqs := make([]*billingv1.ChargeRequest, ops)
	for i := range reqs {
		reqs[i] = &billingv1.ChargeRequest{RequestId: fmt.Sprintf("spray-%04d", i), Amount: int64(100 + i),
			Currency: "usd", PaymentMethodId: "pm_card_visa"}
		if i%declineIn == 0 {
			reqs[i].PaymentMethodId = "pm_card_chargeDeclined"
		}
	}
	var answered atomic.Int64
	callers := &retrier{perTry: 3 * time.Second}
	// one drives operation i to a definitive answer, starting at replica
	// first and moving to the next one on every retry.
	one := func(i, first int, rng *rand.Rand) (answer, error) {
		return callers.charge(ctx, reqs[i], rng, func(try int) (billingv1.BillingServiceClient, string) {
			r := reps[(first+try)%len(reps)]
			return r.client, r.name
		})
	}

	answers := make([]answer, ops)
	failures := make(chan error, 2*ops)
	next := atomic.Int64{}
	start := time.Now()
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
				// Two callers with the same request, at two replicas at once.
				var (
					dup    answer
					dupErr error
					dwg    sync.WaitGroup
				)
				dwg.Add(1)
				go func() {
					defer dwg.Done()
					dup, dupErr = one(i, i+1, rand.New(rand.NewPCG(seed, uint64(i))))
				}()
				a, err := one(i, i, rng)
				dwg.Wait()
				switch {
				case err != nil:
					failures <- err
				case dupErr != nil:
					failures <- dupErr
				case a != dup:
					failures <- fmt.Errorf("op %d: the two callers got different answers: %+v and %+v", i, a, dup)
				default:
					answers[i] = a
				}
				answered.Add(1)
			}
		}()
	}

	// Kill the victim once a third of the operations are answered, at a
	// moment it holds leases (drives in flight).
	pool := connect(t, dsn)
	var orphans []string
	for answered.Load() < ops/3 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	for ctx.Err() == nil {
		if held := leasedBy(t, pool, victim.cmd.Process.Pid); len(held) >= 3 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	victim.kill(t)
	killedAt := time.Since(start)
	orphans = leasedBy(t, pool, victim.cmd.Process.Pid)
	if len(orphans) == 0 {
		t.Errorf("the killed replica held no lease at its death: nothing was orphaned, the takeover is untested")
	}

	wg.Wait()
	close(failures)
	elapsed := time.Since(start)
	for err := range failures {
		t.Error(err)
	}

	store, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v := checkExactlyOnce(ctx, t, sim, store, anonymous, reqs, answers)

	// The surviving replicas still shut down cleanly.
	for _, r := range reps[:2] {
		r.stop(t)
	}

	st := sim.Stats()
	rpcs := callers.rpcs.Load()
	t.Logf("replicas: %d operations (every one sent by two callers at two replicas), %d RPCs in %v (%.0f RPC/s); %s SIGKILLed at %v holding %d leases, all taken over",
		ops, rpcs, elapsed.Round(time.Millisecond), float64(rpcs)/elapsed.Seconds(),
		victim.name, killedAt.Round(time.Millisecond), len(orphans))
	t.Logf("  Stripe: %d PaymentIntents, %d idempotent replays, faults %v", st.PaymentIntentsCreated, st.Replays, st.Faults)
	t.Logf("  duplicates %d, lost %d, mismatched %d, records not final %d", v.duplicates, v.lost, v.mismatched, v.open)
	callers.logCodes(t)
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// leasedBy lists the open records whose lease the billingd process pid
// holds (lease holders are named host:pid:random).
func leasedBy(t *testing.T, conn *pgx.Conn, pid int) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT request_id FROM records
		WHERE state IN (1, 4) AND lease_owner LIKE '%:' || $1::text || ':%'`, fmt.Sprint(pid))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return ids
}
