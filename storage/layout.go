package storage

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
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
//	records  pos = ts(created) ‖ caller 0x00 request_id   → formatProto ‖ storagev1.Record (compact.go)
//	open     ts(created) ‖ pos                          → state (1 byte)   every open (not final) state
//	counts   state (1 byte)                             → uint64 big-endian number of records
//	reqkeys  lookupKey(caller, request_id)              → ts(created)   (every record)
//	         request_key, where it differs from that    → pos           (records with one)
//	events   stripe event id                            → ts(seen)            webhook dedupe
//	eventsts ts(seen) ‖ stripe event id                 → nil                 events in sweep order
//	tombstones nameHash(caller, request_id)             → tombstone (tombstones.go)   swept records
//	tombts   ts(swept) ‖ nameHash of its first          → nameHash ‖ nameHash ‖ …   one entry per sweep batch
//	meta     "layout"                                   → layoutVersion (1 byte)
//
// ts is the record time in unix nanoseconds as 8 big-endian bytes with the
// sign bit flipped, so byte order is time order (0, the zero time, sorts
// before every real time after 1970).
//
// Records sit in claim order, found through reqkeys. A new charge then
// dirties one random B+tree page (its reqkeys entry) and otherwise only the
// right edge of records and open, pages the other writes of the same group
// commit share; settling touches no random page at all. The sweeper walks
// records from the oldest claim (Sweep), so final records need no index of
// their own: one by update time would be ~15 % of the file and one more
// right edge to rewrite in every settling commit. Keyed by (caller,
// request_id), records would put every claim and every settle on a random
// page of the largest bucket: more pages per fsync, and a working set (and
// mmap RSS) as large as the file. lookupKey is billingd's request key as
// service.RequestKey computes it, so for every record billingd writes the
// one reqkeys entry serves both lookups; it is defined here, not called,
// because a stored layout must not change when the service's key does.
// A lookup key's value is only the claim time: the key is the hash of the
// name, so whoever looks it up by (caller, request_id) has the rest of pos,
// and GetByRequestKey finds the one record of that time whose name hashes to
// it. That is 8 bytes of value instead of ~50 in the bucket whose pages are
// random.
//
// A swept record leaves a tombstone, keyed by the raw 32-byte hash its
// lookup key encodes, written in the sweep's transaction; a claim looks for
// it in its own transaction only when the name has no record, so a claim
// and a sweep never both miss. tombts lists the tombstones each sweep batch
// wrote under one key, 32 bytes each, so expiring them needs no per-tombstone
// index entry: they are kept ~57 times as long as records, so they outnumber
// them, and their size is most of what they cost.
var (
	bucketRecords = []byte("records")
	bucketOpen    = []byte("open")
	bucketCounts  = []byte("counts")
	bucketMeta    = []byte("meta")
	bucketReqKeys = []byte("reqkeys")
	bucketEvents  = []byte("events")
	bucketEventTs = []byte("eventsts")
	bucketTombs   = []byte("tombstones")
	bucketTombTs  = []byte("tombts")

	metaLayout = []byte("layout")
)

// layoutVersion names the layout above: the buckets, their keys and their
// values (compact.go, tombstones.go). Open writes it into a new file and
// opens only a file that carries it. A change to the layout bumps it, so that
// Open can migrate or refuse a file instead of misreading it.
const layoutVersion byte = 8

// oldLayoutHelp is what the error of Open and OpenReadOnly tells the
// operator to do with a file of an older layout.
const oldLayoutHelp = "a development build before billingd v0.1.0 wrote this file: " +
	"let that build settle its open records, then move the file aside and start with a new one " +
	"(billingd v0.1.0 and later keep the files they write readable)"

// allBuckets is every bucket of the current layout.
var allBuckets = [][]byte{bucketRecords, bucketOpen, bucketCounts, bucketMeta, bucketReqKeys, bucketEvents, bucketEventTs,
	bucketTombs, bucketTombTs}

// Fill factors for the time-ordered buckets. bbolt splits a full leaf at
// Bucket.FillPercent, 0.5 by default, which suits random inserts; a bucket
// written at its right edge then keeps every leaf half empty forever, and
// the file (and the part of its mmap a server touches) is twice the data.
// records is appended to at claim and each record rewritten once when it
// settles, ~40 % longer in the compact encoding (the result is added), by
// which time its leaf is usually closed: its leaves keep room for that
// (at 0.8 they overflow and split in halves); eventsts only
// grows at its right edge. Keys that arrive slightly out of time order (a
// claim stamped before a concurrent one but committed after it) land in a
// leaf that still has that room, or split it.
const (
	fillRecords = 0.7
	fillEventTs = 0.95
)

// setFill applies the fill factors to tx's buckets. The factor lives on the
// transaction's Bucket handle, not in the file, so every write transaction
// that may split a leaf sets it first; it changes how full pages are, never
// what they hold.
func setFill(tx *bolt.Tx) {
	if b := tx.Bucket(bucketRecords); b != nil {
		b.FillPercent = fillRecords
	}
	if b := tx.Bucket(bucketEventTs); b != nil {
		b.FillPercent = fillEventTs
	}
	if b := tx.Bucket(bucketTombTs); b != nil {
		b.FillPercent = fillEventTs
	}
}

// tsLen is the length of the time prefix of an index key.
const tsLen = 8

// maxRecordKey keeps index keys (ts ‖ ts ‖ caller 0x00 request_id) within
// bbolt's key limit, checked before a write joins a batch.
const maxRecordKey = bolt.MaxKeySize - 2*tsLen

// recordKey names a record: caller names never contain 0x00, so the first
// 0x00 separates the two parts and no two (caller, request_id) pairs share
// it. It is the tail of pos.
func recordKey(caller, requestID string) []byte {
	k := make([]byte, 0, len(caller)+1+len(requestID))
	k = append(k, caller...)
	k = append(k, 0)
	return append(k, requestID...)
}

// posKey is a new record's key in records: its claim time, then its name.
func posKey(createdUnixNano int64, name []byte) []byte {
	return append(tsKey(make([]byte, 0, tsLen+len(name)), createdUnixNano), name...)
}

// lookupKey is the reqkeys entry every record has: "rk1_" and the unpadded
// base64url SHA-256 of caller 0x00 request_id (service.RequestKey's value;
// a test keeps the two equal).
func lookupKey(caller, requestID string) []byte {
	k := lookupKeyOf(caller, requestID)
	return k[:]
}

// lookupKeyOf is lookupKey without the allocation, for comparisons.
func lookupKeyOf(caller, requestID string) derivedKey {
	return lookupOfHash(nameHash(caller, requestID))
}

// lookupOfHash is the lookup key whose hash is sum (a nameHash).
func lookupOfHash(sum [sha256.Size]byte) (k derivedKey) {
	copy(k[:4], "rk1_")
	base64.RawURLEncoding.Encode(k[4:], sum[:])
	return k
}

// nameHash is the SHA-256 of caller 0x00 request_id: what lookupKey encodes,
// and a tombstone's key.
func nameHash(caller, requestID string) [sha256.Size]byte {
	var buf [256]byte
	b := append(buf[:0], caller...)
	b = append(b, 0)
	b = append(b, requestID...)
	return sha256.Sum256(b)
}

// derivedKey is prefix (4 bytes) and the 43-byte unpadded base64url SHA-256
// of caller 0x00 request_id, then 0x00 step when step is set: billingd's
// request and Stripe keys. It is built on the stack; every record write and
// settle computes a few.
type derivedKey [4 + 43]byte

func derive(prefix, caller, requestID, step string) (k derivedKey) {
	var buf [256]byte
	b := append(buf[:0], caller...)
	b = append(b, 0)
	b = append(b, requestID...)
	if step != "" {
		b = append(b, 0)
		b = append(b, step...)
	}
	sum := sha256.Sum256(b)
	copy(k[:4], prefix)
	base64.RawURLEncoding.Encode(k[4:], sum[:])
	return k
}

// findPos returns the records key of the record named name (caller 0x00
// request_id) in tx, or nil. lookup is lookupKey of the same pair, whose
// value is the record's claim time. Any other value there is pos of another
// record, whose hand-made request key equals this lookup key.
func findPos(tx *bolt.Tx, name, lookup []byte) []byte {
	v := tx.Bucket(bucketReqKeys).Get(lookup)
	if len(v) != tsLen {
		return nil
	}
	return append(append(make([]byte, 0, tsLen+len(name)), v...), name...)
}

// lookupTarget returns the records key (and value) a reqkeys entry holding v
// points at, in tx: v itself when it is pos (a request key's entry), or the
// record claimed at time v whose name hashes to requestKey (a lookup key's).
// nil if there is none.
func lookupTarget(tx *bolt.Tx, requestKey string, v []byte) (pos, val []byte) {
	recs := tx.Bucket(bucketRecords)
	if len(v) != tsLen {
		return v, recs.Get(v)
	}
	c := recs.Cursor()
	for k, val := c.Seek(v); k != nil && bytes.HasPrefix(k, v); k, val = c.Next() {
		name := k[tsLen:]
		if i := bytes.IndexByte(name, 0); i > 0 {
			if lk := lookupKeyOf(string(name[:i]), string(name[i+1:])); string(lk[:]) == requestKey {
				return k, val
			}
		}
	}
	return nil, nil
}

func tsKey(dst []byte, unixNano int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(unixNano)^(1<<63))
}

func indexKey(unixNano int64, key []byte) []byte {
	k := make([]byte, 0, tsLen+len(key))
	return append(tsKey(k, unixNano), key...)
}

// openKey is m's entry in the open index (oldest claim first), or nil when m
// is final and so in no index.
func openKey(m *storagev1.Record, key []byte) []byte {
	if m == nil || service.State(m.State).Final() {
		return nil
	}
	return indexKey(m.CreateUnixNano, key)
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
	case !rec.State.Valid():
		return fmt.Errorf("%w: state %d", ErrInvalidRecord, rec.State)
	case rec.Attempts < 0 || rec.Attempts > math.MaxInt32:
		return fmt.Errorf("%w: attempts %d", ErrInvalidRecord, rec.Attempts)
	}
	return nil
}

// createBuckets prepares a new file and checks the layout of an existing
// one. It checks first: a refused file is left as it was.
func createBuckets(tx *bolt.Tx) error {
	fresh, err := checkVersion(tx)
	if err != nil {
		return err
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if !fresh {
		return nil
	}
	if err := tx.Bucket(bucketMeta).Put(metaLayout, []byte{layoutVersion}); err != nil {
		return fmt.Errorf("put layout version: %w", err)
	}
	return nil
}

// checkLayout is createBuckets for a read-only file: it may not create
// anything, and a file the server never initialised simply reads as empty.
func checkLayout(tx *bolt.Tx) error {
	_, err := checkVersion(tx)
	return err
}

// checkVersion refuses a file whose layout is not layoutVersion. fresh says
// the file has no layout yet: no version and no records.
func checkVersion(tx *bolt.Tx) (fresh bool, err error) {
	var v []byte
	if meta := tx.Bucket(bucketMeta); meta != nil {
		v = meta.Get(metaLayout)
	}
	switch {
	case v == nil:
		if recs := tx.Bucket(bucketRecords); recs != nil {
			if k, _ := recs.Cursor().First(); k != nil {
				return false, fmt.Errorf("%w: records without a layout version: %s", ErrOldLayout, oldLayoutHelp)
			}
		}
		return true, nil
	case len(v) == 1 && v[0] == layoutVersion:
		return false, nil
	case len(v) == 1 && v[0] < layoutVersion:
		return false, fmt.Errorf("%w: layout %d, this billingd reads layout %d: %s", ErrOldLayout, v[0], layoutVersion, oldLayoutHelp)
	case len(v) == 1:
		return false, fmt.Errorf("%w: layout %d is newer than this billingd's (%d): run a newer billingd", ErrCorrupt, v[0], layoutVersion)
	}
	return false, fmt.Errorf("%w: layout version %x, want %d", ErrCorrupt, v, layoutVersion)
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
	oldOpen, newOpen := openKey(old, key), openKey(rec, key)
	if oldOpen != nil && !bytes.Equal(oldOpen, newOpen) {
		if err := tx.Bucket(bucketOpen).Delete(oldOpen); err != nil {
			return fmt.Errorf("delete open index: %w", err)
		}
	}
	if newOpen != nil && (!bytes.Equal(oldOpen, newOpen) || old.State != rec.State) {
		if err := tx.Bucket(bucketOpen).Put(newOpen, []byte{byte(rec.State)}); err != nil {
			return fmt.Errorf("put open index: %w", err)
		}
	}
	if old == nil { // a record's name, so its lookup key, never changes
		if err := tx.Bucket(bucketReqKeys).Put(lookupKey(rec.Caller, rec.RequestId), key[:tsLen:tsLen]); err != nil {
			return fmt.Errorf("put reqkeys lookup: %w", err)
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
// this record's and rec no longer carries it. A request key equal to the
// lookup key shares that entry, which writeRecord keeps.
func moveRequestKey(tx *bolt.Tx, key []byte, old, rec *storagev1.Record) error {
	b := tx.Bucket(bucketReqKeys)
	lookup := string(lookupKey(rec.Caller, rec.RequestId))
	if old != nil && old.RequestKey != "" && old.RequestKey != rec.RequestKey && old.RequestKey != lookup {
		if err := dropRequestKey(b, old.RequestKey, key); err != nil {
			return err
		}
	}
	if rec.RequestKey == "" || rec.RequestKey == lookup {
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

// dropRequestKey deletes the reqkeys entry rk if it points at key: request
// keys are hashes of (caller, request_id), but a hand-made record could
// share one.
func dropRequestKey(b *bolt.Bucket, rk string, key []byte) error {
	if k := []byte(rk); bytes.Equal(b.Get(k), key) {
		if err := b.Delete(k); err != nil {
			return fmt.Errorf("delete reqkeys index: %w", err)
		}
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
	if ik := openKey(old, key); ik != nil {
		if err := tx.Bucket(bucketOpen).Delete(ik); err != nil {
			return fmt.Errorf("delete open index: %w", err)
		}
	}
	b := tx.Bucket(bucketReqKeys)
	// The lookup entry is this record's if it holds its claim time.
	if lk := lookupKey(old.Caller, old.RequestId); bytes.Equal(b.Get(lk), key[:tsLen]) {
		if err := b.Delete(lk); err != nil {
			return fmt.Errorf("delete reqkeys lookup: %w", err)
		}
	}
	if old.RequestKey != "" {
		if err := dropRequestKey(b, old.RequestKey, key); err != nil {
			return err
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
