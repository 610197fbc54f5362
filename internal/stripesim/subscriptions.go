package stripesim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// subParams are the parsed parameters of POST /v1/subscriptions.
type subParams struct {
	customer    string
	defaultPM   string
	behavior    string
	description string
	offSession  bool
	items       []itemParams
	metadata    map[string]string
}

type itemParams struct {
	index    string // as sent, for error params like items[0][price]
	price    string
	quantity int64
}

func subscriptionParamKnown(name string) bool {
	switch name {
	case "customer", "items", "metadata", "payment_behavior", "default_payment_method",
		"expand", "description", "off_session", "proration_behavior":
		return true
	}
	return false
}

func subscriptionNested(name string, parts []string) bool {
	if name != "items" || len(parts) < 2 {
		return false
	}
	switch parts[1] {
	case "price", "quantity":
		return len(parts) == 2
	case "metadata":
		return len(parts) == 3
	}
	return false
}

func parseSubscription(form url.Values) (*subParams, *failure) {
	if f := checkParams(form, subscriptionParamKnown, subscriptionNested); f != nil {
		return nil, f
	}
	p := &subParams{
		customer: str(form, "customer"), defaultPM: str(form, "default_payment_method"),
		description: str(form, "description"),
	}
	if p.customer == "" {
		return nil, paramMissing("customer")
	}
	items, f := indexed(form, "items")
	if f != nil {
		return nil, f
	}
	if len(items) == 0 {
		return nil, paramMissing("items")
	}
	for _, i := range sortedIndexes(items) {
		it := itemParams{index: strconv.Itoa(i), price: items[i]["price"], quantity: 1}
		param := "items[" + it.index + "]"
		if it.price == "" {
			return nil, paramMissing(param + "[price]")
		}
		if q, ok := items[i]["quantity"]; ok {
			n, err := strconv.ParseInt(q, 10, 64)
			if err != nil {
				return nil, invalidInteger(param+"[quantity]", q)
			}
			if n < 0 {
				return nil, invalidRequest("parameter_invalid_integer", param+"[quantity]", "This value must be greater than or equal to 0.")
			}
			it.quantity = n
		}
		p.items = append(p.items, it)
	}
	if len(p.items) > 20 {
		return nil, invalidValue("items", "You can have at most 20 items on a subscription.")
	}
	switch p.behavior = str(form, "payment_behavior"); p.behavior {
	case "":
		p.behavior = "allow_incomplete"
	case "allow_incomplete", "error_if_incomplete", "default_incomplete":
	case "pending_if_incomplete":
		return nil, invalidValue("payment_behavior", "payment_behavior=pending_if_incomplete is only supported when updating a subscription.")
	default:
		return nil, invalidValue("payment_behavior", "Invalid payment_behavior: must be one of allow_incomplete, default_incomplete, error_if_incomplete, or pending_if_incomplete")
	}
	if p.offSession, f = parseBool(form, "off_session"); f != nil {
		return nil, f
	}
	if p.metadata, f = parseMetadata(form); f != nil {
		return nil, f
	}
	return p, nil
}

type subPlan struct {
	id, invoiceID, piID, secret, chargeID string
	itemIDs                               []string
	prices                                []*record[Price]
	currency                              string
	amount                                int64  // the first invoice's amount_due
	pm                                    string // payment method the first invoice is paid with, "" if none
	card                                  testCard
	setUp                                 bool
}

// planSubscriptionLocked checks the request against state and reserves
// the customer's subscription slot, so that concurrent creates cannot
// overshoot the cap.
func (s *Sim) planSubscriptionLocked(x *exchange) *failure {
	p := x.sub
	cus := s.customers.byID[p.customer]
	if cus == nil {
		return resourceMissing(400, "customer", "customer", p.customer)
	}
	pl := &subPlan{}
	for i, it := range p.items {
		pr := s.prices.byID[it.price]
		if pr == nil {
			return resourceMissing(400, "items["+it.index+"][price]", "price", it.price)
		}
		if pl.currency == "" {
			pl.currency = pr.obj.Currency
		} else if pl.currency != pr.obj.Currency {
			return invalidValue("items", "All prices on a subscription must have the same currency.")
		}
		pl.prices = append(pl.prices, pr)
		pl.amount += pr.obj.UnitAmount * p.items[i].quantity
	}
	if n := s.subsOf[p.customer]; n >= s.maxSubs {
		return invalidRequest("customer_max_subscriptions", "",
			fmt.Sprintf("Customer %s already has the maximum %d current subscriptions.", p.customer, s.maxSubs))
	}
	if p.defaultPM != "" {
		if _, ok := lookupTestCard(p.defaultPM); !ok {
			return resourceMissing(400, "default_payment_method", "PaymentMethod", p.defaultPM)
		}
	}
	pl.pm = p.defaultPM
	if pl.pm == "" {
		pl.pm = cus.obj.DefaultPaymentMethod
	}
	pl.card, _ = lookupTestCard(pl.pm)
	pl.setUp = s.setUp[setUpKey(p.customer, pl.pm)]
	if p.behavior != "default_incomplete" && pl.amount > 0 {
		if pl.pm == "" {
			return invalidValue("",
				"This customer has no attached payment source or default payment method. Please consider adding a default payment method. For more information, visit https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.")
		}
		pl.chargeID = randomID(s.ids, "ch_", longID)
		if a, d := pl.card.confirm(p.offSession, pl.setUp); p.behavior == "error_if_incomplete" && a != attemptSucceeds {
			if a != attemptDeclined {
				d = authRequired
			}
			return declineFailure(d, pl.chargeID, nil, encodePaymentMethod(pl.card, x.now))
		}
	}
	pl.id = randomID(s.ids, "sub_", longID)
	for range p.items {
		pl.itemIDs = append(pl.itemIDs, randomID(s.ids, "si_", shortID))
	}
	pl.invoiceID = randomID(s.ids, "in_", longID)
	pl.piID = randomID(s.ids, "pi_", longID)
	pl.secret = randomID(s.ids, pl.piID+"_secret_", 25)
	s.subsOf[p.customer]++
	x.subPlan = pl
	return nil
}

// buildSubscription creates the subscription with its first invoice and
// the invoice's PaymentIntent. With Stripe's default
// payment_behavior=allow_incomplete the PaymentIntent is confirmed at once
// and a failed first payment still creates the subscription, incomplete,
// answering 200; default_incomplete leaves the PaymentIntent unconfirmed.
func buildSubscription(x *exchange) (response, created) {
	p, pl := x.sub, x.subPlan
	sub := subState{Subscription: Subscription{
		ID: pl.id, Customer: p.customer, Currency: pl.currency, DefaultPaymentMethod: p.defaultPM,
		PaymentBehavior: p.behavior, Metadata: p.metadata, LatestInvoice: pl.invoiceID,
		Created: x.now, IdempotencyKey: x.idemKey,
	}}
	sub.prices = make([]json.RawMessage, len(p.items))
	for i, it := range p.items {
		sub.Items = append(sub.Items, SubscriptionItem{ID: pl.itemIDs[i], Price: it.price, Quantity: it.quantity})
		sub.prices[i] = pl.prices[i].json
	}
	first := pl.prices[0].obj
	sub.CurrentPeriodEnd = periodEnd(x.now, first.Interval, first.IntervalCount)
	inv := Invoice{
		ID: pl.invoiceID, Customer: p.customer, Subscription: sub.ID, Status: "draft", Currency: pl.currency,
		AmountDue: pl.amount, SubscriptionMetadata: p.metadata, PeriodStart: x.now, PeriodEnd: x.now, Created: x.now,
	}
	var c created
	draft := encodeInvoice(&inv)
	inv.Status = "open"
	var pi *piState
	if pl.amount > 0 {
		inv.PaymentIntent = pl.piID
		pi = &piState{
			PaymentIntent: PaymentIntent{
				ID: pl.piID, Amount: pl.amount, Currency: pl.currency, Customer: p.customer,
				CaptureMethod: "automatic", ClientSecret: pl.secret, Invoice: inv.ID,
				OffSession: p.offSession, Created: x.now, Status: "requires_payment_method",
			},
			enc:       piEncoding{pmTypes: []string{"card"}},
			hostedURL: hostedPage(x.baseURL, pl.piID),
		}
		if pl.pm != "" {
			pi.PaymentMethod, pi.card, pi.Status = pl.pm, pl.card, "requires_confirmation"
		}
		if p.behavior != "default_incomplete" {
			sub.ChargedPaymentMethod = pl.pm
			a, d := pl.card.confirm(p.offSession, pl.setUp)
			pi.apply(a, d, pl.chargeID, x.now)
		}
	}
	open := encodeInvoice(&inv)
	switch {
	case pi == nil || pi.Status == "succeeded":
		sub.Status = "active"
		inv.Status, inv.AmountPaid = "paid", inv.AmountDue
	default:
		sub.Status = "incomplete"
		if e := pi.LastPaymentError; e != nil {
			le := *e
			sub.LastPaymentError = &le
		} else if pi.Status == "requires_action" {
			sub.LastPaymentError = &PaymentError{Type: typeCard, Code: authRequired.code, DeclineCode: authRequired.declineCode,
				Message: authRequired.msg, PaymentMethod: pl.pm}
		}
	}
	subJSON := encodeSubscription(&sub)
	invJSON := encodeInvoice(&inv)
	c.sub = &record[subState]{id: sub.ID, created: sub.Created, meta: sub.Metadata, obj: sub, json: subJSON}
	c.inv = &record[Invoice]{id: inv.ID, created: inv.Created, obj: inv, json: invJSON}
	c.events = append(c.events,
		pendingEvent{"customer.subscription.created", subJSON},
		pendingEvent{"invoice.created", draft},
		pendingEvent{"invoice.finalized", open})
	var piJSON []byte
	if pi != nil {
		piJSON = encodePaymentIntent(pi)
		c.subPI = &record[piState]{id: pi.ID, created: pi.Created, obj: *pi, json: piJSON}
		c.events = append(c.events, pendingEvent{"payment_intent.created", piJSON})
		if ev := piStatusEvent(&pi.PaymentIntent); ev != "" {
			c.events = append(c.events, pendingEvent{ev, piJSON})
		}
		switch {
		case pi.Status == "requires_action":
			c.events = append(c.events, pendingEvent{"invoice.payment_action_required", invJSON})
		case pi.LastPaymentError != nil:
			c.events = append(c.events, pendingEvent{"invoice.payment_failed", invJSON})
		}
	}
	if inv.Status == "paid" {
		c.events = append(c.events, pendingEvent{"invoice.paid", invJSON}, pendingEvent{"invoice.payment_succeeded", invJSON})
	}
	e := &expansion{invoiceID: inv.ID, piID: inv.PaymentIntent}
	if x.expand >= 1 {
		e.invoice = invJSON
	}
	if x.expand >= 2 {
		e.pi = piJSON
	}
	return response{status: 200, body: e.apply(subJSON)}, c
}

// invoicePaymentMethodLocked is what an invoice is paid with: the
// subscription's default payment method, else the customer's.
func (s *Sim) invoicePaymentMethodLocked(invoiceID string) string {
	ir := s.invoices.byID[invoiceID]
	if ir == nil {
		return ""
	}
	if sr := s.subs.byID[ir.obj.Subscription]; sr != nil && sr.obj.DefaultPaymentMethod != "" {
		return sr.obj.DefaultPaymentMethod
	}
	if cr := s.customers.byID[ir.obj.Customer]; cr != nil {
		return cr.obj.DefaultPaymentMethod
	}
	return ""
}

// invoicePaymentLocked carries a change of an invoice's PaymentIntent over
// to the invoice and its subscription, with their events.
func (s *Sim) invoicePaymentLocked(invoiceID string, pi *piState, now time.Time) {
	ir := s.invoices.byID[invoiceID]
	if ir == nil || ir.obj.Status != "open" {
		return
	}
	sr := s.subs.byID[ir.obj.Subscription]
	switch {
	case pi.Status == "succeeded":
		inv := ir.obj
		inv.Status, inv.AmountPaid = "paid", inv.AmountDue
		s.changeInvoiceLocked(ir, inv, now, "invoice.paid", "invoice.payment_succeeded")
		if sr != nil && sr.obj.Status == "incomplete" {
			sub := sr.obj
			sub.Status, sub.LastPaymentError, sub.ChargedPaymentMethod = "active", nil, pi.PaymentMethod
			s.changeSubLocked(sr, sub, now, "customer.subscription.updated")
		}
	case pi.Status == "requires_action":
		s.eventLocked("invoice.payment_action_required", ir.json, now)
	case pi.LastPaymentError != nil:
		s.eventLocked("invoice.payment_failed", ir.json, now)
		if sr != nil {
			e := *pi.LastPaymentError
			sr.obj.LastPaymentError = &e // not on the wire: no event
		}
	}
}

func (s *Sim) changeInvoiceLocked(r *record[Invoice], inv Invoice, now time.Time, events ...string) {
	r.obj = inv
	r.json = encodeInvoice(&r.obj)
	for _, ev := range events {
		s.eventLocked(ev, r.json, now)
	}
}

func (s *Sim) changeSubLocked(r *record[subState], sub subState, now time.Time, events ...string) {
	r.obj = sub
	r.json = encodeSubscription(&r.obj)
	for _, ev := range events {
		s.eventLocked(ev, r.json, now)
	}
}

// expireSubscriptionLocked ends a subscription whose first invoice went
// unpaid for IncompleteWindow: incomplete_expired, the invoice void, its
// PaymentIntent canceled.
func (s *Sim) expireSubscriptionLocked(r *record[subState], now time.Time) {
	sub := r.obj
	sub.Status = "incomplete_expired"
	s.subsOf[sub.Customer]--
	s.changeSubLocked(r, sub, now, "customer.subscription.updated")
	ir := s.invoices.byID[sub.LatestInvoice]
	if ir == nil || ir.obj.Status != "open" {
		return
	}
	inv := ir.obj
	inv.Status = "void"
	s.changeInvoiceLocked(ir, inv, now, "invoice.voided")
	if pr := s.pis.byID[inv.PaymentIntent]; pr != nil && cancelablePI(pr.obj.Status) {
		st := pr.obj
		st.cancel("void_invoice", now)
		s.changePILocked(pr, st, now)
	}
}

// cancelSubscriptionLocked answers DELETE /v1/subscriptions/{id}: the
// subscription ends now.
func (s *Sim) cancelSubscriptionLocked(id string, now time.Time) (*record[subState], *failure) {
	r := s.subs.byID[id]
	if r == nil {
		return nil, resourceMissing(404, "id", "subscription", id)
	}
	sub := r.obj
	switch sub.Status {
	case "canceled", "incomplete_expired":
		return nil, invalidRequest("", "", "This subscription has a status of "+sub.Status+" and can no longer be canceled.")
	}
	sub.Status, sub.CanceledAt, sub.EndedAt = "canceled", now, now
	s.subsOf[sub.Customer]--
	s.changeSubLocked(r, sub, now, "customer.subscription.deleted")
	return r, nil
}

// subscriptionEnded reports whether a subscription in status can change no more.
func subscriptionEnded(status string) bool {
	return status == "canceled" || status == "incomplete_expired"
}

// parseSubscriptionUpdate reads POST /v1/subscriptions/{id}, which the
// simulator supports for cancel_at_period_end (and expand) only; other
// update parameters are parameter_unknown. Metadata is among them: a
// subscription's metadata is indexed for search from creation on.
func parseSubscriptionUpdate(form url.Values) (*bool, *failure) {
	known := func(name string) bool { return name == "cancel_at_period_end" || name == "expand" }
	if f := checkParams(form, known, nil); f != nil {
		return nil, f
	}
	if !has(form, "cancel_at_period_end") {
		return nil, nil
	}
	v, f := parseBool(form, "cancel_at_period_end")
	if f != nil {
		return nil, f
	}
	return &v, nil
}

// updateSubscriptionLocked answers POST /v1/subscriptions/{id}.
// cancel_at_period_end=true keeps the subscription as it is until its
// period ends, with cancel_at set to that moment and canceled_at to now;
// false takes that back. A change is announced with
// customer.subscription.updated.
func (s *Sim) updateSubscriptionLocked(id string, cancelAtPeriodEnd *bool, now time.Time) (*record[subState], *failure) {
	r := s.subs.byID[id]
	if r == nil {
		return nil, resourceMissing(404, "id", "subscription", id)
	}
	sub := r.obj
	if cancelAtPeriodEnd == nil || *cancelAtPeriodEnd == sub.CancelAtPeriodEnd {
		return r, nil
	}
	if subscriptionEnded(sub.Status) {
		return nil, invalidRequest("", "", "A "+sub.Status+" subscription can only update its cancellation_details and metadata.")
	}
	if *cancelAtPeriodEnd {
		sub.CancelAtPeriodEnd, sub.CancelAt, sub.CanceledAt = true, sub.CurrentPeriodEnd, now
		s.scheduleLocked(sub.CancelAt, deadlinePeriodEnd, sub.ID)
	} else {
		sub.CancelAtPeriodEnd, sub.CancelAt, sub.CanceledAt = false, time.Time{}, time.Time{}
	}
	s.changeSubLocked(r, sub, now, "customer.subscription.updated")
	return r, nil
}

// endAtPeriodEndLocked ends a subscription set to cancel at period end
// once the period is over: canceled, ended_at its cancel_at.
func (s *Sim) endAtPeriodEndLocked(r *record[subState], now time.Time) {
	sub := r.obj
	sub.Status, sub.EndedAt = "canceled", sub.CancelAt
	s.subsOf[sub.Customer]--
	s.changeSubLocked(r, sub, now, "customer.subscription.deleted")
}

// expansion is what expanding a subscription's latest_invoice (and its
// payment_intent) needs: gathered under the lock, spliced in after it.
type expansion struct {
	invoiceID, piID string
	invoice, pi     []byte // nil: not expanded
}

func (s *Sim) expansionLocked(sub *subState, level int) *expansion {
	if level == 0 {
		return nil
	}
	ir := s.invoices.byID[sub.LatestInvoice]
	if ir == nil {
		return nil
	}
	e := &expansion{invoiceID: ir.id, invoice: ir.json, piID: ir.obj.PaymentIntent}
	if pr := s.pis.byID[e.piID]; level >= 2 && pr != nil && ir.obj.Status != "draft" {
		e.pi = pr.json
	}
	return e
}

// apply replaces the references in a subscription's JSON with the objects.
func (e *expansion) apply(sub []byte) []byte {
	if e == nil || e.invoice == nil {
		return sub
	}
	inv := e.invoice
	if e.pi != nil {
		inv = splice(inv, "payment_intent", e.piID, e.pi)
	}
	return splice(sub, "latest_invoice", e.invoiceID, inv)
}

// splice replaces "field":"id" in js with "field":obj. Our encoder writes
// no spaces and escapes quotes inside strings, so the pattern occurs
// exactly once, as the field itself.
func splice(js []byte, field, id string, obj []byte) []byte {
	old := `"` + field + `":"` + id + `"`
	i := bytes.Index(js, []byte(old))
	if i < 0 {
		return js
	}
	out := make([]byte, 0, len(js)-len(old)+len(field)+3+len(obj))
	out = append(out, js[:i]...)
	out = append(out, '"')
	out = append(out, field...)
	out = append(out, '"', ':')
	out = append(out, obj...)
	return append(out, js[i+len(old):]...)
}

// expandLevel reads expand[] for a subscription: 1 for latest_invoice, 2
// for latest_invoice.payment_intent; prefix is "data." on search.
// Other expansions are accepted and ignored.
func expandLevel(form url.Values, prefix string) int {
	level := 0
	for k, vs := range form {
		if topName(k) != "expand" {
			continue
		}
		for _, v := range vs {
			switch strings.TrimPrefix(v, prefix) {
			case "latest_invoice":
				level = max(level, 1)
			case "latest_invoice.payment_intent":
				level = 2
			}
		}
	}
	return level
}

func periodEnd(start time.Time, interval string, count int64) time.Time {
	n := int(count)
	switch interval {
	case "day":
		return start.AddDate(0, 0, n)
	case "week":
		return start.AddDate(0, 0, 7*n)
	case "year":
		return start.AddDate(n, 0, 0)
	}
	return start.AddDate(0, n, 0)
}

// Subscriptions returns snapshots of every subscription, oldest first.
func (s *Sim) Subscriptions() []Subscription {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyDueLocked(s.clock.Now())
	out := make([]Subscription, len(s.subs.all))
	for i, r := range s.subs.all {
		out[i] = r.obj.Subscription.clone()
	}
	return out
}

// Invoices returns snapshots of every invoice, oldest first.
func (s *Sim) Invoices() []Invoice {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyDueLocked(s.clock.Now())
	out := make([]Invoice, len(s.invoices.all))
	for i, r := range s.invoices.all {
		out[i] = r.obj.clone()
	}
	return out
}

// AddPrice stores a recurring price for subscriptions to use. An empty ID
// gets a generated price_ id, an empty Product a generated prod_ id, an
// empty Interval "month", a zero IntervalCount 1. It fails with ErrExists,
// ErrUnknownCurrency or ErrInvalidFixture.
func (s *Sim) AddPrice(p Price) (Price, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addPriceLocked(p)
}

func (s *Sim) addPriceLocked(p Price) (Price, error) {
	if p.ID == "" {
		p.ID = randomID(s.ids, "price_", longID)
	}
	if s.prices.byID[p.ID] != nil {
		return Price{}, fmt.Errorf("add price %s: %w", p.ID, ErrExists)
	}
	p.Currency = strings.ToLower(p.Currency)
	if minimumAmount(p.Currency) == 0 {
		return Price{}, fmt.Errorf("add price %s: %q: %w", p.ID, p.Currency, ErrUnknownCurrency)
	}
	if p.UnitAmount < 0 {
		return Price{}, fmt.Errorf("add price %s: negative unit amount: %w", p.ID, ErrInvalidFixture)
	}
	switch p.Interval {
	case "":
		p.Interval = "month"
	case "day", "week", "month", "year":
	default:
		return Price{}, fmt.Errorf("add price %s: interval %q: %w", p.ID, p.Interval, ErrInvalidFixture)
	}
	if p.IntervalCount <= 0 {
		p.IntervalCount = 1
	}
	if p.Product == "" {
		p.Product = randomID(s.ids, "prod_", shortID)
	}
	if p.Created.IsZero() {
		p.Created = s.clock.Now()
	}
	s.prices.add(&record[Price]{id: p.ID, created: p.Created, obj: p, json: encodePrice(&p)})
	return p, nil
}
