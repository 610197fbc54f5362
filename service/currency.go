package service

import (
	"fmt"
	"strings"
)

// Stripe's rules for charge amounts, checked before anything is recorded: a
// request Stripe would refuse anyway costs no record, no Stripe call, and
// does not use its request_id up.

// currencies are the presentment currencies Stripe accepts for card
// payments (stripe-go v76's list, without those retired since: eek, hrk,
// ltl, lvl, mro, std, svc, vef).
var currencies = setOf(`aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bif bmd bnd bob brl bsd bwp bzd
cad cdf chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd
hnl htg huf idr ils inr isk jmd jpy kes kgs khr kmf krw kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mnt
mop mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar
sbd scr sek sgd shp sll sos srd szl thb tjs top try ttd twd tzs uah ugx usd uyu uzs vnd vuv wst xaf xcd
xof xpf yer zar zmw`)

// zeroDecimal currencies have no minor unit: an amount of 500 jpy is ¥500.
var zeroDecimal = setOf(`bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf`)

// minimumCharge is Stripe's documented minimum charge per currency, in its
// minor unit. Other currencies' minimum is the equivalent of 0.50 USD at the
// day's rate, which billingd cannot know: Stripe checks those.
var minimumCharge = map[string]int64{
	"usd": 50, "aed": 200, "aud": 50, "bgn": 100, "brl": 50, "cad": 50, "chf": 50, "czk": 1500,
	"dkk": 250, "eur": 50, "gbp": 30, "hkd": 400, "huf": 17500, "inr": 50, "jpy": 50, "mxn": 1000,
	"myr": 200, "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
}

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// checkAmount returns the violations of Stripe's rules for charging amount
// in currency (lowercase): a supported currency, at least the minimum, and
// ISK in whole krónur (Stripe takes ISK with two decimals that must be 00).
func checkAmount(amount int64, currency string) []FieldViolation {
	if !currencies[currency] {
		return []FieldViolation{{Field: "currency", Description: "must be a three-letter ISO 4217 code of a currency Stripe accepts for card payments, e.g. usd"}}
	}
	if min := minimumCharge[currency]; amount < min {
		return []FieldViolation{{Field: "amount", Description: fmt.Sprintf("below Stripe's minimum charge in %s: %s (amounts are in the currency's minor unit)",
			currency, formatMinor(min, currency))}}
	}
	if currency == "isk" && amount%100 != 0 {
		return []FieldViolation{{Field: "amount", Description: "isk amounts are whole krónur, written with two decimals: a multiple of 100 (500 is 5 kr)"}}
	}
	return nil
}

// formatMinor writes amount minor units of currency as the major amount
// ("0.50 usd", "50 jpy").
func formatMinor(amount int64, currency string) string {
	if zeroDecimal[currency] {
		return fmt.Sprintf("%d %s", amount, currency)
	}
	return fmt.Sprintf("%d.%02d %s", amount/100, amount%100, currency)
}
