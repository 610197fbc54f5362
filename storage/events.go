package storage

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/billingd/billingd/service"
)

// GetByRequestKey returns the record whose Stripe metadata
// billingd_request_key is requestKey, through the index kept in the same
// transactions as the records; found=false if none.
func (db *DB) GetByRequestKey(ctx context.Context, requestKey string) (service.Record, bool, error) {
	if err := db.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", err)
	}
	if requestKey == "" || len(requestKey) > bolt.MaxKeySize {
		return service.Record{}, false, nil
	}
	var (
		rec   service.Record
		found bool
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		idx, recs := tx.Bucket(bucketReqKeys), tx.Bucket(bucketRecords)
		if idx == nil || recs == nil {
			return nil
		}
		e := idx.Get([]byte(requestKey))
		if e == nil {
			return nil
		}
		k, v := lookupTarget(tx, requestKey, e)
		if v == nil {
			return fmt.Errorf("%w: reqkeys index entry %q has no record", ErrCorrupt, requestKey)
		}
		m, err := decodeAt(k, v)
		if err != nil {
			return fmt.Errorf("record %q: %w", k, err)
		}
		r := fromProto(m)
		// Every record's lookup key shares this index with request keys:
		// only a record whose metadata carries requestKey is an answer.
		if r.RequestKey != requestKey {
			return nil
		}
		rec, found = r, true
		return nil
	})
	if err != nil {
		return service.Record{}, false, fmt.Errorf("get by request key: %w", boltError(err))
	}
	return rec, found, nil
}

// ClaimEvent records that the Stripe event id is being processed, at seen,
// and reports whether this is the first time: a webhook delivered twice is
// handled once. A handler that fails after claiming calls ForgetEvent, so
// Stripe's next delivery is handled again.
func (db *DB) ClaimEvent(ctx context.Context, id string, seen time.Time) (first bool, err error) {
	if err := db.checkWritable(); err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	if err := checkEventID(id); err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("claim event: %w", err)
	}
	err = db.bolt.Update(func(tx *bolt.Tx) error {
		first = false
		setFill(tx)
		evs := tx.Bucket(bucketEvents)
		if evs.Get([]byte(id)) != nil {
			return nil
		}
		ts := tsKey(nil, seen.UnixNano())
		if err := evs.Put([]byte(id), ts); err != nil {
			return err
		}
		if err := tx.Bucket(bucketEventTs).Put(append(bytes.Clone(ts), id...), nil); err != nil {
			return err
		}
		first = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("claim event: %w", boltError(err))
	}
	return first, nil
}

// ForgetEvent undoes ClaimEvent.
func (db *DB) ForgetEvent(ctx context.Context, id string) error {
	if err := db.checkWritable(); err != nil {
		return fmt.Errorf("forget event: %w", err)
	}
	if err := checkEventID(id); err != nil {
		return fmt.Errorf("forget event: %w", err)
	}
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		evs := tx.Bucket(bucketEvents)
		ts := evs.Get([]byte(id))
		if ts == nil {
			return nil
		}
		if err := tx.Bucket(bucketEventTs).Delete(append(bytes.Clone(ts), id...)); err != nil {
			return err
		}
		return evs.Delete([]byte(id))
	})
	if err != nil {
		return fmt.Errorf("forget event: %w", boltError(err))
	}
	return nil
}

// SweepEvents deletes up to limit event ids seen before seenBefore, oldest
// first, in one bounded transaction, and returns how many it deleted.
func (db *DB) SweepEvents(ctx context.Context, seenBefore time.Time, limit int) (int, error) {
	if err := db.checkWritable(); err != nil {
		return 0, fmt.Errorf("sweep events: %w", err)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("sweep events: limit %d: must be positive", limit)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("sweep events: %w", err)
	}
	cutoff := tsKey(nil, seenBefore.UnixNano())
	deleted := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		deleted = 0
		idx, evs := tx.Bucket(bucketEventTs), tx.Bucket(bucketEvents)
		var keys [][]byte
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < limit && bytes.Compare(k[:tsLen], cutoff) < 0; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := idx.Delete(k); err != nil {
				return err
			}
			if err := evs.Delete(k[tsLen:]); err != nil {
				return err
			}
			deleted++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep events: %w", boltError(err))
	}
	return deleted, nil
}

func checkEventID(id string) error {
	if id == "" || len(id) > bolt.MaxKeySize-tsLen || strings.IndexByte(id, 0) >= 0 {
		return fmt.Errorf("%w: event id %q", ErrInvalidRecord, id)
	}
	return nil
}

var _ service.Store = (*DB)(nil)
