package storage_test

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// BenchmarkClaimParallel is closed-loop load: conc writers each claiming a
// new key as soon as the previous claim returns, as billingd's handlers do.
func BenchmarkClaimParallel(b *testing.B) {
	for _, mode := range modes {
		for _, conc := range []int{1, 16, 64, 256} {
			b.Run(fmt.Sprintf("%s/conc=%d", mode, conc), func(b *testing.B) {
				db, _ := openDB(b, storage.WithCommitMode(mode))
				procs := runtime.GOMAXPROCS(0)
				b.SetParallelism(max(1, (conc+procs-1)/procs))
				var seq atomic.Int64
				base := db.Stats()
				b.ReportAllocs()
				b.ResetTimer()
				if conc == 1 {
					for range b.N {
						claimBench(b, db, seq.Add(1))
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							claimBench(b, db, seq.Add(1))
						}
					})
				}
				reportBatching(b, db, base)
			})
		}
	}
}

func claimBench(b *testing.B, db *storage.DB, i int64) {
	id := strconv.FormatInt(i, 10)
	if _, created, err := db.Claim(context.Background(), pending("bench", id, t0)); err != nil || !created {
		b.Errorf("Claim(%s) = created %v, %v", id, created, err)
	}
}

// reportBatching reports throughput and the writes per commit since base.
func reportBatching(b *testing.B, db *storage.DB, base storage.Stats) {
	st := db.Stats()
	if c := st.Commits - base.Commits; c > 0 {
		b.ReportMetric(float64(st.Writes-base.Writes)/float64(c), "writes/commit")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkPut rewrites existing records (the outcome write after Stripe
// answers): sequentially, one fsync each, and with 64 concurrent writers.
func BenchmarkPut(b *testing.B) {
	for _, conc := range []int{1, 64} {
		b.Run(fmt.Sprintf("conc=%d", conc), func(b *testing.B) {
			db, _ := openDB(b)
			const keys = 1024
			recs := make([]service.Record, keys)
			for i := range recs {
				recs[i] = pending("bench", strconv.Itoa(i), t0)
			}
			claimAll(b, db, recs)
			var seq atomic.Int64
			put := func() {
				i := seq.Add(1)
				rec := withState(recs[i%keys], service.StatePending, t0.Add(time.Duration(i)))
				rec.Attempts = int(i % 1000)
				if err := db.Put(context.Background(), rec); err != nil {
					b.Errorf("Put: %v", err)
				}
			}
			procs := runtime.GOMAXPROCS(0)
			b.SetParallelism(max(1, (conc+procs-1)/procs))
			base := db.Stats()
			b.ReportAllocs()
			b.ResetTimer()
			if conc == 1 {
				for range b.N {
					put()
				}
			} else {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						put()
					}
				})
			}
			reportBatching(b, db, base)
		})
	}
}

// BenchmarkGet is the replay read: a Get of an existing final record.
func BenchmarkGet(b *testing.B) {
	db, _ := openDB(b)
	const keys = 10_000
	recs := make([]service.Record, keys)
	for i := range recs {
		recs[i] = full("bench", strconv.Itoa(i))
	}
	claimAll(b, db, recs)
	get := func(i int) {
		if _, found, err := db.Get(context.Background(), "bench", strconv.Itoa(i%keys)); err != nil || !found {
			b.Errorf("Get(%d) = %v, %v", i, found, err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			get(i * 7919)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				get(int(seq.Add(7919)))
			}
		})
	})
}

func BenchmarkEncode(b *testing.B) {
	rec := full("acme", "req-0123456789")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := storage.EncodeRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	v, err := storage.EncodeRecord(full("acme", "req-0123456789"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := storage.DecodeRecord(v); err != nil {
			b.Fatal(err)
		}
	}
}
