package storage_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// Under steady load with retention, the file stops growing: each cycle
// writes n final records, moves the clock past retention and sweeps, and
// bbolt reuses the pages the sweep freed.
func TestSweepKeepsFileSizeBounded(t *testing.T) {
	t.Parallel()
	db, path := openDB(t)
	ctx := context.Background()
	clock := stripesim.NewManualClock(t0)
	cfg := service.DefaultSweeperConfig()
	cfg.Batch = 100
	// Tombstones go a cycle after their records: they are kept in steady
	// state too, only longer.
	cfg.TombstoneRetention = time.Hour
	sw := service.NewSweeper(db, clock, cfg, nil)

	const n, cycles, workers = 1000, 8, 16
	params := bytes.Repeat([]byte{'p'}, 2048) // 2 MiB of records per cycle
	var sizes []int64
	for c := range cycles {
		now := clock.Now()
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += workers {
					rec := withState(pending("c", fmt.Sprintf("cycle%d-%d", c, i), now), service.StateSucceeded, now)
					rec.Params = params
					rec.Result = service.Result{ObjectID: fmt.Sprintf("pi_%d_%d", c, i), Status: "succeeded", Amount: 100, Currency: "usd"}
					if err := db.Put(ctx, rec); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// An open record is never swept, however old.
		if c == 0 {
			if err := db.Put(ctx, pending("c", "stuck", clock.Now())); err != nil {
				t.Fatal(err)
			}
		}
		clock.Advance(cfg.Retention + time.Hour)
		swept, err := sw.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if swept != n {
			t.Fatalf("cycle %d swept %d, want %d", c, swept, n)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, fi.Size())
	}
	t.Logf("file size per cycle: %v", sizes)
	if sizes[0] < int64(n*len(params)) {
		t.Fatalf("first cycle left a %d-byte file: the load is too small to show anything", sizes[0])
	}
	// bbolt grows its file by doubling, and which freed pages a commit can
	// reuse depends on the read transactions open when it lands (scheduling),
	// so the file may take one more doubling after the first cycle. Without
	// reuse it would hold everything written: cycles times the first
	// cycle's records, several doublings more.
	written := int64(cycles * n * len(params))
	if last := sizes[len(sizes)-1]; last >= written || last > sizes[0]*2 {
		t.Errorf("file grew from %d to %d bytes over %d cycles writing %d bytes of records: swept pages are not reused", sizes[0], last, cycles, written)
	}
	if _, found, _ := db.Get(ctx, "c", "stuck"); !found {
		t.Error("the PENDING record was swept")
	}
	counts, err := db.CountByState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts[service.StateSucceeded] != 0 || counts[service.StatePending] != 1 {
		t.Errorf("counts = %v", counts)
	}
}

func TestRequestKeyIndexAndEvents(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	ctx := context.Background()
	rec := pending("alice", "r1", t0)
	if err := db.Put(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, found, err := db.GetByRequestKey(ctx, rec.RequestKey)
	if err != nil || !found || got.Caller != "alice" || got.RequestID != "r1" {
		t.Fatalf("GetByRequestKey = %+v %v %v", got, found, err)
	}
	if _, found, _ := db.GetByRequestKey(ctx, "rk_other"); found {
		t.Error("found a record for an unknown key")
	}
	// Swept with its record.
	if err := db.Put(ctx, withState(rec, service.StateSucceeded, t0)); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Sweep(ctx, t0.Add(time.Second), t0.Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v", n, err)
	}
	if _, found, _ := db.GetByRequestKey(ctx, rec.RequestKey); found {
		t.Error("index entry outlived its record")
	}

	first, err := db.ClaimEvent(ctx, "evt_1", t0)
	if err != nil || !first {
		t.Fatalf("ClaimEvent = %v, %v", first, err)
	}
	if again, _ := db.ClaimEvent(ctx, "evt_1", t0); again {
		t.Error("second claim of evt_1 was first")
	}
	if err := db.ForgetEvent(ctx, "evt_1"); err != nil {
		t.Fatal(err)
	}
	if again, _ := db.ClaimEvent(ctx, "evt_1", t0); !again {
		t.Error("claim after ForgetEvent was not first")
	}
	if n, err := db.SweepEvents(ctx, t0.Add(time.Second), 10); err != nil || n != 1 {
		t.Fatalf("SweepEvents = %d, %v", n, err)
	}
	if again, _ := db.ClaimEvent(ctx, "evt_1", t0); !again {
		t.Error("claim after sweep was not first")
	}
}
