package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	bolt "go.etcd.io/bbolt"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
)

// The buckets. Every write keeps all of them consistent in the same
// transaction, so an index never points at a record that is not there.
//
//	records  caller 0x00 request_id                 → formatProto ‖ storagev1.Record
//	open     ts(created) ‖ caller 0x00 request_id   → state (1 byte)   PENDING, INDETERMINATE
//	final    ts(updated) ‖ caller 0x00 request_id   → state (1 byte)   SUCCEEDED, FAILED
//	counts   state (1 byte)                         → uint64 big-endian number of records
//	reqkeys  request_key                            → caller 0x00 request_id (records with a request key)
//	events   stripe event id                        → ts(seen)            webhook dedupe
//	eventsts ts(seen) ‖ stripe event id             → nil                 events in sweep order
//	meta     "layout"                               → layoutVersion (1 byte)
//
// ts is the record time in unix nanoseconds as 8 big-endian bytes with the
// sign bit flipped, so byte order is time order (0, the zero time, sorts
// before every real time after 1970).
var (
	bucketRecords = []byte("records")
	bucketOpen    = []byte("open")
	bucketFinal   = []byte("final")
	bucketCounts  = []byte("counts")
	bucketMeta    = []byte("meta")
	bucketReqKeys = []byte("reqkeys")
	bucketEvents  = []byte("events")
	bucketEventTs = []byte("eventsts")

	metaLayout = []byte("layout")
)

// layoutVersion names the bucket layout above. A future change to the
// buckets or index keys bumps it so that Open can migrate or refuse a file
// instead of misreading it. Version 1 had no reqkeys and events buckets;
// Open migrates it by building the request-key index from the records.
const layoutVersion byte = 2

// allBuckets is every bucket of the current layout.
var allBuckets = [][]byte{bucketRecords, bucketOpen, bucketFinal, bucketCounts, bucketMeta, bucketReqKeys, bucketEvents, bucketEventTs}

// tsLen is the length of the time prefix of an index key.
const tsLen = 8

// maxRecordKey keeps index keys (ts ‖ record key) within bbolt's key limit,
// checked before a write joins a batch.
const maxRecordKey = bolt.MaxKeySize - tsLen

// recordKey is the primary key. Caller names never contain 0x00, so the
// first 0x00 separates the two parts and no two (caller, request_id) pairs
// share a key.
func recordKey(caller, requestID string) []byte {
	k := make([]byte, 0, len(caller)+1+len(requestID))
	k = append(k, caller...)
	k = append(k, 0)
	return append(k, requestID...)
}

func tsKey(dst []byte, unixNano int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(unixNano)^(1<<63))
}

func indexKey(unixNano int64, key []byte) []byte {
	k := make([]byte, 0, tsLen+len(key))
	return append(tsKey(k, unixNano), key...)
}

// indexFor says which index holds a record in state s, and under which time.
// Open records are listed oldest claim first; final ones are swept oldest
// update first.
func indexFor(state int32, created, updated int64) (bucket []byte, ts int64) {
	if service.State(state).Final() {
		return bucketFinal, updated
	}
	return bucketOpen, created
}

// validate rejects what cannot be stored or indexed before the record joins
// a batch, so a bad write fails alone.
func validate(rec *service.Record) error {
	switch {
	case rec.Caller == "":
		return fmt.Errorf("%w: empty caller", ErrInvalidRecord)
	case strings.IndexByte(rec.Caller, 0) >= 0:
		return fmt.Errorf("%w: caller contains 0x00", ErrInvalidRecord)
	case rec.RequestID == "":
		return fmt.Errorf("%w: empty request_id", ErrInvalidRecord)
	case len(rec.Caller)+1+len(rec.RequestID) > maxRecordKey:
		return fmt.Errorf("%w: key longer than %d bytes", ErrInvalidRecord, maxRecordKey)
	case len(rec.RequestKey) > bolt.MaxKeySize:
		return fmt.Errorf("%w: request key longer than %d bytes", ErrInvalidRecord, bolt.MaxKeySize)
	case rec.State < service.StatePending || rec.State > service.StateIndeterminate:
		return fmt.Errorf("%w: state %d", ErrInvalidRecord, rec.State)
	case rec.Attempts < 0 || rec.Attempts > math.MaxInt32:
		return fmt.Errorf("%w: attempts %d", ErrInvalidRecord, rec.Attempts)
	}
	return nil
}

// createBuckets prepares a new file and checks the layout of an existing one.
func createBuckets(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bucketMeta)
	switch v := meta.Get(metaLayout); {
	case v == nil:
		if k, _ := tx.Bucket(bucketRecords).Cursor().First(); k != nil {
			return fmt.Errorf("%w: records without a layout version", ErrCorrupt)
		}
		return meta.Put(metaLayout, []byte{layoutVersion})
	case len(v) == 1 && v[0] == 1:
		if err := indexRequestKeys(tx); err != nil {
			return fmt.Errorf("migrate layout 1: %w", err)
		}
		return meta.Put(metaLayout, []byte{layoutVersion})
	case len(v) != 1 || v[0] != layoutVersion:
		return fmt.Errorf("%w: layout version %v, want %d", ErrCorrupt, v, layoutVersion)
	}
	return nil
}

// indexRequestKeys builds the reqkeys bucket from the records, for a file
// written before it existed.
func indexRequestKeys(tx *bolt.Tx) error {
	idx := tx.Bucket(bucketReqKeys)
	return tx.Bucket(bucketRecords).ForEach(func(k, v []byte) error {
		m, err := decodeProto(v)
		if err != nil {
			return fmt.Errorf("record %q: %w", k, err)
		}
		if m.RequestKey == "" {
			return nil
		}
		return idx.Put([]byte(m.RequestKey), bytes.Clone(k))
	})
}

// checkLayout is createBuckets for a read-only file: it may not create
// anything, and a file the server never initialised simply reads as empty.
func checkLayout(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil
	}
	// Version 1 reads the same, without the request-key index.
	if v := meta.Get(metaLayout); v != nil && (len(v) != 1 || (v[0] != layoutVersion && v[0] != 1)) {
		return fmt.Errorf("%w: layout version %v, want %d", ErrCorrupt, v, layoutVersion)
	}
	return nil
}

// writeRecord stores val under key, replacing old (nil: none), and moves the
// record between indexes and counts. All checks come before the first
// mutation; an error after it aborts the whole transaction.
//
// Only what changed is rewritten: every bucket touched dirties a B+tree page
// that the commit writes and fsyncs, and request keys are hashes, so the
// reqkeys page is a random one. Settling a claim (same request key, new
// state) touches records, the two time indexes and counts, not reqkeys.
func writeRecord(tx *bolt.Tx, key []byte, old, rec *storagev1.Record, val []byte) error {
	if err := tx.Bucket(bucketRecords).Put(key, val); err != nil {
		return fmt.Errorf("put record: %w", err)
	}
	idx, ts := indexFor(rec.State, rec.CreateUnixNano, rec.UpdateUnixNano)
	sameIndex := false
	if old != nil {
		oldIdx, oldTS := indexFor(old.State, old.CreateUnixNano, old.UpdateUnixNano)
		sameIndex = bytes.Equal(oldIdx, idx) && oldTS == ts && old.State == rec.State
		if !sameIndex {
			if err := tx.Bucket(oldIdx).Delete(indexKey(oldTS, key)); err != nil {
				return fmt.Errorf("delete %s index: %w", oldIdx, err)
			}
		}
	}
	if !sameIndex {
		if err := tx.Bucket(idx).Put(indexKey(ts, key), []byte{byte(rec.State)}); err != nil {
			return fmt.Errorf("put %s index: %w", idx, err)
		}
	}
	if err := moveRequestKey(tx, key, old, rec); err != nil {
		return err
	}
	if old != nil && old.State == rec.State {
		return nil
	}
	if old != nil {
		if err := addCount(tx, old.State, -1); err != nil {
			return err
		}
	}
	return addCount(tx, rec.State, 1)
}

// moveRequestKey points rec's request key at key, and drops old's if it was
// this record's and rec no longer carries it.
func moveRequestKey(tx *bolt.Tx, key []byte, old, rec *storagev1.Record) error {
	b := tx.Bucket(bucketReqKeys)
	if old != nil && old.RequestKey != "" && old.RequestKey != rec.RequestKey {
		// Only an entry that points at this record is its own: request keys
		// are hashes of (caller, request_id), but a hand-made record could
		// share one.
		if rk := []byte(old.RequestKey); bytes.Equal(b.Get(rk), key) {
			if err := b.Delete(rk); err != nil {
				return fmt.Errorf("delete reqkeys index: %w", err)
			}
		}
	}
	if rec.RequestKey == "" {
		return nil
	}
	rk := []byte(rec.RequestKey)
	if old != nil && old.RequestKey == rec.RequestKey && bytes.Equal(b.Get(rk), key) {
		return nil
	}
	if err := b.Put(rk, key); err != nil {
		return fmt.Errorf("put reqkeys index: %w", err)
	}
	return nil
}

// deleteRecord removes the record old stored under key, with its index entry.
func deleteRecord(tx *bolt.Tx, key []byte, old *storagev1.Record) error {
	if err := unindex(tx, key, old); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRecords).Delete(key); err != nil {
		return fmt.Errorf("delete record: %w", err)
	}
	return nil
}

func unindex(tx *bolt.Tx, key []byte, old *storagev1.Record) error {
	idx, ts := indexFor(old.State, old.CreateUnixNano, old.UpdateUnixNano)
	if err := tx.Bucket(idx).Delete(indexKey(ts, key)); err != nil {
		return fmt.Errorf("delete %s index: %w", idx, err)
	}
	// Only an entry that points at this record is its own: request keys are
	// hashes of (caller, request_id), but a hand-made record could share one.
	if rk := []byte(old.RequestKey); len(rk) > 0 && bytes.Equal(tx.Bucket(bucketReqKeys).Get(rk), key) {
		if err := tx.Bucket(bucketReqKeys).Delete(rk); err != nil {
			return fmt.Errorf("delete reqkeys index: %w", err)
		}
	}
	return addCount(tx, old.State, -1)
}

func addCount(tx *bolt.Tx, state int32, delta int64) error {
	b := tx.Bucket(bucketCounts)
	k := []byte{byte(state)}
	var n uint64
	if v := b.Get(k); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n = uint64(int64(n) + delta)
	if int64(n) <= 0 {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("delete count: %w", err)
		}
		return nil
	}
	if err := b.Put(k, binary.BigEndian.AppendUint64(nil, n)); err != nil {
		return fmt.Errorf("put count: %w", err)
	}
	return nil
}
