package service

// The status table: what a Stripe object's status means for the record of the
// request that created it. It is the one place billingd interprets Stripe's
// statuses; the create answer, a search, a retrieve and a webhook all go
// through it (docs/design.md, "Stripe statuses"). Nothing is SUCCEEDED before
// the money moved (or, for a subscription, before it started).

// Stripe's PaymentIntent statuses.
const (
	PaymentSucceeded             = "succeeded"
	PaymentRequiresAction        = "requires_action"
	PaymentRequiresConfirmation  = "requires_confirmation"
	PaymentProcessing            = "processing"
	PaymentRequiresCapture       = "requires_capture"
	PaymentRequiresPaymentMethod = "requires_payment_method"
	PaymentCanceled              = "canceled"
)

// Stripe's Subscription statuses.
const (
	SubscriptionActive            = "active"
	SubscriptionTrialing          = "trialing"
	SubscriptionIncomplete        = "incomplete"
	SubscriptionIncompleteExpired = "incomplete_expired"
	SubscriptionPastDue           = "past_due"
	SubscriptionCanceled          = "canceled"
	SubscriptionUnpaid            = "unpaid"
	SubscriptionPaused            = "paused"
)

// Stripe codes with a meaning of their own.
const (
	codeAuthenticationRequired = "authentication_required"
	codeAuthenticationFailure  = "payment_intent_authentication_failure"
)

// outcome is what the status table says of an object: the record's next
// state and, where the caller is answered with an error, that error.
type outcome struct {
	state State
	err   *Error
}

// outcomeOf maps the object a request created, as last seen (res), to the
// record's state. method says which table applies.
func (s *Service) outcomeOf(method Method, res Result) outcome {
	switch method {
	case MethodSubscribe:
		return s.subscriptionOutcome(res)
	case MethodRefund:
		return refundOutcome(res)
	case MethodCapture:
		return captureOutcome(res)
	case MethodCancelPayment:
		if res.Status == PaymentCanceled {
			return outcome{state: StateSucceeded}
		}
		return outcome{state: StateFailed, err: stateError(res.ObjectID, "the PaymentIntent was not canceled: it is "+res.Status)}
	case MethodCancelSubscription:
		if res.Status == SubscriptionCanceled || res.CancelAtPeriodEnd {
			return outcome{state: StateSucceeded}
		}
		return outcome{state: StateFailed, err: stateError(res.ObjectID, "the subscription was not canceled: it is "+res.Status)}
	}
	return s.paymentOutcome(res.Status, res)
}

// Stripe's Refund statuses.
const (
	RefundSucceeded      = "succeeded"
	RefundPending        = "pending"
	RefundRequiresAction = "requires_action"
	RefundFailed         = "failed"
	RefundCanceled       = "canceled"
)

// refundOutcome is the Refund table.
//
//	succeeded        SUCCEEDED
//	pending          PROCESSING (followed: refund.updated, or the reconciler's retrieve)
//	requires_action  REQUIRES_ACTION (followed)
//	failed           FAILED: REFUND_FAILED, Stripe's failure_reason in the metadata
//	canceled         FAILED: CANCELED
//	anything else    PROCESSING (followed)
func refundOutcome(res Result) outcome {
	switch res.Status {
	case RefundSucceeded:
		return outcome{state: StateSucceeded}
	case RefundPending:
		return outcome{state: StateProcessing}
	case RefundRequiresAction:
		return outcome{state: StateRequiresAction}
	case RefundFailed:
		md := map[string]string{"stripe_object_id": res.ObjectID}
		if res.Failure != nil && res.Failure.Code != "" {
			md["failure_reason"] = res.Failure.Code
		}
		return outcome{state: StateFailed, err: &Error{Reason: ReasonRefundFailed, Metadata: md,
			Message: "the refund failed at the bank; the money stays with the merchant"}}
	case RefundCanceled:
		return outcome{state: StateFailed, err: canceledError(res.ObjectID, "", "the refund was canceled")}
	}
	return outcome{state: StateProcessing}
}

// captureOutcome is the table for a capture's PaymentIntent.
//
//	succeeded          SUCCEEDED (captured)
//	canceled           FAILED: CANCELED (the authorisation was canceled or expired)
//	anything else      PROCESSING (followed until Stripe settles it)
func captureOutcome(res Result) outcome {
	switch res.Status {
	case PaymentSucceeded:
		return outcome{state: StateSucceeded}
	case PaymentCanceled:
		return outcome{state: StateFailed, err: canceledError(res.ObjectID, res.CancellationReason, "the authorisation was canceled before it was captured")}
	}
	return outcome{state: StateProcessing}
}

func stateError(objectID, msg string) *Error {
	return &Error{Reason: ReasonStripeState, Message: msg, Metadata: map[string]string{"stripe_object_id": objectID}}
}

// paymentOutcome is the PaymentIntent table. status is the PaymentIntent's
// (for a subscription, its first invoice's).
//
//	succeeded                         SUCCEEDED
//	requires_action                   REQUIRES_ACTION (3-D Secure)
//	requires_confirmation             REQUIRES_ACTION (to be confirmed with the client_secret)
//	processing                        PROCESSING
//	requires_capture                  AUTHORIZED
//	requires_payment_method, an error FAILED: AUTHENTICATION_FAILED, CARD_DECLINED; but
//	                                  authentication_required is REQUIRES_ACTION, answered
//	                                  AUTHENTICATION_REQUIRED (an off-session charge the
//	                                  customer can still authenticate on session)
//	requires_payment_method, no error REQUIRES_ACTION (a payment method is needed)
//	canceled                          FAILED: CANCELED
//	anything else                     PROCESSING (not paid as far as billingd knows; followed)
func (s *Service) paymentOutcome(status string, res Result) outcome {
	switch status {
	case PaymentSucceeded:
		return outcome{state: StateSucceeded}
	case PaymentRequiresAction, PaymentRequiresConfirmation:
		return outcome{state: StateRequiresAction}
	case PaymentProcessing:
		return outcome{state: StateProcessing}
	case PaymentRequiresCapture:
		return outcome{state: StateAuthorized}
	case PaymentRequiresPaymentMethod:
		if res.Failure == nil {
			return outcome{state: StateRequiresAction}
		}
		f := *res.Failure
		if f.ObjectID == "" {
			f.ObjectID = res.ObjectID
		}
		e := s.declined(&f)
		if e.Reason == ReasonAuthenticationRequired {
			return outcome{state: StateRequiresAction, err: e}
		}
		return outcome{state: StateFailed, err: e}
	case PaymentCanceled:
		return outcome{state: StateFailed, err: canceledError(res.ObjectID, res.CancellationReason, "the PaymentIntent was canceled at Stripe")}
	}
	return outcome{state: StateProcessing}
}

// subscriptionOutcome is the Subscription table.
//
//	active, trialing                  SUCCEEDED (the subscription started)
//	past_due, unpaid, paused          SUCCEEDED (states reached only after it started)
//	incomplete                        REQUIRES_ACTION: the first invoice waits for the
//	                                  customer (a payment method, 3-D Secure); PROCESSING
//	                                  while its payment is processing
//	incomplete_expired                FAILED: SUBSCRIPTION_INCOMPLETE_EXPIRED
//	canceled                          FAILED: CANCELED (canceled before it started; a
//	                                  SUCCEEDED record is final and stays so)
//	anything else                     PROCESSING (followed)
func (s *Service) subscriptionOutcome(res Result) outcome {
	switch res.Status {
	case SubscriptionActive, SubscriptionTrialing, SubscriptionPastDue, SubscriptionUnpaid, SubscriptionPaused:
		return outcome{state: StateSucceeded}
	case SubscriptionIncomplete:
		if res.PaymentStatus == PaymentProcessing {
			return outcome{state: StateProcessing}
		}
		return outcome{state: StateRequiresAction}
	case SubscriptionIncompleteExpired:
		md := map[string]string{"stripe_object_id": res.ObjectID}
		return outcome{state: StateFailed, err: &Error{Reason: ReasonSubscriptionExpired, Metadata: md,
			Message: "the subscription's first invoice was not paid within 23 hours; it will not start"}}
	case SubscriptionCanceled:
		return outcome{state: StateFailed, err: canceledError(res.ObjectID, "", "the subscription was canceled before it started")}
	}
	return outcome{state: StateProcessing}
}

// declined is the answer to a failed payment attempt (a 402 card_error, or
// a PaymentIntent's last_payment_error).
func (s *Service) declined(up *UpstreamError) *Error {
	md := upstreamMetadata(up)
	switch {
	case up.Code == codeAuthenticationFailure:
		return &Error{Reason: ReasonAuthenticationFailed, Metadata: md,
			Message: "the customer did not complete authentication (3-D Secure); no money moved"}
	case up.Code == codeAuthenticationRequired || up.DeclineCode == codeAuthenticationRequired:
		return &Error{Reason: ReasonAuthenticationRequired, Metadata: md,
			Message: "the bank requires the customer to authenticate this payment; bring the customer back on session to confirm the PaymentIntent"}
	}
	return &Error{Reason: ReasonCardDeclined, Message: safeMessage(up, "the card was declined"), Metadata: md}
}

func canceledError(objectID, reason, msg string) *Error {
	md := map[string]string{}
	if objectID != "" {
		md["stripe_object_id"] = objectID
	}
	if reason != "" {
		md["cancellation_reason"] = reason
	}
	return &Error{Reason: ReasonCanceled, Message: msg, Metadata: md}
}
