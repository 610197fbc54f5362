package service

import (
	"context"
	"errors"
	"strings"
)

// translate maps a failed Stripe call to the record's next state and the
// caller's answer (docs/design.md, "Errors"). StateUnspecified means "leave the record as
// it is". p is the request sent (for naming a missing resource), or nil.
func (s *Service) translate(err error, p any) (State, *Error) {
	var up *UpstreamError
	if !errors.As(err, &up) {
		// Context expiry of our own budget, or a transport failure that the
		// client did not classify: nothing definitive, so stay PENDING.
		msg := "Stripe could not be reached; retry with the same request_id"
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			msg = "Stripe did not answer in time; retry with the same request_id"
		}
		return StatePending, &Error{Reason: ReasonUpstreamUnavailable, Message: msg, RetryAfter: s.cfg.RetryAfter}
	}
	md := upstreamMetadata(up)
	switch up.Kind {
	case UpstreamDeclined:
		e := s.declined(up)
		if e.Reason == ReasonAuthenticationRequired && up.ObjectID != "" {
			// The PaymentIntent exists and the customer can still
			// authenticate it on session: followed, not final.
			return StateRequiresAction, e
		}
		return StateFailed, e
	case UpstreamInvalidRequest:
		if _, refund := p.(*RefundRequest); refund && (up.Code == codeAmountTooLarge || up.Param == "") {
			// More than is left to refund, or nothing refundable (a
			// payment not completed): the state of the charge, not a
			// malformed request, whose fields billingd checked already.
			return StateFailed, &Error{Reason: ReasonStripeState, Message: safeMessage(up, "the PaymentIntent cannot be refunded this way"), Metadata: md}
		}
		e := &Error{Reason: ReasonStripeInvalidRequest, Message: safeMessage(up, "Stripe rejected the request"), Metadata: md}
		if up.Param != "" {
			e.Violations = []FieldViolation{{Field: fieldOf(up.Param), Description: safeMessage(up, "invalid value")}}
		}
		return StateFailed, e
	case UpstreamObjectState:
		return StateFailed, &Error{Reason: ReasonStripeState, Message: safeMessage(up, "the Stripe object is not in a state that allows this"), Metadata: md}
	case UpstreamMissing:
		typ, name := missingResource(up.Param, p)
		return StateFailed, &Error{Reason: ReasonResourceMissing, Message: safeMessage(up, "a referenced Stripe object does not exist"),
			Metadata: md, ResourceType: typ, ResourceName: name}
	case UpstreamAuth:
		return StatePending, &Error{Reason: ReasonStripeAuth, Message: "billingd's Stripe credentials were rejected; the operators have been alerted", Metadata: md}
	case UpstreamIdempotencyMismatch:
		return StateUnspecified, &Error{Reason: ReasonIdempotencyMismatch, Message: "Stripe reported an idempotency key mismatch (a billingd bug)", Metadata: md}
	case UpstreamInUse:
		return StatePending, &Error{Reason: ReasonRequestInProgress, Message: "Stripe is still processing this request; retry with the same request_id",
			Metadata: md, RetryAfter: s.cfg.RetryAfter}
	case UpstreamRateLimited:
		if up.HTTPStatus == 0 {
			// Held back by billingd's own limits on Stripe calls (slots,
			// pacing): the wait would have outlasted the caller's deadline.
			return StatePending, &Error{Reason: ReasonUpstreamRateLimited,
				Message:    "billingd has as many Stripe requests under way as it allows, or is pacing them to Stripe's rate limit, and could not send this one before the call's deadline; retry with the same request_id",
				RetryAfter: max(s.cfg.RetryAfter, up.RetryAfter)}
		}
		return StatePending, &Error{Reason: ReasonUpstreamRateLimited, Message: "Stripe is rate limiting billingd; retry with the same request_id",
			Metadata: md, RetryAfter: max(s.cfg.RetryAfter, up.RetryAfter)}
	case UpstreamServerError:
		return StateIndeterminate, &Error{Reason: ReasonOutcomePending,
			Message:  "Stripe answered with a server error; the outcome is being reconciled, retry with the same request_id",
			Metadata: md, RetryAfter: 5 * s.cfg.RetryAfter}
	}
	return StatePending, &Error{Reason: ReasonUpstreamUnavailable, Message: "Stripe is unavailable; retry with the same request_id",
		Metadata: md, RetryAfter: s.cfg.RetryAfter}
}

// upstreamMetadata is the ErrorInfo metadata: Stripe's request id and codes,
// never its raw error text.
func upstreamMetadata(up *UpstreamError) map[string]string {
	md := make(map[string]string, 5)
	add := func(k, v string) {
		if v != "" {
			md[k] = v
		}
	}
	add("stripe_request_id", up.RequestID)
	add("code", up.Code)
	add("decline_code", up.DeclineCode)
	add("param", up.Param)
	add("stripe_object_id", up.ObjectID)
	if len(md) == 0 {
		return nil
	}
	return md
}

// safeMessage returns Stripe's human message when it has one. Stripe's msg
// field describes the problem for a developer and holds no secrets; the API
// key is masked by Stripe itself and never reaches here for 401s (see the
// fixed STRIPE_AUTH message).
func safeMessage(up *UpstreamError, fallback string) string {
	if up.Message != "" {
		return up.Message
	}
	return fallback
}

// fieldOf maps a Stripe param name to the billingd request field a caller sent.
func fieldOf(param string) string {
	switch {
	case param == "amount", param == "currency", param == "description", param == "quantity":
		return param
	case param == "payment_method":
		return "payment_method_id"
	case param == "customer":
		return "customer_id"
	case strings.HasPrefix(param, "items[0][price]"):
		return "price_id"
	case strings.HasPrefix(param, "items[0][quantity]"):
		return "quantity"
	case strings.HasPrefix(param, "metadata"):
		return param
	}
	return param
}

const codeAmountTooLarge = "amount_too_large"

// missingResource names the Stripe object that resource_missing refers to.
func missingResource(param string, p any) (typ, name string) {
	if typ, id := target(p); typ != "" {
		// An operation on an existing object: that object is the missing one.
		return "stripe.com/" + typ, id
	}
	switch fieldOf(param) {
	case "payment_method_id":
		typ = "stripe.com/PaymentMethod"
		if c, ok := p.(*ChargeRequest); ok {
			name = c.PaymentMethodID
		}
	case "customer_id":
		typ = "stripe.com/Customer"
		switch c := p.(type) {
		case *ChargeRequest:
			name = c.CustomerID
		case *SubscribeRequest:
			name = c.CustomerID
		}
	case "price_id":
		typ = "stripe.com/Price"
		if c, ok := p.(*SubscribeRequest); ok {
			name = c.PriceID
		}
	default:
		typ = "stripe.com/Object"
		name = param
	}
	return typ, name
}
