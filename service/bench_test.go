package service

import "testing"

// benchCharge is a typical Charge: a card, a description and a few metadata
// pairs (the fingerprint sorts them, so their number matters).
func benchCharge(id string) ChargeRequest {
	return ChargeRequest{
		RequestID: id, Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa",
		Description: "order 1001", Metadata: map[string]string{"order_id": "1001", "cart": "c-77", "channel": "web"},
	}
}

// BenchmarkFingerprint is what every Charge costs before it touches the
// store: the canonical encoding and its SHA-256.
func BenchmarkFingerprint(b *testing.B) {
	for _, tt := range []struct {
		name string
		req  ChargeRequest
	}{
		{"no-metadata", ChargeRequest{RequestID: "r", Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa"}},
		{"metadata=3", benchCharge("r")},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if fp := Fingerprint(tt.req.encode()); len(fp) != 32 {
					b.Fatal("short fingerprint")
				}
			}
		})
	}
}

// BenchmarkDecodeParams is the stored-params decode a new charge pays in
// send before calling Stripe.
func BenchmarkDecodeParams(b *testing.B) {
	req := benchCharge("r")
	enc := req.encode()
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeParams(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKeys is the two key derivations (two SHA-256 and base64) every
// call that starts a drive pays in newRecord, replays included.
func BenchmarkKeys(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if k := StripeKey("acme", "order-1001", "create_payment_intent"); len(k) != 47 {
			b.Fatal(k)
		}
		_ = RequestKey("acme", "order-1001")
	}
}
