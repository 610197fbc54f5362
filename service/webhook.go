package service

import (
	"context"
	"fmt"
	"time"
)

// EventKind is a Stripe webhook event type billingd acts on.
type EventKind int

// The event kinds. Others are acknowledged and ignored.
const (
	EventPaymentSucceeded    EventKind = iota + 1 // payment_intent.succeeded
	EventPaymentFailed                            // payment_intent.payment_failed
	EventPaymentCanceled                          // payment_intent.canceled
	EventSubscriptionCreated                      // customer.subscription.created
	// A PaymentIntent's other moves: requires_action, processing,
	// amount_capturable_updated (authorised for manual capture).
	EventPaymentUpdated
	// customer.subscription.updated and .deleted, invoice.paid,
	// .payment_succeeded, .payment_failed and .payment_action_required: the
	// subscription is retrieved, since the event's
	// object does not carry the first invoice's payment.
	EventSubscriptionChanged
	// refund.created, refund.updated, refund.failed, charge.refund.updated:
	// the event's Refund.
	EventRefundChanged
)

// subscriptionEvent reports whether k is about a subscription.
func (k EventKind) subscriptionEvent() bool {
	return k == EventSubscriptionCreated || k == EventSubscriptionChanged
}

// Event is a verified Stripe webhook event, reduced to what settles a record.
type Event struct {
	ID   string // evt_…
	Kind EventKind
	// RequestKey and Caller are the object's billingd metadata.
	RequestKey string
	Caller     string
	// Object is the object as the event carries it (for subscription
	// events, at least its ObjectID); Failure is set for EventPaymentFailed.
	Object Result
}

// EventStore is what webhook handling needs from the record store: the
// request-key index and event-id deduplication.
type EventStore interface {
	GetByRequestKey(ctx context.Context, requestKey string) (rec Record, found bool, err error)
	ClaimEvent(ctx context.Context, id string, seen time.Time) (first bool, err error)
	ForgetEvent(ctx context.Context, id string) error
}

// EventOutcome says what an event did.
type EventOutcome int

// The outcomes.
const (
	EventSettled   EventOutcome = iota + 1 // it settled an open record
	EventDuplicate                         // its id was handled before
	EventUnmatched                         // no record of this billingd carries its metadata
	EventFinal                             // the record was already final
	EventInFlight                          // a drive of the record is running; it is left to it
)

func (o EventOutcome) String() string {
	switch o {
	case EventSettled:
		return "settled"
	case EventDuplicate:
		return "duplicate"
	case EventUnmatched:
		return "unmatched"
	case EventFinal:
		return "final"
	case EventInFlight:
		return "in_flight"
	}
	return "unknown"
}

// Webhooks settles records from Stripe's webhook events: the fastest way an
// INDETERMINATE record, or a PENDING one whose answer was lost, learns the
// truth, and the way a followed one (REQUIRES_ACTION, PROCESSING,
// AUTHORIZED) learns that its payment moved.
type Webhooks struct {
	svc   *Service
	store EventStore
}

// NewWebhooks returns the event handler for svc's records in store.
func NewWebhooks(svc *Service, store EventStore) *Webhooks {
	return &Webhooks{svc: svc, store: store}
}

// Handle applies ev once per event id. An error means nothing was decided:
// the event id is released so Stripe's redelivery is handled again.
func (w *Webhooks) Handle(ctx context.Context, ev Event) (EventOutcome, error) {
	if ev.RequestKey == "" {
		return EventUnmatched, nil
	}
	first, err := w.store.ClaimEvent(ctx, ev.ID, w.svc.clock.Now())
	if err != nil {
		return 0, err
	}
	if !first {
		return EventDuplicate, nil
	}
	out, err := w.apply(ctx, ev)
	if err != nil || out == EventInFlight {
		// Let a redelivery try again: the drive may end without an answer.
		if ferr := w.store.ForgetEvent(context.WithoutCancel(ctx), ev.ID); ferr != nil && err == nil {
			err = ferr
		}
	}
	return out, err
}

func (w *Webhooks) apply(ctx context.Context, ev Event) (EventOutcome, error) {
	s := w.svc
	rec, found, err := w.store.GetByRequestKey(ctx, ev.RequestKey)
	if err != nil {
		return 0, fmt.Errorf("look up record: %w", err)
	}
	want := MethodCharge
	switch {
	case ev.Kind.subscriptionEvent():
		want = MethodSubscribe
	case ev.Kind == EventRefundChanged:
		want = MethodRefund
	}
	if !found || rec.Caller != ev.Caller || rec.Method != want {
		return EventUnmatched, nil
	}
	if rec.State.Final() {
		return EventFinal, nil
	}
	key := inflightKey(rec.Caller, rec.RequestID)
	c, owner := s.own(key, rec.Fingerprint)
	if !owner {
		return EventInFlight, nil
	}
	var out EventOutcome
	s.run(s.base, key, c, func(ctx context.Context) (Result, bool, error) {
		// Re-read inside the owned slot: a drive may have settled it since.
		rec, found, err := s.records.Get(ctx, rec.Caller, rec.RequestID)
		if err != nil {
			return Result{}, false, s.storageError(err)
		}
		if !found {
			out = EventFinal
			return Result{}, false, errNotDriven
		}
		if rec.State.Final() {
			out = EventFinal
			return s.advance(ctx, rec, nil)
		}
		// Another replica may be driving it: then it is left to that drive,
		// like a drive in flight here.
		rec, leased, err := s.records.Acquire(ctx, rec)
		switch {
		case err != nil:
			return Result{}, false, s.storageError(err)
		case rec.State == StateUnspecified:
			out = EventFinal
			return Result{}, false, errNotDriven
		case rec.State.Final():
			out = EventFinal
			return s.advance(ctx, rec, nil)
		case !leased:
			out = EventInFlight
			return Result{}, false, errNotDriven
		}
		out = EventSettled
		return s.underLease(ctx, rec, func() (Result, bool, error) { return w.settleEvent(ctx, rec, ev) })
	})
	switch reason := ReasonOf(c.err); {
	case reason == ReasonStorageUnavailable:
		return 0, c.err
	case reason == ReasonRequestInProgress: // another replica took the record over
		return EventInFlight, nil
	case out == EventSettled && c.err != nil && !reason.answered():
		// Stripe could not be asked (a subscription is retrieved): nothing
		// was decided, so let Stripe deliver the event again.
		return 0, c.err
	}
	return out, nil
}

// settleEvent settles rec, whose lease this process holds, as ev says: a
// PaymentIntent event carries the object itself; for a subscription the
// object is retrieved, with its first invoice's payment.
func (w *Webhooks) settleEvent(ctx context.Context, rec Record, ev Event) (Result, bool, error) {
	s := w.svc
	obj := ev.Object
	switch ev.Kind {
	case EventSubscriptionCreated, EventSubscriptionChanged:
		got, err := s.payments.GetSubscription(ctx, obj.ObjectID)
		if err != nil {
			_, e := s.translate(err, nil)
			return Result{}, false, e
		}
		obj = got
	case EventPaymentFailed: // the event's type says what happened, whatever its object's status
		if obj.Failure == nil {
			obj.Failure = &UpstreamError{Kind: UpstreamDeclined, Type: "card_error", Code: "card_declined", ObjectID: obj.ObjectID}
		}
		obj.Status = PaymentRequiresPaymentMethod
	case EventPaymentCanceled:
		obj.Status = PaymentCanceled
	case EventPaymentSucceeded:
		obj.Status, obj.Failure = PaymentSucceeded, nil
	}
	res, err := s.settleSeen(ctx, &rec, obj)
	return res, false, err
}
