package service

import "sync"

// finals caches final outcomes for replays. A final record never changes, so
// a cached copy answers a repeat as the store would, without a transaction,
// a decode or its allocations — retries are mostly such repeats. It is
// bounded (FIFO: recent operations are the ones retried) and per process;
// an entry may outlive its swept record, which only means a late repeat is
// still answered with the truth.
type finals struct {
	mu   sync.Mutex
	m    map[string]*final
	ring []string // insertion order; "" marks a free slot
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
}

func finalOf(rec *Record) *final {
	res := rec.Result
	res.StripeRequestID, res.Failure = "", nil // the answering call's, not the record's
	return &final{fingerprint: rec.Fingerprint, state: rec.State, result: res, err: rec.Err, attempts: rec.Attempts}
}

func newFinals(size int) *finals {
	if size <= 0 {
		return nil
	}
	return &finals{m: make(map[string]*final, size), ring: make([]string, size)}
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
	if old := f.ring[f.next]; old != "" {
		delete(f.m, old)
	}
	f.ring[f.next] = key
	f.m[key] = v
	f.next = (f.next + 1) % len(f.ring)
}
