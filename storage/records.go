package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
)

// Claim stores rec if no record exists for (rec.Caller, rec.RequestID) and
// returns it with created=true; otherwise it returns the stored record
// unchanged with created=false, or, if the record was swept, fails with a
// *service.ExpiredError holding its tombstone. The lookups and the write
// happen in one write transaction, so of any number of concurrent claims
// exactly one creates, and none slips past a concurrent Sweep.
// The returned record is the stored form (times in UTC, RetryAfter in whole
// milliseconds), identical to what Get returns later.
func (db *DB) Claim(ctx context.Context, rec service.Record) (service.Record, bool, error) {
	o, err := db.newOp(true, &rec)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("claim: %w", err)
	}
	if err := db.submit(ctx, o); err != nil {
		return service.Record{}, false, fmt.Errorf("claim: %w", err)
	}
	if o.tomb != nil {
		return service.Record{}, false, fmt.Errorf("claim: %w", &service.ExpiredError{Tombstone: *o.tomb})
	}
	if !o.created {
		return o.existing, false, nil
	}
	// o.msg is what was written: the record as a read of it returns it,
	// without decoding the value again.
	return fromProto(o.msg), true, nil
}

// Put stores rec, replacing the record for (rec.Caller, rec.RequestID) or
// creating it if there is none (a lost record is better rewritten than an
// outcome dropped). It returns once the write is fsync'd.
func (db *DB) Put(ctx context.Context, rec service.Record) error {
	o, err := db.newOp(false, &rec)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if err := db.submit(ctx, o); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	return nil
}

// Acquire grants the lease of rec's record: one process owns a bbolt file, and
// the service's in-flight map keeps two drives of one record apart within it,
// so every lease is granted, without I/O. It returns rec as given, leased
// while rec is open.
func (db *DB) Acquire(ctx context.Context, rec service.Record) (service.Record, bool, error) {
	if err := db.checkWritable(); err != nil {
		return service.Record{}, false, fmt.Errorf("acquire: %w", err)
	}
	return rec, !rec.State.Final(), nil
}

// Release does nothing: leases are not stored in a bbolt file (see Acquire).
func (db *DB) Release(ctx context.Context, caller, requestID string) error { return nil }

// Get returns the record for (caller, requestID); found=false if none. It is
// one read-only transaction and one decode.
func (db *DB) Get(ctx context.Context, caller, requestID string) (service.Record, bool, error) {
	if err := db.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("get: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return service.Record{}, false, fmt.Errorf("get: %w", err)
	}
	// No record can be stored under such a caller, and the key of one with
	// 0x00 could name another caller's record.
	if caller == "" || strings.IndexByte(caller, 0) >= 0 {
		return service.Record{}, false, nil
	}
	name, lookup := recordKey(caller, requestID), lookupKey(caller, requestID)
	var (
		rec   service.Record
		found bool
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		if b == nil {
			return nil
		}
		pos := findPos(tx, name, lookup)
		if pos == nil {
			return nil
		}
		v := b.Get(pos)
		if v == nil {
			return fmt.Errorf("%w: reqkeys entry %q has no record", ErrCorrupt, lookup)
		}
		m, err := decodeAt(pos, v)
		if err != nil {
			return err
		}
		rec, found = fromProto(m), true
		return nil
	})
	if err != nil {
		return service.Record{}, false, fmt.Errorf("get: %w", boltError(err))
	}
	return rec, found, nil
}

// ListOpen returns up to limit open (not final) records, oldest
// Created first, for the reconciler after a restart. It reads the open index
// only, so its cost follows the number of open records, not the store size.
// limit <= 0 means all.
func (db *DB) ListOpen(ctx context.Context, limit int) ([]service.Record, error) {
	if err := db.checkOpen(); err != nil {
		return nil, fmt.Errorf("list open: %w", err)
	}
	var out []service.Record
	err := db.bolt.View(func(tx *bolt.Tx) error {
		idx, recs := tx.Bucket(bucketOpen), tx.Bucket(bucketRecords)
		if idx == nil || recs == nil {
			return nil
		}
		c := idx.Cursor()
		for k, _ := c.First(); k != nil && (limit <= 0 || len(out) < limit); k, _ = c.Next() {
			if len(out)%64 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			v := recs.Get(k[tsLen:])
			if v == nil {
				return fmt.Errorf("%w: open index entry %q has no record", ErrCorrupt, k[tsLen:])
			}
			m, err := decodeAt(k[tsLen:], v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k[tsLen:], err)
			}
			out = append(out, fromProto(m))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list open: %w", boltError(err))
	}
	return out, nil
}

// CountOpen returns how many records are in each open (not final) state.
func (db *DB) CountOpen(ctx context.Context) (map[service.State]int, error) {
	all, err := db.CountByState(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[service.State]int, len(all))
	for st, n := range all {
		if !st.Final() {
			out[st] = n
		}
	}
	return out, nil
}

// CountByState returns how many records are in each state, for metrics. It
// reads counters kept in the write transactions, so it costs the same at any
// store size. Every known state is present in the map, zero included.
func (db *DB) CountByState(ctx context.Context) (map[service.State]int, error) {
	if err := db.checkOpen(); err != nil {
		return nil, fmt.Errorf("count by state: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("count by state: %w", err)
	}
	out := make(map[service.State]int, len(service.States()))
	for _, st := range service.States() {
		out[st] = 0
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketCounts)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 1 || len(v) != 8 {
				return fmt.Errorf("%w: count entry %x", ErrCorrupt, k)
			}
			out[service.State(k[0])] = int(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count by state: %w", boltError(err))
	}
	return out, nil
}

// Sweep deletes up to limit SUCCEEDED or FAILED records last updated before
// updatedBefore and returns how many it deleted. It walks records from the
// oldest claim and stops at the first claimed at or after updatedBefore: a
// record is updated no earlier than it is claimed, so none past that point
// qualifies. (Should the clock step back between a claim and its settle, the
// record is swept a little later, never earlier.) What it passes over is
// what is still open, which the reconciler settles, and the few records
// settled long after their claim; so it reads little more than it deletes,
// and one call is one bounded transaction: call it again while it returns
// limit. Open records (every state but SUCCEEDED and FAILED) are never swept.
// Each deleted record leaves its tombstone, stamped sweptAt, in the same
// transaction.
func (db *DB) Sweep(ctx context.Context, updatedBefore, sweptAt time.Time, limit int) (int, error) {
	if err := db.checkSweep(ctx, "sweep", limit); err != nil {
		return 0, err
	}
	if updatedBefore.IsZero() {
		return 0, nil
	}
	before := updatedBefore.UnixNano()
	cutoff := tsKey(nil, before)
	deleted := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		deleted = 0
		type victim struct {
			key []byte
			m   *storagev1.Record
		}
		// Collect first: deleting under a bbolt cursor can skip keys.
		var victims []victim
		c := tx.Bucket(bucketRecords).Cursor()
		for k, v := c.First(); k != nil && len(victims) < limit; k, v = c.Next() {
			if len(k) <= tsLen {
				return fmt.Errorf("%w: record key %q too short", ErrCorrupt, k)
			}
			if bytes.Compare(k[:tsLen], cutoff) >= 0 {
				break
			}
			m, err := decodeAt(k, v)
			if err != nil {
				return fmt.Errorf("record %q: %w", k, err)
			}
			if service.State(m.State).Final() && m.UpdateUnixNano < before {
				victims = append(victims, victim{bytes.Clone(k), m})
			}
		}
		tombs := make([]byte, 0, len(victims)*sha256.Size)
		for _, vi := range victims {
			if err := deleteRecord(tx, vi.key, vi.m); err != nil {
				return err
			}
			rec := fromProto(vi.m)
			h := nameHash(rec.Caller, rec.RequestID)
			if err := putTombstone(tx, h[:], service.TombstoneOf(&rec, sweptAt)); err != nil {
				return err
			}
			tombs = append(tombs, h[:]...)
			deleted++
		}
		return indexTombstones(tx, sweptAt, tombs)
	})
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", boltError(err))
	}
	return deleted, nil
}

// scanChunk is how many records Scan decodes per read transaction.
const scanChunk = 256

// Scan calls fn for every record in claim order (oldest Created first)
// until fn returns false. It reads in chunks of short read transactions and
// calls fn outside them, so a slow fn neither pins old pages nor blocks the
// file from growing, and fn may call other methods of db. The price: Scan is
// not a snapshot; a record written during the scan is seen if its key sorts
// after the current position. No record is seen twice.
func (db *DB) Scan(ctx context.Context, fn func(service.Record) bool) error {
	var after []byte
	for {
		if err := db.checkOpen(); err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		chunk := make([]service.Record, 0, scanChunk)
		err := db.bolt.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketRecords)
			if b == nil {
				return nil
			}
			c := b.Cursor()
			var k, v []byte
			if after == nil {
				k, v = c.First()
			} else if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
				k, v = c.Next()
			}
			for ; k != nil && len(chunk) < scanChunk; k, v = c.Next() {
				m, err := decodeAt(k, v)
				if err != nil {
					return fmt.Errorf("record %q: %w", k, err)
				}
				chunk = append(chunk, fromProto(m))
				after = append(after[:0], k...)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scan: %w", boltError(err))
		}
		for _, r := range chunk {
			if !fn(r) {
				return nil
			}
		}
		if len(chunk) < scanChunk {
			return nil
		}
	}
}

// checkSweep is what Sweep and SweepTombstones (op) check before they start:
// a writable store, a positive limit, a live context.
func (db *DB) checkSweep(ctx context.Context, op string, limit int) error {
	if err := db.checkWritable(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if limit <= 0 {
		return fmt.Errorf("%s: limit %d: must be positive", op, limit)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
