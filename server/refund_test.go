package server_test

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// refundsOf returns the simulator's refunds of a PaymentIntent.
func refundsOf(sim *stripesim.Sim, pi string) []stripesim.Refund {
	var out []stripesim.Refund
	for _, r := range sim.Refunds() {
		if r.PaymentIntent == pi {
			out = append(out, r)
		}
	}
	return out
}

// Two refund request_ids are two refunds, as asked; one request_id retried is
// one; refunding more than is left is refused by Stripe with nothing created.
func TestRefundOncePerRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	charged, err := h.client.Charge(ctx, visa("paid"))
	if err != nil {
		t.Fatal(err)
	}
	pi := charged.GetPaymentIntentId()

	first := &billingv1.RefundRequest{RequestId: "refund-1", PaymentIntentId: pi, Amount: 500, Reason: "requested_by_customer",
		Metadata: map[string]string{"ticket": "T-1"}}
	got, err := h.client.Refund(ctx, first)
	if err != nil || got.GetStatus() != "succeeded" || got.GetAmount() != 500 || got.GetCurrency() != "usd" ||
		got.GetPaymentIntentId() != pi || got.GetReplayed() || got.GetRefundId() == "" {
		t.Fatalf("Refund = %v, %v", got, err)
	}
	again, err := h.client.Refund(ctx, first)
	if err != nil || !again.GetReplayed() || again.GetRefundId() != got.GetRefundId() {
		t.Fatalf("repeat = %v, %v", again, err)
	}
	// Another request_id: another refund, of what is left.
	rest, err := h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: "refund-2", PaymentIntentId: pi})
	if err != nil || rest.GetAmount() != 1500 || rest.GetRefundId() == got.GetRefundId() {
		t.Fatalf("second refund = %v, %v", rest, err)
	}
	refunds := refundsOf(h.sim, pi)
	if len(refunds) != 2 {
		t.Fatalf("refunds at Stripe = %d, want 2: %+v", len(refunds), refunds)
	}
	for _, r := range refunds {
		if r.Metadata[service.MetadataCaller] != caller || r.Metadata[service.MetadataRequestKey] == "" {
			t.Errorf("refund %s metadata = %v", r.ID, r.Metadata)
		}
	}
	// Nothing is left: Stripe refuses, final, nothing created.
	_, err = h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: "refund-3", PaymentIntentId: pi, Amount: 100})
	_, ei := errInfo(t, err, codes.FailedPrecondition)
	if ei.GetReason() != "STRIPE_STATE" || ei.GetMetadata()["code"] == "" {
		t.Fatalf("refund of a refunded charge: %v", ei)
	}
	if n := len(refundsOf(h.sim, pi)); n != 2 {
		t.Errorf("refunds at Stripe = %d after the refused one, want 2", n)
	}
	op := opState(t, h, "refund-1")
	if op.GetState() != billingv1.Operation_STATE_SUCCEEDED || op.GetMethod() != "Refund" ||
		op.GetRefund().GetRefundId() != got.GetRefundId() || op.GetStripeObjectId() != got.GetRefundId() {
		t.Errorf("GetOperation = %v", op)
	}
	if n := requests(h.sim, http.MethodPost, "/v1/refunds"); n != 3 {
		t.Errorf("refund POSTs = %d, want 3 (two refunds, one refused)", n)
	}
}

// An over-refund is FAILED_PRECONDITION with Stripe's code, and creates nothing.
func TestOverRefundCreatesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	charged, err := h.client.Charge(ctx, visa("small"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: "too-much", PaymentIntentId: charged.GetPaymentIntentId(), Amount: 2001})
	_, ei := errInfo(t, err, codes.FailedPrecondition)
	if ei.GetReason() != "STRIPE_STATE" || ei.GetMetadata()["code"] != "amount_too_large" {
		t.Fatalf("over-refund: %v", ei)
	}
	if n := len(refundsOf(h.sim, charged.GetPaymentIntentId())); n != 0 {
		t.Errorf("refunds at Stripe = %d, want 0", n)
	}
	// A payment that never completed cannot be refunded.
	waiting := chargeAction(t, h, "waiting", "pm_card_authenticationRequired")
	_, err = h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: "early", PaymentIntentId: waiting})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "STRIPE_STATE" {
		t.Errorf("refund of an unpaid PaymentIntent: %v", ei)
	}
}

// A refund Stripe leaves pending is followed to its end: PROCESSING, then
// SUCCEEDED, or FAILED REFUND_FAILED with Stripe's failure_reason.
func TestPendingRefundFollowed(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	for _, tt := range []struct {
		id, pm  string
		succeed bool
		want    service.State
	}{
		{"pending-ok", "pm_card_pendingRefund", true, service.StateSucceeded},
		{"pending-fails", "pm_card_pendingRefund", false, service.StateFailed},
	} {
		charged, err := h.client.Charge(ctx, card("charge-"+tt.id, tt.pm))
		if err != nil {
			t.Fatal(err)
		}
		got, err := h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: tt.id, PaymentIntentId: charged.GetPaymentIntentId()})
		if err != nil || got.GetStatus() != "pending" {
			t.Fatalf("%s: Refund = %v, %v", tt.id, got, err)
		}
		if op := opState(t, h.harness, tt.id); op.GetState() != billingv1.Operation_STATE_PROCESSING {
			t.Fatalf("%s: state %v, want PROCESSING", tt.id, op.GetState())
		}
		if err := h.sim.SettleRefund(got.GetRefundId(), tt.succeed); err != nil {
			t.Fatal(err)
		}
		rec := waitState(t, h.harness, tt.id, tt.want)
		if tt.want == service.StateFailed {
			if service.ReasonOf(rec.Err) != service.ReasonRefundFailed || rec.Err.Metadata["failure_reason"] == "" {
				t.Errorf("%s: %+v", tt.id, rec.Err)
			}
			_, err := h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: tt.id, PaymentIntentId: charged.GetPaymentIntentId()})
			if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REFUND_FAILED" {
				t.Errorf("%s: repeat %v", tt.id, ei)
			}
		}
	}
}

// With the webhooks lost, the reconciler follows a pending refund too.
func TestPendingRefundFollowedByReconciler(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	charged, err := h.client.Charge(ctx, card("c", "pm_card_pendingRefund"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := h.client.Refund(ctx, &billingv1.RefundRequest{RequestId: "r", PaymentIntentId: charged.GetPaymentIntentId()})
	if err != nil || got.GetStatus() != "pending" {
		t.Fatalf("Refund = %v, %v", got, err)
	}
	r := runReconciler(t, h)
	if err := h.sim.SettleRefund(got.GetRefundId(), true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		h.clock.Advance(time.Minute)
		rec, _ := h.record(caller, "r")
		return rec.State == service.StateSucceeded
	})
	if st := r.Stats(); st.Follows == 0 {
		t.Errorf("reconciler %+v: no follows", st)
	}
	if n := len(refundsOf(h.sim, charged.GetPaymentIntentId())); n != 1 {
		t.Errorf("refunds = %d, want 1", n)
	}
}
