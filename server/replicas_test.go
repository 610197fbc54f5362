package server_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/grpc/codes"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/postgres/pgtest"
)

// replicas starts n billingd stacks on one PostgreSQL database and one
// simulator, as n replicas behind a load balancer would run.
func replicas(t *testing.T, n int, simCfg stripesim.Config, svcCfg *service.Config) []*harness {
	t.Helper()
	dsn := pgtest.DSN(t)
	first := newHarness(t, harnessOpts{postgres: dsn, simCfg: simCfg, svcCfg: svcCfg})
	out := []*harness{first}
	for range n - 1 {
		out = append(out, newHarness(t, harnessOpts{postgres: dsn, sim: first.sim, simURL: first.simURL,
			clock: first.clock, svcCfg: svcCfg}))
	}
	return out
}

// waitInFlight waits (bounded) until a create is executing at the simulator.
func waitInFlight(t *testing.T, sim *stripesim.Sim) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for sim.Stats().InFlight == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no create reached the simulator")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type chargeResult struct {
	resp *billingv1.ChargeResponse
	err  error
}

func chargeAsync(ctx context.Context, h *harness, req *billingv1.ChargeRequest) <-chan chargeResult {
	done := make(chan chargeResult, 1)
	go func() {
		resp, err := h.client.Charge(ctx, req)
		done <- chargeResult{resp, err}
	}()
	return done
}

// An identical request at another replica while the first drives the record
// waits for the first's outcome: one Stripe call, and the waiter's answer is
// a replay.
func TestReplicaWaitsForAnotherReplicasDrive(t *testing.T) {
	t.Parallel()
	hs := replicas(t, 2, stripesim.Config{Faults: stripesim.Faults{Latency: 400 * time.Millisecond}}, nil)
	a, b := hs[0], hs[1]
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("shared-1"))
	waitInFlight(t, a.sim)

	resp, err := b.client.Charge(ctx, visa("shared-1"))
	if err != nil {
		t.Fatalf("replica b: %v", err)
	}
	orig := <-first
	if orig.err != nil {
		t.Fatalf("replica a: %v", orig.err)
	}
	if !resp.GetReplayed() || orig.resp.GetReplayed() || resp.GetPaymentIntentId() != orig.resp.GetPaymentIntentId() {
		t.Errorf("a = %v, b = %v; want b to replay a's outcome", orig.resp, resp)
	}
	if got := posts(a.sim); got != 1 {
		t.Errorf("create POSTs = %d, want 1", got)
	}
	if pis := a.intentsFor(caller, "shared-1"); len(pis) != 1 {
		t.Errorf("PaymentIntents = %d, want 1", len(pis))
	}
}

// Past its wait, a duplicate at another replica answers UNAVAILABLE
// REQUEST_IN_PROGRESS, never a second Stripe call; its retry replays.
func TestReplicaAnswersInProgressPastItsWait(t *testing.T) {
	t.Parallel()
	cfg := testServiceConfig()
	cfg.CoalesceWait = 100 * time.Millisecond
	hs := replicas(t, 2, stripesim.Config{Faults: stripesim.Faults{Latency: time.Second}}, &cfg)
	a, b := hs[0], hs[1]
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("shared-2"))
	waitInFlight(t, a.sim)

	_, err := b.client.Charge(ctx, visa("shared-2"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "REQUEST_IN_PROGRESS" || retryInfo(st) == nil {
		t.Errorf("status = %v", st.Proto())
	}
	orig := <-first
	if orig.err != nil {
		t.Fatalf("replica a: %v", orig.err)
	}
	resp, err := b.client.Charge(ctx, visa("shared-2"))
	if err != nil || !resp.GetReplayed() || resp.GetPaymentIntentId() != orig.resp.GetPaymentIntentId() {
		t.Errorf("retry at b = %v, %v", resp, err)
	}
	if got := posts(a.sim); got != 1 {
		t.Errorf("create POSTs = %d, want 1", got)
	}
}

// A request_id reused with other parameters at another replica is refused
// there too, whether the record is in flight or final.
func TestReplicaRefusesReusedRequestID(t *testing.T) {
	t.Parallel()
	hs := replicas(t, 2, stripesim.Config{Faults: stripesim.Faults{Latency: 300 * time.Millisecond}}, nil)
	a, b := hs[0], hs[1]
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("reused"))
	waitInFlight(t, a.sim)
	other := visa("reused")
	other.Amount = 999
	_, err := b.client.Charge(ctx, other)
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("in flight: reason = %s", ei.GetReason())
	}
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	_, err = b.client.Charge(ctx, other)
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("final: reason = %s", ei.GetReason())
	}
}

// A replica that dies mid-drive (its store stops renewing leases) blocks the
// record only until its lease expires: an identical request at another
// replica waits, then re-drives with the same Stripe key. One object.
func TestReplicaTakesOverAfterLeaseExpiry(t *testing.T) {
	t.Parallel()
	hs := replicas(t, 2, stripesim.Config{Faults: stripesim.Faults{Latency: 500 * time.Millisecond}}, nil)
	a, b := hs[0], hs[1]
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("orphaned"))
	waitInFlight(t, a.sim)
	// a "dies": its leases are no longer renewed, and it can write nothing more.
	if err := a.store.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := b.client.Charge(ctx, visa("orphaned"))
	if err != nil {
		t.Fatalf("replica b: %v", err)
	}
	if r := <-first; r.err == nil {
		t.Errorf("replica a answered %v after its store closed; want an error", r.resp)
	}
	pis := b.intentsFor(caller, "orphaned")
	if len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
		t.Errorf("PaymentIntents = %+v, b answered %v", pis, resp)
	}
	rec, _ := b.record(caller, "orphaned")
	if rec.State != service.StateSucceeded || rec.Attempts != 2 {
		t.Errorf("record = %v attempts %d, want SUCCEEDED after a second attempt", rec.State, rec.Attempts)
	}
	t.Logf("taken over after %v (lease TTL %v)", time.Since(start).Round(time.Millisecond), testLeaseTTL)
}

// A reconciler skips a record another replica is driving, and takes over
// one whose replica died once its lease expires.
func TestReplicaReconcilerTakesOverOnlyExpiredLeases(t *testing.T) {
	t.Parallel()
	hs := replicas(t, 2, stripesim.Config{Faults: stripesim.Faults{Latency: 500 * time.Millisecond}}, nil)
	a, b := hs[0], hs[1]
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("busy-elsewhere"))
	waitInFlight(t, a.sim)
	b.clock.Advance(time.Hour) // past any reconciler backoff
	r := service.NewReconciler(b.svc, b.store)
	r.Pass(ctx)
	if st := r.Stats(); st.Scanned != 0 || st.Redriven != 0 || st.Errors != 0 {
		t.Errorf("pass while a drives = %+v, want the record not even listed", st)
	}
	if err := a.store.Close(); err != nil { // a dies mid-drive
		t.Fatal(err)
	}
	<-first
	deadline := time.Now().Add(10 * testLeaseTTL)
	for {
		r.Pass(ctx)
		if rec, _ := b.record(caller, "busy-elsewhere"); rec.State == service.StateSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead replica's record was never taken over; stats %+v", r.Stats())
		}
		time.Sleep(testLeaseTTL / 10)
	}
	if st := r.Stats(); st.Redriven != 1 || st.Succeeded != 1 {
		t.Errorf("stats = %+v, want one re-drive", st)
	}
	if pis := b.intentsFor(caller, "busy-elsewhere"); len(pis) != 1 {
		t.Errorf("PaymentIntents = %d, want 1", len(pis))
	}
}

// A replica whose lease was taken while its Stripe call ran (it stalled past
// the expiry) cannot write what it learned over the new holder's record: it
// answers REQUEST_IN_PROGRESS, and the operation ends once, at the holder.
func TestReplicaFencedAfterLosingItsLease(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	a := newHarness(t, harnessOpts{postgres: dsn, simCfg: stripesim.Config{Faults: stripesim.Faults{Latency: 400 * time.Millisecond}}})
	b := newHarness(t, harnessOpts{postgres: dsn, sim: a.sim, simURL: a.simURL, clock: a.clock})
	ctx := a.ctx()
	first := chargeAsync(ctx, a, visa("stolen"))
	waitInFlight(t, a.sim)
	// What an expiry and a takeover by another replica leave behind.
	conn := connect(t, ctx, dsn)
	if _, err := conn.Exec(ctx, `UPDATE records SET lease_owner = 'intruder', lease_until = now() + interval '1 hour'
		WHERE request_id = 'stolen'`); err != nil {
		t.Fatal(err)
	}
	r := <-first
	if _, ei := errInfo(t, r.err, codes.Unavailable); ei.GetReason() != "REQUEST_IN_PROGRESS" {
		t.Errorf("fenced replica's answer: reason %s, want REQUEST_IN_PROGRESS", ei.GetReason())
	}
	if rec, _ := a.record(caller, "stolen"); rec.State != service.StatePending || rec.Result.ObjectID != "" {
		t.Errorf("record = %v %+v: the fenced replica wrote over the holder's record", rec.State, rec.Result)
	}
	// The intruder goes away (its lease expires); b finishes with the same key.
	if _, err := conn.Exec(ctx, `UPDATE records SET lease_until = '-infinity' WHERE request_id = 'stolen'`); err != nil {
		t.Fatal(err)
	}
	resp, err := b.client.Charge(ctx, visa("stolen"))
	if err != nil {
		t.Fatalf("replica b: %v", err)
	}
	if pis := b.intentsFor(caller, "stolen"); len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
		t.Errorf("PaymentIntents = %+v, b answered %v", pis, resp)
	}
}

// events counts the idempotency events a Service reports.
type events struct{ coalesced atomic.Int64 }

func (e *events) Event(_, event string) {
	if event == service.EventCoalescedWait {
		e.coalesced.Add(1)
	}
}

// gatedAcquire holds the first Acquire until release is closed, having
// closed entered: a point where a drive has begun and not yet decided.
type gatedAcquire struct {
	service.Store
	once             sync.Once
	entered, release chan struct{}
}

func (g *gatedAcquire) Acquire(ctx context.Context, rec service.Record) (service.Record, bool, error) {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Store.Acquire(ctx, rec)
}

// joinScene is two replicas on one database: a, which claimed the record
// of id, called Stripe and died before recording the answer (the record is
// PENDING, leased by a), and b, whose store holds its first Acquire (gate)
// and whose idempotency events are counted (ev).
type joinScene struct {
	a, b *harness
	ctx  context.Context
	conn *pgx.Conn
	gate *gatedAcquire
	ev   events
	id   string
}

func newJoinScene(t *testing.T, id string) *joinScene {
	t.Helper()
	dsn := pgtest.DSN(t)
	js := &joinScene{id: id, gate: &gatedAcquire{entered: make(chan struct{}), release: make(chan struct{})}}
	js.a = newHarness(t, harnessOpts{postgres: dsn, simCfg: stripesim.Config{Faults: stripesim.Faults{Latency: 300 * time.Millisecond}}})
	js.b = newHarness(t, harnessOpts{postgres: dsn, sim: js.a.sim, simURL: js.a.simURL, clock: js.a.clock,
		svcOpts: []service.Option{service.WithObserver(&js.ev)},
		records: func(s service.Store) service.Store { js.gate.Store = s; return js.gate }})
	js.ctx = js.a.ctx()
	js.conn = connect(t, js.ctx, dsn)
	first := chargeAsync(js.ctx, js.a, visa(id))
	waitInFlight(t, js.a.sim)
	if err := js.a.store.Close(); err != nil {
		t.Fatal(err)
	}
	<-first
	return js
}

// setLease sets the record's lease columns as sql says.
func (js *joinScene) setLease(t *testing.T, sql string) {
	t.Helper()
	tag, err := js.conn.Exec(js.ctx, `UPDATE records SET `+sql+` WHERE request_id = $1`, js.id)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("set lease: %v, %v", tag, err)
	}
}

// joinAtTheGate waits for a drive of b's to reach Acquire, gives the lease
// to a third replica meanwhile, sends the same Charge to b, waits until it
// has joined that drive, and lets the drive go on. It returns the caller's
// answer.
func (js *joinScene) joinAtTheGate(t *testing.T) chargeResult {
	t.Helper()
	waitFor(t, func() bool { return isClosed(js.gate.entered) })
	js.setLease(t, `lease_owner = 'third-replica', lease_until = now() + interval '1 hour'`)
	joined := chargeAsync(js.ctx, js.b, visa(js.id))
	waitFor(t, func() bool { return js.ev.coalesced.Load() > 0 })
	close(js.gate.release)
	return <-joined
}

// A caller whose request joins a reconciler drive that then finds the record
// under another replica's lease is told REQUEST_IN_PROGRESS, as any caller
// of a record another replica drives: the drive it joined answered nothing.
// (It was told INTERNAL once, seen in TestReplicasExactlyOnceThroughSIGKILL.)
func TestReplicaCallerJoiningAReconcilerDriveOfAnotherReplicasRecord(t *testing.T) {
	t.Parallel()
	js := newJoinScene(t, "joined")
	// a's lease lapses, so b's reconciler takes the record up; as it is
	// about to take the lease, a third replica takes it first.
	js.setLease(t, `lease_until = '-infinity'`)
	js.b.clock.Advance(time.Hour) // past any reconciler backoff
	r := service.NewReconciler(js.b.svc, js.b.store)
	passed := make(chan struct{})
	go func() { defer close(passed); r.Pass(js.ctx) }()
	got := js.joinAtTheGate(t)
	<-passed
	if _, ei := errInfo(t, got.err, codes.Unavailable); ei.GetReason() != "REQUEST_IN_PROGRESS" {
		t.Errorf("caller's answer: reason %q, want REQUEST_IN_PROGRESS", ei.GetReason())
	}
	if st := r.Stats(); st.Redriven != 0 || st.Errors != 0 {
		t.Errorf("reconciler stats %+v: it drove another replica's record, or counted leaving it as an error", st)
	}
	if rec, _ := js.b.record(caller, js.id); rec.State != service.StatePending {
		t.Errorf("record state %v, want PENDING: only the lease holder may move it", rec.State)
	}
}

// The same for a webhook's drive: the event of a record another replica
// holds is left to that replica, and a caller that joined the webhook's
// drive is told REQUEST_IN_PROGRESS (it was told OK, with no PaymentIntent).
func TestReplicaCallerJoiningAWebhookDriveOfAnotherReplicasRecord(t *testing.T) {
	t.Parallel()
	js := newJoinScene(t, "hooked-elsewhere")
	pis := js.a.intentsFor(caller, js.id)
	if len(pis) != 1 {
		t.Fatalf("PaymentIntents %+v, want a's one", pis)
	}
	webhooks := service.NewWebhooks(js.b.svc, js.b.store)
	handled := make(chan service.EventOutcome, 1)
	go func() {
		out, err := webhooks.Handle(js.ctx, service.Event{ID: "evt_elsewhere", Kind: service.EventPaymentSucceeded,
			RequestKey: service.RequestKey(caller, js.id), Caller: caller,
			Object: service.Result{ObjectID: pis[0].ID, Amount: 2000, Currency: "usd"}})
		if err != nil {
			t.Errorf("webhook: %v", err)
		}
		handled <- out
	}()
	got := js.joinAtTheGate(t)
	if out := <-handled; out != service.EventInFlight {
		t.Errorf("webhook outcome %v, want EventInFlight: another replica holds the record", out)
	}
	if _, ei := errInfo(t, got.err, codes.Unavailable); ei.GetReason() != "REQUEST_IN_PROGRESS" {
		t.Errorf("caller's answer %v, %v: want REQUEST_IN_PROGRESS", got.resp, got.err)
	}
	if rec, _ := js.b.record(caller, js.id); rec.State != service.StatePending {
		t.Errorf("record state %v, want PENDING: only the lease holder may move it", rec.State)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
