// Package closedloop drives benchmarks the way callers load billingd: a fixed
// number of concurrent callers, each sending its next call as soon as the
// previous one returns.
package closedloop

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Run calls call b.N times from exactly c goroutines and reports calls/s. The
// first error stops the run and fails the benchmark.
func Run(b *testing.B, c int, call func(ctx context.Context, i int) error) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		next   atomic.Int64
		failed atomic.Bool
		wg     sync.WaitGroup
	)
	b.ReportAllocs()
	b.ResetTimer()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N || failed.Load() {
					return
				}
				if err := call(ctx, i); err != nil {
					failed.Store(true)
					b.Errorf("call %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}
