package stripesim

import (
	"net/url"
	"strings"
	"time"
)

// piParams are the parsed parameters of POST /v1/payment_intents.
type piParams struct {
	amount        int64
	currency      string
	customer      string
	paymentMethod string
	description   string
	captureMethod string
	returnURL     string
	sfu           string
	receiptEmail  string
	confirm       bool
	offSession    bool
	pmTypes       []string
	apm           *apmWire
	metadata      map[string]string
}

func paymentIntentParamKnown(name string) bool {
	switch name {
	case "amount", "currency", "customer", "payment_method", "confirm", "off_session",
		"description", "payment_method_types", "automatic_payment_methods", "metadata",
		"return_url", "receipt_email", "capture_method", "setup_future_usage", "expand",
		"statement_descriptor", "statement_descriptor_suffix":
		return true
	}
	return false
}

func paymentIntentNested(name string, parts []string) bool {
	switch name {
	case "automatic_payment_methods":
		return len(parts) == 1 && (parts[0] == "enabled" || parts[0] == "allow_redirects")
	case "payment_method_types":
		return len(parts) == 1
	}
	return false
}

// apmDefaultVersion is the first API version in which PaymentIntents
// without payment_method_types have automatic_payment_methods enabled.
const apmDefaultVersion = "2023-08-16"

// parsePaymentIntent validates parameters the way Stripe does before it
// executes anything; its failures are never cached.
func parsePaymentIntent(form url.Values, version string) (*piParams, *failure) {
	if f := checkParams(form, paymentIntentParamKnown, paymentIntentNested); f != nil {
		return nil, f
	}
	p := &piParams{}
	var f *failure
	if !has(form, "amount") {
		return nil, paramMissing("amount")
	}
	if p.amount, f = parseInt(form, "amount"); f != nil {
		return nil, f
	}
	if p.amount < 1 {
		return nil, invalidRequest("parameter_invalid_integer", "amount", "This value must be greater than or equal to 1.")
	}
	if !has(form, "currency") {
		return nil, paramMissing("currency")
	}
	p.currency = strings.ToLower(str(form, "currency"))
	if minimumAmount(p.currency) == 0 {
		return nil, unknownCurrency("currency", p.currency)
	}
	for _, name := range [...]string{"customer", "payment_method"} {
		if has(form, name) && str(form, name) == "" {
			return nil, invalidEmpty(name)
		}
	}
	p.customer = str(form, "customer")
	p.paymentMethod = str(form, "payment_method")
	p.description = str(form, "description")
	p.returnURL = str(form, "return_url")
	p.receiptEmail = str(form, "receipt_email")
	if p.confirm, f = parseBool(form, "confirm"); f != nil {
		return nil, f
	}
	switch v := str(form, "off_session"); v {
	case "", "false":
	case "true", "one_off", "recurring":
		p.offSession = true
	default:
		return nil, invalidValue("off_session", "Invalid off_session: must be a boolean, one_off or recurring")
	}
	if p.offSession && !p.confirm {
		return nil, invalidValue("off_session", "You can only pass off_session when confirm is true.")
	}
	switch p.captureMethod = str(form, "capture_method"); p.captureMethod {
	case "":
		p.captureMethod = "automatic"
	case "automatic", "automatic_async", "manual":
	default:
		return nil, invalidValue("capture_method", "Invalid capture_method: must be one of automatic, automatic_async, or manual")
	}
	switch p.sfu = str(form, "setup_future_usage"); p.sfu {
	case "", "on_session", "off_session":
	default:
		return nil, invalidValue("setup_future_usage", "Invalid setup_future_usage: must be one of on_session or off_session")
	}
	types, f := indexed(form, "payment_method_types")
	if f != nil {
		return nil, f
	}
	for _, i := range sortedIndexes(types) {
		t := types[i][""]
		if t != "card" {
			return nil, invalidValue("payment_method_types", "The payment method type \""+t+"\" is invalid (stripesim simulates card only).")
		}
		p.pmTypes = append(p.pmTypes, t)
	}
	apmGiven := has(form, "automatic_payment_methods[enabled]") || has(form, "automatic_payment_methods[allow_redirects]")
	if apmGiven {
		if !has(form, "automatic_payment_methods[enabled]") {
			return nil, paramMissing("automatic_payment_methods[enabled]")
		}
		enabled, f := parseBool(form, "automatic_payment_methods[enabled]")
		if f != nil {
			return nil, f
		}
		if enabled {
			p.apm = &apmWire{Enabled: true, AllowRedirects: "always"}
			switch ar := str(form, "automatic_payment_methods[allow_redirects]"); ar {
			case "", "always":
			case "never":
				p.apm.AllowRedirects = ar
			default:
				return nil, invalidValue("automatic_payment_methods[allow_redirects]", "Invalid automatic_payment_methods[allow_redirects]: must be one of always or never")
			}
		}
	}
	if p.apm != nil && len(p.pmTypes) > 0 {
		return nil, invalidRequest("parameters_exclusive", "automatic_payment_methods",
			"You may only specify one of these parameters: automatic_payment_methods, payment_method_types.")
	}
	if !apmGiven && len(p.pmTypes) == 0 && (version == "" || version >= apmDefaultVersion) {
		p.apm = &apmWire{Enabled: true, AllowRedirects: "always"}
	}
	if len(p.pmTypes) == 0 {
		p.pmTypes = []string{"card"}
	}
	if p.confirm && p.apm != nil && p.apm.AllowRedirects != "never" && p.returnURL == "" {
		return nil, invalidValue("return_url", "This PaymentIntent is configured to accept payment methods enabled in your Dashboard, because automatic_payment_methods is enabled. Some of these payment methods require a full page redirect to succeed, so you must provide a return_url. If you do not want to accept redirect-based payment methods, set automatic_payment_methods[enabled] to true and automatic_payment_methods[allow_redirects] to never when creating Setup Intents and Payment Intents.")
	}
	if p.metadata, f = parseMetadata(form); f != nil {
		return nil, f
	}
	return p, nil
}

// piPlan is what execution decided under the lock.
type piPlan struct {
	id, secret, chargeID string
	card                 testCard
	setUp                bool // the card is set up for off-session use by the customer
}

// planPaymentIntentLocked checks the request against state. Its failures
// are executed errors, cached under the idempotency key.
func (s *Sim) planPaymentIntentLocked(x *exchange) *failure {
	p := x.pi
	if p.customer != "" && s.customers.byID[p.customer] == nil {
		return resourceMissing(400, "customer", "customer", p.customer)
	}
	var card testCard
	if p.paymentMethod != "" {
		c, ok := lookupTestCard(p.paymentMethod)
		if !ok {
			return resourceMissing(400, "payment_method", "PaymentMethod", p.paymentMethod)
		}
		card = c
	}
	if min := minimumAmount(p.currency); p.amount < min {
		return amountTooSmall(p.currency, min)
	}
	if p.amount > maxAmount {
		return amountTooLarge()
	}
	if p.confirm && p.paymentMethod == "" {
		return invalidRequest("payment_intent_unexpected_state", "",
			"You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.")
	}
	id := randomID(s.ids, "pi_", longID)
	x.piPlan = &piPlan{
		id:       id,
		secret:   randomID(s.ids, id+"_secret_", 25),
		chargeID: randomID(s.ids, "ch_", longID),
		card:     card,
		setUp:    s.setUp[setUpKey(p.customer, p.paymentMethod)],
	}
	return nil
}

// buildPaymentIntent creates the PaymentIntent and confirms it if asked. A
// declined confirmation still creates the object; the 402 embeds it.
func buildPaymentIntent(x *exchange) (response, *record[piState]) {
	p, pl := x.pi, x.piPlan
	st := piState{
		PaymentIntent: PaymentIntent{
			ID: pl.id, Amount: p.amount, Currency: p.currency, Customer: p.customer,
			PaymentMethod: p.paymentMethod, CaptureMethod: p.captureMethod, Description: p.description,
			Metadata: p.metadata, OffSession: p.offSession, ClientSecret: pl.secret,
			Created: x.now, IdempotencyKey: x.idemKey,
		},
		enc:       piEncoding{apm: p.apm, pmTypes: p.pmTypes, sfu: p.sfu, receipt: p.receiptEmail},
		card:      pl.card,
		returnURL: p.returnURL,
		hostedURL: hostedPage(x.baseURL, pl.id),
	}
	declined := false
	switch {
	case !p.confirm && p.paymentMethod == "":
		st.Status = "requires_payment_method"
	case !p.confirm:
		st.Status = "requires_confirmation"
	default:
		a, d := pl.card.confirm(p.offSession, pl.setUp)
		st.apply(a, d, pl.chargeID, x.now)
		declined = a == attemptDeclined
	}
	js := encodePaymentIntent(&st)
	rec := &record[piState]{id: st.ID, created: x.now, meta: st.Metadata, obj: st, json: js}
	if declined {
		return declineFailure(declineOf(st.LastPaymentError), st.LatestCharge, js, st.enc.failedPM).response(), rec
	}
	return response{status: 200, body: js}, rec
}

// apply moves a PaymentIntent to the outcome of a payment attempt.
// chargeID names the charge an attempt that reached the card network made.
func (p *piState) apply(a attempt, d decline, chargeID string, now time.Time) {
	p.NextAction, p.LastPaymentError, p.enc.failedPM = "", nil, nil
	switch a {
	case attemptSucceeds:
		p.LatestCharge = chargeID
		if p.CaptureMethod == "manual" {
			p.Status, p.AmountCapturable = "requires_capture", p.Amount
		} else {
			p.Status, p.AmountCapturable, p.AmountReceived = "succeeded", 0, p.Amount
		}
	case attemptNeedsAction:
		p.Status, p.NextAction = "requires_action", "use_stripe_sdk"
		if p.returnURL != "" {
			p.NextAction = "redirect_to_url"
		}
	case attemptProcessing:
		p.Status, p.LatestCharge = "processing", chargeID
	case attemptDeclined:
		p.fail(&PaymentError{Type: typeCard, Code: d.code, DeclineCode: d.declineCode, Message: d.msg,
			PaymentMethod: p.card.id, Charge: chargeID}, now)
		p.LatestCharge = chargeID
	}
}

// fail returns the PaymentIntent to requires_payment_method after a failed
// attempt; the payment method is detached, as Stripe does.
func (p *piState) fail(e *PaymentError, now time.Time) {
	p.Status, p.NextAction, p.PaymentMethod = "requires_payment_method", "", ""
	p.AmountCapturable = 0
	p.LastPaymentError = e
	p.enc.failedPM = encodePaymentMethod(p.card, now)
}

func declineOf(e *PaymentError) decline {
	return decline{code: e.Code, declineCode: e.DeclineCode, msg: e.Message}
}

// hostedPage is the simulator's stand-in for Stripe's hosted 3-D Secure
// test page of a PaymentIntent.
func hostedPage(baseURL, id string) string {
	return baseURL + "/_sim/payment_intents/" + id + "/authenticate"
}

func setUpKey(customer, pm string) string { return customer + "\x00" + pm }

// PaymentIntents returns snapshots of every PaymentIntent, invoices' ones
// included, oldest first.
func (s *Sim) PaymentIntents() []PaymentIntent {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyDueLocked(s.clock.Now())
	out := make([]PaymentIntent, len(s.pis.all))
	for i, r := range s.pis.all {
		out[i] = r.obj.PaymentIntent.clone()
	}
	return out
}

// captureParams are the parsed parameters of POST /v1/payment_intents/{id}/capture.
type captureParams struct {
	amount int64 // amount_to_capture, 0 for all of amount_capturable
}

func parseCapture(form url.Values) (*captureParams, *failure) {
	known := func(name string) bool { return name == "amount_to_capture" || name == "expand" }
	if f := checkParams(form, known, nil); f != nil {
		return nil, f
	}
	p := &captureParams{}
	if has(form, "amount_to_capture") {
		n, f := parseInt(form, "amount_to_capture")
		if f != nil {
			return nil, f
		}
		if n < 1 {
			return nil, invalidRequest("parameter_invalid_integer", "amount_to_capture", "This value must be greater than or equal to 1.")
		}
		p.amount = n
	}
	return p, nil
}

// parseCancel returns the cancellation_reason of POST
// /v1/payment_intents/{id}/cancel.
func parseCancel(form url.Values) (string, *failure) {
	known := func(name string) bool { return name == "cancellation_reason" || name == "expand" }
	if f := checkParams(form, known, nil); f != nil {
		return "", f
	}
	switch r := str(form, "cancellation_reason"); r {
	case "", "duplicate", "fraudulent", "requested_by_customer", "abandoned":
		return r, nil
	default:
		return "", invalidValue("cancellation_reason", "Invalid cancellation_reason: must be one of duplicate, fraudulent, requested_by_customer, or abandoned")
	}
}
