package freelist

import (
	"math/rand"
	"slices"
	"testing"

	"go.etcd.io/bbolt/internal/common"
)

// The tests of pruneAllocs, the one change billingd makes to bbolt.

var freelistImpls = map[string]func() Interface{"array": NewArrayFreelist, "hashmap": NewHashMapFreelist}

// sharedOf returns the state both implementations embed.
func sharedOf(f Interface) *shared {
	switch f := f.(type) {
	case *array:
		return f.shared
	case *hashMap:
		return f.shared
	}
	panic("unknown freelist")
}

// pruneSim drives a pruning freelist the way DB does: one writer at a time
// that releases pending pages when it begins, allocates from the freelist
// (or from the end of the file, which leaves no allocs entry), frees the
// pages it rewrites, then commits or rolls back; readers open at the last
// committed Txid and close in any order.
//
// Beside the freelist it keeps what upstream bbolt would hold in allocs and
// in each pending page's alloctx, by upstream's own rules, so that each
// release can be replayed on an upstream (never pruning) copy of the same
// state. And it keeps the pages every open reader can still see.
type pruneSim struct {
	t            *testing.T
	f            Interface
	newF         func() Interface
	rng          *rand.Rand
	hwm          common.Pgid                 // next page at the end of the file
	live         map[common.Pgid]int         // start page -> page count, as of the last commit
	readers      []reader                    // open readers
	txid         common.Txid                 // last committed
	allocs       map[common.Pgid]common.Txid // upstream's allocs
	alloctx      map[common.Pgid]common.Txid // upstream's alloctx of each pending page
	fromFreelist int                         // allocations that came from the freelist
}

type reader struct {
	txid  common.Txid
	pages map[common.Pgid]bool
}

func newPruneSim(t *testing.T, name string, seed int64) *pruneSim {
	s := &pruneSim{
		t: t, newF: freelistImpls[name], rng: rand.New(rand.NewSource(seed)), hwm: 2,
		live: map[common.Pgid]int{}, txid: 1,
		allocs: map[common.Pgid]common.Txid{}, alloctx: map[common.Pgid]common.Txid{},
	}
	s.f = s.newF()
	s.f.Init(common.Pgids{})
	return s
}

func (s *pruneSim) openReader() {
	pages := map[common.Pgid]bool{}
	for start, count := range s.live {
		for p := start; p < start+common.Pgid(count); p++ {
			pages[p] = true
		}
	}
	s.f.AddReadonlyTXID(s.txid)
	s.readers = append(s.readers, reader{s.txid, pages})
}

func (s *pruneSim) closeReader() {
	if len(s.readers) == 0 {
		return
	}
	i := s.rng.Intn(len(s.readers))
	s.f.RemoveReadonlyTXID(s.readers[i].txid)
	s.readers = slices.Delete(s.readers, i, i+1)
}

// write runs one write transaction.
func (s *pruneSim) write(commit bool) {
	txid := s.txid + 1
	s.release()
	next := make(map[common.Pgid]int, len(s.live))
	for k, v := range s.live {
		next[k] = v
	}
	// Rewrite some live pages: free the old copy...
	freed := map[common.Pgid]int{}
	for n := s.rng.Intn(4); n > 0 && len(next) > 0; n-- {
		keys := make([]common.Pgid, 0, len(next))
		for k := range next {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		old := keys[s.rng.Intn(len(keys))]
		count := next[old]
		delete(next, old)
		s.f.Free(txid, common.NewPage(old, common.LeafPageFlag, 0, uint32(count-1)))
		freed[old] = count
		for p := old; p < old+common.Pgid(count); p++ {
			s.alloctx[p] = s.allocs[old]
		}
		delete(s.allocs, old)
	}
	// ...and allocate new pages, from the freelist when it has a span.
	for n := 1 + s.rng.Intn(4); n > 0; n-- {
		count := 1 + s.rng.Intn(3)
		id := s.f.Allocate(txid, count)
		if id == 0 {
			id, s.hwm = s.hwm, s.hwm+common.Pgid(count)
		} else {
			s.allocs[id] = txid
			s.fromFreelist++
		}
		for p := id; p < id+common.Pgid(count); p++ {
			s.requireUnseen(p)
		}
		next[id] = count
	}
	if commit {
		s.live, s.txid = next, txid
		return
	}
	s.f.Rollback(txid)
	// Upstream gives every page of a span whose free is rolled back its
	// allocating Txid again, the overflow pages too.
	for start, count := range freed {
		for p := start; p < start+common.Pgid(count); p++ {
			if tx := s.alloctx[p]; tx != 0 {
				s.allocs[p] = tx
			}
		}
	}
	// Upstream forgets the writer's own allocations only when it freed
	// something (Rollback returns early otherwise).
	if len(freed) > 0 {
		for pgid, tx := range s.allocs {
			if tx == txid {
				delete(s.allocs, pgid)
			}
		}
	}
	// The rolled-back writer's own pages (from the end of the file) are
	// given back by DB rewinding its high-water mark; leave them unused here.
}

// release begins a writer: it releases pending pages on the freelist and on
// an upstream copy of its state, and requires both to free the same pages.
func (s *pruneSim) release() {
	s.t.Helper()
	up := s.newF()
	us, fs := sharedOf(up), sharedOf(s.f)
	us.keepAllocs = true
	us.readonlyTXIDs = slices.Clone(fs.readonlyTXIDs)
	for k, v := range s.allocs {
		us.allocs[k] = v
	}
	for tid, txp := range fs.pending {
		c := &txPending{ids: slices.Clone(txp.ids), lastReleaseBegin: txp.lastReleaseBegin}
		for _, id := range txp.ids {
			c.alloctx = append(c.alloctx, s.alloctx[id])
		}
		us.pending[tid] = c
	}
	free := slices.Clone(s.f.freePageIds())
	slices.Sort(free)
	up.Init(free)

	s.f.ReleasePendingPages()
	up.ReleasePendingPages()

	got, want := slices.Clone(s.f.freePageIds()), slices.Clone(up.freePageIds())
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		s.t.Fatalf("after release the pruned freelist has free pages %v, upstream %v", got, want)
	}
	if s.f.PendingCount() != up.PendingCount() {
		s.t.Fatalf("after release %d pages are pending, upstream %d", s.f.PendingCount(), up.PendingCount())
	}
	// Pruned: every entry left is newer than the oldest open reader (there
	// are none with no reader open), and upstream holds it too.
	oldest := common.Txid(1<<64 - 1)
	for _, r := range s.readers {
		oldest = min(oldest, r.txid)
	}
	for pgid, tid := range fs.allocs {
		if len(s.readers) == 0 || tid <= oldest {
			s.t.Fatalf("allocs still holds page %d of txid %d; oldest reader %d, %d open", pgid, tid, oldest, len(s.readers))
		}
		if s.allocs[pgid] != tid {
			s.t.Fatalf("allocs holds page %d of txid %d, upstream %d", pgid, tid, s.allocs[pgid])
		}
	}
}

// requireUnseen fails when page p is one the committed tree or an open
// reader still uses.
func (s *pruneSim) requireUnseen(p common.Pgid) {
	s.t.Helper()
	for _, r := range s.readers {
		if r.pages[p] {
			s.t.Fatalf("page %d handed out while reader %d still sees it", p, r.txid)
		}
	}
	for start, count := range s.live {
		if p >= start && p < start+common.Pgid(count) {
			s.t.Fatalf("page %d handed out while the committed tree uses it", p)
		}
	}
}

// TestPruneAllocs_SameReleasesAsUpstream runs random workloads of writers,
// rollbacks and overlapping readers on both freelist types. Before every
// writer, the pages released must be exactly those upstream bbolt releases
// from the same state with its full allocs map; no page an open reader or
// the committed tree uses is ever handed out; and allocs keeps only entries
// newer than the oldest reader, while upstream's grows with the live pages
// that came from the freelist.
func TestPruneAllocs_SameReleasesAsUpstream(t *testing.T) {
	for name := range freelistImpls {
		t.Run(name, func(t *testing.T) {
			for seed := int64(1); seed <= 10; seed++ {
				s := newPruneSim(t, name, seed)
				for step := 0; step < 1500; step++ {
					switch op := s.rng.Intn(10); {
					case op < 2 && len(s.readers) < 6:
						s.openReader()
					case op < 4:
						s.closeReader()
					default:
						s.write(s.rng.Intn(20) != 0)
					}
				}
				for len(s.readers) > 0 {
					s.closeReader()
				}
				s.write(true)
				if s.fromFreelist < 200 || len(s.allocs) < 100 {
					t.Fatalf("seed %d: %d allocations from the freelist, upstream allocs %d: the workload does not exercise allocs", seed, s.fromFreelist, len(s.allocs))
				}
				// With no reader open, allocs holds only the last writer's.
				if n := len(sharedOf(s.f).allocs); n > 4 {
					t.Fatalf("seed %d: allocs holds %d entries after a writer with no reader open (upstream %d)", seed, n, len(s.allocs))
				}
			}
		})
	}
}

// TestPruneAllocs_Readers walks the rule by hand.
func TestPruneAllocs_Readers(t *testing.T) {
	for name, newFreelist := range freelistImpls {
		t.Run(name, func(t *testing.T) {
			f := newFreelist()
			f.Init(common.Pgids{10, 11, 12})
			if id := f.Allocate(5, 2); id != 10 {
				t.Fatalf("allocated %d, want 10", id)
			}
			f.AddReadonlyTXID(5)
			f.ReleasePendingPages()
			if n := len(sharedOf(f).allocs); n != 0 {
				t.Fatalf("allocs has %d entries with a reader at the allocating txid, want 0", n)
			}
			f.AddReadonlyTXID(4)
			if id := f.Allocate(6, 1); id != 12 {
				t.Fatalf("allocated %d, want 12", id)
			}
			f.ReleasePendingPages()
			if got := sharedOf(f).allocs; len(got) != 1 || got[12] != 6 {
				t.Fatalf("allocs = %v with readers 4 and 5, want only page 12 of txid 6", got)
			}
			f.RemoveReadonlyTXID(4)
			f.ReleasePendingPages()
			if got := sharedOf(f).allocs; len(got) != 1 || got[12] != 6 {
				t.Fatalf("allocs = %v with reader 5, want only page 12 of txid 6", got)
			}
			f.RemoveReadonlyTXID(5)
			f.ReleasePendingPages()
			if n := len(sharedOf(f).allocs); n != 0 {
				t.Fatalf("allocs has %d entries with no reader open, want 0", n)
			}
		})
	}
}
