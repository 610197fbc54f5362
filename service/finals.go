package service

import (
	"sync"
	"time"
)

// finals caches final outcomes for replays. A final record never changes, so
// a cached copy answers a repeat as the store would, without a transaction,
// a decode or its allocations — retries are mostly such repeats. It is
// bounded (FIFO: recent operations are the ones retried) and per process;
// an entry is not used past Config.Retention after its record's last update,
// when the record may be swept and its tombstone answers instead.
type finals struct {
	mu   sync.Mutex
	m    map[string]*final
	ring []string // insertion order, grown up to size, then reused
	size int
	next int
}

// final is what a replay needs of a final record, and no more (no params, no
// keys): about a quarter of a Record in memory.
type final struct {
	fingerprint []byte
	state       State
	result      Result
	err         *Error
	attempts    int
	updated     time.Time // the record's last update
}

func finalOf(rec *Record) *final {
	res := rec.Result
	res.StripeRequestID, res.Failure = "", nil // the answering call's, not the record's
	return &final{fingerprint: rec.Fingerprint, state: rec.State, result: res, err: rec.Err, attempts: rec.Attempts, updated: rec.Updated}
}

func newFinals(size int) *finals {
	if size <= 0 {
		return nil
	}
	// Grown as entries arrive: a server that only ever sees a few hundred
	// request ids should not carry a map and ring sized for 16,384.
	return &finals{m: map[string]*final{}, size: size}
}

// get returns the cached final outcome of key. A nil cache has nothing.
func (f *finals) get(key string) (*final, bool) {
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	rec, ok := f.m[key]
	f.mu.Unlock()
	return rec, ok
}

// put caches a final outcome, evicting the oldest entry when full.
func (f *finals) put(key string, v *final) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.m[key]; ok {
		return
	}
	f.m[key] = v
	if len(f.ring) < f.size {
		f.ring = append(f.ring, key)
		return
	}
	delete(f.m, f.ring[f.next])
	f.ring[f.next] = key
	f.next = (f.next + 1) % f.size
}
