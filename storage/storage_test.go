package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

var modes = []storage.CommitMode{storage.GroupCommit, storage.BoltBatch}

func TestClaimCreatesThenReturnsExisting(t *testing.T) {
	t.Parallel()
	succeeded := withState(pending("acme", "r-ok", t0), service.StateSucceeded, t0.Add(time.Minute))
	succeeded.Result = service.Result{ObjectID: "pi_1", Status: "succeeded", Amount: 999, Currency: "usd"}
	indeterminate := withState(pending("acme", "r-5xx", t0), service.StateIndeterminate, t0.Add(time.Minute))
	indeterminate.Err = &service.Error{Reason: service.ReasonOutcomePending, Message: "reconciling", RetryAfter: 2 * time.Second}
	minimal := service.Record{Caller: "c", RequestID: "r", State: service.StatePending}

	tests := []struct {
		name string
		rec  service.Record
	}{
		{"minimal, zero times", minimal},
		{"pending", pending("acme", "r-1", t0)},
		{"failed with every field", full("acme", "r-full")},
		{"succeeded with result", succeeded},
		{"indeterminate with error", indeterminate},
		{"request id with 0x00 and unicode", pending("acme", "r\x00€", t0)},
	}
	for _, mode := range modes {
		for _, tt := range tests {
			t.Run(mode.String()+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				db, _ := openDB(t, storage.WithCommitMode(mode))
				ctx := context.Background()

				got, created, err := db.Claim(ctx, tt.rec)
				if err != nil || !created {
					t.Fatalf("first Claim = created %v, %v; want created", created, err)
				}
				if d := diffRecord(got, tt.rec); d != "" {
					t.Errorf("first Claim returned %s", d)
				}

				other := full(tt.rec.Caller, tt.rec.RequestID)
				other.Fingerprint = []byte("another request")
				got, created, err = db.Claim(ctx, other)
				if err != nil || created {
					t.Fatalf("second Claim = created %v, %v; want existing", created, err)
				}
				if d := diffRecord(got, tt.rec); d != "" {
					t.Errorf("second Claim returned %s", d)
				}
				if d := diffRecord(mustGet(t, db, tt.rec.Caller, tt.rec.RequestID), tt.rec); d != "" {
					t.Errorf("Get returned %s", d)
				}
			})
		}
	}
}

func TestGetMissing(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	// The same request_id under another caller is another record (docs/design.md, rule 1),
	// and a caller with 0x00 must not reach into a neighbour's keys.
	mustClaim(t, db, pending("a", "b\x00c", t0))
	tests := []struct {
		name, caller, requestID string
	}{
		{"unknown", "a", "nope"},
		{"other caller", "z", "b\x00c"},
		{"caller with 0x00", "a\x00b", "c"},
		{"empty caller", "", "b\x00c"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec, found, err := db.Get(context.Background(), tt.caller, tt.requestID)
			if err != nil || found {
				t.Errorf("Get(%q, %q) = %+v, %v, %v; want not found", tt.caller, tt.requestID, rec, found, err)
			}
		})
	}
}

func TestClaimSameKeyConcurrently(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t, storage.WithCommitMode(mode))
			const n = 64
			results := make([]claimResult, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					rec := pending("acme", "same", t0)
					rec.Fingerprint = fmt.Appendf(nil, "goroutine %d", i)
					<-start
					got, created, err := db.Claim(context.Background(), rec)
					results[i] = claimResult{got, created, err}
				})
			}
			close(start)
			wg.Wait()

			stored := mustGet(t, db, "acme", "same")
			creators := 0
			for i, r := range results {
				if r.err != nil {
					t.Fatalf("goroutine %d: %v", i, r.err)
				}
				if r.created {
					creators++
				}
				if d := diffRecord(r.rec, stored); d != "" {
					t.Errorf("goroutine %d saw %s", i, d)
				}
			}
			if creators != 1 {
				t.Errorf("%d claims created the record, want exactly 1", creators)
			}
		})
	}
}

func TestClaimDistinctKeysConcurrently(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t, storage.WithCommitMode(mode))
			const n = 200
			recs := make([]service.Record, n)
			for i := range recs {
				recs[i] = pending(fmt.Sprintf("caller-%d", i%7), fmt.Sprintf("req-%03d", i), t0.Add(time.Duration(i)))
			}
			claimAll(t, db, recs)
			for _, rec := range recs {
				if d := diffRecord(mustGet(t, db, rec.Caller, rec.RequestID), rec); d != "" {
					t.Errorf("%s/%s: %s", rec.Caller, rec.RequestID, d)
				}
			}
			st := db.Stats()
			if st.Writes != n {
				t.Errorf("Stats().Writes = %d, want %d", st.Writes, n)
			}
			t.Logf("%s: %d writes in %d commits", mode, st.Writes, st.Commits)
			// Group commits form while a commit sits in fsync. With one P the
			// runtime may not schedule the other writers until the fsync
			// returns (it retakes a P from a syscall only on a sysmon tick),
			// so batching is asserted only where writers really run alongside.
			if mode == storage.GroupCommit && runtime.GOMAXPROCS(0) == 1 {
				return
			}
			if st.Commits == 0 || st.Commits >= st.Writes {
				t.Errorf("Stats().Commits = %d for %d writes, want batching (0 < commits < writes)", st.Commits, st.Writes)
			}
		})
	}
}

func TestReopenKeepsEverything(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	db := openAt(t, path)
	recs := []service.Record{
		full("acme", "r1"),
		pending("acme", "r2", t0),
		pending("globex", "r1", t0.Add(time.Hour)),
	}
	for _, rec := range recs {
		mustClaim(t, db, rec)
	}
	recs[1] = withState(recs[1], service.StateIndeterminate, t0.Add(time.Minute))
	mustPut(t, db, recs[1])
	wantCounts := mustCount(t, db)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	db = openAt(t, path)
	for _, rec := range recs {
		if d := diffRecord(mustGet(t, db, rec.Caller, rec.RequestID), rec); d != "" {
			t.Errorf("after reopen %s/%s: %s", rec.Caller, rec.RequestID, d)
		}
	}
	if got := mustCount(t, db); !reflect.DeepEqual(got, wantCounts) {
		t.Errorf("CountByState after reopen = %v, want %v", got, wantCounts)
	}
	open, err := db.ListOpen(context.Background(), 0)
	if err != nil {
		t.Fatalf("ListOpen: %v", err)
	}
	if got, want := requestIDs(open), []string{"r2", "r1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ListOpen after reopen = %v, want %v", got, want)
	}
}

func TestClosed(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	mustClaim(t, db, pending("acme", "r1", t0))
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
	}{
		{"Claim", func() error { _, _, err := db.Claim(ctx, pending("acme", "r2", t0)); return err }},
		{"Put", func() error { return db.Put(ctx, pending("acme", "r1", t0)) }},
		{"Get", func() error { _, _, err := db.Get(ctx, "acme", "r1"); return err }},
		{"ListOpen", func() error { _, err := db.ListOpen(ctx, 10); return err }},
		{"CountByState", func() error { _, err := db.CountByState(ctx); return err }},
		{"Sweep", func() error { _, err := db.Sweep(ctx, t0, t0, 10); return err }},
		{"Scan", func() error { return db.Scan(ctx, func(service.Record) bool { return true }) }},
		{"Close", db.Close},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := tt.call(); !errors.Is(err, storage.ErrClosed) {
				t.Errorf("%s after Close = %v, want ErrClosed", tt.name, err)
			}
		})
	}
}

func TestCloseFailsQueuedWrites(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	release := db.HoldCommits()
	defer release()
	claim := claimAsync(context.Background(), db, pending("acme", "r1", t0))
	put := putAsync(context.Background(), db, pending("acme", "r2", t0))
	waitQueued(t, db, 2)
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := <-claim; !errors.Is(r.err, storage.ErrClosed) {
		t.Errorf("queued Claim = %v, want ErrClosed", r.err)
	}
	if err := <-put; !errors.Is(err, storage.ErrClosed) {
		t.Errorf("queued Put = %v, want ErrClosed", err)
	}
}

func TestInvalidRecords(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	valid := pending("acme", "r1", t0)
	tests := []struct {
		name   string
		mutate func(*service.Record)
	}{
		{"empty caller", func(r *service.Record) { r.Caller = "" }},
		{"caller with 0x00", func(r *service.Record) { r.Caller = "ac\x00me" }},
		{"empty request id", func(r *service.Record) { r.RequestID = "" }},
		{"unspecified state", func(r *service.Record) { r.State = service.StateUnspecified }},
		{"unknown state", func(r *service.Record) { r.State = 9 }},
		{"negative attempts", func(r *service.Record) { r.Attempts = -1 }},
		{"key too long", func(r *service.Record) { r.RequestID = string(make([]byte, 40000)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := valid
			tt.mutate(&rec)
			if _, _, err := db.Claim(context.Background(), rec); !errors.Is(err, storage.ErrInvalidRecord) {
				t.Errorf("Claim = %v, want ErrInvalidRecord", err)
			}
			if err := db.Put(context.Background(), rec); !errors.Is(err, storage.ErrInvalidRecord) {
				t.Errorf("Put = %v, want ErrInvalidRecord", err)
			}
		})
	}
}

func TestListOpenAndCountByStateFollowPut(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	ctx := context.Background()
	// Claimed out of creation order: ListOpen sorts by Created, not by key
	// or arrival.
	a := pending("acme", "a", t0.Add(2*time.Hour))
	b := pending("acme", "b", t0)
	c := pending("globex", "c", t0.Add(time.Hour))
	d := pending("acme", "d", t0.Add(-time.Hour))
	for _, r := range []service.Record{a, b, c, d} {
		mustClaim(t, db, r)
	}

	steps := []struct {
		name       string
		put        *service.Record
		wantOpen   []string
		wantCounts map[service.State]int
	}{
		{
			name:       "all pending",
			wantOpen:   []string{"d", "b", "c", "a"},
			wantCounts: map[service.State]int{service.StatePending: 4, service.StateSucceeded: 0, service.StateFailed: 0, service.StateIndeterminate: 0, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
		{
			name:       "b succeeded",
			put:        ptr(withState(b, service.StateSucceeded, t0.Add(3*time.Hour))),
			wantOpen:   []string{"d", "c", "a"},
			wantCounts: map[service.State]int{service.StatePending: 3, service.StateSucceeded: 1, service.StateFailed: 0, service.StateIndeterminate: 0, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
		{
			name:       "c indeterminate stays open",
			put:        ptr(withState(c, service.StateIndeterminate, t0.Add(3*time.Hour))),
			wantOpen:   []string{"d", "c", "a"},
			wantCounts: map[service.State]int{service.StatePending: 2, service.StateSucceeded: 1, service.StateFailed: 0, service.StateIndeterminate: 1, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
		{
			name:       "c reconciled to failed",
			put:        ptr(withState(c, service.StateFailed, t0.Add(4*time.Hour))),
			wantOpen:   []string{"d", "a"},
			wantCounts: map[service.State]int{service.StatePending: 2, service.StateSucceeded: 1, service.StateFailed: 1, service.StateIndeterminate: 0, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
		{
			name:       "pending d rewritten with a new attempt",
			put:        ptr(func() service.Record { r := d; r.Attempts = 2; r.Updated = t0.Add(5 * time.Hour); return r }()),
			wantOpen:   []string{"d", "a"},
			wantCounts: map[service.State]int{service.StatePending: 2, service.StateSucceeded: 1, service.StateFailed: 1, service.StateIndeterminate: 0, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
		{
			name:       "Put creates a missing record",
			put:        ptr(withState(pending("acme", "e", t0), service.StateSucceeded, t0)),
			wantOpen:   []string{"d", "a"},
			wantCounts: map[service.State]int{service.StatePending: 2, service.StateSucceeded: 2, service.StateFailed: 1, service.StateIndeterminate: 0, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0},
		},
	}
	// Steps build on each other: sequential subtests, no t.Parallel.
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.put != nil {
				mustPut(t, db, *st.put)
				if d := diffRecord(mustGet(t, db, st.put.Caller, st.put.RequestID), *st.put); d != "" {
					t.Errorf("Get after Put: %s", d)
				}
			}
			open, err := db.ListOpen(ctx, 0)
			if err != nil {
				t.Fatalf("ListOpen: %v", err)
			}
			if got := requestIDs(open); !reflect.DeepEqual(got, st.wantOpen) {
				t.Errorf("ListOpen = %v, want %v", got, st.wantOpen)
			}
			first, err := db.ListOpen(ctx, 1)
			if err != nil {
				t.Fatalf("ListOpen(1): %v", err)
			}
			if got := requestIDs(first); !reflect.DeepEqual(got, st.wantOpen[:1]) {
				t.Errorf("ListOpen(1) = %v, want %v", got, st.wantOpen[:1])
			}
			if got := mustCount(t, db); !reflect.DeepEqual(got, st.wantCounts) {
				t.Errorf("CountByState = %v, want %v", got, st.wantCounts)
			}
			if got, want := countsFromScan(t, db), st.wantCounts; !reflect.DeepEqual(got, want) {
				t.Errorf("states seen by Scan = %v, want %v", got, want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestSweep(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	ctx := context.Background()
	now := t0.Add(30 * 24 * time.Hour)
	cutoff := now.Add(-7 * 24 * time.Hour)

	// Claimed in one order and settled in the other: the sweep walks
	// records in claim order, so oldFinal lists them in claim order, and the
	// records claimed before them but not sweepable (open, or settled at the
	// cutoff) sit at the head of that walk.
	var oldFinal []string
	for i := range 5 {
		id := fmt.Sprintf("old-final-%d", i)
		oldFinal = append(oldFinal, id)
		state := service.StateSucceeded
		if i%2 == 1 {
			state = service.StateFailed
		}
		r := pending("acme", id, t0.Add(time.Duration(i+1)*time.Minute))
		mustClaim(t, db, r)
		mustPut(t, db, withState(r, state, cutoff.Add(-time.Duration(i+1)*time.Hour)))
	}
	keep := []service.Record{
		withState(pending("acme", "recent-final", now), service.StateSucceeded, now),
		withState(pending("acme", "at-cutoff", t0), service.StateFailed, cutoff),
		pending("acme", "old-pending", t0),
		withState(pending("acme", "old-indeterminate", t0), service.StateIndeterminate, t0.Add(time.Minute)),
	}
	for _, r := range keep {
		mustClaim(t, db, r)
	}

	if _, err := db.Sweep(ctx, cutoff, cutoff, 0); err == nil {
		t.Errorf("Sweep with limit 0 succeeded, want an error")
	}

	var swept []string
	for _, want := range []int{2, 2, 1, 0} {
		before := map[string]bool{}
		for _, id := range oldFinal {
			if _, found, _ := db.Get(ctx, "acme", id); found {
				before[id] = true
			}
		}
		n, err := db.Sweep(ctx, cutoff, cutoff, 2)
		if err != nil {
			t.Fatalf("Sweep: %v", err)
		}
		if n != want {
			t.Errorf("Sweep = %d, want %d", n, want)
		}
		for _, id := range oldFinal {
			if _, found, _ := db.Get(ctx, "acme", id); before[id] && !found {
				swept = append(swept, id)
			}
		}
	}
	if !reflect.DeepEqual(swept, oldFinal) {
		t.Errorf("swept in order %v, want oldest claim first %v", swept, oldFinal)
	}
	for _, r := range keep {
		if d := diffRecord(mustGet(t, db, r.Caller, r.RequestID), r); d != "" {
			t.Errorf("%s after sweep: %s", r.RequestID, d)
		}
	}
	// Even a cutoff in the far future leaves open records alone.
	n, err := db.Sweep(ctx, now.Add(1000*time.Hour), now.Add(1000*time.Hour), 100)
	if err != nil || n != 2 {
		t.Errorf("Sweep(far future) = %d, %v; want the 2 final records", n, err)
	}
	want := map[service.State]int{service.StatePending: 1, service.StateSucceeded: 0, service.StateFailed: 0, service.StateIndeterminate: 1, service.StateRequiresAction: 0, service.StateProcessing: 0, service.StateAuthorized: 0}
	if got := mustCount(t, db); !reflect.DeepEqual(got, want) {
		t.Errorf("CountByState after sweeps = %v, want %v", got, want)
	}
	if got := countsFromScan(t, db); !reflect.DeepEqual(got, want) {
		t.Errorf("states seen by Scan after sweeps = %v, want %v", got, want)
	}
}

func TestScan(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	const n = 600 // more than one internal chunk
	recs := make([]service.Record, n)
	for i := range recs {
		recs[i] = pending("acme", fmt.Sprintf("r-%04d", i), t0)
	}
	claimAll(t, db, recs)

	tests := []struct {
		name    string
		stopAt  int // fn returns false on this call; 0: never
		wantLen int
	}{
		{"all", 0, n},
		{"stop early", 10, 10},
		{"stop at chunk boundary", 256, 256},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			err := db.Scan(context.Background(), func(r service.Record) bool {
				got = append(got, r.RequestID)
				return len(got) != tt.stopAt
			})
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if len(got) != tt.wantLen {
				t.Fatalf("Scan visited %d records, want %d", len(got), tt.wantLen)
			}
			for i, id := range got {
				if want := recs[i].RequestID; id != want {
					t.Fatalf("record %d = %s, want %s (key order, each once)", i, id, want)
				}
			}
		})
	}

	t.Run("fn may write", func(t *testing.T) {
		t.Parallel()
		db, _ := openDB(t)
		claimAll(t, db, recs[:300])
		visited := 0
		err := db.Scan(context.Background(), func(r service.Record) bool {
			visited++
			mustPut(t, db, withState(r, service.StateSucceeded, t0.Add(time.Hour)))
			return true
		})
		if err != nil || visited != 300 {
			t.Fatalf("Scan = %v after %d records, want 300", err, visited)
		}
		if got := mustCount(t, db)[service.StateSucceeded]; got != 300 {
			t.Errorf("%d records succeeded, want 300", got)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := db.Scan(ctx, func(service.Record) bool { return true }); !errors.Is(err, context.Canceled) {
			t.Errorf("Scan(cancelled) = %v, want context.Canceled", err)
		}
	})
}

func TestOpenLocking(t *testing.T) {
	t.Parallel()
	const wait = 50 * time.Millisecond
	db, path := openDB(t)
	rec := full("acme", "r1")
	mustClaim(t, db, rec)

	// bbolt's flock is per open file, so a second handle in this process
	// stands in for a second process.
	if _, err := storage.Open(path, storage.WithLockTimeout(wait)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("second Open = %v, want ErrLocked", err)
	}
	if _, err := storage.OpenReadOnly(path, storage.WithLockTimeout(wait)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("OpenReadOnly while the writer has the file = %v, want ErrLocked", err)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	ro1, err := storage.OpenReadOnly(path, storage.WithLockTimeout(wait))
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	defer ro1.Close()
	ro2, err := storage.OpenReadOnly(path, storage.WithLockTimeout(wait))
	if err != nil {
		t.Fatalf("second OpenReadOnly (shared lock): %v", err)
	}
	defer ro2.Close()

	if d := diffRecord(mustGet(t, ro1, "acme", "r1"), rec); d != "" {
		t.Errorf("read-only Get: %s", d)
	}
	if got := mustCount(t, ro2)[service.StateFailed]; got != 1 {
		t.Errorf("read-only CountByState[FAILED] = %d, want 1", got)
	}
	ctx := context.Background()
	if _, _, err := ro1.Claim(ctx, pending("acme", "r2", t0)); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("read-only Claim = %v, want ErrReadOnly", err)
	}
	if err := ro1.Put(ctx, rec); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("read-only Put = %v, want ErrReadOnly", err)
	}
	if _, err := ro1.Sweep(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 10); !errors.Is(err, storage.ErrReadOnly) {
		t.Errorf("read-only Sweep = %v, want ErrReadOnly", err)
	}
	if _, err := storage.Open(path, storage.WithLockTimeout(wait)); !errors.Is(err, storage.ErrLocked) {
		t.Errorf("Open while readers have the file = %v, want ErrLocked", err)
	}
}

func TestOpenReadOnlyMissingFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "absent.db")
	if db, err := storage.OpenReadOnly(path); err == nil {
		db.Close()
		t.Fatalf("OpenReadOnly(%s) succeeded on a missing file", path)
	}
}

// Ping does no I/O on a healthy store (a failed commit makes it probe with
// a write; cmd/billingd's full-disk test covers that) and fails once closed.
func TestPing(t *testing.T) {
	t.Parallel()
	db, path := openDB(t)
	ctx := context.Background()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping on an open store: %v", err)
	}
	if after, err := os.Stat(path); err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("Ping wrote to the file (mtime %v → %v, %v)", before.ModTime(), after.ModTime(), err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(ctx); !errors.Is(err, storage.ErrClosed) {
		t.Errorf("Ping after Close = %v, want ErrClosed", err)
	}
}
