package stripesim

import (
	"fmt"
	"math"
	"net/url"
	"strings"
	"time"
)

// refundParams are the parsed parameters of POST /v1/refunds.
type refundParams struct {
	paymentIntent string
	amount        int64 // 0: all that is left
	reason        string
	metadata      map[string]string
}

// parseRefund validates POST /v1/refunds before anything executes; its
// failures are never cached. Refunds by charge are not simulated: the
// simulator keeps no charge objects, so charge is parameter_unknown.
func parseRefund(form url.Values) (*refundParams, *failure) {
	known := func(name string) bool {
		switch name {
		case "payment_intent", "amount", "reason", "metadata", "expand":
			return true
		}
		return false
	}
	if f := checkParams(form, known, nil); f != nil {
		return nil, f
	}
	p := &refundParams{paymentIntent: str(form, "payment_intent")}
	switch {
	case !has(form, "payment_intent"):
		return nil, invalidRequest("parameter_missing", "payment_intent",
			"One of the following params should be provided for this request: payment_intent or charge.")
	case p.paymentIntent == "":
		return nil, invalidEmpty("payment_intent")
	}
	if has(form, "amount") {
		n, f := parseInt(form, "amount")
		if f != nil {
			return nil, f
		}
		if n < 1 {
			return nil, invalidRequest("parameter_invalid_integer", "amount", "This value must be greater than or equal to 1.")
		}
		p.amount = n
	}
	switch p.reason = str(form, "reason"); p.reason {
	case "", "duplicate", "fraudulent", "requested_by_customer":
	default:
		return nil, invalidValue("reason", "Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer")
	}
	var f *failure
	if p.metadata, f = parseMetadata(form); f != nil {
		return nil, f
	}
	return p, nil
}

// parseRefundList reads GET /v1/refunds: payment_intent, limit,
// starting_after.
func parseRefundList(form url.Values) (listRequest, *failure) {
	known := func(name string) bool {
		switch name {
		case "payment_intent", "limit", "starting_after", "expand":
			return true
		}
		return false
	}
	var lr listRequest
	if f := checkParams(form, known, nil); f != nil {
		return lr, f
	}
	var f *failure
	if lr.limit, f = parseLimit(form); f != nil {
		return lr, f
	}
	lr.startingAfter = form.Get("starting_after")
	lr.paymentIntent = form.Get("payment_intent")
	return lr, nil
}

// createRefundLocked answers POST /v1/refunds. It runs under the lock
// after latency, like capture, because the amount left to refund must be
// read and reserved in one step: two concurrent refunds never give back
// more than was received. Its failures are executed errors, cached under
// the idempotency key.
func (s *Sim) createRefundLocked(x *exchange) ([]byte, *failure) {
	p := x.refund
	pr := s.pis.byID[p.paymentIntent]
	if pr == nil {
		return nil, resourceMissing(400, "payment_intent", "payment_intent", p.paymentIntent)
	}
	pi := &pr.obj
	if pi.Status != "succeeded" {
		return nil, invalidRequest("", "", "This PaymentIntent ("+pi.ID+") does not have a successful charge to refund.")
	}
	left := pi.AmountReceived - pi.AmountRefunded
	if left <= 0 {
		return nil, invalidRequest("charge_already_refunded", "", "Charge "+pi.LatestCharge+" has already been refunded.")
	}
	amount := left
	if p.amount > 0 {
		if p.amount > left {
			return nil, invalidRequest("amount_too_large", "amount", fmt.Sprintf("Refund amount (%s) is greater than unrefunded amount on charge (%s)",
				money(p.amount, pi.Currency), money(left, pi.Currency)))
		}
		amount = p.amount
	}
	s.refundSeq++
	rf := refundState{
		Refund: Refund{
			ID: randomID(s.ids, "re_", longID), PaymentIntent: pi.ID, Charge: pi.LatestCharge,
			Amount: amount, Currency: pi.Currency, Status: "succeeded", Reason: p.reason,
			Metadata: p.metadata, Created: x.now, IdempotencyKey: x.idemKey,
		},
		seq: s.refundSeq,
		txn: randomID(s.ids, "txn_", longID),
	}
	switch pi.card.refund {
	case refundPends:
		rf.Status = "pending"
	case refundFailsLater:
		rf.failsLater = true
	}
	pi.AmountRefunded += amount // not on the PaymentIntent's wire: its JSON stands
	rec := &record[refundState]{id: rf.ID, created: x.now, meta: rf.Metadata, obj: rf, json: encodeRefund(&rf)}
	s.addRefundLocked(rec)
	s.eventLocked("charge.refunded", encodeCharge(&pi.PaymentIntent), x.now)
	if s.refundObjectEvents {
		s.eventLocked("refund.created", rec.json, x.now)
	}
	return rec.json, nil
}

func (s *Sim) addRefundLocked(r *record[refundState]) {
	s.refunds.add(r)
	s.refundsOf[r.obj.PaymentIntent] = append(s.refundsOf[r.obj.PaymentIntent], r)
	s.stats.RefundsCreated++
	if s.maxObjects <= 0 || len(s.refunds.all) <= s.maxObjects {
		return
	}
	// The oldest refunds lead their PaymentIntents' lists too.
	for _, old := range s.refunds.all[:len(s.refunds.all)-s.maxObjects] {
		l := s.refundsOf[old.obj.PaymentIntent]
		switch {
		case len(l) == 1 && l[0] == old:
			delete(s.refundsOf, old.obj.PaymentIntent)
		case len(l) > 1 && l[0] == old:
			l[0] = nil
			s.refundsOf[old.obj.PaymentIntent] = l[1:]
		}
	}
	s.refunds.trim(s.maxObjects)
}

// listRefundsLocked answers GET /v1/refunds: newest first, optionally of
// one PaymentIntent (an unknown one has none), paged with starting_after.
func (s *Sim) listRefundsLocked(lr listRequest) (listing, *failure) {
	l := listing{object: "list", url: "/v1/refunds"}
	all := s.refunds.all
	if lr.paymentIntent != "" {
		all = s.refundsOf[lr.paymentIntent]
	}
	before := int64(math.MaxInt64)
	if lr.startingAfter != "" {
		start := s.refunds.byID[lr.startingAfter]
		if start == nil {
			return l, resourceMissing(400, "starting_after", "refund", lr.startingAfter)
		}
		before = start.obj.seq
	}
	for i := len(all) - 1; i >= 0; i-- {
		r := all[i]
		if r.obj.seq >= before {
			continue
		}
		if len(l.items) == lr.limit {
			l.hasMore = true
			break
		}
		l.items = append(l.items, r.json)
	}
	return l, nil
}

// refundFailure is the failure_reason Stripe documents for the refunds of
// pm_card_refundFail; the simulator gives it to every failed refund.
const refundFailure = "expired_or_canceled_card"

// settleRefundLocked decides a refund still open at the card network.
func (s *Sim) settleRefundLocked(id string, succeed bool, now time.Time) ([]byte, *failure) {
	r := s.refunds.byID[id]
	if r == nil {
		return nil, resourceMissing(404, "refund", "refund", id)
	}
	rf := r.obj
	switch {
	case rf.Status == "pending" && succeed:
		rf.Status = "succeeded"
	case rf.Status == "pending" || rf.failsLater && !succeed:
		rf.Status, rf.FailureReason = "failed", refundFailure
		rf.failureTxn = randomID(s.ids, "txn_", longID)
		if pr := s.pis.byID[rf.PaymentIntent]; pr != nil {
			pr.obj.AmountRefunded -= rf.Amount // refundable again
		}
	case rf.failsLater:
		r.obj.failsLater = false // it stays succeeded: nothing changes on the wire
		return r.json, nil
	default:
		return nil, invalidRequest("", "", "This refund has a status of "+rf.Status+
			"; only a pending refund, or a succeeded refund of pm_card_refundFail not yet settled, can be settled.")
	}
	rf.failsLater = false
	r.obj = rf
	r.json = encodeRefund(&r.obj)
	s.eventLocked("charge.refund.updated", r.json, now)
	if s.refundObjectEvents {
		s.eventLocked("refund.updated", r.json, now)
		if rf.Status == "failed" {
			s.eventLocked("refund.failed", r.json, now)
		}
	}
	return r.json, nil
}

// SettleRefund decides a refund the card network has not finished with:
// a pending one (pm_card_pendingRefund) becomes succeeded or failed; a
// succeeded one of pm_card_refundFail becomes failed, or with succeed
// stays succeeded for good. A failed refund has failure_reason
// expired_or_canceled_card and its amount can be refunded again. It fails
// with ErrNotFound or ErrUnexpectedState.
func (s *Sim) SettleRefund(id string, succeed bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	s.applyDueLocked(now)
	_, f := s.settleRefundLocked(id, succeed, now)
	return f.goError("settle refund " + id)
}

// Refunds returns snapshots of every refund, oldest first.
func (s *Sim) Refunds() []Refund {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyDueLocked(s.clock.Now())
	out := make([]Refund, len(s.refunds.all))
	for i, r := range s.refunds.all {
		out[i] = r.obj.Refund.clone()
	}
	return out
}

// money formats an amount as Stripe's refund messages do: $25.00.
func money(amount int64, currency string) string {
	sym := strings.ToUpper(currency) + " "
	switch currency {
	case "usd", "cad", "aud", "nzd", "sgd", "hkd", "mxn":
		sym = "$"
	case "eur":
		sym = "€"
	case "gbp":
		sym = "£"
	case "jpy":
		sym = "¥"
	}
	if zeroDecimal(currency) {
		return sym + itoa(amount)
	}
	return fmt.Sprintf("%s%d.%02d", sym, amount/100, amount%100)
}
