package stripesim

import (
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
	id       string
	itemIDs  []string
	prices   []*record[Price]
	currency string
	pm       string // payment method charged, "" for default_incomplete
	card     testCard
	chargeID string
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
	for _, it := range p.items {
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
	if p.behavior != "default_incomplete" {
		pl.pm = p.defaultPM
		if pl.pm == "" {
			pl.pm = cus.obj.DefaultPaymentMethod
		}
		if pl.pm == "" {
			return invalidValue("",
				"This customer has no attached payment source or default payment method. Please consider adding a default payment method. For more information, visit https://stripe.com/docs/billing/subscriptions/payment-methods-setting#payment-method-priority.")
		}
		pl.card, _ = lookupTestCard(pl.pm)
		pl.chargeID = randomID(s.ids, "ch_", longID)
		if p.behavior == "error_if_incomplete" && pl.card.outcome != cardSucceeds {
			c := pl.card
			if c.outcome == cardRequiresAction {
				c.msg = "Your card was declined. This transaction requires authentication."
			}
			return declineFailure(c, pl.chargeID, nil, encodePaymentMethod(c, x.now))
		}
	}
	pl.id = randomID(s.ids, "sub_", longID)
	for range p.items {
		pl.itemIDs = append(pl.itemIDs, randomID(s.ids, "si_", shortID))
	}
	s.subsOf[p.customer]++
	x.subPlan = pl
	return nil
}

// buildSubscription creates the subscription. With Stripe's default
// payment_behavior=allow_incomplete a failed first payment still creates
// it, with status incomplete, and answers 200.
func buildSubscription(x *exchange) (response, *record[Subscription]) {
	p, pl := x.sub, x.subPlan
	sub := Subscription{
		ID: pl.id, Customer: p.customer, Currency: pl.currency, DefaultPaymentMethod: p.defaultPM,
		ChargedPaymentMethod: pl.pm, PaymentBehavior: p.behavior, Metadata: p.metadata,
		Created: x.now, IdempotencyKey: x.idemKey,
	}
	prices := make([]json.RawMessage, len(p.items))
	for i, it := range p.items {
		sub.Items = append(sub.Items, SubscriptionItem{ID: pl.itemIDs[i], Price: it.price, Quantity: it.quantity})
		prices[i] = pl.prices[i].json
	}
	first := pl.prices[0].obj
	sub.CurrentPeriodEnd = periodEnd(x.now, first.Interval, first.IntervalCount)
	switch {
	case pl.pm == "":
		sub.Status = "incomplete"
	case pl.card.outcome == cardSucceeds:
		sub.Status = "active"
	default:
		sub.Status = "incomplete"
		sub.LastPaymentError = &PaymentError{Type: typeCard, Code: pl.card.code, DeclineCode: pl.card.declineCode,
			Message: pl.card.msg, PaymentMethod: pl.pm, Charge: pl.chargeID}
	}
	js := encodeSubscription(&sub, prices)
	return response{status: 200, body: js}, &record[Subscription]{id: sub.ID, created: sub.Created, meta: sub.Metadata, obj: sub, json: js}
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
	out := make([]Subscription, len(s.subs.all))
	for i, r := range s.subs.all {
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
