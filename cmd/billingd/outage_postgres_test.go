package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/postgres"
)

// pgServer is a PostgreSQL server of the test's own, started by
// .ci/postgres.sh and stopped and started again with pg_ctl.
type pgServer struct {
	bin, dir, port, dsn string
}

// startPostgres starts a throwaway PostgreSQL on a loopback port of its own
// and removes it at cleanup. Without PostgreSQL's server binaries the test
// is skipped, saying so.
func startPostgres(t *testing.T) *pgServer {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bins) == 0 {
		t.Skip("needs PostgreSQL's server binaries (pg_ctl, initdb under /usr/lib/postgresql/*/bin): apt-get install postgresql, or .ci/postgres.sh start installs them")
	}
	_, port, _ := net.SplitHostPort(freeAddr(t))
	script, err := filepath.Abs("../../.ci/postgres.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script, "start")
	cmd.Env = append(os.Environ(), "BILLINGD_PG_PORT="+port)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("postgres.sh start: %v\n%s", err, stderr.String())
	}
	pg := &pgServer{bin: filepath.Dir(bins[0]), port: port}
	for line := range strings.Lines(string(out)) {
		k, v, _ := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
		v = strings.Trim(v, "'")
		switch k {
		case "BILLINGD_PG_DIR":
			pg.dir = v
		case "BILLINGD_TEST_POSTGRES":
			pg.dsn = v
		}
	}
	if pg.dir == "" || pg.dsn == "" {
		t.Fatalf("postgres.sh start printed %q", out)
	}
	t.Cleanup(func() {
		stop := exec.Command(script, "stop")
		stop.Env = append(os.Environ(), "BILLINGD_PG_DIR="+pg.dir)
		if out, err := stop.CombinedOutput(); err != nil {
			t.Errorf("postgres.sh stop: %v\n%s", err, out)
		}
	})
	return pg
}

// pgCtl runs pg_ctl as the database user (postgres, when the test is root).
func (pg *pgServer) pgCtl(t *testing.T, args ...string) {
	t.Helper()
	name, argv := filepath.Join(pg.bin, "pg_ctl"), append([]string{"-D", filepath.Join(pg.dir, "data")}, args...)
	if os.Geteuid() == 0 {
		name, argv = "runuser", append([]string{"-u", "postgres", "--", name}, argv...)
	}
	if out, err := exec.Command(name, argv...).CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %v: %v\n%s", args, err, out)
	}
}

// crash stops the server as a power cut would: no checkpoint, every
// connection dropped; the next start recovers from the WAL.
func (pg *pgServer) crash(t *testing.T) { pg.pgCtl(t, "-m", "immediate", "-w", "stop") }

func (pg *pgServer) start(t *testing.T) {
	pg.pgCtl(t, "-l", filepath.Join(pg.dir, "server.log"), "-w", "-t", "60", "-o",
		"-c listen_addresses=127.0.0.1 -c port="+pg.port+" -c unix_socket_directories="+pg.dir+" -c max_connections=300", "start")
}

// TestPostgresOutageFailsClosed runs two billingd replicas on a PostgreSQL
// of the test's own, charges from concurrent callers, stops PostgreSQL hard
// (pg_ctl stop -m immediate) in the middle and starts it again 10 s later.
// During the outage every answer must be UNAVAILABLE, for
// STORAGE_UNAVAILABLE (or REQUEST_IN_PROGRESS, UPSTREAM_*), with RetryInfo,
// well inside its deadline; health must say NOT_SERVING on both replicas, and
// SERVING again after. Stripe must have received no create without its
// record (creates during the outage only for records claimed before it),
// and after recovery every request retried with its request_id must end with
// exactly one PaymentIntent.
func TestPostgresOutageFailsClosed(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t)
	const (
		ops       = 600
		workers   = 16
		perTry    = 2 * time.Second
		outage    = 10 * time.Second
		declineIn = 10
		key       = "sk_test_billingd_pg_outage"
		caller    = "anonymous"
	)
	sim := stripesim.New(stripesim.Config{Seed: 11, APIKeys: []string{key}, Faults: stripesim.Faults{
		Latency: 5 * time.Millisecond, LatencyJitter: 10 * time.Millisecond}})
	creates := &createLog{next: sim}
	hs := httptest.NewServer(creates)
	t.Cleanup(hs.Close)
	reps := []*replica{
		startReplica(t, "replica-0", pg.dsn, hs.URL, key),
		startReplica(t, "replica-1", pg.dsn, hs.URL, key),
	}
	for _, r := range reps {
		waitServing(t, r.conn, r, r.exited)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	reqs := make([]*billingv1.ChargeRequest, ops)
	for i := range reqs {
		reqs[i] = &billingv1.ChargeRequest{RequestId: fmt.Sprintf("pgdown-%04d", i), Amount: int64(100 + i),
			Currency: "usd", PaymentMethodId: "pm_card_visa"}
		if i%declineIn == 0 {
			reqs[i].PaymentMethodId = "pm_card_chargeDeclined"
		}
	}

	// The outage window, [down, up): unix ns, 0 until known.
	var down, up atomic.Int64
	inOutage := func(at time.Time) bool {
		d, u := down.Load(), up.Load()
		return d != 0 && at.UnixNano() >= d && (u == 0 || at.UnixNano() < u)
	}
	var (
		tally    outageTally
		answered atomic.Int64
		rpcs     atomic.Int64
		answers  = make([]answer, ops)
		failures = make(chan error, ops)
		next     atomic.Int64
		wg       sync.WaitGroup
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(11, uint64(w)))
			for {
				i := int(next.Add(1)) - 1
				if i >= ops {
					return
				}
				a, err := chargeThrough(ctx, reqs[i], reps, i, perTry, rng, func(began time.Time, err error) {
					rpcs.Add(1)
					if inOutage(began) {
						tally.add(reqs[i].GetRequestId(), outageAnswer{key: answerKey(err), took: time.Since(began), err: err}, perTry)
					}
				})
				if err != nil {
					failures <- err
				}
				answers[i] = a
				answered.Add(1)
			}
		}()
	}

	// Stop PostgreSQL hard once a fifth of the operations are answered.
	for answered.Load() < ops/5 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	answeredBefore := answered.Load()
	pg.crash(t)
	down.Store(time.Now().UnixNano())
	notServingIn := make([]time.Duration, len(reps))
	for i, r := range reps {
		notServingIn[i] = waitHealth(t, r.name, r.conn, healthpb.HealthCheckResponse_NOT_SERVING, 3*time.Second)
	}
	// Health stays NOT_SERVING on both for the rest of the outage.
	healthChecks := 0
	for time.Since(time.Unix(0, down.Load())) < outage {
		for _, r := range reps {
			if got, err := healthOf(r.conn); err != nil || got != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("%s: health during the outage = %v, %v; want NOT_SERVING", r.name, got, err)
			}
			healthChecks++
		}
		time.Sleep(100 * time.Millisecond)
	}
	up.Store(time.Now().UnixNano())
	pg.start(t)
	restarted := time.Now()
	servingIn := make([]time.Duration, len(reps))
	for i, r := range reps {
		servingIn[i] = waitHealth(t, r.name, r.conn, healthpb.HealthCheckResponse_SERVING, 10*time.Second)
	}
	servingIn[1] += servingIn[0] // waited one after the other

	wg.Wait()
	close(failures)
	for err := range failures {
		t.Error(err)
	}
	tally.check(t)
	if answered.Load() == answeredBefore {
		t.Errorf("every operation was answered before the outage: it tested nothing")
	}

	store, err := postgres.Open(ctx, pg.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	// No create without its record: every create Stripe received while
	// PostgreSQL was down belongs to a record claimed before it went down.
	during := creates.between(time.Unix(0, down.Load()), time.Unix(0, up.Load()))
	for _, cr := range during {
		id := ""
		for _, req := range reqs {
			if service.RequestKey(caller, req.GetRequestId()) == cr.requestKey {
				id = req.GetRequestId()
			}
		}
		rec, found, err := store.Get(ctx, caller, id)
		if err != nil || !found || !rec.Created.Before(time.Unix(0, down.Load())) {
			t.Errorf("create of %q (%s) during the outage: record %v %v (created %v), want one claimed before %v",
				id, cr.requestKey, found, err, rec.Created, time.Unix(0, down.Load()))
		}
	}
	v := checkExactlyOnce(ctx, t, sim, store, caller, reqs, answers)
	for _, r := range reps {
		r.stop(t)
	}

	t.Logf("PostgreSQL stopped hard (-m immediate) for %v under load: %d operations, %d RPCs at 2 replicas; %d answered before the stop",
		outage, ops, rpcs.Load(), answeredBefore)
	t.Logf("  outage answers: %s", &tally)
	t.Logf("  health NOT_SERVING %v and %v after the stop, on every one of %d checks during the outage; SERVING %v and %v after the restart (pg_ctl start took %v)",
		notServingIn[0].Round(time.Millisecond), notServingIn[1].Round(time.Millisecond), healthChecks,
		servingIn[0].Round(time.Millisecond), servingIn[1].Round(time.Millisecond), restarted.Sub(time.Unix(0, up.Load())).Round(time.Millisecond))
	t.Logf("  Stripe: %d PaymentIntents, %d creates during the outage (all of records claimed before it), %d idempotent replays; duplicates %d, lost %d, mismatched %d, records not final %d",
		sim.Stats().PaymentIntentsCreated, len(during), sim.Stats().Replays, v.duplicates, v.lost, v.mismatched, v.open)
}

// chargeThrough sends req until its answer is definitive (OK or
// CARD_DECLINED), at replica (first+try)%2, retrying UNAVAILABLE and
// DEADLINE_EXCEEDED after a short pause; seen is told about every RPC.
func chargeThrough(ctx context.Context, req *billingv1.ChargeRequest, reps []*replica, first int, perTry time.Duration,
	rng *rand.Rand, seen func(began time.Time, err error)) (answer, error) {
	for try := 0; ctx.Err() == nil; try++ {
		r := reps[(first+try)%len(reps)]
		cctx, cancel := context.WithTimeout(ctx, perTry)
		began := time.Now()
		resp, err := r.client.Charge(cctx, req)
		cancel()
		seen(began, err)
		switch status.Code(err) {
		case codes.OK:
			return answer{piID: resp.GetPaymentIntentId()}, nil
		case codes.FailedPrecondition:
			ei := errorInfo(err)
			if ei.GetReason() != "CARD_DECLINED" {
				return answer{}, fmt.Errorf("%s at %s: %v", req.GetRequestId(), r.name, err)
			}
			return answer{piID: ei.GetMetadata()["stripe_object_id"], declined: true}, nil
		case codes.Unavailable, codes.DeadlineExceeded:
			time.Sleep(time.Duration(20+rng.IntN(30)) * time.Millisecond)
		default:
			return answer{}, fmt.Errorf("%s at %s: unexpected %v", req.GetRequestId(), r.name, err)
		}
	}
	return answer{}, fmt.Errorf("%s: no definitive answer before the test's deadline", req.GetRequestId())
}
