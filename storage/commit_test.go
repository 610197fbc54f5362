package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

func TestGroupCommitBatchesQueuedWrites(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		maxBatch    int
		writes      int
		wantCommits uint64
	}{
		{"one write, one commit", 0, 1, 1},
		{"all queued writes in one commit", 0, 10, 1},
		{"max batch splits the queue", 4, 10, 3},
		{"max batch of one", 1, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t, storage.WithMaxBatch(tt.maxBatch))
			release := db.HoldCommits()
			var results []<-chan claimResult
			for i := range tt.writes {
				results = append(results, claimAsync(context.Background(), db, pending("acme", fmt.Sprint(i), t0)))
				waitQueued(t, db, i+1)
			}
			release()
			for i, ch := range results {
				if r := <-ch; r.err != nil || !r.created {
					t.Errorf("claim %d = created %v, %v", i, r.created, r.err)
				}
			}
			if got, want := db.Stats(), (storage.Stats{Commits: tt.wantCommits, Writes: uint64(tt.writes)}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestGroupCommitLoneWriteDoesNotWait(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	// Every sequential write is its own commit, and none waits for company:
	// bbolt's Batch would hold each for its 10 ms MaxBatchDelay. The fastest
	// of n is compared, so a loaded machine's slow fsyncs do not matter.
	const n = 20
	fastest := time.Hour
	for i := range n {
		start := time.Now()
		mustClaim(t, db, pending("acme", fmt.Sprint(i), t0))
		fastest = min(fastest, time.Since(start))
	}
	if got, want := db.Stats(), (storage.Stats{Commits: n, Writes: n}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if fastest >= 10*time.Millisecond {
		t.Errorf("fastest of %d lone claims took %v, as long as a batch delay", n, fastest)
	}
}

func TestClaimOfExistingRecordSkipsTheFsync(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	rec := pending("acme", "r", t0)
	mustClaim(t, db, rec)
	// A replayed claim reads a record an earlier commit already fsync'd:
	// nothing to write, so its transaction is rolled back, not committed.
	for range 3 {
		got, created, err := db.Claim(context.Background(), pending("acme", "r", t0.Add(time.Hour)))
		if err != nil || created || diffRecord(got, rec) != "" {
			t.Fatalf("repeated Claim = created %v, %v, %s", created, err, diffRecord(got, rec))
		}
	}
	if got, want := db.Stats(), (storage.Stats{Commits: 1, Writes: 4}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
}

func TestGroupCommitAppliesOneBatchInQueueOrder(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	ctx := context.Background()
	first := pending("acme", "k", t0)
	second := pending("acme", "k", t0.Add(time.Second))
	second.Fingerprint = []byte("second")
	final := withState(first, service.StateSucceeded, t0.Add(time.Minute))
	final.Result = service.Result{ObjectID: "pi_1", Status: "succeeded"}
	third := pending("acme", "k", t0.Add(time.Hour))

	release := db.HoldCommits()
	c1 := claimAsync(ctx, db, first)
	waitQueued(t, db, 1)
	c2 := claimAsync(ctx, db, second)
	waitQueued(t, db, 2)
	p := putAsync(ctx, db, final)
	waitQueued(t, db, 3)
	c3 := claimAsync(ctx, db, third)
	waitQueued(t, db, 4)
	release()

	if r := <-c1; r.err != nil || !r.created || diffRecord(r.rec, first) != "" {
		t.Errorf("first claim = created %v, %v, %s; want it to create", r.created, r.err, diffRecord(r.rec, first))
	}
	if r := <-c2; r.err != nil || r.created || diffRecord(r.rec, first) != "" {
		t.Errorf("second claim = created %v, %v, %s; want the first's record", r.created, r.err, diffRecord(r.rec, first))
	}
	if err := <-p; err != nil {
		t.Errorf("Put: %v", err)
	}
	if r := <-c3; r.err != nil || r.created || diffRecord(r.rec, final) != "" {
		t.Errorf("third claim = created %v, %v, %s; want the Put's record", r.created, r.err, diffRecord(r.rec, final))
	}
	if got, want := db.Stats(), (storage.Stats{Commits: 1, Writes: 4}); got != want {
		t.Errorf("Stats() = %+v, want %+v", got, want)
	}
	if d := diffRecord(mustGet(t, db, "acme", "k"), final); d != "" {
		t.Errorf("Get: %s", d)
	}
}

func TestGroupCommitCancelledFollowerIsNotApplied(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		write func(ctx context.Context, db *storage.DB, rec service.Record) <-chan error
	}{
		{"Claim", func(ctx context.Context, db *storage.DB, rec service.Record) <-chan error {
			ch := make(chan error, 1)
			go func() { ch <- (<-claimAsync(ctx, db, rec)).err }()
			return ch
		}},
		{"Put", putAsync},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t)
			release := db.HoldCommits()

			ctx, cancel := context.WithCancel(context.Background())
			gone := tt.write(ctx, db, pending("acme", "gone", t0))
			waitQueued(t, db, 1)
			kept := tt.write(context.Background(), db, pending("acme", "kept", t0))
			waitQueued(t, db, 2)

			cancel()
			if err := <-gone; !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled %s = %v, want context.Canceled", tt.name, err)
			}
			if got := db.Queued(); got != 1 {
				t.Errorf("Queued() after cancel = %d, want 1", got)
			}
			release()
			if err := <-kept; err != nil {
				t.Errorf("kept %s: %v", tt.name, err)
			}

			if rec, found, err := db.Get(context.Background(), "acme", "gone"); err != nil || found {
				t.Errorf("Get(gone) = %+v, %v, %v; want not found", rec, found, err)
			}
			mustGet(t, db, "acme", "kept")
			if got, want := db.Stats(), (storage.Stats{Commits: 1, Writes: 1}); got != want {
				t.Errorf("Stats() = %+v, want %+v", got, want)
			}
		})
	}
}

func TestWriteWithDoneContext(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			db, _ := openDB(t, storage.WithCommitMode(mode))
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, _, err := db.Claim(ctx, pending("acme", "r", t0)); !errors.Is(err, context.Canceled) {
				t.Errorf("Claim = %v, want context.Canceled", err)
			}
			if err := db.Put(ctx, pending("acme", "r", t0)); !errors.Is(err, context.Canceled) {
				t.Errorf("Put = %v, want context.Canceled", err)
			}
			if _, found, _ := db.Get(context.Background(), "acme", "r"); found {
				t.Errorf("a write with a done context was applied")
			}
		})
	}
}

// TestFailedOpDoesNotFailItsBatch puts a write that fails inside the
// transaction (its stored record is unreadable) in one batch with good ones.
func TestFailedOpDoesNotFailItsBatch(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			db, path := openDB(t, storage.WithCommitMode(mode))
			mustClaim(t, db, pending("acme", "bad", t0))
			if err := db.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			rewriteRaw(t, path, "acme", "bad", []byte{0x7f, 1, 2, 3})
			db = openAt(t, path, storage.WithCommitMode(mode))

			var release func()
			if mode == storage.GroupCommit {
				release = db.HoldCommits()
			}
			ctx := context.Background()
			good := claimAsync(ctx, db, pending("acme", "good", t0))
			bad := claimAsync(ctx, db, pending("acme", "bad", t0))
			put := putAsync(ctx, db, pending("acme", "put", t0))
			if release != nil {
				waitQueued(t, db, 3)
				release()
			}
			if r := <-bad; !errors.Is(r.err, storage.ErrCorrupt) {
				t.Errorf("claim over the unreadable record = %v, want ErrCorrupt", r.err)
			}
			if r := <-good; r.err != nil || !r.created {
				t.Errorf("good claim = created %v, %v", r.created, r.err)
			}
			if err := <-put; err != nil {
				t.Errorf("put: %v", err)
			}
			mustGet(t, db, "acme", "good")
			mustGet(t, db, "acme", "put")
			if got := db.Stats().Writes; got != 2 {
				t.Errorf("Stats().Writes = %d, want 2", got)
			}
		})
	}
}

// rewriteRaw replaces the stored value of (caller, requestID) behind the
// package's back, in a closed file, to model data written by another version
// or damaged on disk.
func rewriteRaw(t testing.TB, path, caller, requestID string, value []byte) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		pos := storage.RecordPos(tx, caller, requestID)
		if pos == nil {
			return fmt.Errorf("no record")
		}
		return tx.Bucket(storage.RecordsBucket()).Put(pos, value)
	})
	if err != nil {
		t.Fatalf("rewrite %s/%s: %v", caller, requestID, err)
	}
}
