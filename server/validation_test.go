package server_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// TestEveryValidationRuleRejects breaks each rule of billing.proto once: the
// answer is INVALID_ARGUMENT with ErrorInfo INVALID_ARGUMENT and BadRequest
// field violations naming exactly the broken field, and nothing is recorded
// or sent to Stripe.
func TestEveryValidationRuleRejects(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()

	n := 0
	charge := func(mut func(r *billingv1.ChargeRequest)) func() error {
		n++
		r := visa(fmt.Sprintf("invalid-%d", n))
		r.CustomerId = "cus_demo"
		r.Description = "a valid description"
		r.Metadata = map[string]string{"order": "1"}
		mut(r)
		return func() error { _, err := h.client.Charge(ctx, r); return err }
	}
	subscribe := func(mut func(r *billingv1.SubscribeRequest)) func() error {
		n++
		r := &billingv1.SubscribeRequest{RequestId: fmt.Sprintf("invalid-%d", n), CustomerId: "cus_demo",
			PriceId: "price_basic_monthly", Quantity: 1, Metadata: map[string]string{"order": "1"}}
		mut(r)
		return func() error { _, err := h.client.Subscribe(ctx, r); return err }
	}
	refund := func(mut func(r *billingv1.RefundRequest)) func() error {
		n++
		r := &billingv1.RefundRequest{RequestId: fmt.Sprintf("invalid-%d", n), PaymentIntentId: "pi_123", Amount: 100,
			Reason: "requested_by_customer", Metadata: map[string]string{"order": "1"}}
		mut(r)
		return func() error { _, err := h.client.Refund(ctx, r); return err }
	}
	capture := func(mut func(r *billingv1.CapturePaymentRequest)) func() error {
		n++
		r := &billingv1.CapturePaymentRequest{RequestId: fmt.Sprintf("invalid-%d", n), PaymentIntentId: "pi_123", Amount: 100}
		mut(r)
		return func() error { _, err := h.client.CapturePayment(ctx, r); return err }
	}
	cancelPI := func(mut func(r *billingv1.CancelPaymentRequest)) func() error {
		n++
		r := &billingv1.CancelPaymentRequest{RequestId: fmt.Sprintf("invalid-%d", n), PaymentIntentId: "pi_123", Reason: "abandoned"}
		mut(r)
		return func() error { _, err := h.client.CancelPayment(ctx, r); return err }
	}
	cancelSub := func(mut func(r *billingv1.CancelSubscriptionRequest)) func() error {
		n++
		r := &billingv1.CancelSubscriptionRequest{RequestId: fmt.Sprintf("invalid-%d", n), SubscriptionId: "sub_123"}
		mut(r)
		return func() error { _, err := h.client.CancelSubscription(ctx, r); return err }
	}
	getOp := func(id string) func() error {
		return func() error {
			_, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: id})
			return err
		}
	}
	manyPairs := func() map[string]string {
		m := map[string]string{}
		for i := range 51 {
			m[fmt.Sprintf("k%d", i)] = "v"
		}
		return m
	}
	long := func(prefix string, n int) string { return prefix + strings.Repeat("a", n-len(prefix)) }

	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		// ChargeRequest
		{"charge: request_id missing", charge(func(r *billingv1.ChargeRequest) { r.RequestId = "" }), "request_id"},
		{"charge: request_id 256 chars", charge(func(r *billingv1.ChargeRequest) { r.RequestId = long("", 256) }), "request_id"},
		{"charge: request_id with space", charge(func(r *billingv1.ChargeRequest) { r.RequestId = "order 1" }), "request_id"},
		{"charge: request_id with tab", charge(func(r *billingv1.ChargeRequest) { r.RequestId = "order\t1" }), "request_id"},
		{"charge: request_id with DEL", charge(func(r *billingv1.ChargeRequest) { r.RequestId = "order\x7f" }), "request_id"},
		{"charge: request_id not ASCII", charge(func(r *billingv1.ChargeRequest) { r.RequestId = "ordér-1" }), "request_id"},
		{"charge: amount zero", charge(func(r *billingv1.ChargeRequest) { r.Amount = 0 }), "amount"},
		{"charge: amount negative", charge(func(r *billingv1.ChargeRequest) { r.Amount = -2000 }), "amount"},
		{"charge: amount 100,000,000", charge(func(r *billingv1.ChargeRequest) { r.Amount = 100_000_000 }), "amount"},
		{"charge: currency missing", charge(func(r *billingv1.ChargeRequest) { r.Currency = "" }), "currency"},
		{"charge: currency with a digit", charge(func(r *billingv1.ChargeRequest) { r.Currency = "us1" }), "currency"},
		{"charge: currency Stripe does not take", charge(func(r *billingv1.ChargeRequest) { r.Currency = "eek" }), "currency"},
		{"charge: below Stripe's minimum", charge(func(r *billingv1.ChargeRequest) { r.Amount = 49 }), "amount"},
		{"charge: below Stripe's minimum in jpy", charge(func(r *billingv1.ChargeRequest) { r.Amount, r.Currency = 49, "JPY" }), "amount"},
		{"charge: isk not in whole krónur", charge(func(r *billingv1.ChargeRequest) { r.Amount, r.Currency = 550, "isk" }), "amount"},
		{"charge: currency unknown", charge(func(r *billingv1.ChargeRequest) { r.Currency = "xyz" }), "currency"},
		{"charge: currency too long", charge(func(r *billingv1.ChargeRequest) { r.Currency = "usdd" }), "currency"},
		{"charge: customer_id prefix", charge(func(r *billingv1.ChargeRequest) { r.CustomerId = "acct_1" }), "customer_id"},
		{"charge: customer_id charset", charge(func(r *billingv1.ChargeRequest) { r.CustomerId = "cus_a-b" }), "customer_id"},
		{"charge: customer_id 256 chars", charge(func(r *billingv1.ChargeRequest) { r.CustomerId = long("cus_", 256) }), "customer_id"},
		{"charge: payment_method_id missing", charge(func(r *billingv1.ChargeRequest) { r.PaymentMethodId = "" }), "payment_method_id"},
		{"charge: payment_method_id prefix", charge(func(r *billingv1.ChargeRequest) { r.PaymentMethodId = "card_123" }), "payment_method_id"},
		{"charge: payment_method_id charset", charge(func(r *billingv1.ChargeRequest) { r.PaymentMethodId = "pm_card visa" }), "payment_method_id"},
		{"charge: payment_method_id 256 chars", charge(func(r *billingv1.ChargeRequest) { r.PaymentMethodId = long("pm_", 256) }), "payment_method_id"},
		{"charge: description 1001 chars", charge(func(r *billingv1.ChargeRequest) { r.Description = long("", 1001) }), "description"},
		{"charge: metadata 51 keys", charge(func(r *billingv1.ChargeRequest) { r.Metadata = manyPairs() }), "metadata"},
		{"charge: metadata empty key", charge(func(r *billingv1.ChargeRequest) { r.Metadata = map[string]string{"": "v"} }), "metadata"},
		{"charge: metadata key 41 chars", charge(func(r *billingv1.ChargeRequest) { r.Metadata = map[string]string{long("k", 41): "v"} }), "metadata"},
		{"charge: metadata value 501 chars", charge(func(r *billingv1.ChargeRequest) { r.Metadata = map[string]string{"k": long("", 501)} }), "metadata"},
		{"charge: metadata billingd_ key", charge(func(r *billingv1.ChargeRequest) { r.Metadata = map[string]string{"billingd_caller": "x"} }), "metadata"},
		// SubscribeRequest
		{"subscribe: request_id missing", subscribe(func(r *billingv1.SubscribeRequest) { r.RequestId = "" }), "request_id"},
		{"subscribe: request_id 256 chars", subscribe(func(r *billingv1.SubscribeRequest) { r.RequestId = long("", 256) }), "request_id"},
		{"subscribe: request_id with space", subscribe(func(r *billingv1.SubscribeRequest) { r.RequestId = "signup 7" }), "request_id"},
		{"subscribe: customer_id missing", subscribe(func(r *billingv1.SubscribeRequest) { r.CustomerId = "" }), "customer_id"},
		{"subscribe: customer_id prefix", subscribe(func(r *billingv1.SubscribeRequest) { r.CustomerId = "acct_demo" }), "customer_id"},
		{"subscribe: customer_id charset", subscribe(func(r *billingv1.SubscribeRequest) { r.CustomerId = "cus_de/mo" }), "customer_id"},
		{"subscribe: customer_id 256 chars", subscribe(func(r *billingv1.SubscribeRequest) { r.CustomerId = long("cus_", 256) }), "customer_id"},
		{"subscribe: price_id missing", subscribe(func(r *billingv1.SubscribeRequest) { r.PriceId = "" }), "price_id"},
		{"subscribe: price_id prefix", subscribe(func(r *billingv1.SubscribeRequest) { r.PriceId = "plan_1" }), "price_id"},
		{"subscribe: price_id charset", subscribe(func(r *billingv1.SubscribeRequest) { r.PriceId = "price_basic.monthly" }), "price_id"},
		{"subscribe: price_id 256 chars", subscribe(func(r *billingv1.SubscribeRequest) { r.PriceId = long("price_", 256) }), "price_id"},
		{"subscribe: quantity zero", subscribe(func(r *billingv1.SubscribeRequest) { r.Quantity = 0 }), "quantity"},
		{"subscribe: quantity negative", subscribe(func(r *billingv1.SubscribeRequest) { r.Quantity = -1 }), "quantity"},
		{"subscribe: quantity 10,001", subscribe(func(r *billingv1.SubscribeRequest) { r.Quantity = 10_001 }), "quantity"},
		{"subscribe: metadata 51 keys", subscribe(func(r *billingv1.SubscribeRequest) { r.Metadata = manyPairs() }), "metadata"},
		{"subscribe: metadata empty key", subscribe(func(r *billingv1.SubscribeRequest) { r.Metadata = map[string]string{"": "v"} }), "metadata"},
		{"subscribe: metadata key 41 chars", subscribe(func(r *billingv1.SubscribeRequest) { r.Metadata = map[string]string{long("k", 41): "v"} }), "metadata"},
		{"subscribe: metadata value 501 chars", subscribe(func(r *billingv1.SubscribeRequest) { r.Metadata = map[string]string{"k": long("", 501)} }), "metadata"},
		{"subscribe: metadata billingd_ key", subscribe(func(r *billingv1.SubscribeRequest) { r.Metadata = map[string]string{"billingd_request_key": "x"} }), "metadata"},
		// ChargeRequest's newer fields
		{"charge: capture_method unknown", charge(func(r *billingv1.ChargeRequest) { r.CaptureMethod = "later" }), "capture_method"},
		// RefundRequest
		{"refund: request_id missing", refund(func(r *billingv1.RefundRequest) { r.RequestId = "" }), "request_id"},
		{"refund: request_id with space", refund(func(r *billingv1.RefundRequest) { r.RequestId = "refund 1" }), "request_id"},
		{"refund: payment_intent_id missing", refund(func(r *billingv1.RefundRequest) { r.PaymentIntentId = "" }), "payment_intent_id"},
		{"refund: payment_intent_id prefix", refund(func(r *billingv1.RefundRequest) { r.PaymentIntentId = "ch_123" }), "payment_intent_id"},
		{"refund: payment_intent_id charset", refund(func(r *billingv1.RefundRequest) { r.PaymentIntentId = "pi_1/2" }), "payment_intent_id"},
		{"refund: amount negative", refund(func(r *billingv1.RefundRequest) { r.Amount = -1 }), "amount"},
		{"refund: amount 100,000,000", refund(func(r *billingv1.RefundRequest) { r.Amount = 100_000_000 }), "amount"},
		{"refund: reason unknown", refund(func(r *billingv1.RefundRequest) { r.Reason = "changed_mind" }), "reason"},
		{"refund: metadata billingd_ key", refund(func(r *billingv1.RefundRequest) { r.Metadata = map[string]string{"billingd_caller": "x"} }), "metadata"},
		{"refund: metadata 51 keys", refund(func(r *billingv1.RefundRequest) { r.Metadata = manyPairs() }), "metadata"},
		// CapturePaymentRequest
		{"capture: request_id missing", capture(func(r *billingv1.CapturePaymentRequest) { r.RequestId = "" }), "request_id"},
		{"capture: payment_intent_id missing", capture(func(r *billingv1.CapturePaymentRequest) { r.PaymentIntentId = "" }), "payment_intent_id"},
		{"capture: payment_intent_id prefix", capture(func(r *billingv1.CapturePaymentRequest) { r.PaymentIntentId = "seti_1" }), "payment_intent_id"},
		{"capture: amount negative", capture(func(r *billingv1.CapturePaymentRequest) { r.Amount = -5 }), "amount"},
		// CancelPaymentRequest
		{"cancel payment: request_id missing", cancelPI(func(r *billingv1.CancelPaymentRequest) { r.RequestId = "" }), "request_id"},
		{"cancel payment: payment_intent_id missing", cancelPI(func(r *billingv1.CancelPaymentRequest) { r.PaymentIntentId = "" }), "payment_intent_id"},
		{"cancel payment: reason unknown", cancelPI(func(r *billingv1.CancelPaymentRequest) { r.Reason = "bored" }), "reason"},
		// CancelSubscriptionRequest
		{"cancel subscription: request_id missing", cancelSub(func(r *billingv1.CancelSubscriptionRequest) { r.RequestId = "" }), "request_id"},
		{"cancel subscription: subscription_id missing", cancelSub(func(r *billingv1.CancelSubscriptionRequest) { r.SubscriptionId = "" }), "subscription_id"},
		{"cancel subscription: subscription_id prefix", cancelSub(func(r *billingv1.CancelSubscriptionRequest) { r.SubscriptionId = "si_1" }), "subscription_id"},
		{"cancel subscription: subscription_id 256 chars", cancelSub(func(r *billingv1.CancelSubscriptionRequest) { r.SubscriptionId = long("sub_", 256) }), "subscription_id"},
		// GetOperationRequest
		{"get: request_id missing", getOp(""), "request_id"},
		{"get: request_id 256 chars", getOp(long("", 256)), "request_id"},
		{"get: request_id with space", getOp("order 1"), "request_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ei := errInfo(t, tt.call(), codes.InvalidArgument)
			if ei.GetReason() != "INVALID_ARGUMENT" {
				t.Errorf("reason = %s", ei.GetReason())
			}
			fv := badRequest(st)
			if len(fv) == 0 {
				t.Fatalf("no field violations in %v", st.Proto())
			}
			for _, v := range fv {
				if !strings.HasPrefix(v.GetField(), tt.field) || v.GetDescription() == "" {
					t.Errorf("violation %q: %q, want one of field %s", v.GetField(), v.GetDescription(), tt.field)
				}
			}
		})
	}
	// The valid baselines are valid: each case broke exactly its rule.
	if _, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "invalid-1"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetOperation(invalid-1) = %v, want NOT_FOUND", err)
	}
	h.checkNothingHappened()
	if err := charge(func(*billingv1.ChargeRequest) {})(); err != nil {
		t.Errorf("the valid charge baseline fails: %v", err)
	}
	if err := subscribe(func(*billingv1.SubscribeRequest) {})(); err != nil {
		t.Errorf("the valid subscribe baseline fails: %v", err)
	}
}

// TestOversizedMessage: a request over Config.MaxRecvMsgSize is refused by
// gRPC itself with RESOURCE_EXHAUSTED before any interceptor runs.
func TestOversizedMessage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	big := visa("oversized")
	big.Metadata = map[string]string{}
	for i := range 50 {
		big.Metadata[fmt.Sprintf("key%02d", i)] = strings.Repeat("x", 2000) // 100 KB > 64 KiB
	}
	_, err := h.client.Charge(ctx, big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized Charge: %v, want RESOURCE_EXHAUSTED", err)
	}
	h.checkNothingHappened()
}

// A field this server does not know (sent by a newer client, here as field
// 999) is refused on every RPC that creates or changes a Stripe object:
// INVALID_ARGUMENT naming the field number, nothing recorded, nothing sent.
// Read-only RPCs stay lenient.
func TestUnknownFieldsMoveNoMoney(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	unknown := func(m proto.Message) {
		r := m.ProtoReflect()
		b := protowire.AppendTag(nil, 999, protowire.VarintType)
		r.SetUnknown(protowire.AppendVarint(b, 1))
	}
	calls := map[string]func() error{
		"Charge": func() error {
			r := visa("u-1")
			unknown(r)
			_, err := h.client.Charge(ctx, r)
			return err
		},
		"Subscribe": func() error {
			r := &billingv1.SubscribeRequest{RequestId: "u-2", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1}
			unknown(r)
			_, err := h.client.Subscribe(ctx, r)
			return err
		},
		"Refund": func() error {
			r := &billingv1.RefundRequest{RequestId: "u-3", PaymentIntentId: "pi_1"}
			unknown(r)
			_, err := h.client.Refund(ctx, r)
			return err
		},
		"CapturePayment": func() error {
			r := &billingv1.CapturePaymentRequest{RequestId: "u-4", PaymentIntentId: "pi_1"}
			unknown(r)
			_, err := h.client.CapturePayment(ctx, r)
			return err
		},
		"CancelPayment": func() error {
			r := &billingv1.CancelPaymentRequest{RequestId: "u-5", PaymentIntentId: "pi_1"}
			unknown(r)
			_, err := h.client.CancelPayment(ctx, r)
			return err
		},
		"CancelSubscription": func() error {
			r := &billingv1.CancelSubscriptionRequest{RequestId: "u-6", SubscriptionId: "sub_1"}
			unknown(r)
			_, err := h.client.CancelSubscription(ctx, r)
			return err
		},
	}
	for name, call := range calls {
		st, ei := errInfo(t, call(), codes.InvalidArgument)
		fv := badRequest(st)
		if ei.GetReason() != "INVALID_ARGUMENT" || len(fv) != 1 || fv[0].GetField() != "field 999" {
			t.Errorf("%s: %v", name, st.Proto())
		}
	}
	h.checkNothingHappened()
	get := &billingv1.GetOperationRequest{RequestId: "u-1"}
	unknown(get)
	if _, err := h.client.GetOperation(ctx, get); status.Code(err) != codes.NotFound {
		t.Errorf("GetOperation with an unknown field: %v, want NOT_FOUND (lenient)", err)
	}
}

// Currency in any case is one request (Stripe's lowercase before the
// fingerprint): "USD" repeats "usd", and the simulator is sent "usd". Any
// currency Stripe takes for cards is accepted.
func TestCurrencyAnyCase(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	first, err := h.client.Charge(ctx, visa("case-1"))
	if err != nil {
		t.Fatal(err)
	}
	upper := visa("case-1")
	upper.Currency = "USD"
	again, err := h.client.Charge(ctx, upper)
	if err != nil || !again.GetReplayed() || again.GetPaymentIntentId() != first.GetPaymentIntentId() || again.GetCurrency() != "usd" {
		t.Fatalf("USD after usd = %v, %v", again, err)
	}
	for _, c := range []string{"Kes", "isk", "clp"} {
		r := visa("cur-" + c)
		r.Currency = c
		if _, err := h.client.Charge(ctx, r); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
	r := visa("cur-bad")
	r.Currency = "EEK"
	_, err = h.client.Charge(ctx, r)
	st, _ := errInfo(t, err, codes.InvalidArgument)
	if fv := badRequest(st); len(fv) != 1 || !strings.Contains(fv[0].GetDescription(), "ISO 4217") {
		t.Errorf("a currency Stripe does not take: %v", st.Proto())
	}
	if _, found := h.record(caller, "cur-bad"); found {
		t.Error("a refused currency was recorded")
	}
}
