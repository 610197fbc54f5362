package service

import (
	"bytes"
	"crypto/sha256"
	"time"
)

// ReasonRequestIDExpired: the caller's request_id belongs to an operation
// that ended and whose record was swept; only its tombstone is left. Nothing
// is sent: Stripe forgot the idempotency key long ago, so a send could make
// a second object (FAILED_PRECONDITION).
const ReasonRequestIDExpired Reason = "REQUEST_ID_EXPIRED"

// Tombstone is what a store keeps of a final record when the sweeper deletes
// it: enough to refuse the request_id and to name what it made, for a long
// horizon (--tombstone-retention) at tens of bytes. Stores key it by the
// SHA-256 of caller 0x00 request_id (the hash in the request key), so it is
// per caller like the record.
type Tombstone struct {
	// Fingerprint is the SHA-256 of the swept record's Fingerprint.
	Fingerprint [32]byte
	State       State  // SUCCEEDED or FAILED
	ObjectID    string // the Stripe object the operation made or acted on, "" if none
	Swept       time.Time
}

// TombstoneOf is the tombstone of rec, swept at swept.
func TombstoneOf(rec *Record, swept time.Time) Tombstone {
	return Tombstone{Fingerprint: sha256.Sum256(rec.Fingerprint), State: rec.State, ObjectID: rec.Result.ObjectID, Swept: swept}
}

// Matches reports whether fp is the fingerprint of the swept record.
func (t Tombstone) Matches(fp []byte) bool {
	sum := sha256.Sum256(fp)
	return bytes.Equal(sum[:], t.Fingerprint[:])
}

// ExpiredError is returned (wrapped) by Records.Claim when (caller,
// request_id) has no record but a tombstone: nothing was written. Check for
// it with errors.As.
type ExpiredError struct{ Tombstone Tombstone }

func (e *ExpiredError) Error() string {
	return "service: request_id expired: only its tombstone is left (" + e.Tombstone.State.String() + ")"
}

// expiredError is the answer to a request whose request_id has only a
// tombstone left: the same for every repeat, whatever its parameters.
func expiredError(t Tombstone, fp []byte) *Error {
	msg := "request_id was used by an operation that ended " + t.State.String() +
		"; its record has expired, and nothing was sent again"
	if !t.Matches(fp) {
		msg = "request_id was used by another operation (other method or parameters) that ended " + t.State.String() +
			"; its record has expired, and nothing was sent"
	}
	md := map[string]string{"state": t.State.String()}
	if t.ObjectID != "" {
		md["stripe_object_id"] = t.ObjectID
	}
	return &Error{Reason: ReasonRequestIDExpired, Message: msg, Metadata: md}
}
