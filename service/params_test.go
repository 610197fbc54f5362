package service

import (
	"bytes"
	"strings"
	"testing"
)

func TestFingerprintIsCanonical(t *testing.T) {
	t.Parallel()
	a := ChargeRequest{RequestID: "a", Amount: 100, Currency: "usd", PaymentMethodID: "pm_card_visa",
		Metadata: map[string]string{"x": "1", "y": "2", "z": "3"}}
	b := a
	b.RequestID = "b" // request_id is not part of the fingerprint
	b.Metadata = map[string]string{"z": "3", "x": "1", "y": "2"}
	if !bytes.Equal(Fingerprint(a.encode()), Fingerprint(b.encode())) {
		t.Error("equal requests fingerprint differently")
	}
	tests := []struct {
		name string
		mut  func(r *ChargeRequest)
	}{
		{"amount", func(r *ChargeRequest) { r.Amount++ }},
		{"currency", func(r *ChargeRequest) { r.Currency = "eur" }},
		{"customer", func(r *ChargeRequest) { r.CustomerID = "cus_1" }},
		{"payment method", func(r *ChargeRequest) { r.PaymentMethodID = "pm_card_mastercard" }},
		{"description", func(r *ChargeRequest) { r.Description = "x" }},
		{"metadata value", func(r *ChargeRequest) { r.Metadata = map[string]string{"x": "1", "y": "2", "z": "4"} }},
		// Length prefixes keep field boundaries: moving bytes between fields changes the encoding.
		{"boundary", func(r *ChargeRequest) { r.Metadata = map[string]string{"x": "1", "y": "2z", "": "3"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := a
			tt.mut(&c)
			if bytes.Equal(Fingerprint(a.encode()), Fingerprint(c.encode())) {
				t.Error("different requests share a fingerprint")
			}
		})
	}
	s := SubscribeRequest{CustomerID: "cus_1", PriceID: "price_1", Quantity: 1}
	if bytes.Equal(Fingerprint(s.encode()), Fingerprint((&ChargeRequest{}).encode())) {
		t.Error("methods share a fingerprint")
	}
}

func TestParamsRoundTrip(t *testing.T) {
	t.Parallel()
	c := &ChargeRequest{Amount: 5, Currency: "jpy", CustomerID: "cus_9", PaymentMethodID: "pm_x", Description: "d", Metadata: map[string]string{"k": "v"}}
	got, err := decodeParams(c.encode())
	if err != nil {
		t.Fatal(err)
	}
	if g := got.(*ChargeRequest); g.Amount != 5 || g.Currency != "jpy" || g.CustomerID != "cus_9" || g.PaymentMethodID != "pm_x" || g.Description != "d" || g.Metadata["k"] != "v" {
		t.Errorf("decoded %+v", g)
	}
	s := &SubscribeRequest{CustomerID: "cus_1", PriceID: "price_1", Quantity: 3}
	got, err = decodeParams(s.encode())
	if err != nil {
		t.Fatal(err)
	}
	if g := got.(*SubscribeRequest); g.CustomerID != "cus_1" || g.PriceID != "price_1" || g.Quantity != 3 || g.Metadata != nil {
		t.Errorf("decoded %+v", g)
	}
	for _, bad := range [][]byte{nil, {9}, c.encode()[:5], append(c.encode(), 0)} {
		if _, err := decodeParams(bad); err == nil {
			t.Errorf("decodeParams(%x) accepted", bad)
		}
	}
}

func TestStripeKeyIsDeterministicAndScoped(t *testing.T) {
	t.Parallel()
	k := StripeKey("caller_a", "order-1", "create_payment_intent")
	if k != StripeKey("caller_a", "order-1", "create_payment_intent") {
		t.Error("not deterministic")
	}
	for _, other := range []string{
		StripeKey("caller_b", "order-1", "create_payment_intent"),
		StripeKey("caller_a", "order-2", "create_payment_intent"),
		StripeKey("caller_a", "order-1", "create_subscription"),
		// The separator keeps ("a", "b\x00c") and ("a\x00b", "c") apart... as long as callers have no NUL.
		StripeKey("caller_ao", "rder-1", "create_payment_intent"),
	} {
		if other == k {
			t.Errorf("key collision: %s", k)
		}
	}
	if !strings.HasPrefix(k, "bd1_") || len(k) > 255 || strings.Contains(k, "order-1") {
		t.Errorf("key %q", k)
	}
}

func FuzzParamsDecode(f *testing.F) {
	f.Add((&ChargeRequest{Amount: 1, Currency: "usd", PaymentMethodID: "pm_card_visa", Metadata: map[string]string{"a": "b"}}).encode())
	f.Add((&SubscribeRequest{CustomerID: "cus_1", PriceID: "price_1", Quantity: 2}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeParams(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same canonical bytes.
		var again []byte
		switch p := p.(type) {
		case *ChargeRequest:
			again = p.encode()
		case *SubscribeRequest:
			again = p.encode()
		}
		if !bytes.Equal(again, b) {
			t.Errorf("decode/encode not canonical: %x → %x", b, again)
		}
	})
}

// off_session and capture_method join the fingerprint only when they change
// the payment: a request without them encodes exactly as before they
// existed (stored fingerprints keep their meaning), and a spelling of what
// Stripe does anyway is the same request.
func TestNewerChargeFieldsFingerprint(t *testing.T) {
	t.Parallel()
	yes, no := true, false
	base := ChargeRequest{Amount: 100, Currency: "usd", PaymentMethodID: "pm_card_visa", CustomerID: "cus_1"}
	// The encoding of base as it was before the fields existed.
	legacy := []byte{paramsVersion, 6, 'C', 'h', 'a', 'r', 'g', 'e', 0xc8, 0x01, 3, 'u', 's', 'd',
		5, 'c', 'u', 's', '_', '1', 12, 'p', 'm', '_', 'c', 'a', 'r', 'd', '_', 'v', 'i', 's', 'a', 0, 0}
	if got := base.encode(); !bytes.Equal(got, legacy) {
		t.Fatalf("encode() = %v, want the legacy bytes %v", got, legacy)
	}
	same := []func(r *ChargeRequest){
		func(r *ChargeRequest) { r.CaptureMethod = "automatic" },
		func(r *ChargeRequest) { r.OffSession = &yes }, // a customer_id already meant off session
	}
	for i, mut := range same {
		c := base
		mut(&c)
		c.canonical()
		if !bytes.Equal(c.encode(), legacy) {
			t.Errorf("spelling %d: %v, want the legacy bytes", i, c.encode())
		}
	}
	differ := []func(r *ChargeRequest){
		func(r *ChargeRequest) { r.CaptureMethod = "manual" },
		func(r *ChargeRequest) { r.OffSession = &no },
	}
	for i, mut := range differ {
		c := base
		mut(&c)
		c.canonical()
		if bytes.Equal(Fingerprint(c.encode()), Fingerprint(legacy)) {
			t.Errorf("change %d shares the legacy fingerprint", i)
		}
		got, err := decodeParams(c.encode())
		if err != nil {
			t.Fatalf("change %d: decode: %v", i, err)
		}
		g := got.(*ChargeRequest)
		if g.CaptureMethod != c.CaptureMethod || (g.OffSession == nil) != (c.OffSession == nil) ||
			(g.OffSession != nil && *g.OffSession != *c.OffSession) {
			t.Errorf("change %d: decoded %+v, want %+v", i, g, c)
		}
		if !bytes.Equal(g.encode(), c.encode()) {
			t.Errorf("change %d: decode then encode differs", i)
		}
	}
	// An explicit default written out is a second spelling: refused.
	bad := append(append([]byte{}, legacy...), 0, 0) // tri unset, capture ""
	if _, err := decodeParams(bad); err == nil {
		t.Error("decoded a non-canonical encoding")
	}
	if base.offSession() != true || (&ChargeRequest{}).offSession() != false || (&ChargeRequest{CustomerID: "cus_1", OffSession: &no}).offSession() {
		t.Error("offSession does not follow the caller, or the customer_id when unset")
	}
}
