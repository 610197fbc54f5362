package stripesim

import (
	"time"
)

// IdempotencyKeyTTL is how long Stripe keeps an idempotency key's result.
// Past it the key is forgotten and a request carrying it executes anew,
// which is why billingd must reconcile before reusing a key that old.
const IdempotencyKeyTTL = 24 * time.Hour

// maxIdempotencyKeyLen is the longest key Stripe accepts.
const maxIdempotencyKeyLen = 255

// idemKey scopes idempotency keys per API key, as Stripe does.
type idemKey struct {
	apiKey, key string
}

// idemEntry is one idempotency key: in flight until done, then the cached
// answer replayed to every identical request until it expires.
type idemEntry struct {
	k            idemKey
	method, path string
	fingerprint  [32]byte
	created      time.Time
	done         bool
	resp         response
}

func (e *idemEntry) expired(now time.Time) bool {
	return e.done && !now.Before(e.created.Add(IdempotencyKeyTTL))
}

// admitLocked runs the idempotency layer for a create request. It either
// decides the answer (replay, mismatch, key in use, invalid parameters) or
// claims the key for execution; a request without a key just executes.
// Parameter validation errors are decided here, after the key lookup and
// without a claim, because Stripe does not cache them.
func (s *Sim) admitLocked(x *exchange, now time.Time) {
	if x.idemKey == "" {
		x.fail = x.invalid
		return
	}
	if len(x.idemKey) > maxIdempotencyKeyLen {
		x.fail = invalidValue("", "Invalid idempotency key: keys can be at most 255 characters long.")
		return
	}
	s.pruneLocked(now)
	k := idemKey{x.apiKey, x.idemKey}
	if e, ok := s.idem[k]; ok {
		if !e.expired(now) {
			s.answerFromEntryLocked(x, e)
			return
		}
		delete(s.idem, k)
	}
	if x.invalid != nil {
		x.fail = x.invalid
		return
	}
	e := &idemEntry{k: k, method: x.method, path: x.path, fingerprint: x.fingerprint, created: now}
	s.idem[k] = e
	s.idemQueue = append(s.idemQueue, e)
	x.claim = e
}

func (s *Sim) answerFromEntryLocked(x *exchange, e *idemEntry) {
	switch {
	case e.method != x.method || e.path != x.path:
		s.stats.IdempotencyMismatches++
		x.fail = &failure{status: 400, err: apiError{Type: typeIdempotency,
			Message: "Keys for idempotent requests can only be used for the same endpoint they were first used for ('" +
				e.method + " " + e.path + "' vs '" + x.method + " " + x.path + "'). Try using a key other than '" +
				x.idemKey + "' if you meant to execute a different request."}}
	case e.fingerprint != x.fingerprint:
		s.stats.IdempotencyMismatches++
		x.fail = &failure{status: 400, err: apiError{Type: typeIdempotency,
			Message: "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '" +
				x.idemKey + "' if you meant to execute a different request."}}
	case !e.done:
		s.stats.KeysInUse++
		x.fail = &failure{status: 409, err: apiError{Type: s.inUseType, Code: "idempotency_key_in_use", DocURL: docURL("idempotency_key_in_use"),
			Message: "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): " +
				x.idemKey + ". Please try again later."}}
	default:
		s.stats.Replays++
		r := e.resp
		x.replay = &r
	}
}

// completeLocked caches the answer of an executed request under its key.
func (s *Sim) completeLocked(e *idemEntry, r response) {
	e.resp = r
	e.done = true
}

// releaseLocked forgets a claim whose request never finished (a panic), so
// the key is not stuck in flight forever.
func (s *Sim) releaseLocked(e *idemEntry) {
	if s.idem[e.k] == e {
		delete(s.idem, e.k)
	}
}

// pruneLocked drops expired keys from the front of the insertion queue, so
// memory stays bounded by 24 h of traffic without a sweeper goroutine.
// Entries still in flight stop the sweep; they are pruned on a later call.
func (s *Sim) pruneLocked(now time.Time) {
	n := 0
	for _, e := range s.idemQueue {
		if s.idem[e.k] != e {
			n++ // already replaced or released
			continue
		}
		over := s.maxObjects > 0 && e.done && len(s.idemQueue)-n > 2*s.maxObjects
		if !e.expired(now) && !over {
			break
		}
		delete(s.idem, e.k)
		n++
	}
	if n > 0 {
		clear(s.idemQueue[:n])
		s.idemQueue = s.idemQueue[n:]
	}
	s.idemGone += n
	if s.idemGone >= 4*max(len(s.idem), 64) {
		s.rebuildIdemLocked()
	}
}

// rebuildIdemLocked copies the live keys into a map of their own size. A Go
// map keeps the room its deleted keys took, and under the first-in,
// first-out churn of pruning it kept growing for a long while: 4,000 live
// keys held 0.75 MiB of map after 0.9M requests and 1.46 MiB after 2.0M
// (heap profiles of a 10-minute soak). Rebuilt after four times as many
// deletions as it holds keys, it stays under 1 MiB with no trend, at the
// cost of one copy of the live keys per four times that many requests.
func (s *Sim) rebuildIdemLocked() {
	m := make(map[idemKey]*idemEntry, len(s.idem))
	for k, e := range s.idem {
		m[k] = e
	}
	s.idem, s.idemGone = m, 0
}
