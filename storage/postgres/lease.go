package postgres

import (
	"context"
	"time"
)

// hold notes that this handle holds k's lease, so renewLoop keeps it alive.
func (s *Store) hold(k recordKey) {
	s.mu.Lock()
	s.held[k] = struct{}{}
	s.mu.Unlock()
}

// drop forgets k's lease: released, given up by a final write, or lost.
func (s *Store) drop(k recordKey) {
	s.mu.Lock()
	delete(s.held, k)
	s.mu.Unlock()
}

// renewTimeout bounds one renewal statement.
const renewTimeout = 5 * time.Second

// renewLoop extends every lease this handle holds, every third of the TTL,
// with one statement, until ctx ends. A replica that stops (killed, frozen,
// cut off from the database) stops renewing, and its leases expire: that is
// how another replica learns it may take the records over. A lease found
// taken (expired during a stall and taken by another) is not renewed; the
// drive holding it learns that at its next write (ErrLeaseLost).
func (s *Store) renewLoop(ctx context.Context) {
	defer s.renewed.Done()
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.mu.Lock()
		callers := make([]string, 0, len(s.held))
		ids := make([]string, 0, len(s.held))
		for k := range s.held {
			callers = append(callers, k.caller)
			ids = append(ids, k.requestID)
		}
		s.mu.Unlock()
		if len(callers) == 0 {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, renewTimeout)
		// An error leaves the leases to expire unless the next tick succeeds.
		_, _ = s.pool.Exec(rctx, `UPDATE records r SET lease_until = now() + $2::float8 * interval '1 second'
			FROM unnest($3::text[], $4::text[]) AS k(caller, request_id)
			WHERE r.caller = k.caller AND r.request_id = k.request_id
			  AND r.lease_owner = $1 AND r.state NOT IN (2, 3)`, s.owner, s.ttlSeconds(), callers, ids)
		cancel()
	}
}
