package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/billingd/billingd/service"
)

// TestIndexesMirrorRecords drives records through random transitions (claims,
// attempt updates that keep the state, moves between open states, settling,
// request-key changes, sweeps) and then checks every bucket against the
// records: writeRecord rewrites only what changed, and whatever it skips must
// still be right.
func TestIndexesMirrorRecords(t *testing.T) {
	db := openTemp(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	states := []service.State{service.StatePending, service.StateIndeterminate, service.StateSucceeded, service.StateFailed}

	live := map[string]service.Record{}
	swept := map[string]bool{} // tombstoned: a claim is refused
	for i := range 600 {
		id := fmt.Sprintf("req-%03d", rng.IntN(120))
		rec, ok := live[id]
		now := t0.Add(time.Duration(i) * time.Second)
		switch {
		case !ok && swept[id]:
			_, _, err := db.Claim(ctx, service.Record{Caller: "acme", RequestID: id, Method: service.MethodCharge,
				State: service.StatePending, Created: now, Updated: now})
			if _, ok := errors.AsType[*service.ExpiredError](err); !ok {
				t.Fatalf("claim of swept %s: %v, want ExpiredError", id, err)
			}
			continue
		case !ok:
			rec = service.Record{
				Caller: "acme", RequestID: id, Method: service.MethodCharge,
				Fingerprint: []byte("fp"), StripeKey: "bd1_" + id, RequestKey: "rk_" + id,
				State: service.StatePending, Attempts: 1, Created: now, Updated: now,
			}
			if rng.IntN(2) == 0 { // as the service writes it: the lookup key
				rec.RequestKey = service.RequestKey("acme", id)
			}
			got, _, err := db.Claim(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			rec = got
		default:
			switch rng.IntN(6) {
			case 0: // another attempt, same state and times
				rec.Attempts++
			case 1: // a new state
				rec.State = states[rng.IntN(len(states))]
				rec.Updated = now
			case 2: // a new request key (a hand-made record)
				rec.RequestKey = fmt.Sprintf("rk_%s_%d", id, i)
			case 3: // no request key at all
				rec.RequestKey = ""
			case 4: // same everything but the update time
				rec.Updated = now
			case 5: // back to the service's request key, the lookup key
				rec.RequestKey = service.RequestKey(rec.Caller, id)
			}
			if err := db.Put(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		live[id] = rec
		if i%150 == 149 { // sweep the final records updated before now-60s
			if _, err := db.Sweep(ctx, now.Add(-60*time.Second), now.Add(-60*time.Second), 1000); err != nil {
				t.Fatal(err)
			}
			for k, r := range live {
				if r.State.Final() && r.Updated.Before(now.Add(-60*time.Second)) {
					delete(live, k)
					swept[k] = true
				}
			}
		}
	}
	checkIndexes(t, db, live)
	checkTombstones(t, db, swept)
}

// checkTombstones checks that the tombstones bucket holds a tombstone of
// every swept id and nothing else, and that tombts lists each one.
func checkTombstones(t *testing.T, db *DB, swept map[string]bool) {
	t.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		tombs := tx.Bucket(bucketTombs)
		if n := tombs.Stats().KeyN; n != len(swept) {
			t.Errorf("tombstones bucket holds %d, want %d", n, len(swept))
		}
		listed := map[string]bool{}
		if err := tx.Bucket(bucketTombTs).ForEach(func(k, v []byte) error {
			for ; len(v) >= 32; v = v[32:] {
				listed[string(v[:32])] = true
			}
			return nil
		}); err != nil {
			return err
		}
		for id := range swept {
			h := nameHash("acme", id)
			if tombs.Get(h[:]) == nil || !listed[string(h[:])] {
				t.Errorf("%s: tombstone %v, listed in tombts %v", id, tombs.Get(h[:]) != nil, listed[string(h[:])])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// openTemp opens a new database in t's temporary directory, closed when t
// ends.
func openTemp(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "billingd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// checkIndexes compares the raw buckets with want, the records by request_id.
func checkIndexes(t *testing.T, db *DB, want map[string]service.Record) {
	t.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if n := recs.Stats().KeyN; n != len(want) {
			t.Errorf("records bucket holds %d records, want %d", n, len(want))
		}
		wantIdx := map[string]string{} // open index key → state byte
		wantReq := map[string]string{} // lookup key → claim time; other request key → record key
		counts := map[byte]uint64{}
		for id, r := range want {
			key := findPos(tx, recordKey(r.Caller, id), lookupKey(r.Caller, id))
			if !bytes.Equal(key, posKey(r.Created.UnixNano(), recordKey(r.Caller, id))) {
				t.Errorf("record %s at %q, want at its claim time", id, key)
				continue
			}
			v := recs.Get(key)
			if v == nil {
				t.Errorf("record %s missing", id)
				continue
			}
			m, err := decodeAt(key, v)
			if err != nil {
				return err
			}
			if ik := openKey(m, key); ik != nil {
				wantIdx[string(ik)] = string([]byte{byte(m.State)})
			}
			lk := string(lookupKey(r.Caller, id))
			wantReq[lk] = string(key[:tsLen]) // the claim time: the key names the rest
			if m.RequestKey != "" && m.RequestKey != lk {
				wantReq[m.RequestKey] = string(key)
			}
			counts[byte(m.State)]++
		}
		gotIdx := map[string]string{}
		_ = tx.Bucket(bucketOpen).ForEach(func(k, v []byte) error {
			gotIdx[string(k)] = string(v)
			return nil
		})
		diffMaps(t, "open index", gotIdx, wantIdx)
		gotReq := map[string]string{}
		_ = tx.Bucket(bucketReqKeys).ForEach(func(k, v []byte) error {
			gotReq[string(k)] = string(v)
			return nil
		})
		diffMaps(t, "reqkeys", gotReq, wantReq)
		gotCounts := map[byte]uint64{}
		_ = tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
			gotCounts[k[0]] = binary.BigEndian.Uint64(v)
			return nil
		})
		for s, n := range counts {
			if gotCounts[s] != n {
				t.Errorf("count of state %d = %d, want %d", s, gotCounts[s], n)
			}
		}
		for s, n := range gotCounts {
			if counts[s] == 0 {
				t.Errorf("count of state %d = %d, want none", s, n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func diffMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("%s: entry %q missing", what, k)
		} else if !bytes.Equal([]byte(g), []byte(v)) {
			t.Errorf("%s: entry %q = %q, want %q", what, k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: stray entry %q", what, k)
		}
	}
}

// TestOpenRefusesOlderLayouts builds files of every older layout version (and
// one with records but no version) with bolt directly: Open and OpenReadOnly
// refuse each with ErrOldLayout and an error that says what to do, and leave
// the file byte for byte as it was. A newer or malformed version is refused
// as ErrCorrupt. A file of the current layout opens, and opens again.
func TestOpenRefusesOlderLayouts(t *testing.T) {
	t.Parallel()
	type file struct {
		name    string
		version []byte // nil: no layout version
		want    error
	}
	var files []file
	for v := byte(1); v < layoutVersion; v++ {
		files = append(files, file{fmt.Sprintf("layout %d", v), []byte{v}, ErrOldLayout})
	}
	files = append(files,
		file{"records without a layout version", nil, ErrOldLayout},
		file{"newer layout", []byte{layoutVersion + 1}, ErrCorrupt},
		file{"malformed layout version", []byte{layoutVersion, 0}, ErrCorrupt},
	)
	for _, tt := range files {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), "billingd.db")
			writeLayout(t, path, tt.version)
			before := readFile(t, path)

			db, err := Open(path, WithLockTimeout(5*time.Second))
			if err == nil {
				db.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("Open = %v, want %v", err, tt.want)
			}
			if tt.want == ErrOldLayout {
				for _, says := range []string{path, "development build before billingd v0.1.0", "settle its open records", "move the file aside"} {
					if err == nil || !strings.Contains(err.Error(), says) {
						t.Errorf("Open = %v, want an error that says %q", err, says)
					}
				}
			}
			ro, err := OpenReadOnly(path, WithLockTimeout(5*time.Second))
			if err == nil {
				ro.Close()
			}
			if !errors.Is(err, tt.want) {
				t.Errorf("OpenReadOnly = %v, want %v", err, tt.want)
			}
			if after := readFile(t, path); !bytes.Equal(after, before) {
				t.Error("a refused open changed the file")
			}
		})
	}

	t.Run("current layout", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "billingd.db")
		ctx := context.Background()
		t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		rec := service.Record{Caller: "acme", RequestID: "r1", Method: service.MethodCharge, Fingerprint: []byte("fp"),
			StripeKey: service.StripeKey("acme", "r1", "create_payment_intent"), RequestKey: service.RequestKey("acme", "r1"),
			State: service.StatePending, Attempts: 1, Created: t0, Updated: t0}
		db, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, created, err := db.Claim(ctx, rec); err != nil || !created {
			t.Fatalf("Claim = %v, %v", created, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		err = bdb.View(func(tx *bolt.Tx) error {
			if v := tx.Bucket(bucketMeta).Get(metaLayout); !bytes.Equal(v, []byte{layoutVersion}) {
				t.Errorf("layout of a new file = %v, want %d", v, layoutVersion)
			}
			return nil
		})
		bdb.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, open := range []func(string, ...Option) (*DB, error){OpenReadOnly, Open} {
			db, err := open(path)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			got, found, err := db.Get(ctx, "acme", "r1")
			if err != nil || !found || got.StripeKey != rec.StripeKey || !got.Created.Equal(t0) {
				t.Errorf("Get after reopen = %+v, %v, %v", got, found, err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// writeLayout writes a bbolt file with one record under layout version
// version (nil: none), as a build of another layout would have left it.
func writeLayout(t *testing.T, path string, version []byte) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		recs, err := tx.CreateBucket(bucketRecords)
		if err != nil {
			return err
		}
		v, err := EncodeRecord(service.Record{Caller: "acme", RequestID: "old-1", Method: service.MethodCharge,
			State: service.StateSucceeded, Attempts: 1})
		if err != nil {
			return err
		}
		if err := recs.Put(recordKey("acme", "old-1"), v); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil || version == nil {
			return err
		}
		return meta.Put(metaLayout, version)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestLookupKeyIsTheRequestKey: while the two agree, each record needs one
// reqkeys entry, not two (the layout stays right if they part; only the
// saving goes).
func TestLookupKeyIsTheRequestKey(t *testing.T) {
	for _, c := range [][2]string{{"acme", "r1"}, {"globex", "6f0e3c9a-1b2d-4e5f-8a7b-0c1d2e3f4a5b"}, {"x", ""}, {strings.Repeat("c", 200), strings.Repeat("r", 300)}} {
		if got, want := string(lookupKey(c[0], c[1])), service.RequestKey(c[0], c[1]); got != want {
			t.Errorf("lookupKey(%q, %q) = %q, service.RequestKey = %q", c[0], c[1], got, want)
		}
	}
}

// TestTimeOrderedBucketsStayFull writes records as the service does (claim,
// then settle a little later, in claim order with some overlap) and checks
// that the time-ordered buckets keep their leaves well filled. With bbolt's
// default fill factor every leaf split at the right edge leaves a half-empty
// page behind, and the file (and the mmap a server touches) doubles.
func TestTimeOrderedBucketsStayFull(t *testing.T) {
	path := filepath.Join(t.TempDir(), "billingd.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	const n, lag = 1500, 100 // settle each record 100 claims after its own, as at c=64-256
	recs := make([]service.Record, 0, n)
	for i := range n + lag {
		if i < n {
			now := t0.Add(time.Duration(i) * time.Millisecond)
			id := fmt.Sprintf("order-%06d", i)
			rec := service.Record{
				Caller: "acme", RequestID: id, Method: service.MethodCharge,
				Fingerprint: bytes.Repeat([]byte{7}, 32), StripeKey: service.StripeKey("acme", id, "create_payment_intent"),
				RequestKey: service.RequestKey("acme", id), Params: bytes.Repeat([]byte{1}, 40),
				State: service.StatePending, Attempts: 1, Created: now, FirstAttempt: now, Updated: now,
			}
			got, _, err := db.Claim(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, got)
		}
		if j := i - lag; j >= 0 {
			rec := recs[j]
			rec.State = service.StateSucceeded
			rec.Updated = t0.Add(time.Duration(i) * time.Millisecond)
			rec.Result = service.Result{ObjectID: fmt.Sprintf("pi_%024d", j), Status: "succeeded", Amount: 2000, Currency: "usd", StripeRequestID: fmt.Sprintf("req_%014d", j)}
			if err := db.Put(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bolt.Tx) error {
		for _, c := range []struct {
			bucket []byte
			min    float64
		}{{bucketRecords, 0.7}} {
			s := tx.Bucket(c.bucket).Stats()
			if s.KeyN != n {
				t.Errorf("%s holds %d keys, want %d", c.bucket, s.KeyN, n)
			}
			if fill := float64(s.LeafInuse) / float64(s.LeafAlloc); fill < c.min {
				t.Errorf("%s leaves are %.0f%% full (%d pages), want at least %.0f%%", c.bucket, 100*fill, s.LeafPageN, 100*c.min)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestLookupByClaimTime: a lookup key holds only its record's claim time, and
// records claimed in the same nanosecond are still told apart, by request
// key and after one of them is swept.
func TestLookupByClaimTime(t *testing.T) {
	db := openTemp(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var recs []service.Record
	for _, id := range []string{"same-a", "same-b", "same-c"} {
		r := service.Record{Caller: "acme", RequestID: id, Method: service.MethodCharge, Fingerprint: []byte("fp"),
			StripeKey: service.StripeKey("acme", id, "create_payment_intent"), RequestKey: service.RequestKey("acme", id),
			State: service.StatePending, Attempts: 1, Created: t0, Updated: t0}
		if _, created, err := db.Claim(ctx, r); err != nil || !created {
			t.Fatalf("Claim %s: %v, %v", id, created, err)
		}
		recs = append(recs, r)
	}
	err := db.bolt.View(func(tx *bolt.Tx) error {
		for _, r := range recs {
			if v := tx.Bucket(bucketReqKeys).Get(lookupKey(r.Caller, r.RequestID)); !bytes.Equal(v, tsKey(nil, t0.UnixNano())) {
				t.Errorf("lookup entry of %s = %x, want the claim time alone", r.RequestID, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	found := func(r service.Record, want bool) {
		t.Helper()
		got, ok, err := db.GetByRequestKey(ctx, r.RequestKey)
		if err != nil || ok != want || (ok && got.RequestID != r.RequestID) {
			t.Errorf("GetByRequestKey(%s) = %s, found %v, %v; want found %v", r.RequestID, got.RequestID, ok, err, want)
		}
		got, ok, err = db.Get(ctx, r.Caller, r.RequestID)
		if err != nil || ok != want || (ok && got.RequestID != r.RequestID) {
			t.Errorf("Get(%s) = %s, found %v, %v; want found %v", r.RequestID, got.RequestID, ok, err, want)
		}
	}
	for _, r := range recs {
		found(r, true)
	}
	b := recs[1]
	b.State, b.Updated = service.StateSucceeded, t0.Add(time.Second)
	if err := db.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Sweep(ctx, t0.Add(time.Hour), t0.Add(time.Hour), 10); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1", n, err)
	}
	found(recs[0], true)
	found(b, false)
	found(recs[2], true)
	checkIndexes(t, db, map[string]service.Record{recs[0].RequestID: recs[0], recs[2].RequestID: recs[2]})
}
