package service

import (
	"context"
	"sync"
	"time"
)

// Reasons of a watch's end.
const (
	// ReasonTooManyWatches: the caller has MaxWatches open (RESOURCE_EXHAUSTED).
	ReasonTooManyWatches Reason = "TOO_MANY_WATCHES"
	// ReasonShuttingDown: the server drains; watch again, on another replica
	// or after the restart (UNAVAILABLE).
	ReasonShuttingDown Reason = "SHUTTING_DOWN"
)

// watchPoll is how often a watch reads its record even when this process
// saw no change: another replica may have changed it (PostgreSQL).
const watchPoll = 2 * time.Second

// watchers tells open watches that a record changed, and bounds them per
// caller. A change is announced by closing the record's current channel.
type watchers struct {
	mu       sync.Mutex
	changed  map[string]chan struct{} // inflightKey → closed on the next change
	waiting  map[string]int           // inflightKey → watches on it
	byCaller map[string]int
	drain    chan struct{} // closed by Drain
	drained  bool
}

func newWatchers() *watchers {
	return &watchers{changed: map[string]chan struct{}{}, waiting: map[string]int{},
		byCaller: map[string]int{}, drain: make(chan struct{})}
}

// notify announces a change of key to its watches, if it has any.
func (w *watchers) notify(key string) {
	w.mu.Lock()
	if ch, ok := w.changed[key]; ok && w.waiting[key] > 0 {
		close(ch)
		delete(w.changed, key)
	}
	w.mu.Unlock()
}

// next returns the channel closed on key's next change.
func (w *watchers) next(key string) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	ch, ok := w.changed[key]
	if !ok {
		ch = make(chan struct{})
		w.changed[key] = ch
	}
	return ch
}

// DrainWatches ends every open watch, and every later one at once, with
// SHUTTING_DOWN: a server stopping gracefully calls it before it waits for
// its streams, which would otherwise wait for payments to finish.
func (s *Service) DrainWatches() {
	w := s.watches
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.drained {
		w.drained = true
		close(w.drain)
	}
}

// Watch calls send with the caller's record of requestID now and after
// every change, until the record is final (nil), ctx ends (its error), the
// service drains (SHUTTING_DOWN) or send fails (its error). A caller has at
// most Config.MaxWatches open. It never calls Stripe.
func (s *Service) Watch(ctx context.Context, caller, requestID string, send func(Record) error) error {
	w := s.watches
	key := inflightKey(caller, requestID)
	w.mu.Lock()
	switch {
	case w.drained:
		w.mu.Unlock()
		return s.shuttingDown()
	case w.byCaller[caller] >= s.cfg.MaxWatches:
		w.mu.Unlock()
		return &Error{Reason: ReasonTooManyWatches, Message: "too many open watches for this caller; close one or use GetOperation",
			RetryAfter: s.cfg.RetryAfter}
	}
	w.byCaller[caller]++
	w.waiting[key]++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if w.byCaller[caller]--; w.byCaller[caller] == 0 {
			delete(w.byCaller, caller)
		}
		if w.waiting[key]--; w.waiting[key] == 0 {
			delete(w.waiting, key)
			delete(w.changed, key)
		}
		w.mu.Unlock()
	}()

	poll := time.NewTicker(watchPoll)
	defer poll.Stop()
	var last Record
	for first := true; ; first = false {
		changed := w.next(key) // before the read: a change after it is not missed
		rec, err := s.GetOperation(ctx, caller, requestID)
		if err != nil {
			return err
		}
		if first || rec.State != last.State || !rec.Updated.Equal(last.Updated) {
			if err := send(rec); err != nil {
				return err
			}
			last = rec
		}
		if rec.State.Final() {
			return nil
		}
		select {
		case <-changed:
		case <-poll.C:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.drain:
			return s.shuttingDown()
		}
	}
}

func (s *Service) shuttingDown() *Error {
	return &Error{Reason: ReasonShuttingDown, Message: "billingd is shutting down; watch again", RetryAfter: s.cfg.RetryAfter}
}
