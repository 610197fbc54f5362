package storage_test

import (
	"errors"
	"math"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// FuzzDecodeRecord feeds arbitrary bytes to the record decoder, as a damaged
// or foreign database file would: it must never panic, must call every
// failure ErrCorrupt, and whatever it accepts must survive being stored again.
func FuzzDecodeRecord(f *testing.F) {
	for _, rec := range []service.Record{full("acme", "r-1"), pending("caller_a", "order-1", t0)} {
		v, err := storage.EncodeRecord(rec)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(v)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{2, 0x0a, 0x01, 'a'})
	f.Fuzz(func(t *testing.T, v []byte) {
		rec, err := storage.DecodeRecord(v)
		if err != nil {
			if !errors.Is(err, storage.ErrCorrupt) {
				t.Fatalf("decode error %v is not ErrCorrupt", err)
			}
			return
		}
		enc, err := storage.EncodeRecord(rec)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		again, err := storage.DecodeRecord(enc)
		if err != nil {
			t.Fatalf("own encoding does not decode: %v", err)
		}
		// Decoding normalises (unknown fields dropped, empty fields
		// omitted, a delay too long for time.Duration wrapped); from then
		// on storing and loading must change nothing.
		enc2, err := storage.EncodeRecord(again)
		if err != nil {
			t.Fatal(err)
		}
		if d := diffRecord(mustDecode(t, enc2), again); d != "" {
			t.Fatalf("store/load not stable: %s", d)
		}
		if !retryOverflows(rec) {
			if d := diffRecord(again, rec); d != "" && !emptyBytesOnly(again, rec) {
				t.Fatalf("a decoded record changed when stored: %s", d)
			}
		}
	})
}

// emptyBytesOnly reports whether a and b differ only in empty-but-present
// versus absent byte fields, which protobuf does not tell apart.
func emptyBytesOnly(a, b service.Record) bool {
	norm := func(r service.Record) service.Record {
		if len(r.Fingerprint) == 0 {
			r.Fingerprint = nil
		}
		if len(r.Params) == 0 {
			r.Params = nil
		}
		return r
	}
	return diffRecord(norm(a), norm(b)) == ""
}

// retryOverflows reports a stored retry delay beyond what time.Duration
// holds: decoding wraps it, so its bytes cannot be stable.
func retryOverflows(rec service.Record) bool {
	return rec.Err != nil && (rec.Err.RetryAfter < 0 || rec.Err.RetryAfter > math.MaxInt64/2)
}

func mustDecode(t *testing.T, v []byte) service.Record {
	t.Helper()
	rec, err := storage.DecodeRecord(v)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// FuzzRecordRoundTrip stores arbitrary records: each one with valid UTF-8
// text comes back equal; any other is refused with ErrInvalidRecord.
func FuzzRecordRoundTrip(f *testing.F) {
	f.Add("acme", "r-1", "Charge", []byte("fp"), int32(2), 3, int64(1), int64(0), int64(2), "pi_1", "succeeded", int64(4200), "eur",
		"", "", "", "", int64(0))
	f.Add("caller_a", "order-2", "Subscribe", []byte{}, int32(3), 1, int64(5), int64(6), int64(7), "", "", int64(0), "",
		"CARD_DECLINED", "Your card was declined.", "decline_code", "generic_decline", int64(1500))
	f.Fuzz(func(t *testing.T, caller, requestID, method string, fp []byte, state int32, attempts int,
		created, first, updated int64, objectID, objStatus string, amount int64, currency string,
		reason, message, mdKey, mdVal string, retryMillis int64) {
		at := func(n int64) time.Time {
			if n == 0 {
				return time.Time{}
			}
			return time.Unix(0, n).UTC()
		}
		rec := service.Record{
			Caller: caller, RequestID: requestID, Method: service.Method(method),
			State: service.State(state), Attempts: int(int32(attempts)),
			Created: at(created), FirstAttempt: at(first), Updated: at(updated),
			Result: service.Result{ObjectID: objectID, Status: objStatus, Amount: amount, Currency: currency},
		}
		if len(fp) > 0 {
			rec.Fingerprint = fp
		}
		if reason != "" || message != "" {
			rec.Err = &service.Error{Reason: service.Reason(reason), Message: message,
				RetryAfter: time.Duration(max(retryMillis, 0)%(math.MaxInt64/int64(time.Millisecond))) * time.Millisecond}
			if mdKey != "" || mdVal != "" {
				rec.Err.Metadata = map[string]string{mdKey: mdVal}
			}
		}
		v, err := storage.EncodeRecord(rec)
		stored := []string{caller, requestID, method, objectID, objStatus, currency}
		if rec.Err != nil {
			stored = append(stored, reason, message)
			if rec.Err.Metadata != nil {
				stored = append(stored, mdKey, mdVal)
			}
		}
		valid := true
		for _, s := range stored {
			valid = valid && utf8.ValidString(s)
		}
		if !valid {
			if !errors.Is(err, storage.ErrInvalidRecord) {
				t.Fatalf("invalid UTF-8 stored: err = %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		got, err := storage.DecodeRecord(v)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if d := diffRecord(got, rec); d != "" {
			t.Fatalf("round trip: %s", d)
		}
	})
}
