package server_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billingd/billingd/storage/postgres/pgtest"
)

// BenchmarkStores compares the record stores end to end: Charge RPCs through
// the production gRPC server and service to the simulator over HTTP, on a
// bbolt file and on PostgreSQL (BILLINGD_TEST_POSTGRES; skipped without it).
// new charges each claim a record, call Stripe and settle (two durable
// writes); replays answer a final record from one read. 32 callers at once.
//
//	go test -run '^$' -bench BenchmarkStores -benchtime 3s ./server/
func BenchmarkStores(b *testing.B) {
	stores := []struct {
		name string
		opts func(b *testing.B) harnessOpts
	}{
		{"bbolt", func(*testing.B) harnessOpts { return harnessOpts{} }},
		{"postgres", func(b *testing.B) harnessOpts { return harnessOpts{postgres: pgtest.DSN(b)} }},
	}
	for _, st := range stores {
		b.Run(st.name, func(b *testing.B) {
			b.Run("new", func(b *testing.B) {
				h := newHarness(b, st.opts(b))
				var n atomic.Int64
				prefix := fmt.Sprintf("new-%d-", time.Now().UnixNano())
				benchParallel(b, func(ctx context.Context) error {
					_, err := h.client.Charge(ctx, visa(fmt.Sprint(prefix, n.Add(1))))
					return err
				})
			})
			b.Run("replay", func(b *testing.B) {
				h := newHarness(b, st.opts(b))
				const distinct = 256
				for i := range distinct {
					if _, err := h.client.Charge(context.Background(), visa(fmt.Sprint("replay-", i))); err != nil {
						b.Fatal(err)
					}
				}
				var n atomic.Int64
				benchParallel(b, func(ctx context.Context) error {
					resp, err := h.client.Charge(ctx, visa(fmt.Sprint("replay-", n.Add(1)%distinct)))
					if err == nil && !resp.GetReplayed() {
						return fmt.Errorf("not a replay: %v", resp)
					}
					return err
				})
			})
		})
	}
}

// benchParallel calls op b.N times from 16 goroutines per CPU and reports ops/s.
func benchParallel(b *testing.B, op func(context.Context) error) {
	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := op(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
}
