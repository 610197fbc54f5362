package stripesim

import (
	"fmt"
	"strings"
)

type cardOutcome int

const (
	cardSucceeds cardOutcome = iota
	cardDeclines
	cardRequiresAction // 3-D Secure: requires_action on session, a decline off session
)

// testCard is one of Stripe's magic test payment methods and what charging it does.
type testCard struct {
	id, brand, last4, funding string
	outcome                   cardOutcome
	code, declineCode, msg    string
}

// lookupTestCard knows the test payment methods the simulator accepts. They
// are Stripe's documented ones, so code written against the simulator works
// against Stripe test mode unchanged.
func lookupTestCard(id string) (testCard, bool) {
	const (
		declined     = "Your card was declined."
		cardDeclined = "card_declined"
	)
	c := testCard{id: id, brand: "visa", funding: "credit"}
	switch id {
	case "pm_card_visa":
		c.last4 = "4242"
	case "pm_card_visa_debit":
		c.last4, c.funding = "5556", "debit"
	case "pm_card_mastercard":
		c.brand, c.last4 = "mastercard", "4444"
	case "pm_card_amex":
		c.brand, c.last4 = "amex", "8431"
	case "pm_card_chargeDeclined":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "0002", cardDeclines, cardDeclined, "generic_decline", declined
	case "pm_card_chargeDeclinedInsufficientFunds":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "9995", cardDeclines, cardDeclined, "insufficient_funds", "Your card has insufficient funds."
	case "pm_card_chargeDeclinedLostCard":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "9987", cardDeclines, cardDeclined, "lost_card", declined
	case "pm_card_chargeDeclinedStolenCard":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "9979", cardDeclines, cardDeclined, "stolen_card", declined
	case "pm_card_chargeDeclinedFraudulent":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "0019", cardDeclines, cardDeclined, "fraudulent", declined
	case "pm_card_chargeDeclinedExpiredCard":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "0069", cardDeclines, "expired_card", "expired_card", "Your card has expired."
	case "pm_card_chargeDeclinedIncorrectCvc":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "0127", cardDeclines, "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."
	case "pm_card_chargeDeclinedProcessingError":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "0119", cardDeclines, "processing_error", "processing_error", "An error occurred while processing your card. Try again in a little bit."
	case "pm_card_authenticationRequired":
		c.last4, c.outcome, c.code, c.declineCode, c.msg = "3184", cardRequiresAction, "authentication_required", "authentication_required", "Your card was declined. This transaction requires authentication."
	default:
		return testCard{}, false
	}
	return c, true
}

// minimumAmount is Stripe's minimum charge per currency in the smallest unit,
// and 0 for a currency the simulator does not know.
func minimumAmount(currency string) int64 {
	switch currency {
	case "usd", "eur", "cad", "aud", "nzd", "sgd", "chf", "brl", "inr", "jpy":
		return 50
	case "gbp":
		return 30
	case "dkk":
		return 250
	case "sek", "nok":
		return 300
	case "hkd":
		return 400
	case "pln":
		return 200
	case "mxn":
		return 1000
	case "czk":
		return 1500
	}
	return 0
}

func zeroDecimal(currency string) bool { return currency == "jpy" }

const maxAmount = 99999999

func amountTooSmall(currency string, min int64) *failure {
	amount := fmt.Sprintf("%d.%02d", min/100, min%100)
	if zeroDecimal(currency) {
		amount = fmt.Sprint(min)
	}
	return invalidRequest("amount_too_small", "amount", "Amount must be at least "+amount+" "+currency)
}

func amountTooLarge() *failure {
	return invalidRequest("amount_too_large", "amount", "Amount must be no more than 999,999.99")
}

func unknownCurrency(param, c string) *failure {
	return invalidValue(param, "Invalid currency: "+strings.ToLower(c)+". Stripe currently supports these currencies (simulated): usd, eur, gbp, cad, aud, nzd, sgd, chf, brl, inr, jpy, dkk, sek, nok, hkd, pln, mxn, czk")
}

// declineFailure is the 402 card_error for a failed confirmation.
func declineFailure(c testCard, chargeID string, pi, pm []byte) *failure {
	return &failure{status: 402, err: apiError{
		Type: typeCard, Code: c.code, DeclineCode: c.declineCode, Message: c.msg,
		DocURL: docURL(c.code), Charge: chargeID, PaymentIntent: pi, PaymentMethod: pm,
	}}
}
