package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
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
			case 2: // a new request key (a hand-made or migrated record)
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
		if tx.Bucket(bucketFinalV4) != nil {
			t.Error("the file still has layout 4's final index")
		}
		gotReq := map[string]string{}
		_ = tx.Bucket(bucketReqKeys).ForEach(func(k, v []byte) error {
			// Layouts 3 to 5 kept the whole pos under a lookup key; it
			// still reads, so it counts as the claim time it starts with.
			if name := v[min(len(v), tsLen):]; len(v) > tsLen {
				if i := bytes.IndexByte(name, 0); i > 0 && string(lookupKey(string(name[:i]), string(name[i+1:]))) == string(k) {
					v = v[:tsLen]
				}
			}
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

// TestMigrateToLayout3 builds files of layouts 1 and 2 by hand (records keyed
// by caller 0x00 request_id; layout 1 without reqkeys), opens them, and
// checks that every record is found by request_id and by request key, the
// open ones are listed, the counts hold, and the buckets match layout 3. A
// read-only open refuses the old file instead of misreading it. A layout 3
// file (full record values) is read as it is, read-only too, and Open only
// bumps its version: records written after that are compact and both kinds
// read alike.
func TestMigrateOldLayouts(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var recs []service.Record
	for i := range 40 {
		id := fmt.Sprintf("old-%02d", i)
		r := service.Record{
			Caller: []string{"acme", "globex"}[i%2], RequestID: id, Method: service.MethodCharge,
			Fingerprint: []byte("fp"), StripeKey: "bd1_" + id,
			State:   []service.State{service.StatePending, service.StateSucceeded, service.StateFailed, service.StateIndeterminate}[i%4],
			Created: t0.Add(time.Duration(40-i) * time.Minute), Updated: t0.Add(time.Hour),
		}
		r.RequestKey = service.RequestKey(r.Caller, id)
		recs = append(recs, r)
	}
	for _, version := range []byte{1, 2, 3, 4, 5} {
		t.Run(fmt.Sprintf("layout %d", version), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "billingd.db")
			writeOldLayout(t, path, version, recs)

			ro, err := OpenReadOnly(path)
			switch {
			case version < 3 && !errors.Is(err, ErrOldLayout):
				t.Errorf("OpenReadOnly of layout %d = %v, want ErrOldLayout", version, err)
			case version >= 3 && err != nil:
				t.Errorf("OpenReadOnly of layout %d: %v", version, err)
			case version >= 3:
				if got, found, err := ro.Get(context.Background(), recs[0].Caller, recs[0].RequestID); err != nil || !found || got.StripeKey != recs[0].StripeKey {
					t.Errorf("read-only Get of a layout %d record = %+v, %v, %v", version, got, found, err)
				}
				ro.Close()
			}
			db, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			want := map[string]service.Record{}
			open := 0
			for _, r := range recs {
				got, found, err := db.Get(ctx, r.Caller, r.RequestID)
				if err != nil || !found || got.State != r.State || !got.Created.Equal(r.Created) {
					t.Errorf("Get %s/%s = %+v, %v, %v", r.Caller, r.RequestID, got, found, err)
				}
				byKey, found, err := db.GetByRequestKey(ctx, r.RequestKey)
				if err != nil || !found || byKey.RequestID != r.RequestID {
					t.Errorf("GetByRequestKey %s = %+v, %v, %v", r.RequestKey, byKey, found, err)
				}
				want[r.RequestID] = r
				if !r.State.Final() {
					open++
				}
			}
			listed, err := db.ListOpen(ctx, 0)
			if err != nil || len(listed) != open {
				t.Fatalf("ListOpen = %d records, %v; want %d", len(listed), err, open)
			}
			for i := 1; i < len(listed); i++ {
				if listed[i].Created.Before(listed[i-1].Created) {
					t.Errorf("ListOpen out of claim order at %d", i)
				}
			}
			checkIndexes(t, db, want)

			// A record written now is compact and lives beside the old ones.
			fresh := service.Record{Caller: "acme", RequestID: "new-1", Method: service.MethodCharge,
				Fingerprint: []byte("fp"), StripeKey: service.StripeKey("acme", "new-1", "create_payment_intent"),
				RequestKey: service.RequestKey("acme", "new-1"), State: service.StatePending, Attempts: 1,
				Created: t0.Add(2 * time.Hour), Updated: t0.Add(2 * time.Hour)}
			if _, created, err := db.Claim(ctx, fresh); err != nil || !created {
				t.Fatalf("Claim after migration: %v, %v", created, err)
			}
			want[fresh.RequestID] = fresh
			checkIndexes(t, db, want)

			// Sweeping removes old entries (pos or time) and new alike.
			n, err := db.Sweep(ctx, t0.Add(1000*time.Hour), t0.Add(1000*time.Hour), 100)
			if err != nil || n != len(recs)-open {
				t.Errorf("Sweep of every final record = %d, %v; want %d", n, err, len(recs)-open)
			}
			for id, r := range want {
				if r.State.Final() {
					delete(want, id)
				}
			}
			checkIndexes(t, db, want)
			err = db.bolt.View(func(tx *bolt.Tx) error {
				if v := tx.Bucket(bucketMeta).Get(metaLayout); !bytes.Equal(v, []byte{layoutVersion}) {
					t.Errorf("layout after Open = %v, want %d", v, layoutVersion)
				}
				pos := findPos(tx, recordKey("acme", "new-1"), lookupKey("acme", "new-1"))
				m, err := decodeProto(tx.Bucket(bucketRecords).Get(pos))
				if err != nil {
					return err
				}
				if m.Implied != impliedAll {
					t.Errorf("a record written after migration has implied %#x, want %#x", m.Implied, impliedAll)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// writeOldLayout writes recs as layouts 1 to 5 stored them: up to 4 with a
// final index beside the open one, and from 3 with pos under lookup keys.
func writeOldLayout(t *testing.T, path string, version byte, recs []service.Record) {
	t.Helper()
	bdb, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	err = bdb.Update(func(tx *bolt.Tx) error {
		for _, name := range append(allBuckets, bucketFinalV4) {
			if version == 1 && (bytes.Equal(name, bucketReqKeys) || bytes.Equal(name, bucketEvents) || bytes.Equal(name, bucketEventTs)) {
				continue
			}
			if version == 5 && bytes.Equal(name, bucketFinalV4) {
				continue
			}
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		index := func(m *storagev1.Record, key []byte) error {
			if service.State(m.State).Final() {
				return tx.Bucket(bucketFinalV4).Put(indexKey(m.UpdateUnixNano, key), []byte{byte(m.State)})
			}
			return tx.Bucket(bucketOpen).Put(indexKey(m.CreateUnixNano, key), []byte{byte(m.State)})
		}
		counts := map[byte]uint64{}
		for i := range recs {
			r := &recs[i]
			name := recordKey(r.Caller, r.RequestID)
			m := toProto(r)
			val, err := encodeProto(m)
			if version >= 4 { // compact values
				val, err = encodeStored(m)
			}
			if err != nil {
				return err
			}
			if version >= 3 { // claim-ordered, and counted and in reqkeys as now
				pos := posKey(m.CreateUnixNano, name)
				if err := writeRecord(tx, pos, nil, m, val); err != nil {
					return err
				}
				if err := tx.Bucket(bucketReqKeys).Put(lookupKey(r.Caller, r.RequestID), pos); err != nil {
					return err
				}
				if version <= 4 && service.State(m.State).Final() {
					if err := index(m, pos); err != nil {
						return err
					}
				}
				continue
			}
			if err := tx.Bucket(bucketRecords).Put(name, val); err != nil {
				return err
			}
			if err := index(m, name); err != nil {
				return err
			}
			if version == 2 {
				if err := tx.Bucket(bucketReqKeys).Put([]byte(r.RequestKey), name); err != nil {
					return err
				}
			}
			counts[byte(m.State)]++
		}
		for s, n := range counts {
			if err := tx.Bucket(bucketCounts).Put([]byte{s}, binary.BigEndian.AppendUint64(nil, n)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(metaLayout, []byte{version})
	})
	if err != nil {
		t.Fatal(err)
	}
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
