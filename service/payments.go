package service

import (
	"context"
	"time"
)

// ChargeParams is a card payment as sent to Stripe: create and confirm a
// PaymentIntent.
type ChargeParams struct {
	Amount          int64
	Currency        string
	CustomerID      string // optional
	PaymentMethodID string
	Description     string
	Metadata        map[string]string // caller's metadata plus billingd_request_key and billingd_caller
	// OffSession sends off_session=true: the customer is not present, so
	// Stripe declines (authentication_required) rather than asking for action.
	OffSession bool
	// CaptureMethod is Stripe's capture_method: "" (Stripe's default,
	// automatic) or "manual" (authorise now, capture later).
	CaptureMethod string
}

// SubscribeParams is a subscription as sent to Stripe.
//
// The subscription is created with payment_behavior=default_incomplete and
// latest_invoice.payment_intent expanded: its first invoice's PaymentIntent
// fills Result.PaymentStatus, ClientSecret and NextAction*.
type SubscribeParams struct {
	CustomerID string
	PriceID    string
	Quantity   int64
	Metadata   map[string]string // caller's metadata plus billingd_request_key and billingd_caller
}

// Payments is what billingd needs from Stripe. Create calls send key as the
// Idempotency-Key, so repeating one with the same key and params returns the
// original object. Failures are *UpstreamError (or context errors).
type Payments interface {
	CreatePaymentIntent(ctx context.Context, key string, p ChargeParams) (Result, error)
	CreateSubscription(ctx context.Context, key string, p SubscribeParams) (Result, error)
	// FindPaymentIntent and FindSubscription look up the object tagged
	// metadata[billingd_request_key] = requestKey (Stripe search: eventually
	// consistent). found=false when none is visible. A PaymentIntent whose
	// payment failed comes back with Result.Failure (kind UpstreamDeclined).
	FindPaymentIntent(ctx context.Context, requestKey string) (r Result, found bool, err error)
	FindSubscription(ctx context.Context, requestKey string) (r Result, found bool, err error)
	// GetPaymentIntent and GetSubscription retrieve an object by id: how a
	// record whose object waits for the customer or the bank is followed.
	// They fill Result as the Find methods do.
	GetPaymentIntent(ctx context.Context, id string) (Result, error)
	GetSubscription(ctx context.Context, id string) (Result, error)

	// CreateRefund refunds a PaymentIntent (POST /v1/refunds).
	CreateRefund(ctx context.Context, key string, p RefundParams) (Result, error)
	// GetRefund retrieves a refund by id, to follow a pending one.
	GetRefund(ctx context.Context, id string) (Result, error)
	// FindRefund lists the PaymentIntent's refunds (consistent, unlike
	// search) for the one whose metadata billingd_request_key is requestKey.
	FindRefund(ctx context.Context, paymentIntentID, requestKey string) (r Result, found bool, err error)
	// CapturePaymentIntent captures amount (0: all) of an authorised
	// PaymentIntent; CancelPaymentIntent cancels one with Stripe's
	// cancellation_reason ("" for none). Both answer the PaymentIntent.
	CapturePaymentIntent(ctx context.Context, key, id string, amount int64) (Result, error)
	CancelPaymentIntent(ctx context.Context, key, id, reason string) (Result, error)
	// CancelSubscription cancels a subscription now (DELETE) or at the end
	// of its period (cancel_at_period_end), and answers the subscription.
	CancelSubscription(ctx context.Context, key, id string, atPeriodEnd bool) (Result, error)
}

// Gate is implemented by a Payments that limits its calls in flight. Admit
// waits for room for one call, or answers at once *UpstreamError
// (UpstreamRateLimited, nothing sent, RetryAfter the expected wait) when
// that wait would outlast ctx's deadline. The returned context carries the
// room: the first call made with it (or a context derived from it) uses it
// instead of waiting again, and release gives it back if no call did.
// Release is safe to call more than once, and after the room was used.
// TryAdmit is Admit without the wait: ok=false, nothing taken, when there is
// no room now.
type Gate interface {
	Admit(ctx context.Context) (withRoom context.Context, release func(), err error)
	TryAdmit(ctx context.Context) (withRoom context.Context, release func(), ok bool)
}

// UpstreamKind classifies a failed Stripe call by what billingd must do next.
type UpstreamKind int

// The kinds, per docs/design.md, "Errors".
const (
	// UpstreamUnavailable: network error, timeout, 503 or Stripe-Should-Retry
	// after our retries: nothing definitive, the record stays PENDING.
	UpstreamUnavailable UpstreamKind = iota + 1
	// UpstreamRateLimited: 429 after retries, or (HTTPStatus 0) held back
	// by the client's own pacing past the caller's deadline, nothing sent;
	// PENDING.
	UpstreamRateLimited
	// UpstreamInUse: 409 idempotency_key_in_use after retries; PENDING.
	UpstreamInUse
	// UpstreamServerError: POST answered 500/502/504; Stripe cached it under the
	// key, the outcome is unknown: INDETERMINATE.
	UpstreamServerError
	// UpstreamDeclined: 402 card_error; FAILED.
	UpstreamDeclined
	// UpstreamInvalidRequest: 400 invalid_request_error after execution; FAILED.
	UpstreamInvalidRequest
	// UpstreamObjectState: 400 with an object-state code; FAILED.
	UpstreamObjectState
	// UpstreamMissing: resource_missing (400 or 404); FAILED.
	UpstreamMissing
	// UpstreamAuth: 401/403, billingd's Stripe key is wrong; PENDING.
	UpstreamAuth
	// UpstreamIdempotencyMismatch: Stripe's idempotency_error; a billingd bug.
	UpstreamIdempotencyMismatch
)

// UpstreamError is a failed Stripe call, reduced to caller-safe facts: never
// the API key, never a client_secret.
type UpstreamError struct {
	Kind        UpstreamKind
	HTTPStatus  int    // 0 for network errors
	Type        string // Stripe error type, e.g. card_error
	Code        string // Stripe error code, e.g. card_declined
	DeclineCode string
	Param       string
	Message     string // Stripe's human message (safe: it never holds secrets)
	RequestID   string // Stripe's Request-Id
	ObjectID    string // the object Stripe created despite the error (e.g. a declined PaymentIntent)
	RetryAfter  time.Duration
}

func (e *UpstreamError) Error() string {
	msg := "stripe: " + e.Type
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}
