package postgres

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/codec"
)

// GetByRequestKey returns the record whose Stripe metadata
// billingd_request_key is requestKey; found=false if none.
func (s *Store) GetByRequestKey(ctx context.Context, requestKey string) (rec service.Record, found bool, err error) {
	if err := s.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", err)
	}
	if requestKey == "" || strings.IndexByte(requestKey, 0) >= 0 {
		return service.Record{}, false, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT data FROM records WHERE request_key = $1
		ORDER BY updated_ns DESC LIMIT 1`, requestKey)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", err)
	}
	recs, err := decodeRows(rows)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", err)
	}
	if len(recs) == 0 {
		return service.Record{}, false, nil
	}
	return recs[0], true, nil
}

// ClaimEvent records that the Stripe event id is being handled, at seen, and
// reports whether this is the first time, on any replica.
func (s *Store) ClaimEvent(ctx context.Context, id string, seen time.Time) (bool, error) {
	if err := s.checkOpen(); err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	if err := checkEventID(id); err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO events (id, seen_ns) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`,
		id, seen.UnixNano())
	if err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// ForgetEvent undoes ClaimEvent.
func (s *Store) ForgetEvent(ctx context.Context, id string) error {
	if err := s.checkOpen(); err != nil {
		return fmt.Errorf("forget event: %w", err)
	}
	if err := checkEventID(id); err != nil {
		return fmt.Errorf("forget event: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM events WHERE id = $1`, id); err != nil {
		return fmt.Errorf("forget event: %w", err)
	}
	return nil
}

// SweepEvents deletes up to limit event ids seen before seenBefore, oldest
// first, and returns how many it deleted.
func (s *Store) SweepEvents(ctx context.Context, seenBefore time.Time, limit int) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, fmt.Errorf("sweep events: %w", err)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("sweep events: limit %d: must be positive", limit)
	}
	tag, err := s.pool.Exec(ctx, `
		WITH doomed AS (
		    SELECT id FROM events WHERE seen_ns < $1
		    ORDER BY seen_ns, id LIMIT $2
		    FOR UPDATE SKIP LOCKED)
		DELETE FROM events e USING doomed d WHERE e.id = d.id`, seenBefore.UnixNano(), limit)
	if err != nil {
		return 0, fmt.Errorf("sweep events: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// maxEventID bounds an event id; Stripe's are about 30 characters.
const maxEventID = 255

func checkEventID(id string) error {
	if id == "" || len(id) > maxEventID || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: event id %q", codec.ErrInvalidRecord, id)
	}
	return nil
}
