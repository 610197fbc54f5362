package storage

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/billingd/billingd/service"
)

// BenchmarkSweepMillion builds a file of 1,000,000 final charge records (as
// the service writes them, written straight into the buckets in large
// transactions), sweeps them all as the sweeper does (batches of 500, one
// transaction each), then expires every tombstone. It reports what a
// tombstone costs on disk (the tombstones and tombts buckets' pages in use
// and allocated, per tombstone) and the time per 1,000 records of both
// sweeps. It takes minutes and ~2 GB of temporary disk, so `-bench .`
// skips it unless BILLINGD_BENCH_MILLION is set:
//
//	BILLINGD_BENCH_MILLION=1 go test -run x -bench SweepMillion -benchtime 1x -timeout 30m ./storage
func BenchmarkSweepMillion(b *testing.B) {
	if os.Getenv("BILLINGD_BENCH_MILLION") == "" {
		b.Skip("set BILLINGD_BENCH_MILLION=1 to build and sweep a 1M-record file")
	}
	const n, batch = 1_000_000, 500
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		path := filepath.Join(b.TempDir(), "million.db")
		db, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := fillFinal(db, n, t0); err != nil {
			b.Fatal(err)
		}
		before := fileSize(b, path)
		ctx := context.Background()
		sweptAt := t0.Add(8 * 24 * time.Hour)
		b.StartTimer()

		start := time.Now()
		for total := 0; total < n; {
			k, err := db.Sweep(ctx, t0.Add(n*time.Second+time.Hour), sweptAt, batch)
			if err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				b.Fatalf("swept %d of %d", total, n)
			}
			total += k
		}
		sweep := time.Since(start)

		b.StopTimer()
		used, alloc := bucketBytes(b, db, bucketTombs, bucketTombTs)
		after := fileSize(b, path)
		b.StartTimer()

		start = time.Now()
		for total := 0; total < n; {
			k, err := db.SweepTombstones(ctx, sweptAt.Add(time.Second), batch)
			if err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				b.Fatalf("expired %d of %d tombstones", total, n)
			}
			total += k
		}
		expire := time.Since(start)

		b.ReportMetric(float64(used)/n, "B-used/tombstone")
		b.ReportMetric(float64(alloc)/n, "B-alloc/tombstone")
		b.ReportMetric(float64(sweep.Microseconds())/1000/(n/1000), "ms-sweep/1k")
		b.ReportMetric(float64(expire.Microseconds())/1000/(n/1000), "ms-expire/1k")
		b.ReportMetric(float64(before)/(1<<20), "MiB-file-before")
		b.ReportMetric(float64(after)/(1<<20), "MiB-file-swept")
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// fillFinal writes n SUCCEEDED charges claimed one second apart from t0.
func fillFinal(db *DB, n int, t0 time.Time) error {
	const perTx = 20_000
	for start := 0; start < n; start += perTx {
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			setFill(tx)
			for i := start; i < min(start+perTx, n); i++ {
				created := t0.Add(time.Duration(i) * time.Second)
				id := "order-" + strconv.Itoa(i)
				rec := service.Record{
					Caller: "shop", RequestID: id, Method: service.MethodCharge,
					Fingerprint: service.Fingerprint([]byte(id)),
					StripeKey:   service.StripeKey("shop", id, "create_payment_intent"),
					RequestKey:  service.RequestKey("shop", id),
					Params:      []byte("\x01Charge\x00\x00\x00\x042000\x00\x00\x00\x03usd\x00\x00\x00\x0cpm_card_visa"),
					State:       service.StateSucceeded, Attempts: 1,
					Created: created, FirstAttempt: created, Updated: created.Add(time.Second),
					Result: service.Result{ObjectID: fmt.Sprintf("pi_3Q%022d", i), Status: "succeeded", Amount: 2000, Currency: "usd"},
				}
				m := toProto(&rec)
				val, err := encodeStored(m)
				if err != nil {
					return err
				}
				if err := writeRecord(tx, posKey(m.CreateUnixNano, recordKey(rec.Caller, rec.RequestID)), nil, m, val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// bucketBytes sums the page bytes in use and allocated by the buckets.
func bucketBytes(b *testing.B, db *DB, names ...[]byte) (used, alloc int) {
	b.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, name := range names {
			st := tx.Bucket(name).Stats()
			used += st.LeafInuse + st.BranchInuse
			alloc += st.LeafAlloc + st.BranchAlloc
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return used, alloc
}

func fileSize(b *testing.B, path string) int64 {
	b.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}
