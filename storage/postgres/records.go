package postgres

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/codec"
)

// State numbers in SQL: PENDING 1, SUCCEEDED 2, FAILED 3, INDETERMINATE 4,
// REQUIRES_ACTION 5, PROCESSING 6, AUTHORIZED 7 (service.State, stored on
// disk, never renumbered). Final is (2, 3); every other state is open.

// row is a record ready for its columns.
type row struct {
	key        recordKey
	state      int16
	createdNS  int64
	updatedNS  int64
	requestKey any // nil: NULL
	data       []byte
}

// newRow validates and encodes rec. PostgreSQL text cannot hold 0x00, and
// the API never sends it: such keys are refused like bbolt's invalid ones.
func newRow(rec *service.Record) (row, error) {
	switch {
	case rec.Caller == "":
		return row{}, fmt.Errorf("%w: empty caller", codec.ErrInvalidRecord)
	case rec.RequestID == "":
		return row{}, fmt.Errorf("%w: empty request_id", codec.ErrInvalidRecord)
	case strings.IndexByte(rec.Caller, 0) >= 0, strings.IndexByte(rec.RequestID, 0) >= 0, strings.IndexByte(rec.RequestKey, 0) >= 0:
		return row{}, fmt.Errorf("%w: 0x00 in caller, request_id or request key", codec.ErrInvalidRecord)
	case !rec.State.Valid():
		return row{}, fmt.Errorf("%w: state %d", codec.ErrInvalidRecord, rec.State)
	case rec.Attempts < 0 || rec.Attempts > math.MaxInt32:
		return row{}, fmt.Errorf("%w: attempts %d", codec.ErrInvalidRecord, rec.Attempts)
	}
	data, err := codec.Encode(*rec)
	if err != nil {
		return row{}, err
	}
	r := row{
		key:       recordKey{rec.Caller, rec.RequestID},
		state:     int16(rec.State),
		createdNS: unixNano(rec.Created),
		updatedNS: unixNano(rec.Updated),
		data:      data,
	}
	if rec.RequestKey != "" {
		r.requestKey = rec.RequestKey
	}
	return r, nil
}

// unixNano matches the record encoding: the zero time is 0.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// validKey reports whether (caller, requestID) can name a stored record.
func validKey(caller, requestID string) bool {
	return caller != "" && strings.IndexByte(caller, 0) < 0 && strings.IndexByte(requestID, 0) < 0
}

// claimSQL calls billingd_claim (migrations/0001_schema.sql): the insert and both
// tombstone checks are one statement, one transaction.
const claimSQL = `SELECT created, t_state, t_swept_ns, t_fingerprint, t_object_id
FROM billingd_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

// Claim stores rec if no record exists for (rec.Caller, rec.RequestID),
// holding its lease if it is open, and returns it with created=true;
// otherwise it returns the stored record with created=false, or, if there
// is no record but a tombstone, fails with a *service.ExpiredError. Of any
// number of concurrent claims, on any replicas, exactly one creates: the
// insert waits for a conflicting one to commit, then does nothing. A sweep
// deleting the record at the same time is seen too (billingd_claim). The
// returned record is the stored form.
func (s *Store) Claim(ctx context.Context, rec service.Record) (service.Record, bool, error) {
	if err := s.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("claim: %w", err)
	}
	r, err := newRow(&rec)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("claim: %w", err)
	}
	owner := ""
	if !rec.State.Final() {
		owner = s.owner
	}
	hash := nameHash(rec.Caller, rec.RequestID)
	// A conflicting row can vanish between the insert and the read only if
	// it was final and swept meanwhile: then the claim is tried again, and
	// finds its tombstone.
	for range 3 {
		var (
			created bool
			t       tombRow
		)
		err := s.pool.QueryRow(ctx, claimSQL, r.key.caller, r.key.requestID, hash[:], r.state, r.createdNS, r.updatedNS,
			r.requestKey, owner, s.ttlSeconds(), r.data).Scan(&created, &t.state, &t.sweptNS, &t.fingerprint, &t.objectID)
		if err != nil {
			return service.Record{}, false, fmt.Errorf("claim: %w", err)
		}
		if created {
			if owner != "" {
				s.hold(r.key)
			}
			stored, err := codec.Decode(r.data)
			if err != nil {
				return service.Record{}, false, fmt.Errorf("claim: %w", err)
			}
			return stored, true, nil
		}
		stored, found, err := s.get(ctx, r.key)
		if err != nil {
			return service.Record{}, false, fmt.Errorf("claim: %w", err)
		}
		if found {
			return stored, false, nil
		}
		if t.state != nil {
			tomb, err := t.tombstone()
			if err != nil {
				return service.Record{}, false, fmt.Errorf("claim: %w", err)
			}
			return service.Record{}, false, fmt.Errorf("claim: %w", &service.ExpiredError{Tombstone: tomb})
		}
	}
	return service.Record{}, false, errors.New("claim: the record keeps vanishing under a concurrent sweep")
}

// Get returns the record for (caller, requestID); found=false if none.
func (s *Store) Get(ctx context.Context, caller, requestID string) (service.Record, bool, error) {
	if err := s.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("get: %w", err)
	}
	if !validKey(caller, requestID) {
		return service.Record{}, false, nil
	}
	rec, found, err := s.get(ctx, recordKey{caller, requestID})
	if err != nil {
		return service.Record{}, false, fmt.Errorf("get: %w", err)
	}
	return rec, found, nil
}

func (s *Store) get(ctx context.Context, k recordKey) (service.Record, bool, error) {
	var data []byte
	err := s.pool.QueryRow(ctx, `SELECT data FROM records WHERE caller = $1 AND request_id = $2`,
		k.caller, k.requestID).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return service.Record{}, false, nil
	}
	if err != nil {
		return service.Record{}, false, err
	}
	rec, err := codec.Decode(data)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("record %s/%s: %w", k.caller, k.requestID, err)
	}
	return rec, true, nil
}

// putSQL inserts a missing record without a lease, or replaces one whose
// lease this handle ($8) holds: a final state gives the lease up, an open one
// renews it. A record someone else holds, or no one (final ones included),
// is left alone: no row is affected.
const putSQL = `
INSERT INTO records AS r (caller, request_id, state, created_ns, updated_ns, request_key, data)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (caller, request_id) DO UPDATE SET
    state = excluded.state,
    created_ns = excluded.created_ns,
    updated_ns = excluded.updated_ns,
    request_key = excluded.request_key,
    data = excluded.data,
    lease_owner = CASE WHEN excluded.state IN (2, 3) THEN '' ELSE r.lease_owner END,
    lease_until = CASE WHEN excluded.state IN (2, 3) THEN '-infinity'::timestamptz
                       ELSE now() + $9::float8 * interval '1 second' END
WHERE r.lease_owner = $8`

// Put writes rec in one statement (one transaction, durable at commit):
// over an existing record only under this handle's lease, else it fails
// with service.ErrLeaseLost and changes nothing. A missing record is
// created without a lease.
func (s *Store) Put(ctx context.Context, rec service.Record) error {
	if err := s.checkOpen(); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	r, err := newRow(&rec)
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	tag, err := s.pool.Exec(ctx, putSQL, r.key.caller, r.key.requestID, r.state, r.createdNS, r.updatedNS,
		r.requestKey, r.data, s.owner, s.ttlSeconds())
	if err != nil {
		return fmt.Errorf("put: %w", err)
	}
	if tag.RowsAffected() == 0 {
		s.drop(r.key)
		return fmt.Errorf("put %s/%s: %w", rec.Caller, rec.RequestID, service.ErrLeaseLost)
	}
	if rec.State.Final() {
		s.drop(r.key)
	}
	return nil
}

// acquireSQL takes the lease of an open record whose lease is free, expired
// or already ours. SKIP LOCKED: a row another replica is writing or taking
// right now is skipped rather than waited for; the caller polls or moves on.
const acquireSQL = `
WITH target AS (
    SELECT caller, request_id FROM records
    WHERE caller = $1 AND request_id = $2 AND state NOT IN (2, 3)
      AND (lease_owner = $3 OR lease_until <= now())
    FOR UPDATE SKIP LOCKED)
UPDATE records r SET lease_owner = $3, lease_until = now() + $4::float8 * interval '1 second'
FROM target t
WHERE r.caller = t.caller AND r.request_id = t.request_id
RETURNING r.data`

// Acquire takes the lease of rec's record if it is open and its lease is
// free, expired or this handle's, and returns the record as stored, leased.
// Otherwise it returns the stored record (final, or held by a live replica)
// not leased, or a zero Record if there is none.
func (s *Store) Acquire(ctx context.Context, rec service.Record) (service.Record, bool, error) {
	if err := s.checkOpen(); err != nil {
		return service.Record{}, false, fmt.Errorf("acquire: %w", err)
	}
	if !validKey(rec.Caller, rec.RequestID) {
		return service.Record{}, false, nil
	}
	k := recordKey{rec.Caller, rec.RequestID}
	var data []byte
	err := s.pool.QueryRow(ctx, acquireSQL, k.caller, k.requestID, s.owner, s.ttlSeconds()).Scan(&data)
	switch {
	case err == nil:
		s.hold(k)
		got, err := codec.Decode(data)
		if err != nil {
			return service.Record{}, false, fmt.Errorf("acquire: %w", err)
		}
		return got, true, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return service.Record{}, false, fmt.Errorf("acquire: %w", err)
	}
	got, _, err := s.get(ctx, k)
	if err != nil {
		return service.Record{}, false, fmt.Errorf("acquire: %w", err)
	}
	return got, false, nil
}

// Release gives up this handle's lease of the record, if it holds it.
func (s *Store) Release(ctx context.Context, caller, requestID string) error {
	k := recordKey{caller, requestID}
	s.drop(k)
	if err := s.checkOpen(); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	if !validKey(caller, requestID) {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE records SET lease_owner = '', lease_until = '-infinity'
		WHERE caller = $1 AND request_id = $2 AND lease_owner = $3`, caller, requestID, s.owner)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	return nil
}

// ListOpen returns up to limit open (not final) records, oldest
// Created first (limit <= 0: all), that this replica may drive: those under
// another live replica's lease are left out, so reconcilers on several
// replicas do not queue behind each other's drives. It reads without locks;
// Acquire decides who drives each record.
func (s *Store) ListOpen(ctx context.Context, limit int) ([]service.Record, error) {
	if err := s.checkOpen(); err != nil {
		return nil, fmt.Errorf("list open: %w", err)
	}
	var lim any // NULL: LIMIT ALL
	if limit > 0 {
		lim = limit
	}
	rows, err := s.pool.Query(ctx, `SELECT data FROM records
		WHERE state NOT IN (2, 3) AND (lease_owner = $1 OR lease_until <= now())
		ORDER BY created_ns, caller, request_id LIMIT $2`, s.owner, lim)
	if err != nil {
		return nil, fmt.Errorf("list open: %w", err)
	}
	out, err := decodeRows(rows)
	if err != nil {
		return nil, fmt.Errorf("list open: %w", err)
	}
	return out, nil
}

func decodeRows(rows pgx.Rows) ([]service.Record, error) {
	var out []service.Record
	var data []byte
	_, err := pgx.ForEachRow(rows, []any{&data}, func() error {
		rec, err := codec.Decode(data)
		if err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// CountByState returns how many records are in each state; every known
// state is present, zero included. It counts the table, so its cost grows
// with the records kept (retention); the metrics scrape gives it a second
// and falls back to CountOpen.
func (s *Store) CountByState(ctx context.Context) (map[service.State]int, error) {
	return s.count(ctx, "count by state", `SELECT state, count(*) FROM records GROUP BY state`, service.States()...)
}

// CountOpen returns how many records are in each open state. The
// condition is records_open's, so it counts that partial index: open
// records are few at any table size.
func (s *Store) CountOpen(ctx context.Context) (map[service.State]int, error) {
	return s.count(ctx, "count open", `SELECT state, count(*) FROM records WHERE state NOT IN (2, 3) GROUP BY state`,
		openStates()...)
}

func openStates() []service.State {
	var out []service.State
	for _, st := range service.States() {
		if !st.Final() {
			out = append(out, st)
		}
	}
	return out
}

// count runs a (state, count) query; every state of states is in the map.
func (s *Store) count(ctx context.Context, what, query string, states ...service.State) (map[service.State]int, error) {
	if err := s.checkOpen(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	out := make(map[service.State]int, len(states))
	for _, st := range states {
		out[st] = 0
	}
	rows, err := s.pool.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var (
		state int16
		n     int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&state, &n}, func() error {
		out[service.State(state)] = int(n)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// Sweep deletes up to limit SUCCEEDED or FAILED records last updated before
// updatedBefore, oldest first, and returns how many it deleted; each leaves
// its tombstone, stamped sweptAt, in the same transaction. SKIP LOCKED lets
// sweepers on several replicas take disjoint batches instead of waiting on
// each other. Open records are never swept.
func (s *Store) Sweep(ctx context.Context, updatedBefore, sweptAt time.Time, limit int) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("sweep: limit %d: must be positive", limit)
	}
	if updatedBefore.IsZero() {
		return 0, nil
	}
	deleted := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			WITH doomed AS (
			    SELECT caller, request_id FROM records
			    WHERE state IN (2, 3) AND updated_ns < $1
			    ORDER BY updated_ns, caller, request_id
			    LIMIT $2
			    FOR UPDATE SKIP LOCKED)
			DELETE FROM records r USING doomed d
			WHERE r.caller = d.caller AND r.request_id = d.request_id AND r.state IN (2, 3)
			RETURNING r.data`,
			updatedBefore.UnixNano(), limit)
		if err != nil {
			return err
		}
		var (
			hashes, fps [][]byte
			states      []int16
			objects     []string
			data        []byte
		)
		if _, err := pgx.ForEachRow(rows, []any{&data}, func() error {
			rec, err := codec.Decode(data)
			if err != nil {
				return err
			}
			t := service.TombstoneOf(&rec, sweptAt)
			h := nameHash(rec.Caller, rec.RequestID)
			hashes = append(hashes, h[:])
			fps = append(fps, t.Fingerprint[:])
			states = append(states, int16(t.State))
			objects = append(objects, t.ObjectID)
			return nil
		}); err != nil {
			return err
		}
		deleted = len(hashes)
		if deleted == 0 {
			return nil
		}
		// A record written again by Put after its sweep, and swept again,
		// replaces its older tombstone.
		_, err = tx.Exec(ctx, `
			INSERT INTO tombstones (name_hash, state, swept_ns, fingerprint, object_id)
			SELECT h, st, $2, fp, obj FROM unnest($1::bytea[], $3::smallint[], $4::bytea[], $5::text[]) AS u(h, st, fp, obj)
			ON CONFLICT (name_hash) DO UPDATE SET state = excluded.state, swept_ns = excluded.swept_ns,
			    fingerprint = excluded.fingerprint, object_id = excluded.object_id`,
			hashes, sweptAt.UnixNano(), states, fps, objects)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sweep: %w", err)
	}
	return deleted, nil
}

// SweepTombstones deletes up to limit tombstones swept before sweptBefore,
// oldest first, in one statement, and returns how many it deleted: their
// request_ids are free again.
func (s *Store) SweepTombstones(ctx context.Context, sweptBefore time.Time, limit int) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, fmt.Errorf("sweep tombstones: %w", err)
	}
	if limit <= 0 {
		return 0, fmt.Errorf("sweep tombstones: limit %d: must be positive", limit)
	}
	if sweptBefore.IsZero() {
		return 0, nil
	}
	tag, err := s.pool.Exec(ctx, `
		WITH doomed AS (
		    SELECT name_hash FROM tombstones WHERE swept_ns < $1
		    ORDER BY swept_ns LIMIT $2
		    FOR UPDATE SKIP LOCKED)
		DELETE FROM tombstones t USING doomed d WHERE t.name_hash = d.name_hash`, sweptBefore.UnixNano(), limit)
	if err != nil {
		return 0, fmt.Errorf("sweep tombstones: %w", err)
	}
	return int(tag.RowsAffected()), nil
}

// GetTombstone returns the tombstone the sweep left of (caller,
// requestID)'s record; found=false if none.
func (s *Store) GetTombstone(ctx context.Context, caller, requestID string) (service.Tombstone, bool, error) {
	if err := s.checkOpen(); err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", err)
	}
	if !validKey(caller, requestID) {
		return service.Tombstone{}, false, nil
	}
	h := nameHash(caller, requestID)
	var t tombRow
	err := s.pool.QueryRow(ctx, `SELECT state, swept_ns, fingerprint, object_id FROM tombstones WHERE name_hash = $1`,
		h[:]).Scan(&t.state, &t.sweptNS, &t.fingerprint, &t.objectID)
	if errors.Is(err, pgx.ErrNoRows) {
		return service.Tombstone{}, false, nil
	}
	if err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", err)
	}
	tomb, err := t.tombstone()
	if err != nil {
		return service.Tombstone{}, false, fmt.Errorf("get tombstone: %w", err)
	}
	return tomb, true, nil
}

// tombRow is a tombstones row as scanned; state is nil when there is none.
type tombRow struct {
	state       *int16
	sweptNS     *int64
	fingerprint []byte
	objectID    *string
}

func (r tombRow) tombstone() (service.Tombstone, error) {
	if r.state == nil || r.sweptNS == nil || r.objectID == nil || len(r.fingerprint) != sha256.Size ||
		!service.State(*r.state).Final() {
		return service.Tombstone{}, fmt.Errorf("%w: tombstone row", codec.ErrCorrupt)
	}
	t := service.Tombstone{State: service.State(*r.state), Swept: time.Unix(0, *r.sweptNS).UTC(), ObjectID: *r.objectID}
	copy(t.Fingerprint[:], r.fingerprint)
	return t, nil
}

// nameHash is SHA-256(caller 0x00 request_id): the hash in the record's
// request key (service.RequestKey) and a tombstone's key, as in bbolt.
func nameHash(caller, requestID string) [sha256.Size]byte {
	return sha256.Sum256([]byte(caller + "\x00" + requestID))
}

// scanChunk is how many records Scan reads per query.
const scanChunk = 256

// Scan calls fn for every record in key order (caller, then request_id,
// bytewise) until fn returns false, reading in chunks outside any
// transaction: like bbolt's Scan it is not a snapshot, and sees no record
// twice.
func (s *Store) Scan(ctx context.Context, fn func(service.Record) bool) error {
	var after recordKey
	first := true
	for {
		if err := s.checkOpen(); err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		var (
			rows pgx.Rows
			err  error
		)
		if first {
			rows, err = s.pool.Query(ctx, `SELECT caller, request_id, data FROM records
				ORDER BY caller, request_id LIMIT $1`, scanChunk)
		} else {
			rows, err = s.pool.Query(ctx, `SELECT caller, request_id, data FROM records
				WHERE (caller, request_id) > ($1, $2)
				ORDER BY caller, request_id LIMIT $3`, after.caller, after.requestID, scanChunk)
		}
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		var (
			chunk []service.Record
			data  []byte
		)
		if _, err := pgx.ForEachRow(rows, []any{&after.caller, &after.requestID, &data}, func() error {
			rec, err := codec.Decode(data)
			if err != nil {
				return fmt.Errorf("record %s/%s: %w", after.caller, after.requestID, err)
			}
			chunk = append(chunk, rec)
			return nil
		}); err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		first = false
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
