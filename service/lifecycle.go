package service

import (
	"context"
	"errors"
	"time"
)

// The rest of a payment's life: refunds, capture and cancellation of an
// authorised PaymentIntent, and cancellation of a subscription. Each is an
// operation of its own, with its own request_id and record, driven by the
// same machinery as Charge: claim before the Stripe call, fingerprint,
// deterministic Stripe key, coalescing, crash recovery, replay. They act on
// an object billingd created for the same caller: anything else is
// NOT_FOUND, which never says whether the object exists.

// The methods that act on an existing object.
const (
	MethodRefund             Method = "Refund"
	MethodCapture            Method = "CapturePayment"
	MethodCancelPayment      Method = "CancelPayment"
	MethodCancelSubscription Method = "CancelSubscription"
)

// RefundRequest is one Refund call. Amount 0 refunds whatever is left.
type RefundRequest struct {
	RequestID       string
	PaymentIntentID string
	Amount          int64
	Reason          string
	Metadata        map[string]string
}

// CaptureRequest is one CapturePayment call. Amount 0 captures it all.
type CaptureRequest struct {
	RequestID       string
	PaymentIntentID string
	Amount          int64
}

// CancelPaymentRequest is one CancelPayment call.
type CancelPaymentRequest struct {
	RequestID       string
	PaymentIntentID string
	Reason          string
}

// CancelSubscriptionRequest is one CancelSubscription call.
type CancelSubscriptionRequest struct {
	RequestID      string
	SubscriptionID string
	AtPeriodEnd    bool
}

func (r *RefundRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodRefund))
	e.str(r.PaymentIntentID)
	e.int(r.Amount)
	e.str(r.Reason)
	e.meta(r.Metadata)
	return e
}

func (r *CaptureRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodCapture))
	e.str(r.PaymentIntentID)
	e.int(r.Amount)
	return e
}

func (r *CancelPaymentRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodCancelPayment))
	e.str(r.PaymentIntentID)
	e.str(r.Reason)
	return e
}

func (r *CancelSubscriptionRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodCancelSubscription))
	e.str(r.SubscriptionID)
	at := int64(0)
	if r.AtPeriodEnd {
		at = 1
	}
	e.int(at)
	return e
}

// decodeLifecycle decodes the parameters of the methods above; ok=false
// for another method.
func decodeLifecycle(m Method, d *decoder) (out any, ok bool) {
	switch m {
	case MethodRefund:
		return &RefundRequest{PaymentIntentID: d.str(), Amount: d.int(), Reason: d.str(), Metadata: d.meta()}, true
	case MethodCapture:
		return &CaptureRequest{PaymentIntentID: d.str(), Amount: d.int()}, true
	case MethodCancelPayment:
		return &CancelPaymentRequest{PaymentIntentID: d.str(), Reason: d.str()}, true
	case MethodCancelSubscription:
		r := &CancelSubscriptionRequest{SubscriptionID: d.str()}
		switch d.int() {
		case 0:
		case 1:
			r.AtPeriodEnd = true
		default:
			d.err = errBadParams
		}
		return r, true
	}
	return nil, false
}

// Refund refunds a PaymentIntent, once per (caller, request_id).
func (s *Service) Refund(ctx context.Context, caller string, req RefundRequest) (Outcome, error) {
	if err := checkRequest(req.RequestID, req.Metadata); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodRefund, req.encode())
}

// CapturePayment captures an authorised PaymentIntent, once per (caller, request_id).
func (s *Service) CapturePayment(ctx context.Context, caller string, req CaptureRequest) (Outcome, error) {
	if err := checkRequest(req.RequestID, nil); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodCapture, req.encode())
}

// CancelPayment cancels an unpaid PaymentIntent, once per (caller, request_id).
func (s *Service) CancelPayment(ctx context.Context, caller string, req CancelPaymentRequest) (Outcome, error) {
	if err := checkRequest(req.RequestID, nil); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodCancelPayment, req.encode())
}

// CancelSubscription cancels a subscription, once per (caller, request_id).
func (s *Service) CancelSubscription(ctx context.Context, caller string, req CancelSubscriptionRequest) (Outcome, error) {
	if err := checkRequest(req.RequestID, nil); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodCancelSubscription, req.encode())
}

// RefundParams is a refund as sent to Stripe.
type RefundParams struct {
	PaymentIntentID string
	Amount          int64 // 0: what is left
	Reason          string
	Metadata        map[string]string // caller's metadata plus billingd_request_key and billingd_caller
}

// notFound is the answer for an object the caller may not act on: one
// another caller created, one billingd did not create, or one that does not
// exist. It never says which.
func notFound(typ, id string) *Error {
	return &Error{Reason: ReasonResourceMissing, Message: "no such " + typ + " for this caller",
		ResourceType: "stripe.com/" + typ, ResourceName: id}
}

// target is the object an operation acts on, from its stored parameters.
func target(p any) (typ, id string) {
	switch p := p.(type) {
	case *RefundRequest:
		return "PaymentIntent", p.PaymentIntentID
	case *CaptureRequest:
		return "PaymentIntent", p.PaymentIntentID
	case *CancelPaymentRequest:
		return "PaymentIntent", p.PaymentIntentID
	case *CancelSubscriptionRequest:
		return "Subscription", p.SubscriptionID
	}
	return "", ""
}

// checkOwner makes sure the object p acts on was created by billingd for
// rec's caller, from the object's own billingd metadata (which outlives
// billingd's records of it). With Config.AllowForeignObjects, objects that
// carry no billingd metadata (made outside billingd) are allowed too;
// another caller's never are. A lookup it cannot make is an error that
// leaves the record open, like any Stripe failure.
func (s *Service) checkOwner(ctx context.Context, rec Record, p any) (*Error, error) {
	typ, id := target(p)
	var (
		obj Result
		err error
	)
	if typ == "Subscription" {
		obj, err = s.payments.GetSubscription(ctx, id)
	} else {
		obj, err = s.payments.GetPaymentIntent(ctx, id)
	}
	var up *UpstreamError
	switch {
	case errors.As(err, &up) && up.Kind == UpstreamMissing:
		return notFound(typ, id), nil
	case err != nil:
		return nil, err
	case obj.Owner == rec.Caller:
		return nil, nil
	case obj.Owner == "" && s.cfg.AllowForeignObjects:
		return nil, nil
	}
	return notFound(typ, id), nil
}

// act makes the Stripe call of an operation on an existing object.
func (s *Service) act(ctx context.Context, rec Record, p any) (Result, error) {
	switch p := p.(type) {
	case *RefundRequest:
		return s.payments.CreateRefund(ctx, rec.StripeKey, RefundParams{
			PaymentIntentID: p.PaymentIntentID, Amount: p.Amount, Reason: p.Reason,
			Metadata: stripeMetadata(rec.Caller, rec.RequestKey, p.Metadata)})
	case *CaptureRequest:
		return s.payments.CapturePaymentIntent(ctx, rec.StripeKey, p.PaymentIntentID, p.Amount)
	case *CancelPaymentRequest:
		return s.payments.CancelPaymentIntent(ctx, rec.StripeKey, p.PaymentIntentID, p.Reason)
	case *CancelSubscriptionRequest:
		res, err := s.payments.CancelSubscription(ctx, rec.StripeKey, p.SubscriptionID, p.AtPeriodEnd)
		var up *UpstreamError
		if !p.AtPeriodEnd && errors.As(err, &up) && (up.Kind == UpstreamObjectState || up.Kind == UpstreamInvalidRequest) {
			// Stripe keeps no idempotency for a DELETE: a second one,
			// after an answer that was lost, finds the subscription
			// canceled already. That is this operation's own outcome.
			if got, gerr := s.payments.GetSubscription(ctx, p.SubscriptionID); gerr == nil && got.Status == SubscriptionCanceled {
				return got, nil
			}
		}
		return res, err
	}
	return Result{}, errBadParams
}

// findActed looks at Stripe for the outcome of an operation on an existing
// object whose answer was lost (INDETERMINATE, or past the key window). A
// refund is found in the PaymentIntent's refunds by its billingd metadata;
// the others are read off the object they act on.
func (s *Service) findActed(ctx context.Context, rec Record, p any) (Result, bool, error) {
	switch p := p.(type) {
	case *RefundRequest:
		return s.payments.FindRefund(ctx, p.PaymentIntentID, rec.RequestKey)
	case *CaptureRequest:
		pi, err := s.payments.GetPaymentIntent(ctx, p.PaymentIntentID)
		if err != nil {
			return Result{}, false, err
		}
		return pi, pi.Status != PaymentRequiresCapture, nil
	case *CancelPaymentRequest:
		pi, err := s.payments.GetPaymentIntent(ctx, p.PaymentIntentID)
		if err != nil {
			return Result{}, false, err
		}
		return pi, pi.Status == PaymentCanceled, nil
	case *CancelSubscriptionRequest:
		sub, err := s.payments.GetSubscription(ctx, p.SubscriptionID)
		if err != nil {
			return Result{}, false, err
		}
		return sub, sub.Status == SubscriptionCanceled || (p.AtPeriodEnd && sub.CancelAtPeriodEnd), nil
	}
	return Result{}, false, errBadParams
}

// retrieveLag is lookupLag for operations whose outcome is read off an
// object (retrieve and list are consistent at once, unlike search): a
// moment for a request Stripe was still executing when it answered 5xx.
const retrieveLag = time.Minute

// lookupLag is how long after the last send "nothing found" may still mean
// "not visible yet" rather than "never happened".
func (s *Service) lookupLag(m Method) time.Duration {
	switch m {
	case MethodCharge, MethodSubscribe:
		return s.cfg.SearchLag
	}
	return min(s.cfg.SearchLag, retrieveLag)
}
