package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
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
	db, err := Open(filepath.Join(t.TempDir(), "billingd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(7, 11))
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	states := []service.State{service.StatePending, service.StateIndeterminate, service.StateSucceeded, service.StateFailed}

	live := map[string]service.Record{}
	for i := range 600 {
		id := fmt.Sprintf("req-%03d", rng.IntN(120))
		rec, ok := live[id]
		now := t0.Add(time.Duration(i) * time.Second)
		switch {
		case !ok:
			rec = service.Record{
				Caller: "acme", RequestID: id, Method: service.MethodCharge,
				Fingerprint: []byte("fp"), StripeKey: "bd1_" + id, RequestKey: "rk_" + id,
				State: service.StatePending, Attempts: 1, Created: now, Updated: now,
			}
			got, _, err := db.Claim(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			rec = got
		default:
			switch rng.IntN(5) {
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
			}
			if err := db.Put(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		live[id] = rec
		if i%150 == 149 { // sweep the final records updated before now-60s
			if _, err := db.Sweep(ctx, now.Add(-60*time.Second), 1000); err != nil {
				t.Fatal(err)
			}
			for k, r := range live {
				if r.State.Final() && r.Updated.Before(now.Add(-60*time.Second)) {
					delete(live, k)
				}
			}
		}
	}
	checkIndexes(t, db, live)
}

// checkIndexes compares the raw buckets with want, the records by request_id.
func checkIndexes(t *testing.T, db *DB, want map[string]service.Record) {
	t.Helper()
	err := db.bolt.View(func(tx *bolt.Tx) error {
		recs := tx.Bucket(bucketRecords)
		if n := recs.Stats().KeyN; n != len(want) {
			t.Errorf("records bucket holds %d records, want %d", n, len(want))
		}
		wantIdx := map[string]string{} // bucket ‖ index key → state byte
		wantReq := map[string]string{} // request key → record key
		counts := map[byte]uint64{}
		for id, r := range want {
			key := recordKey(r.Caller, id)
			v := recs.Get(key)
			if v == nil {
				t.Errorf("record %s missing", id)
				continue
			}
			m, err := decodeProto(v)
			if err != nil {
				return err
			}
			idx, ts := indexFor(m.State, m.CreateUnixNano, m.UpdateUnixNano)
			wantIdx[string(idx)+"|"+string(indexKey(ts, key))] = string([]byte{byte(m.State)})
			if m.RequestKey != "" {
				wantReq[m.RequestKey] = string(key)
			}
			counts[byte(m.State)]++
		}
		gotIdx := map[string]string{}
		for _, b := range [][]byte{bucketOpen, bucketFinal} {
			_ = tx.Bucket(b).ForEach(func(k, v []byte) error {
				gotIdx[string(b)+"|"+string(k)] = string(v)
				return nil
			})
		}
		diffMaps(t, "time index", gotIdx, wantIdx)
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
