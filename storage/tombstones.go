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

	"github.com/billingd/billingd/service"
)

// A tombstone's value in the tombstones bucket:
//
//	format (1 byte, tombFormat) ‖ state (1) ‖ swept unix nanoseconds (8, big-endian)
//	‖ SHA-256 of the fingerprint (32) ‖ Stripe object id (the rest)
//
// 42 bytes and the object id (27 for a PaymentIntent): 69 bytes, under a
// 32-byte key.
const (
	tombFormat byte = 1
	tombFixed       = 1 + 1 + 8 + sha256.Size
)

func encodeTombstone(t service.Tombstone) []byte {
	v := make([]byte, 0, tombFixed+len(t.ObjectID))
	v = append(v, tombFormat, byte(t.State))
	v = binary.BigEndian.AppendUint64(v, uint64(unixNano(t.Swept)))
	v = append(v, t.Fingerprint[:]...)
	return append(v, t.ObjectID...)
}

func decodeTombstone(v []byte) (service.Tombstone, error) {
	if len(v) < tombFixed || v[0] != tombFormat || !service.State(v[1]).Final() {
		return service.Tombstone{}, fmt.Errorf("%w: tombstone %x", ErrCorrupt, v)
	}
	t := service.Tombstone{
		State:    service.State(v[1]),
		Swept:    time.Unix(0, int64(binary.BigEndian.Uint64(v[2:10]))).UTC(),
		ObjectID: string(v[tombFixed:]),
	}
	copy(t.Fingerprint[:], v[10:tombFixed])
	return t, nil
}

// getTombstone reads the tombstone of hash (a nameHash) in tx.
func getTombstone(tx *bolt.Tx, hash []byte) (service.Tombstone, bool, error) {
	b := tx.Bucket(bucketTombs)
	if b == nil { // a file the server never initialised, open read-only
		return service.Tombstone{}, false, nil
	}
	v := b.Get(hash)
	if v == nil {
		return service.Tombstone{}, false, nil
	}
	t, err := decodeTombstone(v)
	return t, err == nil, err
}

// putTombstone writes the tombstone of hash, replacing an older one (a
// record written again by Put after its sweep, and swept again).
func putTombstone(tx *bolt.Tx, hash []byte, t service.Tombstone) error {
	if err := tx.Bucket(bucketTombs).Put(hash, encodeTombstone(t)); err != nil {
		return fmt.Errorf("put tombstone: %w", err)
	}
	return nil
}

// indexTombstones lists hashes (nameHashes, concatenated), the tombstones
// one sweep batch wrote at swept, under one tombts key.
func indexTombstones(tx *bolt.Tx, swept time.Time, hashes []byte) error {
	if len(hashes) == 0 {
		return nil
	}
	k := append(tsKey(make([]byte, 0, tsLen+sha256.Size), unixNano(swept)), hashes[:sha256.Size]...)
	if err := tx.Bucket(bucketTombTs).Put(k, hashes); err != nil {
		return fmt.Errorf("put tombstone index: %w", err)
	}
	return nil
}

// GetTombstone returns the tombstone the sweep left of (caller, requestID)'s
// record; found=false if none.
func (db *DB) GetTombstone(ctx context.Context, caller, requestID string) (service.Tombstone, bool, error) {
	if err := db.checkOpen(); err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", err)
	}
	if caller == "" || strings.IndexByte(caller, 0) >= 0 {
		return service.Tombstone{}, false, nil
	}
	h := nameHash(caller, requestID)
	var (
		t     service.Tombstone
		found bool
	)
	err := db.bolt.View(func(tx *bolt.Tx) error {
		var err error
		t, found, err = getTombstone(tx, h[:])
		return err
	})
	if err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", boltError(err))
	}
	return t, found, nil
}

// SweepTombstones deletes up to limit tombstones swept before sweptBefore,
// oldest sweep first, in one transaction, and returns how many it deleted:
// their request_ids are free again. It reads tombts only, so its cost
// follows what it deletes, not how many tombstones are kept. A tombstone
// written again by a later sweep outlives the batch entry of its first one.
func (db *DB) SweepTombstones(ctx context.Context, sweptBefore time.Time, limit int) (int, error) {
	if err := db.checkSweep(ctx, "sweep tombstones", limit); err != nil {
		return 0, err
	}
	if sweptBefore.IsZero() {
		return 0, nil
	}
	before := sweptBefore.UnixNano()
	cutoff := tsKey(nil, before)
	deleted := 0
	err := db.bolt.Update(func(tx *bolt.Tx) error {
		deleted = 0
		setFill(tx)
		type entry struct{ key, hashes []byte }
		// Collect first: deleting under a bbolt cursor can skip keys.
		var (
			entries []entry
			taken   int
		)
		c := tx.Bucket(bucketTombTs).Cursor()
		for k, v := c.First(); k != nil && taken < limit; k, v = c.Next() {
			if len(k) != tsLen+sha256.Size || len(v) == 0 || len(v)%sha256.Size != 0 {
				return fmt.Errorf("%w: tombstone index entry %x", ErrCorrupt, k)
			}
			if bytes.Compare(k[:tsLen], cutoff) >= 0 {
				break
			}
			n := min(len(v), (limit-taken)*sha256.Size)
			entries = append(entries, entry{bytes.Clone(k), bytes.Clone(v)})
			taken += n / sha256.Size
		}
		idx, tombs := tx.Bucket(bucketTombTs), tx.Bucket(bucketTombs)
		left := limit
		for _, e := range entries {
			n := min(len(e.hashes), left*sha256.Size)
			for h := e.hashes[:n]; len(h) > 0; h = h[sha256.Size:] {
				v := tombs.Get(h[:sha256.Size])
				if v == nil {
					continue
				}
				t, err := decodeTombstone(v)
				if err != nil {
					return err
				}
				if unixNano(t.Swept) >= before { // swept again since
					continue
				}
				if err := tombs.Delete(h[:sha256.Size]); err != nil {
					return fmt.Errorf("delete tombstone: %w", err)
				}
				deleted++
			}
			left -= n / sha256.Size
			var err error
			if n == len(e.hashes) {
				err = idx.Delete(e.key)
			} else { // the rest waits for the next call
				err = idx.Put(e.key, e.hashes[n:])
			}
			if err != nil {
				return fmt.Errorf("update tombstone index: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sweep tombstones: %w", boltError(err))
	}
	return deleted, nil
}
