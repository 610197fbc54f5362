package stripesim

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

type cardOutcome int

const (
	cardSucceeds  cardOutcome = iota
	cardDeclines              // with the card's decline
	cardProcesses             // stays processing until settled (simulator-only)
)

// authRule says when a card asks for 3-D Secure.
type authRule int

const (
	_ authRule = iota // the zero value: never asks
	// authAlways: requires_action on session; off session, where nobody can
	// authenticate, a 402 authentication_required decline.
	authAlways
	// authUnlessSetUp: like authAlways, except that off-session payments
	// succeed once the card was set up for them (authenticated on session
	// with setup_future_usage=off_session for the same customer).
	authUnlessSetUp
)

// decline is what a declined charge reports.
type decline struct {
	code, declineCode, msg string
}

// authRequired is the decline of a card that needs authentication when
// nobody is there to authenticate.
var authRequired = decline{"authentication_required", "authentication_required", "Your card was declined. This transaction requires authentication."}

// refundBehavior is what refunding a charge of the card does.
type refundBehavior int

const (
	refundSucceeds   refundBehavior = iota // succeeded at once, for good
	refundPends                            // pending until settled (pm_card_pendingRefund)
	refundFailsLater                       // succeeded, then failed when settled (pm_card_refundFail)
)

// testCard is one of Stripe's magic test payment methods and what charging it does.
type testCard struct {
	id, brand, last4, funding string
	auth                      authRule
	outcome                   cardOutcome    // once any authentication is done
	decline                   decline        // for cardDeclines
	refund                    refundBehavior // of its charges
}

// attempt is what one confirmation of a card does.
type attempt int

const (
	attemptSucceeds attempt = iota
	attemptNeedsAction
	attemptProcessing
	attemptDeclined
)

// confirm decides a confirmation: offSession means nobody is there to
// authenticate; setUp that the card was set up for off-session use.
func (c testCard) confirm(offSession, setUp bool) (attempt, decline) {
	needsAuth := c.auth == authAlways || c.auth == authUnlessSetUp && !(offSession && setUp)
	switch {
	case needsAuth && offSession:
		return attemptDeclined, authRequired
	case needsAuth:
		return attemptNeedsAction, decline{}
	}
	return c.charge()
}

// charge is what the card does once authentication (if any) is done.
func (c testCard) charge() (attempt, decline) {
	switch c.outcome {
	case cardDeclines:
		return attemptDeclined, c.decline
	case cardProcesses:
		return attemptProcessing, decline{}
	}
	return attemptSucceeds, decline{}
}

// SimProcessingPaymentMethod is a simulator-only test payment method, not
// one of Stripe's: confirming it leaves the PaymentIntent processing until
// Settle (or POST /_sim/payment_intents/{id}/settle) decides the outcome.
// Stripe's cards settle synchronously, so this is the only way to exercise
// a client's handling of processing.
const SimProcessingPaymentMethod = "pm_card_simProcessing"

// lookupTestCard knows the test payment methods the simulator accepts. They
// are Stripe's documented ones (but SimProcessingPaymentMethod), so code
// written against the simulator works against Stripe test mode unchanged.
func lookupTestCard(id string) (testCard, bool) {
	const declined = "Your card was declined."
	c := testCard{id: id, brand: "visa", funding: "credit"}
	declines := func(last4, code, declineCode, msg string) {
		c.last4, c.outcome, c.decline = last4, cardDeclines, decline{code, declineCode, msg}
	}
	insufficient := "Your card has insufficient funds."
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
		declines("0002", "card_declined", "generic_decline", declined)
	case "pm_card_chargeDeclinedInsufficientFunds":
		declines("9995", "card_declined", "insufficient_funds", insufficient)
	case "pm_card_chargeDeclinedLostCard":
		declines("9987", "card_declined", "lost_card", declined)
	case "pm_card_chargeDeclinedStolenCard":
		declines("9979", "card_declined", "stolen_card", declined)
	case "pm_card_chargeDeclinedFraudulent":
		declines("0019", "card_declined", "fraudulent", declined)
	case "pm_card_chargeDeclinedExpiredCard":
		declines("0069", "expired_card", "expired_card", "Your card has expired.")
	case "pm_card_chargeDeclinedIncorrectCvc":
		declines("0127", "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.")
	case "pm_card_chargeDeclinedProcessingError":
		declines("0119", "processing_error", "processing_error", "An error occurred while processing your card. Try again in a little bit.")
	case "pm_card_authenticationRequired":
		c.last4, c.auth = "3184", authAlways
	case "pm_card_threeDSecure2Required":
		c.last4, c.auth = "3220", authAlways
	case "pm_card_authenticationRequiredOnSetup":
		c.last4, c.auth = "3155", authUnlessSetUp
	case "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds":
		declines("3178", "card_declined", "insufficient_funds", insufficient)
		c.auth = authAlways
	case "pm_card_pendingRefund":
		c.last4, c.refund = "7726", refundPends
	case "pm_card_refundFail":
		c.last4, c.refund = "5126", refundFailsLater
	case SimProcessingPaymentMethod:
		c.last4, c.outcome = "0000", cardProcesses
	default:
		return testCard{}, false
	}
	return c, true
}

// minimumAmount is Stripe's minimum charge per currency in the smallest unit,
// and 0 for a currency the simulator does not know. The documented minimums
// are Stripe's; for the other card currencies Stripe's minimum is the
// equivalent of 0.50 USD at the day's rate, which the simulator does not
// model: it takes 50 of the minor unit, so a client that cannot know the
// minimum still meets Stripe's refusal.
func minimumAmount(currency string) int64 {
	if m, ok := documentedMinimum[currency]; ok {
		return m
	}
	if cardCurrencies[currency] {
		return 50
	}
	return 0
}

var documentedMinimum = map[string]int64{
	"usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
	"dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
	"myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}

// cardCurrencies are the presentment currencies Stripe accepts for cards.
var cardCurrencies = wordSet(`aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd bwp bzd
cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd
hnl htg huf idr ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mnt
mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar
sbd scr sek sgd shp sll sos srd szl thb tjs top try ttd twd tzs uah ugx usd uyu uzs vnd vuv wst xaf xcd
xof xpf yer zar zmw`)

var zeroDecimalCurrencies = wordSet(`bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf`)

func wordSet(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

func zeroDecimal(currency string) bool { return zeroDecimalCurrencies[currency] }

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
	return invalidValue(param, "Invalid currency: "+strings.ToLower(c)+". Stripe currently supports these currencies: "+strings.Join(slices.Sorted(maps.Keys(cardCurrencies)), ", "))
}

// declineFailure is the 402 card_error for a failed confirmation.
func declineFailure(d decline, chargeID string, pi, pm []byte) *failure {
	return &failure{status: 402, err: apiError{
		Type: typeCard, Code: d.code, DeclineCode: d.declineCode, Message: d.msg,
		DocURL: docURL(d.code), Charge: chargeID, PaymentIntent: pi, PaymentMethod: pm,
	}}
}
