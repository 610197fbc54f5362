package service

import (
	"sync/atomic"
	"time"
)

// workers runs drives on goroutines that outlive one drive. A drive's stack
// grows through storage, stripe-go and net/http to tens of KiB; a fresh
// goroutine starts small and copies its stack at every doubling. (Profiles
// of make bench's new charges at c=64: stack growth fell from 5.7 % to 3.0 %
// of the server's CPU; what is left is gRPC's own handler goroutines.) A finished worker waits idleFor
// for the next drive, then exits, so their number follows the load: there is
// no bound (the Stripe client bounds calls in flight) and no queue (a drive
// never waits for a worker).
type workers struct {
	handoff chan func() // unbuffered: only a worker waiting right now takes one
	idleFor time.Duration
	quit    <-chan struct{} // closed when the service closes: idle workers exit

	live, idle atomic.Int32 // workers running, and those of them waiting for a drive
}

func newWorkers(idleFor time.Duration, quit <-chan struct{}) *workers {
	return &workers{handoff: make(chan func()), idleFor: idleFor, quit: quit}
}

// start runs f on an idle worker, or on a new one if none is idle.
func (w *workers) start(f func()) {
	select {
	case w.handoff <- f:
	default:
		go w.loop(f)
	}
}

func (w *workers) loop(f func()) {
	w.live.Add(1)
	defer w.live.Add(-1)
	idle := time.NewTimer(w.idleFor)
	defer idle.Stop()
	for {
		f()
		f = nil // let the drive's closure go while idle
		idle.Reset(w.idleFor)
		w.idle.Add(1)
		select {
		case f = <-w.handoff:
			w.idle.Add(-1)
		case <-idle.C:
			w.idle.Add(-1)
			return
		case <-w.quit:
			w.idle.Add(-1)
			return
		}
	}
}

// workerIdle is how long a worker waits for another drive before it exits.
const workerIdle = 10 * time.Second
