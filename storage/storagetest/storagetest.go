// Package storagetest is the conformance suite every billingd record store
// passes: what the service, the reconciler, the sweeper and the webhook
// handler rely on, checked the same way against each backend.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/service"
)

// Store is a record store under test: the service's interface, plus the
// key-order scan the admin view reads and Close.
type Store interface {
	service.Store
	Scan(ctx context.Context, fn func(service.Record) bool) error
	Close() error
}

// Backend is one kind of record store.
type Backend struct {
	// New creates an empty database for t and returns how to open a handle
	// on it. A handle is closed when t ends; closing it earlier is allowed.
	New func(t *testing.T) (open func(t *testing.T) Store)
	// Replicas is true when several handles may be open on one database at
	// once, each a replica holding its own leases (Postgres); false when one
	// process owns a database and leases are granted without I/O (bbolt).
	Replicas bool
	// LeaseTTL is how long a lease of a Replicas backend outlives the handle
	// holding it (the suite waits for that after closing one).
	LeaseTTL time.Duration
}

// t0 is the fixed instant the records are built around.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// Run runs the suite against b. Every test has its own database.
func Run(t *testing.T, b Backend) {
	tests := []struct {
		name     string
		replicas bool // needs Backend.Replicas
		run      func(t *testing.T, b Backend)
	}{
		{"ClaimRaceCreatesOnce", false, testClaimRace},
		{"ClaimReturnsStoredForm", false, testClaimStoredForm},
		{"FingerprintConflictVisibleViaClaim", false, testFingerprintConflict},
		{"GetMissingAndScoped", false, testGetMissing},
		{"OutcomeWritesSurviveReopen", false, testOutcomeReopen},
		{"PutCreatesMissingRecord", false, testPutCreates},
		{"ListOpenOldestFirst", false, testListOpen},
		{"CountByState", false, testCounts},
		{"SweepOnlyFinalOldBounded", false, testSweep},
		{"SweepLeavesTombstones", false, testSweepTombstones},
		{"ClaimRefusedForTombstone", false, testClaimTombstoned},
		{"TombstonesSweptPastHorizon", false, testTombstoneHorizon},
		{"ClaimRacesSweep", false, testClaimSweepRace},
		{"RequestKeyLookup", false, testRequestKey},
		{"EventDedupe", false, testEvents},
		{"ScanKeyOrder", false, testScan},
		{"LeaseOfOwnRecords", false, testLeaseOwn},
		{"ClosedStoreFails", false, testClosed},
		{"ReplicaClaimRaceCreatesOnce", true, testReplicaClaimRace},
		{"ReplicaLeaseExcludes", true, testReplicaLease},
		{"ReplicaLeaseExpiresWithItsHolder", true, testReplicaExpiry},
		{"ReplicaLeaseRenewedWhileHolderLives", true, testReplicaRenewal},
		{"ReplicaListOpenSkipsLeased", true, testReplicaListOpen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.replicas && !b.Replicas {
				t.Skip("one process per database: no replicas")
			}
			t.Parallel()
			tt.run(t, b)
		})
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// open creates a database and opens one handle on it.
func open(t *testing.T, b Backend) Store {
	t.Helper()
	return b.New(t)(t)
}

// pending is a freshly claimed record, as the service builds one.
func pending(caller, requestID string, created time.Time) service.Record {
	return service.Record{
		Caller:       caller,
		RequestID:    requestID,
		Method:       service.MethodCharge,
		Fingerprint:  []byte("fp:" + caller + "/" + requestID),
		StripeKey:    "bd1_" + requestID,
		RequestKey:   "rk_" + caller + "_" + requestID,
		Params:       []byte{0x0a, 0x03, 'e', 'u', 'r'},
		State:        service.StatePending,
		Attempts:     1,
		Created:      created,
		FirstAttempt: created,
		Updated:      created,
	}
}

// settled is rec moved to state at updated, with an outcome that fits it.
func settled(rec service.Record, state service.State, updated time.Time) service.Record {
	rec.State = state
	rec.Updated = updated
	switch state {
	case service.StateSucceeded:
		rec.Result = service.Result{ObjectID: "pi_" + rec.RequestID, Status: "succeeded", Amount: 4200, Currency: "eur"}
	case service.StateFailed:
		rec.Result = service.Result{ObjectID: "pi_" + rec.RequestID}
		rec.Err = &service.Error{
			Reason:     service.ReasonCardDeclined,
			Message:    "Your card was declined.",
			Metadata:   map[string]string{"code": "card_declined", "decline_code": "generic_decline", "stripe_request_id": "req_1"},
			Violations: []service.FieldViolation{{Field: "payment_method", Description: "declined"}},
		}
	case service.StateIndeterminate:
		rec.Err = &service.Error{Reason: service.ReasonOutcomePending, Message: "reconciling", RetryAfter: 1500 * time.Millisecond}
	}
	return rec
}

func mustClaim(t *testing.T, s Store, rec service.Record) service.Record {
	t.Helper()
	got, created, err := s.Claim(ctxFor(t), rec)
	if err != nil || !created {
		t.Fatalf("Claim(%s/%s) = created %v, %v; want created", rec.Caller, rec.RequestID, created, err)
	}
	return got
}

func mustPut(t *testing.T, s Store, rec service.Record) {
	t.Helper()
	if err := s.Put(ctxFor(t), rec); err != nil {
		t.Fatalf("Put(%s/%s %v): %v", rec.Caller, rec.RequestID, rec.State, err)
	}
}

func mustGet(t *testing.T, s Store, caller, requestID string) service.Record {
	t.Helper()
	rec, found, err := s.Get(ctxFor(t), caller, requestID)
	if err != nil || !found {
		t.Fatalf("Get(%s/%s) = found %v, %v", caller, requestID, found, err)
	}
	return rec
}

// same reports how got differs from want, or "". Stored records come back
// with times in UTC: the suite's records use UTC times only, so they compare
// field by field.
func same(got, want service.Record) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	return fmt.Sprintf("\n got %+v (err %+v)\nwant %+v (err %+v)", got, got.Err, want, want.Err)
}

func testClaimRace(t *testing.T, b Backend) {
	s := open(t, b)
	claimRace(t, []Store{s})
}

func testReplicaClaimRace(t *testing.T, b Backend) {
	openDB := b.New(t)
	claimRace(t, []Store{openDB(t), openDB(t), openDB(t)})
}

// claimRace has many goroutines claim one key, each with its own
// fingerprint, spread over the handles: exactly one creates, and every
// other gets that one's record back.
func claimRace(t *testing.T, handles []Store) {
	const n = 24
	ctx := ctxFor(t)
	type result struct {
		rec     service.Record
		created bool
		err     error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := pending("acme", "race", t0)
			rec.Fingerprint = fmt.Appendf(nil, "fp-%d", i)
			<-start
			got, created, err := handles[i%len(handles)].Claim(ctx, rec)
			results[i] = result{got, created, err}
		}()
	}
	close(start)
	wg.Wait()
	var winner *service.Record
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("claim %d: %v", i, r.err)
		}
		if r.created {
			if winner != nil {
				t.Fatalf("claims %s and %d both created the record", winner.Fingerprint, i)
			}
			winner = &results[i].rec
		}
	}
	if winner == nil {
		t.Fatal("no claim created the record")
	}
	for i, r := range results {
		if d := same(r.rec, *winner); d != "" {
			t.Errorf("claim %d returned another record than the one created: %s", i, d)
		}
	}
	if d := same(mustGet(t, handles[0], "acme", "race"), *winner); d != "" {
		t.Errorf("stored record: %s", d)
	}
}

func testClaimStoredForm(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	tests := []struct {
		name string
		rec  service.Record
	}{
		{"minimal with zero times", service.Record{Caller: "c", RequestID: "minimal", State: service.StatePending}},
		{"pending", pending("acme", "pending", t0)},
		{"failed with every field", settled(pending("acme", "failed", t0), service.StateFailed, t0.Add(time.Second))},
		{"succeeded", settled(pending("acme", "ok", t0), service.StateSucceeded, t0.Add(time.Second))},
		{"indeterminate", settled(pending("acme", "5xx", t0), service.StateIndeterminate, t0.Add(time.Second))},
		{"unicode request id", pending("acme", "r-€-ü", t0)},
	}
	for _, tt := range tests {
		got, created, err := s.Claim(ctx, tt.rec)
		if err != nil || !created {
			t.Fatalf("%s: Claim = created %v, %v", tt.name, created, err)
		}
		if d := same(got, tt.rec); d != "" {
			t.Errorf("%s: Claim returned %s", tt.name, d)
		}
		if d := same(mustGet(t, s, tt.rec.Caller, tt.rec.RequestID), tt.rec); d != "" {
			t.Errorf("%s: Get returned %s", tt.name, d)
		}
	}
	// A record that cannot be stored is refused, and nothing is written.
	if _, _, err := s.Claim(ctx, service.Record{Caller: "", RequestID: "x", State: service.StatePending}); err == nil {
		t.Error("Claim with an empty caller succeeded")
	}
	if _, _, err := s.Claim(ctx, service.Record{Caller: "c", RequestID: "bad-state", State: 9}); err == nil {
		t.Error("Claim with state 9 succeeded")
	}
	if _, found, _ := s.Get(ctx, "c", "bad-state"); found {
		t.Error("a refused record was stored")
	}
}

func testFingerprintConflict(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	orig := mustClaim(t, s, pending("acme", "order-1", t0))

	other := pending("acme", "order-1", t0.Add(time.Minute))
	other.Fingerprint = []byte("another amount")
	other.Method = service.MethodSubscribe
	got, created, err := s.Claim(ctx, other)
	if err != nil || created {
		t.Fatalf("second Claim = created %v, %v; want the existing record", created, err)
	}
	if string(got.Fingerprint) != string(orig.Fingerprint) || got.Method != orig.Method {
		t.Errorf("Claim returned fingerprint %q method %s, want the stored %q %s", got.Fingerprint, got.Method, orig.Fingerprint, orig.Method)
	}
	// A final record too: its fingerprint is what a reused request_id is checked against.
	mustPut(t, s, settled(orig, service.StateSucceeded, t0.Add(time.Second)))
	got, created, err = s.Claim(ctx, other)
	if err != nil || created || got.State != service.StateSucceeded || string(got.Fingerprint) != string(orig.Fingerprint) {
		t.Errorf("Claim over the final record = %v %q created %v, %v", got.State, got.Fingerprint, created, err)
	}
	// The same request_id from another caller is another operation (docs/design.md, rule 1).
	theirs := pending("globex", "order-1", t0)
	theirs.Fingerprint = other.Fingerprint
	if _, created, err := s.Claim(ctx, theirs); err != nil || !created {
		t.Errorf("another caller's Claim = created %v, %v; want created", created, err)
	}
}

func testGetMissing(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	mustClaim(t, s, pending("acme", "mine", t0))
	for _, k := range [][2]string{{"acme", "nope"}, {"globex", "mine"}, {"", "mine"}, {"acm", "emine"}} {
		if rec, found, err := s.Get(ctx, k[0], k[1]); err != nil || found {
			t.Errorf("Get(%q, %q) = %+v found %v, %v; want not found", k[0], k[1], rec, found, err)
		}
	}
}

func testOutcomeReopen(t *testing.T, b Backend) {
	openDB := b.New(t)
	s := openDB(t)
	rec := mustClaim(t, s, pending("acme", "charge", t0))

	rec = settled(rec, service.StateIndeterminate, t0.Add(time.Second))
	mustPut(t, s, rec)
	if d := same(mustGet(t, s, "acme", "charge"), rec); d != "" {
		t.Errorf("after INDETERMINATE: %s", d)
	}
	rec.Err = nil
	rec.Attempts = 2
	rec = settled(rec, service.StateSucceeded, t0.Add(2*time.Second))
	mustPut(t, s, rec)
	failed := settled(mustClaim(t, s, pending("acme", "declined", t0)), service.StateFailed, t0.Add(time.Second))
	mustPut(t, s, failed)

	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openDB(t)
	if d := same(mustGet(t, s, "acme", "charge"), rec); d != "" {
		t.Errorf("after reopen: %s", d)
	}
	if d := same(mustGet(t, s, "acme", "declined"), failed); d != "" {
		t.Errorf("after reopen: %s", d)
	}
	counts, err := s.CountByState(ctxFor(t))
	if err != nil || counts[service.StateSucceeded] != 1 || counts[service.StateFailed] != 1 || counts[service.StatePending] != 0 {
		t.Errorf("CountByState after reopen = %v, %v", counts, err)
	}
	if open, err := s.ListOpen(ctxFor(t), 0); err != nil || len(open) != 0 {
		t.Errorf("ListOpen after reopen = %d records, %v; want none", len(open), err)
	}
}

func testPutCreates(t *testing.T, b Backend) {
	s := open(t, b)
	// A restored or lost record is written back whole.
	rec := settled(pending("acme", "restored", t0), service.StateIndeterminate, t0.Add(time.Second))
	mustPut(t, s, rec)
	if d := same(mustGet(t, s, "acme", "restored"), rec); d != "" {
		t.Errorf("Get: %s", d)
	}
	// Claim finds it rather than creating another.
	if got, created, err := s.Claim(ctxFor(t), pending("acme", "restored", t0.Add(time.Hour))); err != nil || created || got.State != service.StateIndeterminate {
		t.Errorf("Claim = %v created %v, %v", got.State, created, err)
	}
}

// fill stores one record per state spec, created a second apart in order.
func fill(t *testing.T, s Store, specs ...service.State) []service.Record {
	t.Helper()
	var out []service.Record
	for i, st := range specs {
		created := t0.Add(time.Duration(i) * time.Second)
		rec := mustClaim(t, s, pending("acme", fmt.Sprintf("r%02d", i), created))
		if st != service.StatePending {
			rec = settled(rec, st, created.Add(time.Millisecond))
			mustPut(t, s, rec)
		}
		out = append(out, rec)
	}
	return out
}

func testListOpen(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	// Claimed in an order unlike creation order: the listing follows Created.
	late := mustClaim(t, s, pending("zeta", "late", t0.Add(time.Hour)))
	recs := fill(t, s, service.StateSucceeded, service.StatePending, service.StateFailed,
		service.StateIndeterminate, service.StatePending, service.StateRequiresAction, service.StateProcessing,
		service.StateAuthorized)
	want := []service.Record{recs[1], recs[3], recs[4], recs[5], recs[6], recs[7], late}

	got, err := s.ListOpen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListOpen(0) = %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if d := same(got[i], want[i]); d != "" {
			t.Errorf("ListOpen(0)[%d]: %s", i, d)
		}
	}
	got, err = s.ListOpen(ctx, 2)
	if err != nil || len(got) != 2 || got[0].RequestID != "r01" || got[1].RequestID != "r03" {
		t.Errorf("ListOpen(2) = %v, %v; want r01, r03", ids(got), err)
	}
	// A record leaves the listing when it settles.
	mustPut(t, s, settled(recs[1], service.StateSucceeded, t0.Add(time.Minute)))
	if got, err := s.ListOpen(ctx, 0); err != nil || len(got) != len(want)-1 || got[0].RequestID != "r03" {
		t.Errorf("ListOpen after settling r01 = %v, %v", ids(got), err)
	}
}

func ids(recs []service.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.RequestID)
	}
	return out
}

func testCounts(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	counts, err := s.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range service.States() {
		if n, ok := counts[st]; !ok || n != 0 {
			t.Errorf("empty store: count[%v] = %d, present %v; want 0, present", st, n, ok)
		}
	}
	wantEmpty := map[service.State]int{service.StatePending: 0, service.StateIndeterminate: 0,
		service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0}
	if open, err := s.CountOpen(ctx); err != nil || !reflect.DeepEqual(open, wantEmpty) {
		t.Errorf("empty store: CountOpen = %v, %v; want %v", open, err, wantEmpty)
	}
	fill(t, s, service.StatePending, service.StatePending, service.StateSucceeded, service.StateSucceeded,
		service.StateSucceeded, service.StateFailed, service.StateIndeterminate,
		service.StateRequiresAction, service.StateAuthorized, service.StateAuthorized)
	counts, err = s.CountByState(ctx)
	want := map[service.State]int{service.StatePending: 2, service.StateSucceeded: 3, service.StateFailed: 1, service.StateIndeterminate: 1,
		service.StateRequiresAction: 1, service.StateProcessing: 0, service.StateAuthorized: 2}
	if err != nil || !reflect.DeepEqual(counts, want) {
		t.Errorf("CountByState = %v, %v; want %v", counts, err, want)
	}
	open, err := s.CountOpen(ctx)
	wantOpen := map[service.State]int{service.StatePending: 2, service.StateIndeterminate: 1,
		service.StateRequiresAction: 1, service.StateProcessing: 0, service.StateAuthorized: 2}
	if err != nil || !reflect.DeepEqual(open, wantOpen) {
		t.Errorf("CountOpen = %v, %v; want %v", open, err, wantOpen)
	}
}

func testSweep(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	// r00..r05: final ones updated at t0+i s (+1 ms); open ones are never swept, however old.
	recs := fill(t, s, service.StateSucceeded, service.StatePending, service.StateFailed,
		service.StateSucceeded, service.StateIndeterminate, service.StateSucceeded)
	cutoff := t0.Add(4 * time.Second) // r00, r02, r03 are older; r05 is not

	if n, err := s.Sweep(ctx, cutoff, cutoff, 2); err != nil || n != 2 {
		t.Fatalf("first Sweep = %d, %v; want 2 (bounded)", n, err)
	}
	// Oldest first: r00 and r02 went, r03 stays for the next batch.
	for _, id := range []string{"r00", "r02"} {
		if _, found, err := s.Get(ctx, "acme", id); err != nil || found {
			t.Errorf("%s after the first sweep: found %v, %v", id, found, err)
		}
	}
	mustGet(t, s, "acme", "r03")
	if n, err := s.Sweep(ctx, cutoff, cutoff, 2); err != nil || n != 1 {
		t.Errorf("second Sweep = %d, %v; want 1", n, err)
	}
	if n, err := s.Sweep(ctx, cutoff, cutoff, 2); err != nil || n != 0 {
		t.Errorf("third Sweep = %d, %v; want 0", n, err)
	}
	for _, r := range []service.Record{recs[1], recs[4], recs[5]} {
		if d := same(mustGet(t, s, "acme", r.RequestID), r); d != "" {
			t.Errorf("%s must survive: %s", r.RequestID, d)
		}
	}
	// Far in the future: the finals go, the open records still stay.
	if n, err := s.Sweep(ctx, t0.Add(1000*time.Hour), t0.Add(1000*time.Hour), 100); err != nil || n != 1 {
		t.Errorf("sweep of everything = %d, %v; want 1 (r05)", n, err)
	}
	counts, err := s.CountByState(ctx)
	if err != nil || counts[service.StatePending] != 1 || counts[service.StateIndeterminate] != 1 ||
		counts[service.StateSucceeded]+counts[service.StateFailed] != 0 {
		t.Errorf("CountByState after sweeping = %v, %v", counts, err)
	}
	if n, err := s.Sweep(ctx, time.Time{}, time.Time{}, 10); err != nil || n != 0 {
		t.Errorf("Sweep(zero time) = %d, %v; want 0", n, err)
	}
	if _, err := s.Sweep(ctx, cutoff, cutoff, 0); err == nil {
		t.Error("Sweep with limit 0 succeeded")
	}
}

// mustTombstone returns the tombstone of (caller, requestID).
func mustTombstone(t *testing.T, s Store, caller, requestID string) service.Tombstone {
	t.Helper()
	got, found, err := s.GetTombstone(ctxFor(t), caller, requestID)
	if err != nil || !found {
		t.Fatalf("GetTombstone(%s/%s) = found %v, %v", caller, requestID, found, err)
	}
	return got
}

func testSweepTombstones(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	recs := fill(t, s, service.StateSucceeded, service.StatePending, service.StateFailed)
	swept := t0.Add(200 * time.Hour)
	if n, err := s.Sweep(ctx, t0.Add(time.Hour), swept, 10); err != nil || n != 2 {
		t.Fatalf("Sweep = %d, %v; want 2", n, err)
	}
	for _, r := range []service.Record{recs[0], recs[2]} {
		got := mustTombstone(t, s, "acme", r.RequestID)
		want := service.TombstoneOf(&r, swept)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("tombstone of %s = %+v, want %+v", r.RequestID, got, want)
		}
		if !got.Matches(r.Fingerprint) || got.Matches([]byte("other")) {
			t.Errorf("tombstone of %s matches its fingerprint %v, another %v", r.RequestID,
				got.Matches(r.Fingerprint), got.Matches([]byte("other")))
		}
		if got.ObjectID != "pi_"+r.RequestID || got.State != r.State {
			t.Errorf("tombstone of %s = %s %s", r.RequestID, got.State, got.ObjectID)
		}
	}
	// The open record was not swept, and tombstones are per caller.
	for _, k := range [][2]string{{"acme", "r01"}, {"other", "r00"}, {"acme", "never"}, {"", "r00"}} {
		if _, found, err := s.GetTombstone(ctx, k[0], k[1]); err != nil || found {
			t.Errorf("GetTombstone(%s/%s) = found %v, %v; want none", k[0], k[1], found, err)
		}
	}
}

func testClaimTombstoned(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	rec := fill(t, s, service.StateSucceeded)[0]
	swept := t0.Add(200 * time.Hour)
	if n, err := s.Sweep(ctx, t0.Add(time.Hour), swept, 10); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	before, err := s.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Same request or another (fingerprint): refused, nothing written.
	other := pending("acme", rec.RequestID, swept)
	other.Fingerprint = []byte("another request")
	for _, fresh := range []service.Record{pending("acme", rec.RequestID, swept), other} {
		got, created, err := s.Claim(ctx, fresh)
		var expired *service.ExpiredError
		if !errors.As(err, &expired) || created {
			t.Fatalf("Claim of a swept request_id = %+v created %v, %v; want ExpiredError", got, created, err)
		}
		if want := service.TombstoneOf(&rec, swept); !reflect.DeepEqual(expired.Tombstone, want) {
			t.Errorf("ExpiredError holds %+v, want %+v", expired.Tombstone, want)
		}
		if _, found, err := s.Get(ctx, "acme", rec.RequestID); err != nil || found {
			t.Errorf("Get after the refused claim: found %v, %v", found, err)
		}
	}
	if after, err := s.CountByState(ctx); err != nil || !reflect.DeepEqual(after, before) {
		t.Errorf("CountByState = %v, %v; want %v unchanged", after, err, before)
	}
	// Another caller's same request_id is its own.
	mustClaim(t, s, pending("other", rec.RequestID, swept))
	// A record written again by Put wins over the tombstone; swept again,
	// it leaves the newer tombstone.
	again := settled(pending("acme", rec.RequestID, swept), service.StateFailed, swept)
	mustPut(t, s, again)
	got, created, err := s.Claim(ctx, pending("acme", rec.RequestID, swept))
	if err != nil || created || got.State != service.StateFailed {
		t.Errorf("Claim over a record written again = %v created %v, %v; want that record", got.State, created, err)
	}
	later := swept.Add(300 * time.Hour)
	if n, err := s.Sweep(ctx, swept.Add(time.Hour), later, 10); err != nil || n != 1 {
		t.Fatalf("second Sweep = %d, %v; want 1", n, err)
	}
	if tomb := mustTombstone(t, s, "acme", rec.RequestID); !tomb.Swept.Equal(later) || tomb.State != service.StateFailed {
		t.Errorf("tombstone after the second sweep = %+v", tomb)
	}
	// The first sweep's tombstone is gone with its horizon; the newer stays.
	if _, err := s.SweepTombstones(ctx, swept.Add(time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	mustTombstone(t, s, "acme", rec.RequestID)
}

func testTombstoneHorizon(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	recs := fill(t, s, service.StateSucceeded, service.StateFailed, service.StateSucceeded, service.StateSucceeded)
	// Three sweeps, an hour apart: r00 and r01 (a batch of two), r02, r03.
	day := t0.Add(24 * time.Hour)
	for i, cut := range []time.Duration{2 * time.Second, 3 * time.Second, 4 * time.Second} {
		if _, err := s.Sweep(ctx, t0.Add(cut), day.Add(time.Duration(i)*time.Hour), 10); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.SweepTombstones(ctx, day, 10); err != nil || n != 0 {
		t.Errorf("SweepTombstones before the oldest = %d, %v; want 0", n, err)
	}
	// Oldest first, bounded: r00 and r01 share a sweep, and a limit of one
	// takes one of them.
	if n, err := s.SweepTombstones(ctx, day.Add(90*time.Minute), 1); err != nil || n != 1 {
		t.Fatalf("SweepTombstones(limit 1) = %d, %v; want 1", n, err)
	}
	if n, err := s.SweepTombstones(ctx, day.Add(90*time.Minute), 10); err != nil || n != 2 {
		t.Fatalf("SweepTombstones = %d, %v; want 2 (the other of the first sweep, r02)", n, err)
	}
	for _, r := range recs[:3] {
		if _, found, err := s.GetTombstone(ctx, "acme", r.RequestID); err != nil || found {
			t.Errorf("%s past the horizon: found %v, %v", r.RequestID, found, err)
		}
	}
	mustTombstone(t, s, "acme", "r03")
	if n, err := s.SweepTombstones(ctx, day.Add(90*time.Minute), 10); err != nil || n != 0 {
		t.Errorf("SweepTombstones again = %d, %v; want 0", n, err)
	}
	// The request_id is free again: a claim creates.
	mustClaim(t, s, pending("acme", "r00", day.Add(2*time.Hour)))
	if _, _, err := s.Claim(ctx, pending("acme", "r03", day.Add(2*time.Hour))); err == nil {
		t.Error("Claim of r03, still tombstoned, succeeded")
	}
	if n, err := s.SweepTombstones(ctx, time.Time{}, 10); err != nil || n != 0 {
		t.Errorf("SweepTombstones(zero time) = %d, %v; want 0", n, err)
	}
	if _, err := s.SweepTombstones(ctx, day, 0); err == nil {
		t.Error("SweepTombstones with limit 0 succeeded")
	}
}

// testClaimSweepRace claims final records' request_ids while a sweep
// deletes them (on another replica where there are replicas): every claim
// sees the record or its tombstone, never neither (no claim creates).
func testClaimSweepRace(t *testing.T, b Backend) {
	openDB := b.New(t)
	a := openDB(t)
	c := a
	if b.Replicas {
		c = openDB(t)
	}
	ctx := ctxFor(t)
	const n = 200
	for i := range n {
		rec := mustClaim(t, a, pending("acme", fmt.Sprintf("race%03d", i), t0))
		mustPut(t, a, settled(rec, service.StateSucceeded, t0))
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if m, err := c.Sweep(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 7); err != nil || m == 0 {
				return
			}
		}
	}()
	for round := 0; round < 3; round++ {
		for i := range n {
			_, created, err := a.Claim(ctx, pending("acme", fmt.Sprintf("race%03d", i), t0))
			var expired *service.ExpiredError
			if created || (err != nil && !errors.As(err, &expired)) {
				t.Fatalf("claim of race%03d during a sweep: created %v, %v", i, created, err)
			}
		}
	}
	wg.Wait()
	for i := range n {
		if _, _, err := a.Claim(ctx, pending("acme", fmt.Sprintf("race%03d", i), t0)); err == nil {
			t.Fatalf("claim of race%03d after the sweep succeeded", i)
		}
	}
}

func testRequestKey(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	rec := mustClaim(t, s, pending("acme", "hooked", t0))
	mustClaim(t, s, pending("acme", "other", t0))
	got, found, err := s.GetByRequestKey(ctx, rec.RequestKey)
	if err != nil || !found {
		t.Fatalf("GetByRequestKey = found %v, %v", found, err)
	}
	if d := same(got, rec); d != "" {
		t.Errorf("GetByRequestKey: %s", d)
	}
	// The index follows the record's updates and its deletion.
	rec = settled(rec, service.StateSucceeded, t0.Add(time.Second))
	mustPut(t, s, rec)
	if got, _, _ := s.GetByRequestKey(ctx, rec.RequestKey); got.State != service.StateSucceeded {
		t.Errorf("after settling: state %v", got.State)
	}
	for _, k := range []string{"rk_unknown", ""} {
		if _, found, err := s.GetByRequestKey(ctx, k); err != nil || found {
			t.Errorf("GetByRequestKey(%q) = found %v, %v", k, found, err)
		}
	}
	if _, err := s.Sweep(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 10); err != nil {
		t.Fatal(err)
	}
	if _, found, err := s.GetByRequestKey(ctx, rec.RequestKey); err != nil || found {
		t.Errorf("after the sweep: found %v, %v", found, err)
	}
}

func testEvents(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	claim := func(id string, seen time.Time) bool {
		t.Helper()
		first, err := s.ClaimEvent(ctx, id, seen)
		if err != nil {
			t.Fatalf("ClaimEvent(%s): %v", id, err)
		}
		return first
	}
	if !claim("evt_1", t0) {
		t.Error("first ClaimEvent(evt_1) = false")
	}
	if claim("evt_1", t0.Add(time.Second)) {
		t.Error("second ClaimEvent(evt_1) = true: a redelivered event would be handled twice")
	}
	if err := s.ForgetEvent(ctx, "evt_1"); err != nil {
		t.Fatal(err)
	}
	if !claim("evt_1", t0.Add(2*time.Second)) {
		t.Error("ClaimEvent after ForgetEvent = false")
	}
	if err := s.ForgetEvent(ctx, "evt_never"); err != nil {
		t.Errorf("ForgetEvent of an unknown id: %v", err)
	}
	claim("evt_2", t0.Add(3*time.Second))
	claim("evt_3", t0.Add(4*time.Second))
	claim("evt_4", t0.Add(time.Hour))
	// evt_1 (seen again at +2 s), evt_2, evt_3 are older than the cutoff: two per batch, oldest first.
	cutoff := t0.Add(time.Minute)
	if n, err := s.SweepEvents(ctx, cutoff, 2); err != nil || n != 2 {
		t.Errorf("SweepEvents = %d, %v; want 2", n, err)
	}
	if claim("evt_3", t0) {
		t.Error("evt_3, the newest before the cutoff, was swept by the first batch")
	}
	if !claim("evt_1", t0) {
		t.Error("evt_1, the oldest, was not swept")
	}
	if n, err := s.SweepEvents(ctx, cutoff, 10); err != nil || n != 2 { // evt_1 (seen again at t0) and evt_3
		t.Errorf("second SweepEvents = %d, %v; want 2", n, err)
	}
	if claim("evt_4", t0) {
		t.Error("evt_4, newer than the cutoff, was swept")
	}
}

func testScan(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	keys := [][2]string{{"b", "2"}, {"a", "z"}, {"ab", "a"}, {"a", "b"}, {"b", "10"}}
	for _, k := range keys {
		mustClaim(t, s, pending(k[0], k[1], t0))
	}
	var got []string
	if err := s.Scan(ctx, func(r service.Record) bool { got = append(got, r.Caller+"/"+r.RequestID); return true }); err != nil {
		t.Fatal(err)
	}
	want := []string{"a/b", "a/z", "ab/a", "b/10", "b/2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Scan order = %v, want %v", got, want)
	}
	got = nil
	if err := s.Scan(ctx, func(r service.Record) bool { got = append(got, r.RequestID); return len(got) < 2 }); err != nil || len(got) != 2 {
		t.Errorf("Scan stopping after 2 = %v, %v", got, err)
	}
}

// testLeaseOwn checks what holds on every backend: the handle that claimed
// or acquired a record may drive it, and no one drives a final record.
func testLeaseOwn(t *testing.T, b Backend) {
	s := open(t, b)
	ctx := ctxFor(t)
	rec := mustClaim(t, s, pending("acme", "mine", t0))
	got, leased, err := s.Acquire(ctx, rec)
	if err != nil || !leased {
		t.Fatalf("Acquire of an own open record = leased %v, %v", leased, err)
	}
	if d := same(got, rec); d != "" {
		t.Errorf("Acquire returned %s", d)
	}
	rec.Attempts++
	mustPut(t, s, rec) // under the lease
	if err := s.Release(ctx, rec.Caller, rec.RequestID); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, leased, err := s.Acquire(ctx, rec); err != nil || !leased {
		t.Fatalf("Acquire after Release = leased %v, %v", leased, err)
	}
	final := settled(rec, service.StateSucceeded, t0.Add(time.Second))
	mustPut(t, s, final)
	got, leased, err = s.Acquire(ctx, final)
	if err != nil || leased || got.State != service.StateSucceeded {
		t.Errorf("Acquire of a final record = %v leased %v, %v; want the final record, not leased", got.State, leased, err)
	}
	// Release of a record one does not hold, or that does not exist, is harmless.
	if err := s.Release(ctx, "acme", "unknown"); err != nil {
		t.Errorf("Release(unknown): %v", err)
	}
}

func testClosed(t *testing.T, b Backend) {
	s := open(t, b)
	rec := mustClaim(t, s, pending("acme", "before", t0))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t)
	if _, _, err := s.Claim(ctx, pending("acme", "after", t0)); err == nil {
		t.Error("Claim after Close succeeded")
	}
	if err := s.Put(ctx, settled(rec, service.StateSucceeded, t0)); err == nil {
		t.Error("Put after Close succeeded")
	}
	if _, _, err := s.Get(ctx, "acme", "before"); err == nil {
		t.Error("Get after Close succeeded")
	}
}

// testReplicaLease: two replicas on one database; the lease decides which
// one drives a record, and a replica that lost it cannot write.
func testReplicaLease(t *testing.T, b Backend) {
	openDB := b.New(t)
	a, bb := openDB(t), openDB(t)
	ctx := ctxFor(t)
	rec := mustClaim(t, a, pending("acme", "shared", t0))

	// b finds the record, but may not drive it while a holds it.
	got, leased, err := bb.Acquire(ctx, rec)
	if err != nil || leased {
		t.Fatalf("b.Acquire while a holds the lease = leased %v, %v", leased, err)
	}
	if d := same(got, rec); d != "" {
		t.Errorf("b.Acquire returned %s", d)
	}
	if err := bb.Put(ctx, settled(rec, service.StateFailed, t0.Add(time.Second))); !errors.Is(err, service.ErrLeaseLost) {
		t.Fatalf("b.Put without the lease = %v, want ErrLeaseLost", err)
	}
	// a's drive ends with the record still open and gives the lease up: b takes over.
	rec.Attempts = 2
	mustPut(t, a, rec)
	if err := a.Release(ctx, rec.Caller, rec.RequestID); err != nil {
		t.Fatal(err)
	}
	got, leased, err = bb.Acquire(ctx, rec)
	if err != nil || !leased || got.Attempts != 2 {
		t.Fatalf("b.Acquire after a released = attempts %d leased %v, %v", got.Attempts, leased, err)
	}
	// a, now a stale writer, is fenced off; its Release does not free b's lease.
	if err := a.Put(ctx, settled(rec, service.StateFailed, t0.Add(time.Second))); !errors.Is(err, service.ErrLeaseLost) {
		t.Fatalf("a.Put after losing the lease = %v, want ErrLeaseLost", err)
	}
	if err := a.Release(ctx, rec.Caller, rec.RequestID); err != nil {
		t.Fatal(err)
	}
	if _, leased, _ := a.Acquire(ctx, rec); leased {
		t.Fatal("a took the lease b holds")
	}
	// b settles it: final for everyone, and no one can write it again.
	final := settled(got, service.StateSucceeded, t0.Add(2*time.Second))
	mustPut(t, bb, final)
	for name, s := range map[string]Store{"a": a, "b": bb} {
		got, leased, err := s.Acquire(ctx, rec)
		if err != nil || leased {
			t.Errorf("%s.Acquire of the final record = leased %v, %v", name, leased, err)
		}
		if d := same(got, final); d != "" {
			t.Errorf("%s.Acquire returned %s", name, d)
		}
		if err := s.Put(ctx, settled(rec, service.StatePending, t0.Add(3*time.Second))); !errors.Is(err, service.ErrLeaseLost) {
			t.Errorf("%s.Put over the final record = %v, want ErrLeaseLost", name, err)
		}
	}
	if got, leased, err := bb.Acquire(ctx, pending("acme", "missing", t0)); err != nil || leased || got.State != service.StateUnspecified {
		t.Errorf("Acquire of a missing record = %v leased %v, %v; want a zero record", got.State, leased, err)
	}
}

// testReplicaExpiry: a replica that dies holding leases (its handle closes
// without releasing) loses them once they expire.
func testReplicaExpiry(t *testing.T, b Backend) {
	openDB := b.New(t)
	a, bb := openDB(t), openDB(t)
	ctx := ctxFor(t)
	rec := mustClaim(t, a, pending("acme", "orphan", t0))
	if _, leased, err := bb.Acquire(ctx, rec); err != nil || leased {
		t.Fatalf("b.Acquire while a lives = leased %v, %v", leased, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10*b.LeaseTTL + 5*time.Second)
	for {
		got, leased, err := bb.Acquire(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		if leased {
			if got.State != service.StatePending {
				t.Errorf("taken over in state %v", got.State)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead replica's lease never expired (TTL %v)", b.LeaseTTL)
		}
		time.Sleep(b.LeaseTTL / 10)
	}
	mustPut(t, bb, settled(rec, service.StateSucceeded, t0.Add(time.Second)))
}

// testReplicaRenewal: a live replica keeps its leases past their TTL.
func testReplicaRenewal(t *testing.T, b Backend) {
	openDB := b.New(t)
	a, bb := openDB(t), openDB(t)
	ctx := ctxFor(t)
	rec := mustClaim(t, a, pending("acme", "long-drive", t0))
	time.Sleep(3 * b.LeaseTTL / 2)
	if _, leased, err := bb.Acquire(ctx, rec); err != nil || leased {
		t.Fatalf("b.Acquire after %v of a's drive = leased %v, %v; a's lease must be renewed", 3*b.LeaseTTL/2, leased, err)
	}
	mustPut(t, a, settled(rec, service.StateSucceeded, t0.Add(time.Second)))
}

// testReplicaListOpen: a replica's listing skips the records another live
// replica holds, so reconcilers do not queue up behind each other's drives.
func testReplicaListOpen(t *testing.T, b Backend) {
	openDB := b.New(t)
	a, bb := openDB(t), openDB(t)
	ctx := ctxFor(t)
	mustClaim(t, a, pending("acme", "held", t0))
	free := mustClaim(t, a, pending("acme", "free", t0.Add(time.Second)))
	if err := a.Release(ctx, free.Caller, free.RequestID); err != nil {
		t.Fatal(err)
	}
	got, err := bb.ListOpen(ctx, 0)
	if err != nil || len(got) != 1 || got[0].RequestID != "free" {
		t.Errorf("b.ListOpen = %v, %v; want only the free record", ids(got), err)
	}
	if got, err := a.ListOpen(ctx, 0); err != nil || len(got) != 2 {
		t.Errorf("a.ListOpen = %v, %v; want both (a holds one, the other is free)", ids(got), err)
	}
	counts, err := bb.CountByState(ctx)
	if err != nil || counts[service.StatePending] != 2 {
		t.Errorf("CountByState = %v, %v; counts include leased records", counts, err)
	}
}
