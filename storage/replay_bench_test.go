package storage_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/billingd/billingd/service"
)

// BenchmarkReplayRead compares the two ways a replay can find its final
// record at the same closed-loop concurrency: Claim of an existing record
// (the claim-or-get "get" side, a write transaction through the group
// commit, rolled back because nothing changed) and Get (a read-only
// transaction, concurrent with everything). BenchmarkGet has Get's cost
// alone; this puts the two side by side as the service would call them.
func BenchmarkReplayRead(b *testing.B) {
	const keys = 1000
	db, _ := openDB(b)
	recs := make([]service.Record, keys)
	for i := range recs {
		recs[i] = full("bench", strconv.Itoa(i))
	}
	claimAll(b, db, recs)
	ctx := context.Background()
	ops := []struct {
		name string
		op   func(i int) error
	}{
		{"claim-existing", func(i int) error {
			rec := recs[i%keys]
			if _, created, err := db.Claim(ctx, pending(rec.Caller, rec.RequestID, t0)); err != nil || created {
				return fmt.Errorf("Claim = created %v, %v", created, err)
			}
			return nil
		}},
		{"get", func(i int) error {
			if _, found, err := db.Get(ctx, "bench", recs[i%keys].RequestID); err != nil || !found {
				return fmt.Errorf("Get = found %v, %v", found, err)
			}
			return nil
		}},
	}
	for _, o := range ops {
		for _, conc := range []int{1, 16, 64, 256} {
			b.Run(fmt.Sprintf("%s/conc=%d", o.name, conc), func(b *testing.B) {
				base := db.Stats()
				b.ReportAllocs()
				closedLoop(b, conc, o.op)
				if st := db.Stats(); st.Commits != base.Commits {
					b.Errorf("%d commits: a replay read must not write", st.Commits-base.Commits)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		}
	}
}

// closedLoop runs op b.N times from exactly conc goroutines, each starting
// its next op as soon as the previous returns.
func closedLoop(b *testing.B, conc int, op func(i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	b.ResetTimer()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N || failed.Load() {
					return
				}
				if err := op(i); err != nil {
					failed.Store(true)
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
}
