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
	m    map[string]*Record
	ring []string // insertion order; "" marks a free slot
	next int
}

func newFinals(size int) *finals {
	if size <= 0 {
		return nil
	}
	return &finals{m: make(map[string]*Record, size), ring: make([]string, size)}
}

// get returns the cached final record of key. A nil cache has nothing.
func (f *finals) get(key string) (*Record, bool) {
	if f == nil {
		return nil, false
	}
	f.mu.Lock()
	rec, ok := f.m[key]
	f.mu.Unlock()
	return rec, ok
}

// put caches a final record, evicting the oldest entry when full. Callers
// must not modify rec afterwards.
func (f *finals) put(key string, rec *Record) {
	if f == nil || !rec.State.Final() {
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
	f.m[key] = rec
	f.next = (f.next + 1) % len(f.ring)
}
