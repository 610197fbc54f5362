package service

import (
	"sync"
	"testing"
	"time"
)

// waitFor polls cond for at most 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 5s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestWorkers: drives never wait for a worker, finished workers take the
// next drives instead of new goroutines, and idle ones exit after idleFor or
// when the service closes.
func TestWorkers(t *testing.T) {
	t.Parallel()
	const n = 10
	quit := make(chan struct{})
	w := newWorkers(time.Hour, quit)

	// n drives that block until released all run at once.
	wave := func() {
		release := make(chan struct{})
		var running, finished sync.WaitGroup
		running.Add(n)
		finished.Add(n)
		for range n {
			w.start(func() {
				running.Done()
				<-release
				finished.Done()
			})
		}
		running.Wait() // would hang if a drive queued behind another
		close(release)
		finished.Wait()
	}
	wave()
	if got := w.live.Load(); got != n {
		t.Fatalf("live workers after %d concurrent drives = %d, want %d", n, got, n)
	}
	waitFor(t, "every worker idle", func() bool { return w.idle.Load() == n })

	// The next wave runs on the idle workers: no new goroutine.
	wave()
	if got := w.live.Load(); got != n {
		t.Errorf("live workers after a second wave = %d, want the same %d", got, n)
	}

	waitFor(t, "every worker idle again", func() bool { return w.idle.Load() == n })
	close(quit)
	waitFor(t, "workers gone after quit", func() bool { return w.live.Load() == 0 })

	// A worker with nothing to do leaves after idleFor.
	short := newWorkers(time.Millisecond, make(chan struct{}))
	ran := make(chan struct{})
	short.start(func() { close(ran) })
	<-ran
	waitFor(t, "idle worker gone after idleFor", func() bool { return short.live.Load() == 0 })
}
