package stripesim

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// cusParams are the parsed parameters of POST /v1/customers.
type cusParams struct {
	email, name, description, phone string
	paymentMethod, defaultPM        string
	metadata                        map[string]string
}

func customerParamKnown(name string) bool {
	switch name {
	case "email", "name", "description", "phone", "payment_method", "invoice_settings", "metadata", "expand":
		return true
	}
	return false
}

func customerNested(name string, parts []string) bool {
	return name == "invoice_settings" && len(parts) == 1 && parts[0] == "default_payment_method"
}

func parseCustomer(form url.Values) (*cusParams, *failure) {
	if f := checkParams(form, customerParamKnown, customerNested); f != nil {
		return nil, f
	}
	p := &cusParams{
		email: str(form, "email"), name: str(form, "name"), description: str(form, "description"),
		phone: str(form, "phone"), paymentMethod: str(form, "payment_method"),
		defaultPM: str(form, "invoice_settings[default_payment_method]"),
	}
	if p.email != "" && (!strings.Contains(p.email, "@") || strings.ContainsAny(p.email, " \t")) {
		return nil, invalidRequest("email_invalid", "email", "Invalid email address: "+p.email)
	}
	var f *failure
	if p.metadata, f = parseMetadata(form); f != nil {
		return nil, f
	}
	return p, nil
}

type cusPlan struct {
	id string
}

func (s *Sim) planCustomerLocked(x *exchange) *failure {
	p := x.cus
	if p.paymentMethod != "" {
		if _, ok := lookupTestCard(p.paymentMethod); !ok {
			return resourceMissing(400, "payment_method", "PaymentMethod", p.paymentMethod)
		}
	}
	if p.defaultPM != "" && p.defaultPM != p.paymentMethod {
		return invalidRequest("resource_missing", "invoice_settings[default_payment_method]",
			"The customer does not have a payment method with the ID "+p.defaultPM+". The payment method must be attached to the customer.")
	}
	x.cusPlan = &cusPlan{id: randomID(s.ids, "cus_", shortID)}
	return nil
}

func buildCustomer(x *exchange) (response, *record[Customer]) {
	p := x.cus
	c := Customer{
		ID: x.cusPlan.id, Email: p.email, Name: p.name, Phone: p.phone, Description: p.description,
		DefaultPaymentMethod: p.defaultPM, Metadata: p.metadata, Created: x.now, IdempotencyKey: x.idemKey,
	}
	if p.paymentMethod != "" {
		c.PaymentMethods = []string{p.paymentMethod}
	}
	js := encodeCustomer(&c)
	return response{status: 200, body: js}, &record[Customer]{id: c.ID, created: c.Created, meta: c.Metadata, obj: c, json: js}
}

// listCustomersLocked answers GET /v1/customers: newest first, with
// limit, starting_after and email.
func (s *Sim) listCustomersLocked(lr listRequest) (listing, *failure) {
	l := listing{object: "list", url: "/v1/customers"}
	all := s.customers.all
	i := len(all) - 1
	if lr.startingAfter != "" {
		start := s.customers.byID[lr.startingAfter]
		if start == nil {
			return l, resourceMissing(400, "starting_after", "customer", lr.startingAfter)
		}
		i = slices.Index(all, start) - 1
	}
	for ; i >= 0; i-- {
		r := all[i]
		if lr.email != "" && r.obj.Email != lr.email {
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

// AddCustomer stores a customer directly, bypassing the API, for test
// setup. An empty ID gets a generated cus_ id, a zero Created gets the
// clock's time, and a DefaultPaymentMethod missing from PaymentMethods is
// attached. It fails with ErrExists or ErrUnknownPaymentMethod.
func (s *Sim) AddCustomer(c Customer) (Customer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addCustomerLocked(c)
}

func (s *Sim) addCustomerLocked(c Customer) (Customer, error) {
	c = c.clone()
	if c.ID == "" {
		c.ID = randomID(s.ids, "cus_", shortID)
	}
	if s.customers.byID[c.ID] != nil {
		return Customer{}, fmt.Errorf("add customer %s: %w", c.ID, ErrExists)
	}
	if c.DefaultPaymentMethod != "" && !slices.Contains(c.PaymentMethods, c.DefaultPaymentMethod) {
		c.PaymentMethods = append(c.PaymentMethods, c.DefaultPaymentMethod)
	}
	for _, pm := range c.PaymentMethods {
		if _, ok := lookupTestCard(pm); !ok {
			return Customer{}, fmt.Errorf("add customer %s: %s: %w", c.ID, pm, ErrUnknownPaymentMethod)
		}
	}
	if c.Created.IsZero() {
		c.Created = s.clock.Now()
	}
	s.customers.add(&record[Customer]{id: c.ID, created: c.Created, meta: c.Metadata, obj: c, json: encodeCustomer(&c)})
	return c.clone(), nil
}

// Customers returns snapshots of every customer, fixtures included, oldest first.
func (s *Sim) Customers() []Customer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Customer, len(s.customers.all))
	for i, r := range s.customers.all {
		out[i] = r.obj.clone()
	}
	return out
}

// addFixtures installs the objects the package documentation promises.
func (s *Sim) addFixtures() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range []Price{
		{ID: "price_basic_monthly", Product: "prod_basic", Currency: "usd", UnitAmount: 900, Interval: "month", Nickname: "Basic monthly"},
		{ID: "price_pro_monthly", Product: "prod_pro", Currency: "usd", UnitAmount: 2900, Interval: "month", Nickname: "Pro monthly"},
	} {
		if _, err := s.addPriceLocked(p); err != nil {
			panic(err) // fixtures are constants; failing here is a bug
		}
	}
	for _, c := range []Customer{
		{ID: "cus_demo", Email: "demo@example.com", Name: "Demo Customer", DefaultPaymentMethod: "pm_card_visa"},
		{ID: "cus_declined", Email: "declined@example.com", Name: "Declined Customer", DefaultPaymentMethod: "pm_card_chargeDeclined"},
	} {
		if _, err := s.addCustomerLocked(c); err != nil {
			panic(err)
		}
	}
}
