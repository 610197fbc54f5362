package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

var _ service.Records = (*storage.DB)(nil)

// t0 is a fixed instant the test records are built around.
var t0 = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// openDB opens a fresh store in a directory that does not exist yet, so
// every test also checks that Open creates it.
func openDB(t testing.TB, opts ...storage.Option) (*storage.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "billingd.db")
	return openAt(t, path, opts...), path
}

// openAt opens path and closes it at the end of the test unless the test
// closed it itself.
func openAt(t testing.TB, path string, opts ...storage.Option) *storage.DB {
	t.Helper()
	db, err := storage.Open(path, opts...)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

// pending is a freshly claimed record.
func pending(caller, requestID string, created time.Time) service.Record {
	return service.Record{
		Caller:      caller,
		RequestID:   requestID,
		Method:      service.MethodCharge,
		Fingerprint: []byte("fp:" + caller + "/" + requestID),
		StripeKey:   "bd1_" + requestID,
		RequestKey:  "rk_" + requestID,
		Params:      []byte{0x0a, 0x03, 'e', 'u', 'r'},
		State:       service.StatePending,
		Created:     created,
		Updated:     created,
	}
}

// withState is rec moved to state at updated.
func withState(rec service.Record, state service.State, updated time.Time) service.Record {
	rec.State = state
	rec.Updated = updated
	return rec
}

// full has every field set, nested ones included.
func full(caller, requestID string) service.Record {
	rec := pending(caller, requestID, t0)
	rec.Method = service.MethodSubscribe
	rec.State = service.StateFailed
	rec.Attempts = 3
	rec.FirstAttempt = t0.Add(time.Second)
	rec.Updated = t0.Add(2 * time.Second)
	rec.Result = service.Result{ObjectID: "pi_123", Status: "requires_action", Amount: 4200, Currency: "eur"}
	rec.Err = &service.Error{
		Reason:       service.ReasonResourceMissing,
		Message:      "No such customer: 'cus_9'",
		Metadata:     map[string]string{"stripe_request_id": "req_1", "code": "resource_missing", "param": "customer"},
		Violations:   []service.FieldViolation{{Field: "customer", Description: "unknown"}, {Field: "price", Description: "inactive"}},
		ResourceType: "customer",
		ResourceName: "cus_9",
		RetryAfter:   1500 * time.Millisecond,
	}
	return rec
}

// diffRecord describes how got differs from want, or returns "". Times are
// compared with Equal: stored times come back in UTC without a monotonic
// reading.
func diffRecord(got, want service.Record) string {
	var diffs []string
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"Created", got.Created, want.Created},
		{"FirstAttempt", got.FirstAttempt, want.FirstAttempt},
		{"Updated", got.Updated, want.Updated},
	} {
		if !tt.got.Equal(tt.want) || tt.got.IsZero() != tt.want.IsZero() {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", tt.name, tt.got, tt.want))
		}
	}
	got.Created, got.FirstAttempt, got.Updated = time.Time{}, time.Time{}, time.Time{}
	want.Created, want.FirstAttempt, want.Updated = time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		diffs = append(diffs, fmt.Sprintf("got  %+v\nwant %+v", got, want))
		if got.Err != nil && want.Err != nil {
			diffs = append(diffs, fmt.Sprintf("got.Err  %+v\nwant.Err %+v", *got.Err, *want.Err))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	return fmt.Sprint(diffs)
}

func mustClaim(t testing.TB, db *storage.DB, rec service.Record) service.Record {
	t.Helper()
	got, created, err := db.Claim(context.Background(), rec)
	if err != nil {
		t.Fatalf("Claim(%s/%s): %v", rec.Caller, rec.RequestID, err)
	}
	if !created {
		t.Fatalf("Claim(%s/%s): created = false, want true", rec.Caller, rec.RequestID)
	}
	return got
}

func mustPut(t testing.TB, db *storage.DB, rec service.Record) {
	t.Helper()
	if err := db.Put(context.Background(), rec); err != nil {
		t.Fatalf("Put(%s/%s): %v", rec.Caller, rec.RequestID, err)
	}
}

// mustGet returns the stored record, failing the test if there is none.
func mustGet(t testing.TB, db *storage.DB, caller, requestID string) service.Record {
	t.Helper()
	rec, found, err := db.Get(context.Background(), caller, requestID)
	if err != nil {
		t.Fatalf("Get(%s/%s): %v", caller, requestID, err)
	}
	if !found {
		t.Fatalf("Get(%s/%s): not found", caller, requestID)
	}
	return rec
}

// claimAll claims recs concurrently.
func claimAll(t testing.TB, db *storage.DB, recs []service.Record) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(recs))
	for _, rec := range recs {
		wg.Go(func() {
			if _, created, err := db.Claim(context.Background(), rec); err != nil || !created {
				errs <- fmt.Errorf("Claim(%s/%s) = created %v, %v", rec.Caller, rec.RequestID, created, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// waitQueued waits until n writes are queued behind a held commit.
func waitQueued(t testing.TB, db *storage.DB, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for db.Queued() != n {
		if time.Now().After(deadline) {
			t.Fatalf("Queued() = %d, want %d", db.Queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// claimResult is the outcome of a Claim run in a goroutine.
type claimResult struct {
	rec     service.Record
	created bool
	err     error
}

// claimAsync starts a Claim and returns where its outcome will arrive.
func claimAsync(ctx context.Context, db *storage.DB, rec service.Record) <-chan claimResult {
	ch := make(chan claimResult, 1)
	go func() {
		got, created, err := db.Claim(ctx, rec)
		ch <- claimResult{got, created, err}
	}()
	return ch
}

func putAsync(ctx context.Context, db *storage.DB, rec service.Record) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- db.Put(ctx, rec) }()
	return ch
}

// countsFromScan recounts states the slow way, to check CountByState.
func countsFromScan(t testing.TB, db *storage.DB) map[service.State]int {
	t.Helper()
	out := map[service.State]int{}
	for _, st := range service.States() {
		out[st] = 0
	}
	if err := db.Scan(context.Background(), func(r service.Record) bool { out[r.State]++; return true }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return out
}

func mustCount(t testing.TB, db *storage.DB) map[service.State]int {
	t.Helper()
	got, err := db.CountByState(context.Background())
	if err != nil {
		t.Fatalf("CountByState: %v", err)
	}
	return got
}

func requestIDs(recs []service.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.RequestID
	}
	return out
}
