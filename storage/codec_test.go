package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// withUnknownFields appends fields no version of record.proto defines yet,
// as a newer billingd would write them.
func withUnknownFields(v []byte) []byte {
	v = protowire.AppendTag(v, 99, protowire.BytesType)
	v = protowire.AppendString(v, "a field from the future")
	v = protowire.AppendTag(v, 100, protowire.VarintType)
	return protowire.AppendVarint(v, 42)
}

func TestCodecRoundTrip(t *testing.T) {
	t.Parallel()
	rounded := full("acme", "r")
	rounded.Err.RetryAfter = 1500 * time.Microsecond
	roundedWant := rounded
	roundedWant.Err = ptr(*rounded.Err)
	roundedWant.Err.RetryAfter = 2 * time.Millisecond

	emptySlices := pending("acme", "r", t0)
	emptySlices.Params = []byte{}
	emptySlices.Err = &service.Error{Reason: service.ReasonCardDeclined, Metadata: map[string]string{}, Violations: []service.FieldViolation{}}
	emptyWant := emptySlices
	emptyWant.Params = nil
	emptyWant.Err = &service.Error{Reason: service.ReasonCardDeclined}

	local := pending("acme", "r", t0.In(time.FixedZone("CET", 3600)))

	tests := []struct {
		name      string
		rec, want service.Record
		extra     func([]byte) []byte
	}{
		{"every field", full("acme", "r"), full("acme", "r"), nil},
		{"zero times stay zero", service.Record{Caller: "c", RequestID: "r", State: service.StatePending}, service.Record{Caller: "c", RequestID: "r", State: service.StatePending}, nil},
		{"sub-millisecond RetryAfter rounds up", rounded, roundedWant, nil},
		{"empty slices and maps decode as nil", emptySlices, emptyWant, nil},
		{"time zone is not stored, the instant is", local, local, nil},
		{"unknown fields from a newer version are skipped", full("acme", "r"), full("acme", "r"), withUnknownFields},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := storage.EncodeRecord(tt.rec)
			if err != nil {
				t.Fatalf("EncodeRecord: %v", err)
			}
			if tt.extra != nil {
				v = tt.extra(v)
			}
			got, err := storage.DecodeRecord(v)
			if err != nil {
				t.Fatalf("DecodeRecord: %v", err)
			}
			if d := diffRecord(got, tt.want); d != "" {
				t.Error(d)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	good, err := storage.EncodeRecord(full("acme", "r"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		v    []byte
	}{
		{"empty", nil},
		{"unknown format byte", append([]byte{2}, good[1:]...)},
		{"truncated protobuf", good[:len(good)-3]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := storage.DecodeRecord(tt.v); !errors.Is(err, storage.ErrCorrupt) {
				t.Errorf("DecodeRecord = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestForwardCompatibleOnDisk reads a record a newer version wrote, with
// fields this one does not know, through the whole store.
func TestForwardCompatibleOnDisk(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	rec := full("acme", "r1")
	v, err := storage.EncodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	db := openAt(t, path)
	mustClaim(t, db, rec)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rewriteRaw(t, path, "acme", "r1", withUnknownFields(v))

	db = openAt(t, path)
	if d := diffRecord(mustGet(t, db, "acme", "r1"), rec); d != "" {
		t.Errorf("Get: %s", d)
	}
	got, created, err := db.Claim(context.Background(), pending("acme", "r1", t0))
	if err != nil || created || diffRecord(got, rec) != "" {
		t.Errorf("Claim = created %v, %v, %s; want the stored record", created, err, diffRecord(got, rec))
	}
	// Index upkeep decodes the old record too.
	mustPut(t, db, withState(rec, service.StateSucceeded, t0.Add(time.Hour)))
	if got := mustCount(t, db); got[service.StateFailed] != 0 || got[service.StateSucceeded] != 1 {
		t.Errorf("CountByState after Put = %v", got)
	}
}
