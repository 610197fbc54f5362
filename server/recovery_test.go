package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// leftPending drives a Charge whose every answer meets fault, so its record
// stays PENDING, and returns that record as a killed process would leave it.
func leftPending(t *testing.T, h *harness, id string, fault stripesim.Fault) service.Record {
	t.Helper()
	h.sim.FailNext("/v1/payment_intents", fault, 4)
	_, err := h.client.Charge(h.ctx(), visa(id))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "UPSTREAM_UNAVAILABLE" {
		t.Fatalf("reason = %s", ei.GetReason())
	}
	rec, found := h.record(caller, id)
	if !found || rec.State != service.StatePending {
		t.Fatalf("record = %+v, want PENDING", rec)
	}
	return rec
}

// restarted is a fresh billingd on the same simulator whose database holds
// recs, written directly as the crashed process left them.
func restarted(t *testing.T, old *harness, recs ...service.Record) *harness {
	t.Helper()
	h := newHarness(t, harnessOpts{sim: old.sim, simURL: old.simURL, clock: old.clock})
	for _, r := range recs {
		if err := h.db.Put(context.Background(), r); err != nil {
			t.Fatalf("put: %v", err)
		}
	}
	return h
}

// runReconciler starts the reconciler as serve does and stops it at the end.
func runReconciler(t *testing.T, h *harness) *service.Reconciler {
	t.Helper()
	rc := service.DefaultReconcilerConfig()
	rc.Interval = 20 * time.Millisecond
	r := service.NewReconciler(h.svc, h.db, service.WithReconcilerConfig(rc))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// waitState polls the stored record until it reaches want (bounded).
func waitState(t *testing.T, h *harness, id string, want service.State) service.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, _ := h.record(caller, id)
		if rec.State == want {
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("record %s = %v (%+v), want %v", id, rec.State, rec.Err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func posts(sim *stripesim.Sim) int {
	n := 0
	for k, c := range sim.Stats().Requests {
		if k.Method == "POST" && k.Path == "/v1/payment_intents" {
			n += c
		}
	}
	return n
}

// After a crash, open records are settled by the reconciler's first pass,
// without any caller: the one Stripe processed settles on its object (no
// second object), the one Stripe never saw is sent with its key (one object).
func TestStartupRecoveryWithoutCallers(t *testing.T) {
	t.Parallel()
	old := newHarness(t, harnessOpts{})
	processed := leftPending(t, old, "crash-after-send", stripesim.FaultDropAfter)
	unsent := leftPending(t, old, "crash-never-sent", stripesim.FaultDropBefore)

	h := restarted(t, old, processed, unsent)
	r := runReconciler(t, h)

	got := waitState(t, h, "crash-after-send", service.StateSucceeded)
	pis := h.intentsFor(caller, "crash-after-send")
	if len(pis) != 1 || pis[0].ID != got.Result.ObjectID {
		t.Errorf("PIs = %+v, record %+v", pis, got.Result)
	}
	got = waitState(t, h, "crash-never-sent", service.StateSucceeded)
	pis = h.intentsFor(caller, "crash-never-sent")
	if len(pis) != 1 || pis[0].ID != got.Result.ObjectID {
		t.Errorf("PIs = %+v, record %+v", pis, got.Result)
	}
	// A drive counts its outcome just after writing it: the counters may
	// trail the records by a moment (the running reconciler has no Pass to
	// wait for).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := r.Stats()
		if st.Redriven >= 2 && st.Succeeded >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats = %+v, want 2 re-drives succeeded", st)
		}
	}

	// A caller's retry now replays.
	want := h.intentsFor(caller, "crash-after-send")[0].ID
	resp, err := h.client.Charge(h.ctx(), visa("crash-after-send"))
	if err != nil || !resp.GetReplayed() || resp.GetPaymentIntentId() != want {
		t.Errorf("retry = %v, %v", resp, err)
	}
}

// A record left PENDING for 30 hours is reconciled by search and never
// re-sent with its old key; with nothing found it settles NOT_CREATED.
func TestReconcilerPastKeyWindowSearchesNeverResends(t *testing.T) {
	t.Parallel()
	old := newHarness(t, harnessOpts{})
	found := leftPending(t, old, "old-created", stripesim.FaultDropAfter)
	missing := leftPending(t, old, "old-missing", stripesim.FaultDropBefore)
	before := posts(old.sim)

	h := restarted(t, old, found, missing)
	h.clock.Advance(30 * time.Hour)
	r := service.NewReconciler(h.svc, h.db)
	r.Pass(h.ctx())

	rec, _ := h.record(caller, "old-created")
	pis := h.intentsFor(caller, "old-created")
	if rec.State != service.StateSucceeded || len(pis) != 1 || pis[0].ID != rec.Result.ObjectID {
		t.Errorf("old-created = %+v, PIs %+v", rec, pis)
	}
	rec, _ = h.record(caller, "old-missing")
	if rec.State != service.StateFailed || service.ReasonOf(rec.Err) != service.ReasonNotCreated {
		t.Errorf("old-missing = %v %+v, want FAILED NOT_CREATED", rec.State, rec.Err)
	}
	if n := len(h.intentsFor(caller, "old-missing")); n != 0 {
		t.Errorf("old-missing has %d PIs", n)
	}
	if got := posts(h.sim); got != before {
		t.Errorf("create POSTs %d → %d: the reconciler must not send past the key window", before, got)
	}
	if st := r.Stats(); st.Searches != 2 || st.NotCreated != 1 || st.Succeeded != 1 || st.Redriven != 0 {
		t.Errorf("stats = %+v", st)
	}
	// The caller's retry replays the settled outcome.
	_, err := h.client.Charge(h.ctx(), visa("old-missing"))
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "NOT_CREATED" {
		t.Errorf("reason = %s", ei.GetReason())
	}
}

// INDETERMINATE records from simulated 500s end as the simulator holds them,
// once search shows the object; nothing is re-sent.
func TestReconcilerSettlesIndeterminateBySearch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{SearchLag: time.Minute}})
	ctx := h.ctx()
	declined := visa("five-hundred-declined")
	declined.PaymentMethodId = "pm_card_chargeDeclined"
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultServerError, 2)
	if _, err := h.client.Charge(ctx, visa("five-hundred-ok")); err == nil {
		t.Fatal("want OUTCOME_PENDING_RECONCILIATION")
	}
	if _, err := h.client.Charge(ctx, declined); err == nil {
		t.Fatal("want OUTCOME_PENDING_RECONCILIATION")
	}
	r := service.NewReconciler(h.svc, h.db)
	r.Pass(ctx) // search has not caught up: nothing changes
	if rec, _ := h.record(caller, "five-hundred-ok"); rec.State != service.StateIndeterminate {
		t.Fatalf("record = %v, want INDETERMINATE while search lags", rec.State)
	}
	h.clock.Advance(2 * time.Minute)
	r.Pass(ctx) // the first lookup's backoff has passed too
	rec, _ := h.record(caller, "five-hundred-ok")
	pis := h.intentsFor(caller, "five-hundred-ok")
	if rec.State != service.StateSucceeded || len(pis) != 1 || rec.Result.ObjectID != pis[0].ID {
		t.Errorf("ok = %+v, PIs %+v", rec, pis)
	}
	rec, _ = h.record(caller, "five-hundred-declined")
	if rec.State != service.StateFailed || service.ReasonOf(rec.Err) != service.ReasonCardDeclined {
		t.Errorf("declined = %v %+v", rec.State, rec.Err)
	}
	if got := posts(h.sim); got != 2 {
		t.Errorf("create POSTs = %d, want 2", got)
	}
	resp, err := h.client.Charge(ctx, visa("five-hundred-ok"))
	if err != nil || !resp.GetReplayed() || resp.GetPaymentIntentId() != pis[0].ID {
		t.Errorf("retry = %v, %v", resp, err)
	}
}

// The reconciler and callers share the in-flight map: a record a caller is
// driving is skipped by a pass, so Stripe sees one drive.
func TestReconcilerSkipsRecordInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{Faults: stripesim.Faults{Latency: 300 * time.Millisecond}}})
	ctx := h.ctx()
	done := make(chan error, 1)
	go func() { _, err := h.client.Charge(ctx, visa("busy")); done <- err }()
	// Wait until the caller's create is executing at the simulator.
	deadline := time.Now().Add(5 * time.Second)
	for h.sim.Stats().InFlight == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	h.clock.Advance(time.Hour) // past any backoff
	r := service.NewReconciler(h.svc, h.db)
	r.Pass(ctx)
	if err := <-done; err != nil {
		t.Fatalf("Charge: %v", err)
	}
	if st := r.Stats(); st.Scanned != 1 || st.Redriven != 0 {
		t.Errorf("stats = %+v, want the in-flight record scanned and skipped", st)
	}
	if got := posts(h.sim); got != 1 {
		t.Errorf("create POSTs = %d, want 1", got)
	}
}

// A record stuck on a misconfigured key is retried with backoff, not every pass.
func TestReconcilerBacksOff(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{ForbiddenKeys: []string{"sk_test_forbidden"}}, stripeKey: "sk_test_forbidden"})
	ctx := h.ctx()
	if _, err := h.client.Charge(ctx, visa("auth")); err == nil {
		t.Fatal("want STRIPE_AUTH")
	}
	rc := service.DefaultReconcilerConfig()
	r := service.NewReconciler(h.svc, h.db, service.WithReconcilerConfig(rc))
	r.Pass(ctx) // within the first backoff: skipped
	if st := r.Stats(); st.Redriven != 0 {
		t.Fatalf("redriven %d within backoff", st.Redriven)
	}
	h.clock.Advance(rc.Backoff)
	r.Pass(ctx) // due: one re-drive, attempts 2
	r.Pass(ctx) // backoff doubled: skipped
	if st := r.Stats(); st.Redriven != 1 || st.Errors != 1 {
		t.Errorf("stats = %+v, want one re-drive ending on an error", st)
	}
	if rec, _ := h.record(caller, "auth"); rec.State != service.StatePending || rec.Attempts != 2 {
		t.Errorf("record = %v attempts %d", rec.State, rec.Attempts)
	}
}
