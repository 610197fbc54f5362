package storage

import (
	"bytes"
	"fmt"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
)

// A value in records leaves out what bbolt can recompute exactly from the
// record's key: caller and request_id are its name (pos without the time),
// and billingd derives stripe_key and request_key from them. That is ~150 of a charge's ~300 bytes, so a smaller file, fewer pages
// per commit and less of the mmap touched. Each field is left out only when
// it equals the derivation below, and storagev1.Record.implied says which
// were, so the decoded record is always the one written, whatever the
// service derives in the future. PostgreSQL rows and EncodeRecord keep every
// field: their values carry no key to recompute from.
const (
	impliedName       uint32 = 1 << 0 // caller and request_id: the name in pos
	impliedStripeKey  uint32 = 1 << 1 // stripe_key: derivedStripeKey
	impliedRequestKey uint32 = 1 << 2 // request_key: lookupKey
	impliedAll               = impliedName | impliedStripeKey | impliedRequestKey
)

// derivedStripeKey is the Idempotency-Key billingd sends for a record's one
// step, as service.StripeKey computes it (TestDerivedKeysAreTheService's).
// It is defined here, not called, for the reason lookupKey is: what a stored
// value means must not change when the service's derivation does.
func derivedStripeKey(caller, requestID, method string) derivedKey {
	step := "create_payment_intent"
	if method == "Subscribe" {
		step = "create_subscription"
	}
	return derive("bd1_", caller, requestID, step)
}

// encodeStored is encodeProto for a value of records: m (a full record, as
// toProto makes it) without the fields its key implies. m is as it was when
// encodeStored returns.
func encodeStored(m *storagev1.Record) ([]byte, error) {
	if m.Implied != 0 {
		return nil, fmt.Errorf("%w: record already compacted", ErrInvalidRecord)
	}
	caller, requestID, sk, rk := m.Caller, m.RequestId, m.StripeKey, m.RequestKey
	implied := impliedName
	if dk := derivedStripeKey(caller, requestID, m.Method); sk != "" && sk == string(dk[:]) {
		implied |= impliedStripeKey
		m.StripeKey = ""
	}
	if dk := lookupKeyOf(caller, requestID); rk != "" && rk == string(dk[:]) {
		implied |= impliedRequestKey
		m.RequestKey = ""
	}
	m.Caller, m.RequestId, m.Implied = "", "", implied
	val, err := encodeProto(m)
	m.Caller, m.RequestId, m.StripeKey, m.RequestKey, m.Implied = caller, requestID, sk, rk, 0
	return val, err
}

// decodeStored decodes the value of records stored under a key whose name
// (caller 0x00 request_id) is name, filling in the fields it implies.
func decodeStored(name, v []byte) (*storagev1.Record, error) {
	m, err := decodeProto(v)
	if err != nil {
		return nil, err
	}
	if err := expand(m, name); err != nil {
		return nil, err
	}
	return m, nil
}

func expand(m *storagev1.Record, name []byte) error {
	implied := m.Implied
	if implied == 0 {
		return nil
	}
	if implied&^impliedAll != 0 {
		return fmt.Errorf("%w: unknown implied fields %#x", ErrCorrupt, implied)
	}
	if implied&impliedName != 0 {
		i := bytes.IndexByte(name, 0)
		if i <= 0 || m.Caller != "" || m.RequestId != "" {
			return fmt.Errorf("%w: implied name %q does not fit its record", ErrCorrupt, name)
		}
		m.Caller, m.RequestId = string(name[:i]), string(name[i+1:])
	}
	if implied&impliedStripeKey != 0 {
		if m.StripeKey != "" {
			return fmt.Errorf("%w: implied stripe_key is also stored", ErrCorrupt)
		}
		k := derivedStripeKey(m.Caller, m.RequestId, m.Method)
		m.StripeKey = string(k[:])
	}
	if implied&impliedRequestKey != 0 {
		if m.RequestKey != "" {
			return fmt.Errorf("%w: implied request_key is also stored", ErrCorrupt)
		}
		k := lookupKeyOf(m.Caller, m.RequestId)
		m.RequestKey = string(k[:])
	}
	m.Implied = 0
	return nil
}

// decodeAt decodes the value of records stored under pos.
func decodeAt(pos, v []byte) (*storagev1.Record, error) {
	if len(pos) <= tsLen {
		return nil, fmt.Errorf("%w: record key %q too short", ErrCorrupt, pos)
	}
	return decodeStored(pos[tsLen:], v)
}
