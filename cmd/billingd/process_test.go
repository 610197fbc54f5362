package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// The end-to-end tests that kill billingd (replicas_test.go, crash_test.go)
// share what is here: billingd as a real process, a caller that retries to a
// definitive answer, and the check of every answer against Stripe's truth.

// runAsBillingd makes the test binary billingd itself when exec'd with it
// set: the tests run real, separate billingd processes (killable by PID)
// without building another binary.
const runAsBillingd = "BILLINGD_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsBillingd) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// instance is one billingd process a test started.
type instance struct {
	name   string
	cmd    *exec.Cmd
	log    string     // its stdout and stderr, for failures
	exited chan error // closed (never sent on) once the process has exited
}

// execBillingd execs `billingd serve args...` with env added to the test's
// environment; secrets travel in env, never in args. The test stops the
// process, by its PID, if it still runs at cleanup, and prints the end of its
// log if the test failed.
func execBillingd(t *testing.T, name string, env []string, args ...string) *instance {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &instance{name: name, log: filepath.Join(t.TempDir(), name+".log"), exited: make(chan error)}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(exe, append([]string{"serve"}, args...)...)
	p.cmd.Env = append(append(os.Environ(), runAsBillingd+"=1"), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.exited) }()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default: // still running: this test started it, so it stops it, by its PID
			_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s", p)
		}
	})
	return p
}

// String is the process's state and the end of its log, for failure
// messages (waitServing prints it).
func (p *instance) String() string {
	b, _ := os.ReadFile(p.log)
	state := "running"
	select {
	case <-p.exited:
		state = p.cmd.ProcessState.String()
	default:
	}
	return fmt.Sprintf("%s (pid %d, %s) log, ERROR lines:\n%s\nlast 3000 bytes:\n%s",
		p.name, p.cmd.Process.Pid, state, errorLines(b, 20), tail(b, 3000))
}

// errorLines is the first n ERROR lines of a log: an INTERNAL answer's cause
// is on one, often far from the tail.
func errorLines(b []byte, n int) string {
	var out []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, `"level":"ERROR"`) {
			if out = append(out, line); len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "")
}

// kill SIGKILLs the process by its PID and waits until it is gone, so that
// its listener and its bbolt file lock are released.
func (p *instance) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v", p.name, err)
	}
	<-p.exited
}

// stop SIGTERMs the process and wants it to exit 0 within 30 s.
func (p *instance) stop(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %s: %v", p.name, err)
		return
	}
	select {
	case <-p.exited:
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("%s exited %d after SIGTERM", p.name, code)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", p.name)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// dial connects to billingd at addr. It reconnects within 200 ms of a
// restart, where gRPC's default backoff would wait seconds.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// answer is what a caller was finally told about one operation.
type answer struct {
	piID     string
	declined bool
}

// retrier drives Charges to a definitive answer as a well-behaved client
// does: the same request on every try, retrying UNAVAILABLE (which is also
// what gRPC reports for a connection billingd's death broke) and
// DEADLINE_EXCEEDED; and it tallies every RPC by code and reason.
type retrier struct {
	perTry   time.Duration
	maxTries int // 0: until ctx is done
	opts     []grpc.CallOption

	rpcs   atomic.Int64
	byCode sync.Map // "code reason" → *atomic.Int64
}

// charge sends req until it is answered OK or CARD_DECLINED; at picks the
// billingd of each try.
func (c *retrier) charge(ctx context.Context, req *billingv1.ChargeRequest, rng *rand.Rand,
	at func(try int) (billingv1.BillingServiceClient, string)) (answer, error) {
	for try := 0; ctx.Err() == nil && (c.maxTries == 0 || try < c.maxTries); try++ {
		client, name := at(try)
		cctx, cancel := context.WithTimeout(ctx, c.perTry)
		resp, err := client.Charge(cctx, req, c.opts...)
		cancel()
		c.count(err)
		switch status.Code(err) {
		case codes.OK:
			return answer{piID: resp.GetPaymentIntentId()}, nil
		case codes.FailedPrecondition:
			ei := errorInfo(err)
			if ei.GetReason() != "CARD_DECLINED" {
				return answer{}, fmt.Errorf("%s at %s: %v", req.GetRequestId(), name, err)
			}
			return answer{piID: ei.GetMetadata()["stripe_object_id"], declined: true}, nil
		case codes.Unavailable, codes.DeadlineExceeded:
			time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
		default:
			return answer{}, fmt.Errorf("%s at %s: unexpected %v", req.GetRequestId(), name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return answer{}, fmt.Errorf("%s: no definitive answer before the test's deadline", req.GetRequestId())
	}
	return answer{}, fmt.Errorf("%s: no definitive answer in %d tries", req.GetRequestId(), c.maxTries)
}

// until sends call until it is answered with anything but UNAVAILABLE or
// DEADLINE_EXCEEDED (gRPC also reports a connection billingd's death broke
// as UNAVAILABLE), and returns that answer.
func (c *retrier) until(ctx context.Context, name string, rng *rand.Rand, call func(ctx context.Context, opts ...grpc.CallOption) error) error {
	for try := 0; ctx.Err() == nil && (c.maxTries == 0 || try < c.maxTries); try++ {
		cctx, cancel := context.WithTimeout(ctx, c.perTry)
		err := call(cctx, c.opts...)
		cancel()
		c.count(err)
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
			time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
			continue
		}
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: no definitive answer before the test's deadline", name)
	}
	return fmt.Errorf("%s: no definitive answer in %d tries", name, c.maxTries)
}

func (c *retrier) count(err error) {
	c.rpcs.Add(1)
	k := status.Code(err).String()
	if ei := errorInfo(err); ei != nil {
		k += " " + ei.GetReason()
	}
	v, _ := c.byCode.LoadOrStore(k, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// logCodes prints how many RPCs ended with each code and reason.
func (c *retrier) logCodes(t *testing.T) {
	t.Helper()
	var lines []string
	c.byCode.Range(func(k, v any) bool {
		lines = append(lines, fmt.Sprintf("  answers %v: %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(lines)
	t.Logf("RPCs by code:\n%s", strings.Join(lines, "\n"))
}

func errorInfo(err error) *errdetails.ErrorInfo {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}

// recordReader is the part of both record stores (bbolt and PostgreSQL) the
// final check reads.
type recordReader interface {
	Get(ctx context.Context, caller, requestID string) (service.Record, bool, error)
	CountByState(ctx context.Context) (map[service.State]int, error)
}

// verdict counts how operations failed exactly-once.
type verdict struct{ duplicates, lost, mismatched, open int }

// paymentIntentsByKey is Stripe's truth, by the request key billingd tags
// every object with.
func paymentIntentsByKey(sim *stripesim.Sim) map[string][]stripesim.PaymentIntent {
	byKey := map[string][]stripesim.PaymentIntent{}
	for _, pi := range sim.PaymentIntents() {
		k := pi.Metadata[service.MetadataRequestKey]
		byKey[k] = append(byKey[k], pi)
	}
	return byKey
}

// checkExactlyOnce holds every operation (reqs[i], answered answers[i]) to
// Stripe's truth: exactly one PaymentIntent under its request key (no
// duplicate, none lost), the answer naming it and its outcome (declined for
// pm_card_chargeDeclined, succeeded otherwise), and a final record on it;
// and the store holds no other record, and none open.
func checkExactlyOnce(ctx context.Context, t *testing.T, sim *stripesim.Sim, store recordReader,
	caller string, reqs []*billingv1.ChargeRequest, answers []answer) verdict {
	t.Helper()
	byKey := paymentIntentsByKey(sim)
	var v verdict
	for i, req := range reqs {
		id := req.GetRequestId()
		pis := byKey[service.RequestKey(caller, id)]
		switch {
		case len(pis) == 0:
			v.lost++
			t.Errorf("%s: nothing at Stripe (answer %+v)", id, answers[i])
			continue
		case len(pis) > 1:
			v.duplicates++
			t.Errorf("%s: %d PaymentIntents", id, len(pis))
			continue
		}
		pi, a, wantDeclined := pis[0], answers[i], req.GetPaymentMethodId() == "pm_card_chargeDeclined"
		if pi.ID != a.piID || a.declined != wantDeclined || (pi.Status == "succeeded") == wantDeclined {
			v.mismatched++
			t.Errorf("%s: answered %+v, Stripe holds %s %s", id, a, pi.ID, pi.Status)
		}
		rec, found, err := store.Get(ctx, caller, id)
		if err != nil || !found || !rec.State.Final() || rec.Result.ObjectID != pi.ID {
			v.open++
			t.Errorf("%s: record %v %+v found %v, %v; want final on %s", id, rec.State, rec.Result, found, err, pi.ID)
		}
	}
	counts, err := store.CountByState(ctx)
	if err != nil || counts[service.StatePending]+counts[service.StateIndeterminate] != 0 ||
		counts[service.StateSucceeded]+counts[service.StateFailed] != len(reqs) {
		t.Errorf("records by state = %v, %v; want %d, all final", counts, err, len(reqs))
	}
	if st := sim.Stats(); st.PaymentIntentsCreated != len(reqs) {
		t.Errorf("PaymentIntentsCreated = %d, want %d", st.PaymentIntentsCreated, len(reqs))
	}
	return v
}
