package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/postgres"
	"github.com/billingd/billingd/storage/postgres/pgtest"
)

// runAsBillingd makes the test binary billingd itself when exec'd with it
// set: the replica test runs real, separate billingd processes (each its
// own lease holder, killable by PID) without building another binary.
const runAsBillingd = "BILLINGD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsBillingd) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// replica is one billingd process of the replica test.
type replica struct {
	name   string
	addr   string
	cmd    *exec.Cmd
	log    string // its stderr, for failures
	conn   *grpc.ClientConn
	client billingv1.BillingServiceClient
	exited chan struct{}
}

// startReplica execs billingd serve on the shared database and simulator.
// The DSN and the Stripe key travel in the environment, never in arguments.
func startReplica(t *testing.T, name, dsn, simURL, key string) *replica {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{name: name, addr: freeAddr(t), log: filepath.Join(t.TempDir(), name+".log"), exited: make(chan struct{})}
	logf, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command(exe, "serve", "--listen", r.addr, "--stripe-url", simURL,
		"--lease-ttl", "1s", "--reconcile-interval", "250ms", "--shutdown-grace", "5s")
	r.cmd.Env = append(os.Environ(), runAsBillingd+"=1", "BILLINGD_STORE="+dsn, "STRIPE_SECRET_KEY="+key)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.exited) }()
	t.Cleanup(func() {
		select {
		case <-r.exited:
		default: // still running: this test started it, so it stops it, by its PID
			_ = syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL)
			<-r.exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(r.log)
			t.Logf("%s (pid %d) log, last 3000 bytes:\n%s", name, r.cmd.Process.Pid, tail(b, 3000))
		}
	})
	r.conn, err = grpc.NewClient(r.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.conn.Close() })
	r.client = billingv1.NewBillingServiceClient(r.conn)
	return r
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// waitServing polls the replica's health service (bounded).
func (r *replica) waitServing(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	hc := healthpb.NewHealthClient(r.conn)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-r.exited:
			t.Fatalf("%s exited before serving", r.name)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not serving after 30s: %v", r.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
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
		r.waitServing(t)
	}
	victim := reps[2]

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type answer struct {
		piID     string
		declined bool
	}
	request := func(i int) *billingv1.ChargeRequest {
		r := &billingv1.ChargeRequest{RequestId: fmt.Sprintf("spray-%04d", i), Amount: int64(100 + i),
			Currency: "usd", PaymentMethodId: "pm_card_visa"}
		if i%declineIn == 0 {
			r.PaymentMethodId = "pm_card_chargeDeclined"
		}
		return r
	}
	var (
		rpcs, answered atomic.Int64
		byCode         sync.Map // "code reason" → *atomic.Int64
	)
	count := func(err error) {
		k := status.Code(err).String()
		if ei := errorInfo(err); ei != nil {
			k += " " + ei.GetReason()
		}
		v, _ := byCode.LoadOrStore(k, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	// one drives operation i to a definitive answer, starting at replica
	// first and moving to the next one on every retry.
	one := func(i, first int, rng *rand.Rand) (answer, error) {
		req := request(i)
		for try := 0; ctx.Err() == nil; try++ {
			r := reps[(first+try)%len(reps)]
			cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := r.client.Charge(cctx, req)
			ccancel()
			rpcs.Add(1)
			count(err)
			switch status.Code(err) {
			case codes.OK:
				return answer{piID: resp.GetPaymentIntentId()}, nil
			case codes.FailedPrecondition:
				ei := errorInfo(err)
				if ei.GetReason() != "CARD_DECLINED" {
					return answer{}, fmt.Errorf("op %d at %s: %v", i, r.name, err)
				}
				return answer{piID: ei.GetMetadata()["stripe_object_id"], declined: true}, nil
			case codes.Unavailable, codes.DeadlineExceeded:
				time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
			default:
				return answer{}, fmt.Errorf("op %d at %s: unexpected %v", i, r.name, err)
			}
		}
		return answer{}, fmt.Errorf("op %d: no definitive answer before the test's deadline", i)
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
	if err := syscall.Kill(victim.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", victim.name, err)
	}
	<-victim.exited
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

	// Stripe's truth, by the request key billingd tags every object with.
	byKey := map[string][]stripesim.PaymentIntent{}
	for _, pi := range sim.PaymentIntents() {
		k := pi.Metadata[service.MetadataRequestKey]
		byKey[k] = append(byKey[k], pi)
	}
	store, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var duplicates, lost, mismatched, open int
	for i := range ops {
		id := request(i).GetRequestId()
		pis := byKey[service.RequestKey(anonymous, id)]
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
		pi, a, wantDeclined := pis[0], answers[i], i%declineIn == 0
		if pi.ID != a.piID || a.declined != wantDeclined || (pi.Status == "succeeded") == wantDeclined {
			mismatched++
			t.Errorf("op %d: answered %+v, Stripe holds %s %s", i, a, pi.ID, pi.Status)
		}
		rec, found, err := store.Get(ctx, anonymous, id)
		if err != nil || !found || !rec.State.Final() || rec.Result.ObjectID != pi.ID {
			open++
			t.Errorf("op %d: record %v %+v found %v, %v; want final on %s", i, rec.State, rec.Result, found, err, pi.ID)
		}
	}
	counts, err := store.CountByState(ctx)
	if err != nil || counts[service.StatePending]+counts[service.StateIndeterminate] != 0 ||
		counts[service.StateSucceeded]+counts[service.StateFailed] != ops {
		t.Errorf("records by state = %v, %v; want %d, all final", counts, err, ops)
	}

	// The surviving replicas still shut down cleanly.
	for _, r := range reps[:2] {
		if err := syscall.Kill(r.cmd.Process.Pid, syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM %s: %v", r.name, err)
		}
	}
	for _, r := range reps[:2] {
		select {
		case <-r.exited:
			if code := r.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("%s exited %d after SIGTERM", r.name, code)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s of SIGTERM", r.name)
		}
	}

	st := sim.Stats()
	t.Logf("replicas: %d operations (every one sent by two callers at two replicas), %d RPCs in %v (%.0f RPC/s); %s SIGKILLed at %v holding %d leases, all taken over",
		ops, rpcs.Load(), elapsed.Round(time.Millisecond), float64(rpcs.Load())/elapsed.Seconds(),
		victim.name, killedAt.Round(time.Millisecond), len(orphans))
	t.Logf("  Stripe: %d PaymentIntents, %d idempotent replays, faults %v", st.PaymentIntentsCreated, st.Replays, st.Faults)
	t.Logf("  duplicates %d, lost %d, mismatched %d, records not final %d", duplicates, lost, mismatched, open)
	byCode.Range(func(k, v any) bool {
		t.Logf("  answers %v: %d", k, v.(*atomic.Int64).Load())
		return true
	})
	if st.PaymentIntentsCreated != ops {
		t.Errorf("PaymentIntentsCreated = %d, want %d", st.PaymentIntentsCreated, ops)
	}
}

func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
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
