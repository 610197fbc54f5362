package service

import (
	"errors"
	"slices"
	"time"
)

// Reason is the UPPER_SNAKE reason in google.rpc.ErrorInfo; it decides the gRPC
// code (docs/design.md, "Errors"). The strings are part of the API: never change one.
type Reason string

// The reasons billingd answers with.
const (
	ReasonInvalidArgument      Reason = "INVALID_ARGUMENT"
	ReasonRequestIDReused      Reason = "REQUEST_ID_REUSED"
	ReasonCardDeclined         Reason = "CARD_DECLINED"
	ReasonStripeInvalidRequest Reason = "STRIPE_INVALID_REQUEST"
	ReasonStripeState          Reason = "STRIPE_STATE"
	ReasonResourceMissing      Reason = "RESOURCE_MISSING"
	ReasonStripeAuth           Reason = "STRIPE_AUTH"
	ReasonIdempotencyMismatch  Reason = "STRIPE_IDEMPOTENCY_MISMATCH"
	ReasonRequestInProgress    Reason = "REQUEST_IN_PROGRESS"
	ReasonUpstreamRateLimited  Reason = "UPSTREAM_RATE_LIMITED"
	ReasonUpstreamUnavailable  Reason = "UPSTREAM_UNAVAILABLE"
	ReasonOutcomePending       Reason = "OUTCOME_PENDING_RECONCILIATION"
	ReasonStorageUnavailable   Reason = "STORAGE_UNAVAILABLE"
	ReasonNotCreated           Reason = "NOT_CREATED"
	ReasonNotFound             Reason = "NOT_FOUND"
	// A payment that needs, or failed, the customer's authentication, and
	// objects that ended without being paid (FAILED_PRECONDITION).
	ReasonAuthenticationRequired Reason = "AUTHENTICATION_REQUIRED"
	ReasonAuthenticationFailed   Reason = "AUTHENTICATION_FAILED"
	ReasonCanceled               Reason = "CANCELED"
	ReasonSubscriptionExpired    Reason = "SUBSCRIPTION_INCOMPLETE_EXPIRED"
	ReasonRefundFailed           Reason = "REFUND_FAILED"
)

// Error is an outcome billingd reports to a caller. It holds only caller-safe
// text: no Stripe key, no client_secret, no stripe-go error dump. It is stored
// with FAILED records and replayed as is, so a replay is identical to the
// original answer. The edge (interceptors.ErrorStatus) turns it into a gRPC
// status through the methods below.
type Error struct {
	Reason     Reason
	Message    string
	Metadata   map[string]string // ErrorInfo metadata: stripe_request_id, code, decline_code, param
	Violations []FieldViolation  // BadRequest
	// ResourceType and ResourceName fill ResourceInfo (RESOURCE_MISSING).
	ResourceType string
	ResourceName string
	// RetryAfter fills RetryInfo when positive.
	RetryAfter time.Duration
}

// FieldViolation is one bad field of a request.
type FieldViolation struct {
	Field       string
	Description string
}

func (e *Error) Error() string { return "service: " + string(e.Reason) + ": " + e.Message }

// ErrorReason, ErrorCode, PublicMessage, ErrorMetadata, RetryDelay,
// FieldViolations and Resource let interceptors translate an Error without importing this package.

// ErrorReason returns the ErrorInfo reason.
func (e *Error) ErrorReason() string { return string(e.Reason) }

// PublicMessage returns the caller-safe message.
func (e *Error) PublicMessage() string { return e.Message }

// ErrorMetadata returns the ErrorInfo metadata.
func (e *Error) ErrorMetadata() map[string]string { return e.Metadata }

// RetryDelay returns how long a caller should wait before retrying (0: no RetryInfo).
func (e *Error) RetryDelay() time.Duration { return e.RetryAfter }

// FieldViolations returns the BadRequest violations as (field, description) pairs.
func (e *Error) FieldViolations() [][2]string {
	if len(e.Violations) == 0 {
		return nil
	}
	out := make([][2]string, len(e.Violations))
	for i, v := range e.Violations {
		out[i] = [2]string{v.Field, v.Description}
	}
	return out
}

// Resource returns the ResourceInfo type and name ("" when none).
func (e *Error) Resource() (typ, name string) { return e.ResourceType, e.ResourceName }

// Class is the gRPC code a reason is answered with, by its canonical name
// (the service imports no gRPC; interceptors.StatusOf reads the name).
type Class string

// The classes billingd answers with.
const (
	ClassInvalidArgument    Class = "INVALID_ARGUMENT"
	ClassFailedPrecondition Class = "FAILED_PRECONDITION"
	ClassNotFound           Class = "NOT_FOUND"
	ClassUnavailable        Class = "UNAVAILABLE"
	ClassResourceExhausted  Class = "RESOURCE_EXHAUSTED"
	ClassInternal           Class = "INTERNAL"
)

// classes is the one table of reasons and their classes: a reason missing
// here is INTERNAL, and TestEveryReasonHasItsClass keeps it complete.
var classes = map[Reason]Class{
	ReasonInvalidArgument:        ClassInvalidArgument,
	ReasonStripeInvalidRequest:   ClassInvalidArgument,
	ReasonRequestIDReused:        ClassFailedPrecondition,
	ReasonCardDeclined:           ClassFailedPrecondition,
	ReasonStripeState:            ClassFailedPrecondition,
	ReasonNotCreated:             ClassFailedPrecondition,
	ReasonAuthenticationRequired: ClassFailedPrecondition,
	ReasonAuthenticationFailed:   ClassFailedPrecondition,
	ReasonCanceled:               ClassFailedPrecondition,
	ReasonSubscriptionExpired:    ClassFailedPrecondition,
	ReasonRefundFailed:           ClassFailedPrecondition,
	ReasonRequestIDExpired:       ClassFailedPrecondition,
	ReasonResourceMissing:        ClassNotFound,
	ReasonNotFound:               ClassNotFound,
	ReasonRequestInProgress:      ClassUnavailable,
	ReasonUpstreamRateLimited:    ClassUnavailable,
	ReasonUpstreamUnavailable:    ClassUnavailable,
	ReasonOutcomePending:         ClassUnavailable,
	ReasonStorageUnavailable:     ClassUnavailable,
	ReasonShuttingDown:           ClassUnavailable,
	ReasonTooManyWatches:         ClassResourceExhausted,
	ReasonStripeAuth:             ClassInternal, // billingd's Stripe key is wrong: page its owners
	ReasonIdempotencyMismatch:    ClassInternal, // a billingd bug
}

// Class returns the gRPC code the reason is answered with.
func (r Reason) Class() Class {
	if c, ok := classes[r]; ok {
		return c
	}
	return ClassInternal
}

// Reasons lists every reason billingd answers with, sorted.
func Reasons() []Reason {
	out := make([]Reason, 0, len(classes))
	for r := range classes {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// ErrorCode returns the name of the gRPC code e is answered with.
func (e *Error) ErrorCode() string { return string(e.Reason.Class()) }

// final reports whether an error with this reason settles its record FAILED:
// every later identical request is answered with it, as a replay.
// REQUEST_ID_EXPIRED has no record left to settle; its tombstone answers
// every repeat the same way.
func (r Reason) final() bool {
	switch r {
	case ReasonCardDeclined, ReasonStripeInvalidRequest, ReasonStripeState, ReasonResourceMissing, ReasonNotCreated,
		ReasonAuthenticationFailed, ReasonCanceled, ReasonSubscriptionExpired, ReasonRefundFailed,
		ReasonRequestIDExpired:
		return true
	}
	return false
}

// answered reports whether an error with this reason is the record's
// answer, given to every later identical request as a replay: a final
// failure, or AUTHENTICATION_REQUIRED, the answer of a REQUIRES_ACTION
// record whose off-session charge waits for the customer.
func (r Reason) answered() bool { return r.final() || r == ReasonAuthenticationRequired }

// ReasonOf returns the Reason of err's *Error, or "" if it has none.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
