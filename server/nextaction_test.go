package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
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

// chargeAction makes a 3-D Secure charge and returns its PaymentIntent id.
func chargeAction(t *testing.T, h *harness, id, pm string) string {
	t.Helper()
	resp, err := h.client.Charge(h.ctx(), card(id, pm))
	if err != nil || resp.GetStatus() != "requires_action" {
		t.Fatalf("Charge %s = %v, %v", id, resp, err)
	}
	return resp.GetPaymentIntentId()
}

func opState(t *testing.T, h *harness, id string) *billingv1.Operation {
	t.Helper()
	op, err := h.client.GetOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: id})
	if err != nil {
		t.Fatalf("GetOperation %s: %v", id, err)
	}
	return op
}

// The customer completes (or fails) authentication; the simulator's webhooks
// alone (no reconciler here) take the record to its end, and a repeat of
// the Charge then returns the current status.
func TestAuthenticationOutcomesByWebhook(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		pm         string
		succeed    bool
		want       service.State
		wantReason string
		wantDecl   string
	}{
		{"completed", "pm_card_authenticationRequired", true, service.StateSucceeded, "", ""},
		{"failed", "pm_card_threeDSecure2Required", false, service.StateFailed, "AUTHENTICATION_FAILED", ""},
		{"completed then declined", "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds", true, service.StateFailed, "CARD_DECLINED", "insufficient_funds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newWebhookHarness(t)
			pi := chargeAction(t, h.harness, "3ds", tt.pm)
			if err := h.sim.Authenticate(pi, tt.succeed); err != nil {
				t.Fatal(err)
			}
			rec := waitState(t, h.harness, "3ds", tt.want)
			if rec.Result.ClientSecret != "" {
				t.Error("a final record keeps the client_secret")
			}
			resp, err := h.client.Charge(h.ctx(), card("3ds", tt.pm))
			if tt.wantReason == "" {
				if err != nil || resp.GetStatus() != "succeeded" || !resp.GetReplayed() || resp.GetPaymentIntentId() != pi ||
					resp.GetPaymentStatus() != billingv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED || resp.GetClientSecret() != "" {
					t.Fatalf("repeat = %v, %v", resp, err)
				}
			} else {
				_, ei := errInfo(t, err, codes.FailedPrecondition)
				if ei.GetReason() != tt.wantReason || ei.GetMetadata()["decline_code"] != tt.wantDecl || ei.GetMetadata()["stripe_object_id"] != pi {
					t.Fatalf("repeat: %v", ei)
				}
			}
			if op := opState(t, h.harness, "3ds"); op.GetState() != billingv1.Operation_State(tt.want) {
				t.Errorf("GetOperation state = %v", op.GetState())
			}
			if got := posts(h.sim); got != 1 {
				t.Errorf("create POSTs = %d, want 1", got)
			}
		})
	}
}

// With every webhook lost, the reconciler alone follows the PaymentIntent:
// it retrieves it on its backoff and settles it, never creating another.
func TestReconcilerFollowsWithoutWebhooks(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	pi := chargeAction(t, h, "3ds", "pm_card_authenticationRequired")
	processing := card("slow", "pm_card_simProcessing")
	resp, err := h.client.Charge(h.ctx(), processing)
	if err != nil || resp.GetStatus() != "processing" || resp.GetClientSecret() != "" {
		t.Fatalf("processing charge = %v, %v", resp, err)
	}
	if op := opState(t, h, "slow"); op.GetState() != billingv1.Operation_STATE_PROCESSING {
		t.Fatalf("state = %v, want PROCESSING", op.GetState())
	}
	r := runReconciler(t, h)
	if err := h.sim.Authenticate(pi, true); err != nil {
		t.Fatal(err)
	}
	if err := h.sim.Settle(resp.GetPaymentIntentId(), false); err != nil {
		t.Fatal(err)
	}
	// The first pass looked already and found nothing new; the next lookup
	// is due after the backoff, on the service's clock.
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, _ := h.record(caller, "3ds")
		b, _ := h.record(caller, "slow")
		if a.State == service.StateSucceeded && b.State == service.StateFailed {
			if service.ReasonOf(b.Err) != service.ReasonCardDeclined {
				t.Errorf("processing charge failed with %v", b.Err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("records = %v, %v; reconciler %+v", a.State, b.State, r.Stats())
		}
		h.clock.Advance(time.Minute)
		time.Sleep(20 * time.Millisecond)
	}
	if st := r.Stats(); st.Follows == 0 || st.Redriven != 0 || st.Searches != 0 {
		t.Errorf("reconciler %+v: want follows only", st)
	}
	if got := posts(h.sim); got != 2 {
		t.Errorf("create POSTs = %d, want 2", got)
	}
}

// WatchOperation streams REQUIRES_ACTION, then SUCCEEDED, and ends.
func TestWatchOperationStreamsToTheEnd(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	pi := chargeAction(t, h.harness, "watched", "pm_card_authenticationRequired")
	stream, err := h.client.WatchOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetState() != billingv1.Operation_STATE_REQUIRES_ACTION || first.GetCharge().GetClientSecret() == "" {
		t.Fatalf("first = %v, %v", first, err)
	}
	if err := h.sim.Authenticate(pi, true); err != nil {
		t.Fatal(err)
	}
	var last *billingv1.Operation
	for {
		op, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		last = op
	}
	if last.GetState() != billingv1.Operation_STATE_SUCCEEDED || last.GetCharge().GetStatus() != "succeeded" {
		t.Fatalf("last = %v", last)
	}
	// Another caller's request is NOT_FOUND, and so is an unknown one.
	stream, err = h.client.WatchOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: "nobody"})
	if err == nil {
		_, err = stream.Recv()
	}
	errInfo(t, err, codes.NotFound)
	// Bad input is INVALID_ARGUMENT.
	stream, err = h.client.WatchOperation(h.ctx(), &billingv1.GetOperationRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	errInfo(t, err, codes.InvalidArgument)
}

// A drained server ends its watches with UNAVAILABLE SHUTTING_DOWN instead
// of waiting for the payment, and a caller's watches are bounded.
func TestWatchOperationBoundsAndDrain(t *testing.T) {
	t.Parallel()
	cfg := testServiceConfig()
	cfg.MaxWatches = 2
	h := newHarness(t, harnessOpts{svcCfg: &cfg})
	chargeAction(t, h, "w", "pm_card_authenticationRequired")
	var streams []billingv1.BillingService_WatchOperationClient
	for range 2 {
		s, err := h.client.WatchOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: "w"})
		if err != nil {
			t.Fatal(err)
		}
		if op, err := s.Recv(); err != nil || op.GetState() != billingv1.Operation_STATE_REQUIRES_ACTION {
			t.Fatalf("Recv = %v, %v", op, err)
		}
		streams = append(streams, s)
	}
	third, err := h.client.WatchOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: "w"})
	if err == nil {
		_, err = third.Recv()
	}
	if _, ei := errInfo(t, err, codes.ResourceExhausted); ei.GetReason() != "TOO_MANY_WATCHES" {
		t.Fatalf("third watch: %v", ei)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
	}()
	for _, s := range streams {
		_, err := s.Recv()
		if st, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "SHUTTING_DOWN" || retryInfo(st) == nil {
			t.Fatalf("after drain: %v", st)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown waited for the watches")
	}
}

// Subscriptions start default_incomplete: REQUIRES_ACTION with the first
// invoice's client_secret; paid, the record is SUCCEEDED; never paid, it
// ends as Stripe says after 23 hours.
func TestSubscriptionFirstPayment(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	if _, err := h.sim.AddCustomer(stripesim.Customer{ID: "cus_3ds", Email: "3ds@example.com", DefaultPaymentMethod: "pm_card_authenticationRequired"}); err != nil {
		t.Fatal(err)
	}
	sub := func(id, customer string) *billingv1.SubscribeResponse {
		t.Helper()
		resp, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: id, CustomerId: customer, PriceId: "price_basic_monthly", Quantity: 1})
		if err != nil {
			t.Fatalf("Subscribe %s: %v", id, err)
		}
		if resp.GetStatus() != "incomplete" || resp.GetSubscriptionStatus() != billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_INCOMPLETE ||
			resp.GetClientSecret() == "" {
			t.Fatalf("Subscribe %s = %v", id, resp)
		}
		if op := opState(t, h.harness, id); op.GetState() != billingv1.Operation_STATE_REQUIRES_ACTION ||
			op.GetSubscription().GetClientSecret() != resp.GetClientSecret() {
			t.Fatalf("GetOperation %s = %v", id, op)
		}
		return resp
	}
	invoicePI := func(subID string) string {
		t.Helper()
		for _, in := range h.sim.Invoices() {
			if in.Subscription == subID {
				return in.PaymentIntent
			}
		}
		t.Fatalf("no invoice for %s", subID)
		return ""
	}

	paid := sub("paid", "cus_demo")
	if err := h.sim.Authenticate(invoicePI(paid.GetSubscriptionId()), true); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.harness, "paid", service.StateSucceeded)
	again, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "paid", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
	if err != nil || !again.GetReplayed() || again.GetStatus() != "active" || again.GetSubscriptionId() != paid.GetSubscriptionId() {
		t.Fatalf("repeat = %v, %v", again, err)
	}

	// A card that needs 3-D Secure: the first confirmation asks for action.
	action := sub("action", "cus_3ds")
	pi := invoicePI(action.GetSubscriptionId())
	if err := h.sim.Authenticate(pi, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		op := opState(t, h.harness, "action")
		return op.GetSubscription().GetNextActionType() != ""
	})
	if err := h.sim.Authenticate(pi, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.harness, "action", service.StateSucceeded)

	// A declining card: the subscription stays incomplete (the customer may
	// still pay) until it expires.
	declined := sub("declined", "cus_declined")
	if err := h.sim.Authenticate(invoicePI(declined.GetSubscriptionId()), true); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(24 * time.Hour)
	h.sim.ApplyDueTransitions()
	rec := waitState(t, h.harness, "declined", service.StateFailed)
	if service.ReasonOf(rec.Err) != service.ReasonSubscriptionExpired {
		t.Fatalf("declined subscription failed with %v", rec.Err)
	}
	if got := len(h.subscriptionsFor(caller, "declined")); got != 1 {
		t.Errorf("subscriptions = %d, want 1", got)
	}
}

// An authorisation that is canceled at Stripe (by hand, or because it
// expired after 7 days) ends FAILED CANCELED with Stripe's reason; one that
// is captured there ends SUCCEEDED.
func TestAuthorizedChargeEnds(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	authorize := func(id string) string {
		t.Helper()
		req := visa(id)
		req.CaptureMethod = "manual"
		resp, err := h.client.Charge(ctx, req)
		if err != nil || resp.GetStatus() != "requires_capture" {
			t.Fatalf("Charge %s = %v, %v", id, resp, err)
		}
		waitState(t, h.harness, id, service.StateAuthorized)
		return resp.GetPaymentIntentId()
	}
	stripeAPI := func(path, form string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, h.simURL+path, strings.NewReader(form))
		req.Header.Set("Authorization", "Bearer "+testKey)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}

	canceled := authorize("canceled")
	stripeAPI("/v1/payment_intents/"+canceled+"/cancel", "cancellation_reason=requested_by_customer")
	rec := waitState(t, h.harness, "canceled", service.StateFailed)
	if service.ReasonOf(rec.Err) != service.ReasonCanceled || rec.Err.Metadata["cancellation_reason"] != "requested_by_customer" {
		t.Errorf("canceled: %+v", rec.Err)
	}

	captured := authorize("captured")
	stripeAPI("/v1/payment_intents/"+captured+"/capture", "")
	if rec := waitState(t, h.harness, "captured", service.StateSucceeded); rec.Result.Status != "succeeded" {
		t.Errorf("captured: %+v", rec.Result)
	}

	authorize("expired")
	h.clock.Advance(8 * 24 * time.Hour)
	h.sim.ApplyDueTransitions()
	rec = waitState(t, h.harness, "expired", service.StateFailed)
	if service.ReasonOf(rec.Err) != service.ReasonCanceled || rec.Err.Metadata["cancellation_reason"] != "automatic" {
		t.Errorf("expired: %+v", rec.Err)
	}
	_, err := h.client.Charge(ctx, func() *billingv1.ChargeRequest { r := visa("expired"); r.CaptureMethod = "manual"; return r }())
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "CANCELED" {
		t.Errorf("repeat of the expired charge: %v", ei)
	}
	// Capturing the expired authorisation: Stripe refuses, nothing captured.
	_, err = h.client.CapturePayment(ctx, &billingv1.CapturePaymentRequest{RequestId: "capture-expired", PaymentIntentId: rec.Result.ObjectID})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "STRIPE_STATE" {
		t.Errorf("capture of an expired authorisation: %v", ei)
	}
	for _, pi := range h.sim.PaymentIntents() {
		if pi.ID == rec.Result.ObjectID && pi.Status != "canceled" {
			t.Errorf("the expired PaymentIntent is %s", pi.Status)
		}
	}
}
