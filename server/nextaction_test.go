package server_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/service"
)

// card is visa(id) paid with the test payment method pm.
func card(id, pm string) *billingv1.ChargeRequest {
	req := visa(id)
	req.PaymentMethodId = pm
	return req
}

// A charge that needs 3-D Secure answers OK with the truth: requires_action,
// the client_secret and the next action; the record is REQUIRES_ACTION, not
// SUCCEEDED; a repeat returns the same PaymentIntent and secret, and sends
// nothing.
func TestThreeDSecureChargeRequiresAction(t *testing.T) {
	t.Parallel()
	for _, pm := range []string{"pm_card_authenticationRequired", "pm_card_threeDSecure2Required"} {
		t.Run(pm, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			ctx := h.ctx()
			resp, err := h.client.Charge(ctx, card("3ds", pm))
			if err != nil {
				t.Fatalf("Charge: %v", err)
			}
			pis := h.intentsFor(caller, "3ds")
			if len(pis) != 1 {
				t.Fatalf("PaymentIntents = %d, want 1", len(pis))
			}
			pi := pis[0]
			if resp.GetPaymentIntentId() != pi.ID || resp.GetStatus() != "requires_action" ||
				resp.GetPaymentStatus() != billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_ACTION ||
				resp.GetClientSecret() != pi.ClientSecret || pi.ClientSecret == "" ||
				resp.GetNextActionType() != "use_stripe_sdk" || resp.GetReplayed() {
				t.Fatalf("answer = %v, PaymentIntent %s %s", resp, pi.ID, pi.Status)
			}
			op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "3ds"})
			if err != nil || op.GetState() != billingv1.Operation_STATE_REQUIRES_ACTION ||
				op.GetCharge().GetClientSecret() != pi.ClientSecret || op.GetStripeObjectId() != pi.ID {
				t.Fatalf("GetOperation = %v, %v", op, err)
			}
			again, err := h.client.Charge(ctx, card("3ds", pm))
			if err != nil || !again.GetReplayed() || again.GetPaymentIntentId() != pi.ID ||
				again.GetClientSecret() != pi.ClientSecret || again.GetStatus() != "requires_action" {
				t.Fatalf("repeat = %v, %v", again, err)
			}
			if got := posts(h.sim); got != 1 {
				t.Errorf("create POSTs = %d, want 1", got)
			}
		})
	}
}

// off_session: the bank's demand for authentication is a decline,
// AUTHENTICATION_REQUIRED with its decline code and the PaymentIntent; the
// client_secret reaches the owning caller through GetOperation only.
func TestOffSessionAuthenticationRequired(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	req := card("off", "pm_card_authenticationRequired")
	req.CustomerId, req.OffSession = "cus_demo", proto.Bool(true)
	_, err := h.client.Charge(ctx, req)
	st, ei := errInfo(t, err, codes.FailedPrecondition)
	pis := h.intentsFor(caller, "off")
	if len(pis) != 1 {
		t.Fatalf("PaymentIntents = %d, want 1", len(pis))
	}
	pi := pis[0]
	if ei.GetReason() != "AUTHENTICATION_REQUIRED" || ei.GetMetadata()["decline_code"] != "authentication_required" ||
		ei.GetMetadata()["stripe_object_id"] != pi.ID {
		t.Fatalf("ErrorInfo = %v", ei)
	}
	if pi.ClientSecret == "" || strings.Contains(fmt.Sprint(st.Proto()), pi.ClientSecret) {
		t.Fatalf("the error carries the client_secret: %v", st)
	}
	op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "off"})
	if err != nil || op.GetState() != billingv1.Operation_STATE_REQUIRES_ACTION ||
		op.GetCharge().GetClientSecret() != pi.ClientSecret || op.GetError().GetCode() != int32(codes.FailedPrecondition) {
		t.Fatalf("GetOperation = %v, %v", op, err)
	}
	// A repeat gets the same answer, from the record.
	_, err = h.client.Charge(ctx, req)
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "AUTHENTICATION_REQUIRED" {
		t.Fatalf("repeat: %v", ei)
	}
	if got := posts(h.sim); got != 1 {
		t.Errorf("create POSTs = %d, want 1", got)
	}

	// Unset off_session keeps the old rule: a customer means off session.
	legacy := card("legacy", "pm_card_authenticationRequired")
	legacy.CustomerId = "cus_demo"
	_, err = h.client.Charge(ctx, legacy)
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "AUTHENTICATION_REQUIRED" {
		t.Fatalf("customer without off_session: %v", ei)
	}
	// off_session=false with a customer: on session, the customer acts.
	on := card("on", "pm_card_authenticationRequired")
	on.CustomerId, on.OffSession = "cus_demo", proto.Bool(false)
	resp, err := h.client.Charge(ctx, on)
	if err != nil || resp.GetStatus() != "requires_action" || resp.GetClientSecret() == "" {
		t.Fatalf("on session = %v, %v", resp, err)
	}
}

// capture_method=manual authorises only: requires_capture, AUTHORIZED, and
// no client_secret (the customer has nothing to do).
func TestManualCaptureIsAuthorized(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	req := visa("auth")
	req.CaptureMethod = "manual"
	resp, err := h.client.Charge(ctx, req)
	if err != nil || resp.GetStatus() != "requires_capture" ||
		resp.GetPaymentStatus() != billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_CAPTURE || resp.GetClientSecret() != "" {
		t.Fatalf("Charge = %v, %v", resp, err)
	}
	pis := h.intentsFor(caller, "auth")
	if len(pis) != 1 || pis[0].CaptureMethod != "manual" || pis[0].Status != "requires_capture" {
		t.Fatalf("PaymentIntents = %+v", pis)
	}
	op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "auth"})
	if err != nil || op.GetState() != billingv1.Operation_STATE_AUTHORIZED || op.GetCharge().GetPaymentIntentId() != pis[0].ID {
		t.Fatalf("GetOperation = %v, %v", op, err)
	}
	// The same request_id without capture_method is another request.
	_, err = h.client.Charge(ctx, visa("auth"))
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Fatalf("reuse: %v", ei)
	}
	rec, _ := h.record(caller, "auth")
	if rec.State != service.StateAuthorized {
		t.Errorf("record state = %v", rec.State)
	}
}
