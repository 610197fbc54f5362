package service

import (
	"bytes"
	"maps"
	"reflect"
	"testing"

	"buf.build/go/protovalidate"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// FuzzChargeValidateFingerprint feeds arbitrary ChargeRequest fields to the
// edge's protovalidate rules (which must never panic) and, for every request
// they accept, checks the fingerprint's promises: the canonical encoding is
// the same however the metadata map was built, decodes back to the same
// request, and changes when any parameter does.
func FuzzChargeValidateFingerprint(f *testing.F) {
	v, err := protovalidate.New()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("order-1", int64(2000), "usd", "", "pm_card_visa", "", "", "", "", "")
	f.Add("order-2", int64(99_999_999), "jpy", "cus_demo", "pm_card_mastercard", "a coffee", "order", "17", "z", "")
	f.Add("x", int64(1), "eur", "cus_1", "pm_1", "ünïcødé ☕", "k", "v", "k2", "v2")
	f.Add("a b", int64(0), "USD", "acct_1", "card_1", "", "billingd_caller", "x", "", "")
	f.Fuzz(func(t *testing.T, requestID string, amount int64, currency, customer, pm, desc, k1, v1, k2, v2 string) {
		meta := map[string]string{}
		if k1 != "" || v1 != "" {
			meta[k1] = v1
		}
		if k2 != "" || v2 != "" {
			meta[k2] = v2
		}
		msg := &billingv1.ChargeRequest{RequestId: requestID, Amount: amount, Currency: currency,
			CustomerId: customer, PaymentMethodId: pm, Description: desc, Metadata: meta}
		if v.Validate(msg) != nil {
			return
		}
		req := ChargeRequest{RequestID: requestID, Amount: amount, Currency: currency, CustomerID: customer,
			PaymentMethodID: pm, Description: desc, Metadata: meta}
		if checkRequest(req.RequestID, req.Metadata) != nil {
			t.Fatalf("the edge accepts what the service refuses: %+v", req)
		}
		enc := req.encode()

		// Same request, metadata built in the opposite order, another request_id.
		again := req
		again.RequestID = requestID + "-other"
		again.Metadata = make(map[string]string, len(meta))
		for _, k := range []string{k2, k1} {
			if val, ok := meta[k]; ok {
				again.Metadata[k] = val
			}
		}
		if !bytes.Equal(again.encode(), enc) || !bytes.Equal(Fingerprint(again.encode()), Fingerprint(enc)) {
			t.Fatalf("equal requests encode differently: %x vs %x", enc, again.encode())
		}

		// The stored encoding re-drives exactly this request.
		p, err := decodeParams(enc)
		if err != nil {
			t.Fatalf("decode own encoding: %v", err)
		}
		got, ok := p.(*ChargeRequest)
		if !ok {
			t.Fatalf("decoded %T", p)
		}
		want := req
		want.RequestID = ""
		if len(want.Metadata) == 0 {
			want.Metadata = nil
		}
		if !reflect.DeepEqual(*got, want) {
			t.Fatalf("round trip: got %+v, want %+v", *got, want)
		}

		// Any other parameter is another fingerprint.
		for _, other := range []ChargeRequest{
			withCharge(req, func(r *ChargeRequest) { r.Amount++ }),
			withCharge(req, func(r *ChargeRequest) { r.Currency += "x" }),
			withCharge(req, func(r *ChargeRequest) { r.CustomerID += "x" }),
			withCharge(req, func(r *ChargeRequest) { r.PaymentMethodID += "x" }),
			withCharge(req, func(r *ChargeRequest) { r.Description += "x" }),
			withCharge(req, func(r *ChargeRequest) { r.Metadata["zz-added"] = "" }),
		} {
			if bytes.Equal(Fingerprint(other.encode()), Fingerprint(enc)) {
				t.Fatalf("different requests share a fingerprint: %+v and %+v", req, other)
			}
		}
	})
}

func withCharge(r ChargeRequest, mut func(*ChargeRequest)) ChargeRequest {
	r.Metadata = maps.Clone(r.Metadata)
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	mut(&r)
	return r
}
