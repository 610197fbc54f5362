package stripesim

import (
	"encoding/json"
	"maps"
	"slices"
	"time"
)

// PaymentIntent is a snapshot of a PaymentIntent held by the simulator, for
// tests to assert what was charged. Fields mirror the Stripe object.
type PaymentIntent struct {
	ID       string
	Amount   int64
	Currency string
	Customer string
	// PaymentMethod is empty after a failed attempt, as on the Stripe
	// object; LastPaymentError.PaymentMethod names what was tried.
	PaymentMethod string
	// Status is requires_payment_method, requires_confirmation,
	// requires_action, processing, requires_capture, succeeded or canceled.
	Status        string
	CaptureMethod string
	Description   string
	Metadata      map[string]string
	OffSession    bool
	ClientSecret  string
	LatestCharge  string
	// NextAction is the next_action type while Status is requires_action:
	// use_stripe_sdk, or redirect_to_url when the create carried return_url.
	NextAction       string
	LastPaymentError *PaymentError
	AmountCapturable int64
	AmountReceived   int64
	// AmountRefunded is the latest charge's amount_refunded: what its
	// refunds, pending or succeeded, give back. It is not a field of
	// Stripe's PaymentIntent, which is why it is not on the wire.
	AmountRefunded int64
	// CancellationReason is set once Status is canceled: duplicate,
	// fraudulent, requested_by_customer, abandoned, automatic (an
	// authorisation left uncaptured for AuthorizationValidity) or
	// void_invoice (its subscription expired incomplete).
	CancellationReason string
	CanceledAt         time.Time
	// Invoice is the invoice this PaymentIntent pays, "" for one created
	// with POST /v1/payment_intents.
	Invoice string
	Created time.Time
	// IdempotencyKey is the Idempotency-Key of the request that created the
	// object, "" if none, so tests can check which key billingd derived.
	IdempotencyKey string
}

// PaymentError is the reason a payment attempt failed.
type PaymentError struct {
	Type          string
	Code          string
	DeclineCode   string
	Message       string
	PaymentMethod string
	Charge        string
}

// Refund is a snapshot of a refund held by the simulator.
type Refund struct {
	ID            string
	PaymentIntent string
	Charge        string // the PaymentIntent's latest charge
	Amount        int64
	Currency      string
	// Status is succeeded, pending (pm_card_pendingRefund, until settled)
	// or failed (settled so).
	Status string
	// Reason is duplicate, fraudulent, requested_by_customer or "".
	Reason string
	// FailureReason is expired_or_canceled_card once Status is failed.
	FailureReason  string
	Metadata       map[string]string
	Created        time.Time
	IdempotencyKey string
}

// Subscription is a snapshot of a Subscription held by the simulator.
type Subscription struct {
	ID       string
	Customer string
	// Status is active, incomplete, incomplete_expired or canceled.
	Status               string
	Currency             string
	Items                []SubscriptionItem
	DefaultPaymentMethod string // the default_payment_method parameter, "" if not given
	// ChargedPaymentMethod is the payment method the first invoice was
	// charged to, "" when payment_behavior=default_incomplete.
	ChargedPaymentMethod string
	PaymentBehavior      string
	LastPaymentError     *PaymentError
	Metadata             map[string]string
	// LatestInvoice is the subscription's first (and only) invoice.
	LatestInvoice    string
	Created          time.Time
	CurrentPeriodEnd time.Time
	// CancelAtPeriodEnd is set by an update with cancel_at_period_end=true:
	// the subscription stays active until CancelAt (its CurrentPeriodEnd),
	// then is canceled.
	CancelAtPeriodEnd bool
	CancelAt          time.Time
	// CanceledAt is when the cancellation was asked for: the DELETE, or the
	// update that set CancelAtPeriodEnd, as Stripe reports canceled_at.
	CanceledAt time.Time
	// EndedAt is when the subscription ended: the DELETE, or CancelAt.
	EndedAt        time.Time
	IdempotencyKey string
}

// Invoice is a snapshot of a subscription's first invoice.
type Invoice struct {
	ID           string
	Customer     string
	Subscription string
	// Status is draft (never seen outside invoice.created), open, paid or
	// void (its subscription expired incomplete).
	Status     string
	Currency   string
	AmountDue  int64
	AmountPaid int64
	// PaymentIntent is the PaymentIntent collecting it, "" when nothing
	// is due.
	PaymentIntent string
	// SubscriptionMetadata is the subscription's metadata, copied as
	// Stripe copies it into subscription_details.metadata.
	SubscriptionMetadata   map[string]string
	PeriodStart, PeriodEnd time.Time
	Created                time.Time
}

// SubscriptionItem is one price on a Subscription.
type SubscriptionItem struct {
	ID       string
	Price    string
	Quantity int64
}

// Customer is a customer the simulator knows, created over the API or with
// AddCustomer.
type Customer struct {
	ID          string
	Email       string
	Name        string
	Phone       string
	Description string
	// PaymentMethods are the attached test payment methods (for example
	// "pm_card_visa"); the simulator keeps Stripe's magic ids rather than
	// minting a pm_ clone on attach.
	PaymentMethods       []string
	DefaultPaymentMethod string // invoice_settings.default_payment_method
	Metadata             map[string]string
	Created              time.Time
	IdempotencyKey       string
}

// Price is a recurring price subscriptions can use.
type Price struct {
	ID            string
	Product       string
	Currency      string
	UnitAmount    int64
	Interval      string // day, week, month or year
	IntervalCount int64
	Nickname      string
	Created       time.Time
}

func (p PaymentIntent) clone() PaymentIntent {
	p.Metadata = maps.Clone(p.Metadata)
	if p.LastPaymentError != nil {
		e := *p.LastPaymentError
		p.LastPaymentError = &e
	}
	return p
}

func (r Refund) clone() Refund {
	r.Metadata = maps.Clone(r.Metadata)
	return r
}

func (in Invoice) clone() Invoice {
	in.SubscriptionMetadata = maps.Clone(in.SubscriptionMetadata)
	return in
}

func (s Subscription) clone() Subscription {
	s.Metadata = maps.Clone(s.Metadata)
	s.Items = slices.Clone(s.Items)
	if s.LastPaymentError != nil {
		e := *s.LastPaymentError
		s.LastPaymentError = &e
	}
	return s
}

func (c Customer) clone() Customer {
	c.Metadata = maps.Clone(c.Metadata)
	c.PaymentMethods = slices.Clone(c.PaymentMethods)
	return c
}

// piState is a stored PaymentIntent with what its wire form and its
// transitions need beyond the snapshot.
type piState struct {
	PaymentIntent
	enc       piEncoding
	card      testCard // the payment method confirmed last
	returnURL string
	hostedURL string // the hosted 3-D Secure test page
}

// refundState is a stored refund with what its wire form and settling
// need beyond the snapshot.
type refundState struct {
	Refund
	seq        int64  // creation order, for starting_after
	failsLater bool   // pm_card_refundFail: fails when settled
	txn        string // balance_transaction
	failureTxn string // failure_balance_transaction, once failed
}

// subState is a stored subscription with its items' prices, encoded.
type subState struct {
	Subscription
	prices []json.RawMessage
}

// record is one stored object with its encoded JSON. A change replaces obj
// and json together under the lock; the bytes of a json slice never change,
// so readers take the slice under the lock and write it out after.
type record[T any] struct {
	id      string
	created time.Time
	meta    map[string]string
	obj     T
	json    []byte
}

// store holds one kind of object in creation order, with an index on
// metadata pairs because metadata search is how billingd reconciles.
type store[T any] struct {
	byID   map[string]*record[T]
	all    []*record[T]
	byMeta map[string][]*record[T]
}

func newStore[T any]() store[T] {
	return store[T]{byID: map[string]*record[T]{}, byMeta: map[string][]*record[T]{}}
}

func metaKey(k, v string) string { return k + "\x00" + v }

func (st *store[T]) add(r *record[T]) {
	st.byID[r.id] = r
	st.all = append(st.all, r)
	for k, v := range r.meta {
		mk := metaKey(k, v)
		st.byMeta[mk] = append(st.byMeta[mk], r)
	}
}

// trim forgets the oldest records beyond max (0: no bound). Records are kept
// in creation order everywhere, so the oldest lead every list they are in.
func (st *store[T]) trim(max int) {
	if max <= 0 || len(st.all) <= max {
		return
	}
	n := len(st.all) - max
	for _, r := range st.all[:n] {
		delete(st.byID, r.id)
		for k, v := range r.meta {
			mk := metaKey(k, v)
			if l := st.byMeta[mk]; len(l) > 0 && l[0] == r {
				if len(l) == 1 {
					delete(st.byMeta, mk)
				} else {
					l[0] = nil
					st.byMeta[mk] = l[1:]
				}
			}
		}
	}
	clear(st.all[:n])
	st.all = st.all[n:]
}

// search returns the records matching every term and created at or before
// cutoff, newest first, skipping offset and returning at most limit.
func (st *store[T]) search(terms []term, field func(*T, string) string, cutoff time.Time, offset, limit int) (out []*record[T], hasMore bool) {
	candidates := st.all
	for _, t := range terms {
		if t.field == "metadata" {
			candidates = st.byMeta[metaKey(t.key, t.value)]
			break
		}
	}
	skipped := 0
	for i := len(candidates) - 1; i >= 0; i-- {
		r := candidates[i]
		if r.created.After(cutoff) || !matches(r, terms, field) {
			continue
		}
		if skipped < offset {
			skipped++
			continue
		}
		if len(out) == limit {
			return out, true
		}
		out = append(out, r)
	}
	return out, false
}

func matches[T any](r *record[T], terms []term, field func(*T, string) string) bool {
	for _, t := range terms {
		var got string
		if t.field == "metadata" {
			v, ok := r.meta[t.key]
			if !ok {
				return false
			}
			got = v
		} else {
			got = field(&r.obj, t.field)
		}
		if got != t.value {
			return false
		}
	}
	return true
}
