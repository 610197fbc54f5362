package storage

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
)

// TestCompactRoundTrip: a compact value decodes, with its key, to exactly
// the record written, whether its keys are the derived ones or not, and it
// leaves out what it claims to.
func TestCompactRoundTrip(t *testing.T) {
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	base := service.Record{
		Caller: "acme", RequestID: "6f0e3c9a-1b2d-4e5f-8a7b-0c1d2e3f4a5b", Method: service.MethodCharge,
		Fingerprint: []byte("fp"), Params: []byte{1, 2, 3}, State: service.StateSucceeded, Attempts: 2,
		Created: t0, FirstAttempt: t0, Updated: t0.Add(time.Second),
		Result: service.Result{ObjectID: "pi_1", Status: "succeeded", Amount: 2000, Currency: "usd"},
	}
	derivedSK := service.StripeKey(base.Caller, base.RequestID, "create_payment_intent")
	derivedRK := service.RequestKey(base.Caller, base.RequestID)
	for _, c := range []struct {
		name    string
		sk, rk  string
		method  service.Method
		implied uint32
	}{
		{"both derived", derivedSK, derivedRK, service.MethodCharge, impliedAll},
		{"subscription key derived", service.StripeKey(base.Caller, base.RequestID, "create_subscription"), derivedRK, service.MethodSubscribe, impliedAll},
		{"charge key on a subscription", derivedSK, derivedRK, service.MethodSubscribe, impliedName | impliedRequestKey},
		{"own stripe key", "bd1_custom", derivedRK, service.MethodCharge, impliedName | impliedRequestKey},
		{"own request key", derivedSK, "rk_custom", service.MethodCharge, impliedName | impliedStripeKey},
		{"no keys", "", "", service.MethodCharge, impliedName},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := base
			rec.StripeKey, rec.RequestKey, rec.Method = c.sk, c.rk, c.method
			m := toProto(&rec)
			val, err := encodeStored(m)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(m, toProto(&rec)) {
				t.Errorf("encodeStored changed its argument: %v", m)
			}
			raw, err := decodeProto(val)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Implied != c.implied || raw.Caller != "" || raw.RequestId != "" ||
				(c.implied&impliedStripeKey != 0) != (raw.StripeKey == "" && c.sk != "") ||
				(c.implied&impliedRequestKey != 0) != (raw.RequestKey == "" && c.rk != "") {
				t.Errorf("stored %v, want implied %#x and exactly those fields left out", raw, c.implied)
			}
			got, err := decodeStored(recordKey(rec.Caller, rec.RequestID), val)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, toProto(&rec)) {
				t.Errorf("decoded %v\nwant    %v", got, toProto(&rec))
			}
			if _, err := DecodeRecord(val); !errors.Is(err, ErrCorrupt) {
				t.Errorf("DecodeRecord of a compact value = %v, want ErrCorrupt", err)
			}
		})
	}
	rec := base
	rec.StripeKey, rec.RequestKey = derivedSK, derivedRK
	compact, _ := encodeStored(toProto(&rec))
	full, _ := encodeProto(toProto(&rec))
	if saved := len(full) - len(compact); saved < len(rec.Caller)+len(rec.RequestID)+len(derivedSK)+len(derivedRK) {
		t.Errorf("compact value %d bytes, full %d: saved %d", len(compact), len(full), saved)
	}
}

// TestCompactRejectsWhatDoesNotFit: a compact value never decodes into a
// record other than the one its key names.
func TestCompactRejectsWhatDoesNotFit(t *testing.T) {
	m := &storagev1.Record{Caller: "acme", RequestId: "r1", Method: "Charge", State: 1,
		StripeKey: service.StripeKey("acme", "r1", "create_payment_intent"), RequestKey: service.RequestKey("acme", "r1")}
	val, err := encodeStored(m)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range [][]byte{nil, []byte("acme"), []byte("\x00r1")} {
		if _, err := decodeStored(name, val); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeStored under name %q = %v, want ErrCorrupt", name, err)
		}
	}
	for _, bad := range []*storagev1.Record{
		{Implied: 1 << 5},
		{Implied: impliedName, Caller: "acme"},
		{Implied: impliedName | impliedStripeKey, StripeKey: "bd1_x"},
		{Implied: impliedName | impliedRequestKey, RequestKey: "rk1_x"},
	} {
		v, err := encodeProto(bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodeStored([]byte("acme\x00r1"), v); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeStored(%v) = %v, want ErrCorrupt", bad, err)
		}
	}
	if _, err := encodeStored(&storagev1.Record{Implied: impliedName}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("encodeStored of a compacted message = %v, want ErrInvalidRecord", err)
	}
}

// TestDerivedKeysAreTheService: while storage's derivations equal the
// service's, every record the service writes is stored compact (the file
// stays right if they part; only the saving goes).
func TestDerivedKeysAreTheService(t *testing.T) {
	for i, c := range [][2]string{{"acme", "r1"}, {"globex", "6f0e3c9a-1b2d-4e5f-8a7b-0c1d2e3f4a5b"}, {"x", ""}, {strings.Repeat("c", 200), strings.Repeat("r", 300)}} {
		for _, m := range []struct {
			method service.Method
			step   string
		}{{service.MethodCharge, "create_payment_intent"}, {service.MethodSubscribe, "create_subscription"}} {
			k := derivedStripeKey(c[0], c[1], string(m.method))
			if got, want := string(k[:]), service.StripeKey(c[0], c[1], m.step); got != want {
				t.Errorf("%d: derivedStripeKey(%q, %q, %s) = %q, service.StripeKey = %q", i, c[0], c[1], m.method, got, want)
			}
		}
	}
}
