package stripesim

import (
	"container/heap"
	"fmt"
	"time"
)

// Stripe's clocks for unfinished payments.
const (
	// AuthorizationValidity is how long a manual-capture authorisation
	// stays capturable; past it the PaymentIntent is canceled with
	// cancellation_reason automatic.
	AuthorizationValidity = 7 * 24 * time.Hour
	// IncompleteWindow is how long a subscription may stay incomplete; past
	// it the subscription is incomplete_expired, its invoice void and the
	// invoice's PaymentIntent canceled.
	IncompleteWindow = 23 * time.Hour
)

type deadlineKind uint8

const (
	deadlineCapture    deadlineKind = iota // a PaymentIntent's authorisation
	deadlineIncomplete                     // a subscription's first payment
	deadlinePeriodEnd                      // a subscription set to cancel at period end
)

// deadline is a time-based transition waiting for the Clock.
type deadline struct {
	at   time.Time
	kind deadlineKind
	id   string
}

// deadlines is a min-heap on at.
type deadlines []deadline

func (d deadlines) Len() int           { return len(d) }
func (d deadlines) Less(i, j int) bool { return d[i].at.Before(d[j].at) }
func (d deadlines) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *deadlines) Push(x any)        { *d = append(*d, x.(deadline)) }
func (d *deadlines) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

func (s *Sim) scheduleLocked(at time.Time, kind deadlineKind, id string) {
	heap.Push(&s.due, deadline{at: at, kind: kind, id: id})
}

// ApplyDueTransitions applies every time-based transition the Clock has
// passed (authorisations expiring, incomplete subscriptions expiring,
// subscriptions set to cancel at period end ending) and
// returns how many it applied. Every request applies them too; tests on a
// ManualClock call this after Advance to see them without a request.
func (s *Sim) ApplyDueTransitions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applyDueLocked(s.clock.Now())
}

// applyDueLocked applies the transitions due at now. A deadline whose
// object has moved on (captured, paid, forgotten) is dropped.
func (s *Sim) applyDueLocked(now time.Time) int {
	n := 0
	for len(s.due) > 0 && !now.Before(s.due[0].at) {
		d := heap.Pop(&s.due).(deadline)
		switch d.kind {
		case deadlineCapture:
			r := s.pis.byID[d.id]
			if r == nil || r.obj.Status != "requires_capture" {
				continue
			}
			st := r.obj
			st.cancel("automatic", now)
			s.changePILocked(r, st, now)
		case deadlineIncomplete:
			r := s.subs.byID[d.id]
			if r == nil || r.obj.Status != "incomplete" {
				continue
			}
			s.expireSubscriptionLocked(r, now)
		case deadlinePeriodEnd:
			r := s.subs.byID[d.id]
			if r == nil || !r.obj.CancelAtPeriodEnd || now.Before(r.obj.CancelAt) || subscriptionEnded(r.obj.Status) {
				continue
			}
			s.endAtPeriodEndLocked(r, now)
		}
		n++
	}
	return n
}

// cancel moves a PaymentIntent to canceled.
func (p *piState) cancel(reason string, now time.Time) {
	p.Status, p.NextAction, p.CancellationReason, p.CanceledAt = "canceled", "", reason, now
	p.AmountCapturable = 0
}

// piStatusEvent is the webhook event that announces a PaymentIntent's
// status, "" for statuses Stripe sends no event of their own for.
func piStatusEvent(p *PaymentIntent) string {
	switch p.Status {
	case "succeeded":
		return "payment_intent.succeeded"
	case "requires_capture":
		return "payment_intent.amount_capturable_updated"
	case "requires_action":
		return "payment_intent.requires_action"
	case "processing":
		return "payment_intent.processing"
	case "canceled":
		return "payment_intent.canceled"
	case "requires_payment_method":
		if p.LastPaymentError != nil {
			return "payment_intent.payment_failed"
		}
	}
	return ""
}

// changePILocked stores a PaymentIntent's new state, announces it, and
// carries it over to the invoice it pays. Unlike creates, a change is
// encoded under the lock: it must be atomic with the state it was decided
// on, and one PaymentIntent encodes in microseconds.
func (s *Sim) changePILocked(r *record[piState], st piState, now time.Time) {
	r.obj = st
	r.json = encodePaymentIntent(&r.obj)
	if ev := piStatusEvent(&r.obj.PaymentIntent); ev != "" {
		s.eventLocked(ev, r.json, now)
	}
	s.settledLocked(&r.obj, now)
	if st.Invoice != "" {
		s.invoicePaymentLocked(st.Invoice, &r.obj, now)
	}
}

// settledLocked does what a PaymentIntent reaching its status implies
// beyond itself: an authorisation starts to age, and a card authenticated
// with setup_future_usage=off_session is set up for the customer.
func (s *Sim) settledLocked(p *piState, now time.Time) {
	switch p.Status {
	case "requires_capture":
		s.scheduleLocked(now.Add(AuthorizationValidity), deadlineCapture, p.ID)
		fallthrough
	case "succeeded":
		if p.enc.sfu == "off_session" && p.Customer != "" && p.PaymentMethod != "" {
			s.setUp[setUpKey(p.Customer, p.PaymentMethod)] = true
		}
	}
}

// authFailure is last_payment_error after a failed 3-D Secure challenge.
func authFailure(pm string) *PaymentError {
	return &PaymentError{Type: typeInvalidRequest, Code: "payment_intent_authentication_failure", PaymentMethod: pm,
		Message: "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again."}
}

func unexpectedState(msg string) *failure {
	return invalidRequest("payment_intent_unexpected_state", "", msg)
}

func (s *Sim) piLocked(id string) (*record[piState], *failure) {
	r := s.pis.byID[id]
	if r == nil {
		return nil, resourceMissing(404, "intent", "payment_intent", id)
	}
	return r, nil
}

// authenticateLocked completes or fails a pending 3-D Secure challenge, as
// Stripe's hosted test page does. On an unconfirmed invoice PaymentIntent,
// succeed confirms it with the subscription's (or customer's) default
// payment method first, as the customer paying the invoice would.
func (s *Sim) authenticateLocked(id string, succeed bool, now time.Time) ([]byte, *failure) {
	r, f := s.piLocked(id)
	if f != nil {
		return nil, f
	}
	st := r.obj
	switch {
	case st.Status == "requires_action" && succeed:
		a, d := st.card.charge()
		st.apply(a, d, randomID(s.ids, "ch_", longID), now)
	case st.Status == "requires_action":
		st.fail(authFailure(st.card.id), now)
	case st.Invoice != "" && succeed && (st.Status == "requires_payment_method" || st.Status == "requires_confirmation"):
		pm := s.invoicePaymentMethodLocked(st.Invoice)
		card, ok := lookupTestCard(pm)
		if !ok {
			return nil, unexpectedState("You cannot confirm this PaymentIntent because it's missing a payment method: neither the subscription nor the customer has a default payment method.")
		}
		st.PaymentMethod, st.card = pm, card
		a, d := card.confirm(false, s.setUp[setUpKey(st.Customer, pm)])
		st.apply(a, d, randomID(s.ids, "ch_", longID), now)
	default:
		return nil, unexpectedState(fmt.Sprintf("This PaymentIntent has a status of %s; only a PaymentIntent with status requires_action can be authenticated (or, for an invoice's PaymentIntent, confirmed with outcome=succeed).", st.Status))
	}
	s.changePILocked(r, st, now)
	return r.json, nil
}

// settleLocked decides a processing payment (SimProcessingPaymentMethod).
func (s *Sim) settleLocked(id string, succeed bool, now time.Time) ([]byte, *failure) {
	r, f := s.piLocked(id)
	if f != nil {
		return nil, f
	}
	st := r.obj
	if st.Status != "processing" {
		return nil, unexpectedState("This PaymentIntent has a status of " + st.Status + "; only a PaymentIntent with status processing can be settled.")
	}
	if succeed {
		st.apply(attemptSucceeds, decline{}, st.LatestCharge, now)
	} else {
		st.apply(attemptDeclined, decline{"card_declined", "generic_decline", "Your card was declined."}, st.LatestCharge, now)
	}
	s.changePILocked(r, st, now)
	return r.json, nil
}

// captureLocked answers POST /v1/payment_intents/{id}/capture.
func (s *Sim) captureLocked(id string, p *captureParams, now time.Time) ([]byte, *failure) {
	r, f := s.piLocked(id)
	if f != nil {
		return nil, f
	}
	st := r.obj
	if st.Status != "requires_capture" {
		return nil, unexpectedState("This PaymentIntent could not be captured because it has a status of " + st.Status +
			". Only a PaymentIntent with one of the following statuses may be captured: requires_capture.")
	}
	amount := st.AmountCapturable
	if p.amount > 0 {
		if p.amount > st.AmountCapturable {
			return nil, invalidRequest("amount_too_large", "amount_to_capture",
				fmt.Sprintf("The amount_to_capture (%d) must be less than or equal to the amount_capturable (%d).", p.amount, st.AmountCapturable))
		}
		amount = p.amount
	}
	st.Status, st.AmountCapturable, st.AmountReceived = "succeeded", 0, amount
	s.changePILocked(r, st, now)
	return r.json, nil
}

// cancelablePI lists the statuses Stripe lets a PaymentIntent be canceled from.
func cancelablePI(status string) bool {
	switch status {
	case "requires_payment_method", "requires_capture", "requires_confirmation", "requires_action":
		return true
	}
	return false
}

// cancelLocked answers POST /v1/payment_intents/{id}/cancel.
func (s *Sim) cancelLocked(id, reason string, now time.Time) ([]byte, *failure) {
	r, f := s.piLocked(id)
	if f != nil {
		return nil, f
	}
	st := r.obj
	if st.Invoice != "" {
		return nil, unexpectedState("You cannot cancel this PaymentIntent because it was created by an invoice. Void the invoice instead.")
	}
	if !cancelablePI(st.Status) {
		return nil, unexpectedState("You cannot cancel this PaymentIntent because it has a status of " + st.Status +
			". Only a PaymentIntent with one of the following statuses may be canceled: requires_payment_method, requires_capture, requires_confirmation, requires_action.")
	}
	st.cancel(reason, now)
	s.changePILocked(r, st, now)
	return r.json, nil
}

// Authenticate completes (succeed) or fails a PaymentIntent's pending 3-D
// Secure challenge, as a customer on Stripe's hosted test page does; on a
// subscription's unconfirmed first-invoice PaymentIntent, succeed confirms
// it with the default payment method (a card that needs 3-D Secure then
// asks for a second Authenticate). It fails with ErrNotFound or
// ErrUnexpectedState.
func (s *Sim) Authenticate(id string, succeed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.applyDueLocked(now)
	_, f := s.authenticateLocked(id, succeed, now)
	return f.goError("authenticate " + id)
}

// Settle decides a processing PaymentIntent (SimProcessingPaymentMethod):
// succeed makes it succeeded (requires_capture under manual capture), fail
// returns it to requires_payment_method with a card_declined
// last_payment_error. It fails with ErrNotFound or ErrUnexpectedState.
func (s *Sim) Settle(id string, succeed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.applyDueLocked(now)
	_, f := s.settleLocked(id, succeed, now)
	return f.goError("settle " + id)
}
