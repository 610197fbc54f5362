package service

import (
	"context"
	"errors"
	"time"
)

// State is where a record stands in the state machine of docs/design.md, "Record states".
type State int32

// The record states. The numbers are stored on disk and match Operation.State
// in the public API: never renumber.
const (
	StateUnspecified   State = 0
	StatePending       State = 1
	StateSucceeded     State = 2
	StateFailed        State = 3
	StateIndeterminate State = 4
	// The followed states: Stripe's object exists but the payment is not
	// done. Such a record is never sent to Stripe again as a create; webhooks
	// and the reconciler follow its object until it ends.
	StateRequiresAction State = 5 // the customer must act (3-D Secure, a payment method)
	StateProcessing     State = 6 // the payment is under way at the bank
	StateAuthorized     State = 7 // authorised, to be captured (capture_method=manual)
)

// Final reports whether the state can no longer change.
func (s State) Final() bool { return s == StateSucceeded || s == StateFailed }

// Followed reports whether the record's object exists at Stripe and is
// followed to its end rather than driven.
func (s State) Followed() bool {
	return s == StateRequiresAction || s == StateProcessing || s == StateAuthorized
}

// States lists every state a record can be stored in, in number order.
func States() []State {
	return []State{StatePending, StateSucceeded, StateFailed, StateIndeterminate,
		StateRequiresAction, StateProcessing, StateAuthorized}
}

// Valid reports whether s is a state a record can be stored in.
func (s State) Valid() bool { return s >= StatePending && s <= StateAuthorized }

func (s State) String() string {
	switch s {
	case StatePending:
		return "PENDING"
	case StateSucceeded:
		return "SUCCEEDED"
	case StateFailed:
		return "FAILED"
	case StateIndeterminate:
		return "INDETERMINATE"
	case StateRequiresAction:
		return "REQUIRES_ACTION"
	case StateProcessing:
		return "PROCESSING"
	case StateAuthorized:
		return "AUTHORIZED"
	}
	return "UNSPECIFIED"
}

// Method names the operation a record belongs to; it is part of the fingerprint.
type Method string

// The methods that move money.
const (
	MethodCharge    Method = "Charge"
	MethodSubscribe Method = "Subscribe"
)

// Record is what billingd stores per (caller, request_id).
type Record struct {
	Caller    string
	RequestID string
	Method    Method
	// Fingerprint is SHA-256 over the method and the canonical request without
	// request_id: same (caller, request_id) with another fingerprint is REQUEST_ID_REUSED.
	Fingerprint []byte
	// StripeKey is the Idempotency-Key sent to Stripe, derived from (caller, request_id, step).
	StripeKey string
	// RequestKey is the hash stored in the Stripe object's metadata[billingd_request_key].
	RequestKey string
	// Params is the canonical encoding of the request without request_id, kept
	// so a record can be re-driven or reconciled without its caller.
	Params []byte

	State    State
	Attempts int
	// Created is when the record was claimed; FirstAttempt when the first
	// request went to Stripe (zero: never sent); Updated when it last changed.
	Created      time.Time
	FirstAttempt time.Time
	Updated      time.Time

	// Result is set once SUCCEEDED.
	Result Result
	// Err is the final error once FAILED, or the latest one while PENDING or
	// INDETERMINATE. Nil otherwise.
	Err *Error
}

// Result is the Stripe object an operation created, as billingd last saw it.
type Result struct {
	ObjectID string // pi_…, sub_… or re_…
	Status   string // Stripe's status of the object
	Amount   int64  // charges only, minor units
	Currency string // charges only
	// PaymentStatus is the status of the PaymentIntent that pays a
	// subscription's first invoice ("" when there is none, e.g. a trial).
	// For a charge it is Status itself and left empty.
	PaymentStatus string
	// ClientSecret is the client_secret of the PaymentIntent that needs the
	// customer (the charge's own, or the first invoice's): the caller's front
	// end passes it to Stripe.js. It is a secret of the owning caller: it is
	// stored and answered to that caller only, never logged or put in errors.
	ClientSecret string
	// NextActionType is Stripe's next_action.type (use_stripe_sdk,
	// redirect_to_url, …) and RedirectURL its redirect_to_url.url, when the
	// PaymentIntent waits for the customer.
	NextActionType string
	RedirectURL    string
	// Failure is set by a lookup (Payments.Find*, Get*) when the object
	// records a failed payment, e.g. a declined PaymentIntent: the operation
	// then failed although the object exists. Never stored.
	Failure *UpstreamError
	// CancellationReason is a canceled PaymentIntent's cancellation_reason.
	CancellationReason string
	// CancelAtPeriodEnd is a subscription's cancel_at_period_end.
	CancelAtPeriodEnd bool
	// ParentID is the object a refund refunds (its PaymentIntent).
	ParentID string
	// Owner is the billingd_caller metadata of a retrieved object: the
	// caller billingd created it for, "" for an object made outside
	// billingd. Never stored.
	Owner string
	// StripeRequestID is Stripe's Request-Id of the call that returned this
	// result, and Attempts the record's attempts so far: answer metadata for
	// logs, never stored.
	StripeRequestID string
	Attempts        int
	// StripeTime is how long this drive's Stripe calls took on the wire
	// (from sending each attempt to its answer's headers, retries
	// included; not the waits for a slot or a pacing token): what a log
	// line needs to tell Stripe's latency from billingd's. Never stored.
	StripeTime time.Duration
	// State is the record's state after the drive that returned this
	// result: SUCCEEDED, or one of the followed states. Never stored (the
	// record has its own).
	State State
}

// Records is the durable record store billingd needs. Every write is durable
// (fsync'd) before it returns.
//
// Leases. A record is driven (sent to Stripe, its outcome written) by one
// process at a time. With one process per database (bbolt) the service's
// in-flight map is all the exclusion needed, and such a store grants every
// lease without I/O. With several replicas on one database (Postgres) each
// open record also carries a lease: the store handle that holds it (one per
// process) and an expiry the store keeps renewing while that handle lives. A
// lease is taken by Claim (with a new open record) or by Acquire, and given up
// by a Put of a final state or by Release. Put writes only under the writer's
// lease, so a replica that lost its lease (it stalled past the expiry and
// another took over) can never overwrite what the new holder wrote.
type Records interface {
	// Claim stores rec if no record exists for (rec.Caller, rec.RequestID) and
	// returns it with created=true, holding its lease if it is open; otherwise
	// it returns the stored record unchanged with created=false. If there is
	// no record but a tombstone (the record was swept), it writes nothing and
	// fails with an *ExpiredError holding the tombstone. Check and write are
	// one transaction, so a sweep running at the same time cannot slip
	// between them: a claim sees the record or its tombstone.
	Claim(ctx context.Context, rec Record) (stored Record, created bool, err error)
	// Get returns the record for (caller, requestID); found=false if none.
	Get(ctx context.Context, caller, requestID string) (rec Record, found bool, err error)
	// GetTombstone returns the tombstone the sweep left of (caller,
	// requestID)'s record; found=false if none.
	GetTombstone(ctx context.Context, caller, requestID string) (t Tombstone, found bool, err error)
	// Put replaces the stored record with rec, or creates it (without a lease)
	// if there is none. Over an existing record it needs the record's lease
	// and fails with ErrLeaseLost without it. A final state gives the lease up.
	Put(ctx context.Context, rec Record) error
	// Acquire takes the lease of rec's record if the record is open and its
	// lease is free, expired or already held by this store handle, and returns
	// the record as stored with leased=true. Otherwise it returns the stored
	// record (final, or open under another replica's live lease) with
	// leased=false, or a zero Record if there is none. A store whose leases
	// are all granted may return rec as given: the caller passes the record as
	// it last read it.
	Acquire(ctx context.Context, rec Record) (stored Record, leased bool, err error)
	// Release gives up this handle's lease of the record, if it holds it: a
	// drive that leaves its record open lets another replica take it at once
	// instead of after the expiry.
	Release(ctx context.Context, caller, requestID string) error
}

// ErrLeaseLost is returned (wrapped) by Records.Put when the writer does not
// hold the record's lease: another replica took the record over.
var ErrLeaseLost = errors.New("service: record lease lost to another replica")

// Store is everything billingd keeps durably, as one interface both record
// stores (storage, bbolt; storage/postgres) implement: the records and their
// leases, and what the reconciler, the sweeper and the webhook handler need.
type Store interface {
	Records
	OpenRecords
	SweepStore
	EventStore
}
