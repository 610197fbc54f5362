package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

// requests counts the simulator's requests to path (a route pattern) by method.
func requests(sim *stripesim.Sim, method, path string) int {
	n := 0
	for k, c := range sim.Stats().Requests {
		if k.Method == method && k.Path == path {
			n += c
		}
	}
	return n
}

// authorized makes a manual-capture charge and returns its PaymentIntent.
func authorized(t *testing.T, h *harness, id string, amount int64) string {
	t.Helper()
	req := visa(id)
	req.Amount, req.CaptureMethod = amount, "manual"
	resp, err := h.client.Charge(h.ctx(), req)
	if err != nil || resp.GetStatus() != "requires_capture" {
		t.Fatalf("Charge %s = %v, %v", id, resp, err)
	}
	return resp.GetPaymentIntentId()
}

// Capture and cancel are operations of their own: once per request_id,
// replayed after, and the charge they act on follows them.
func TestCaptureAndCancelOncePerRequest(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()

	pi := authorized(t, h.harness, "auth-1", 5000)
	capture := &billingv1.CapturePaymentRequest{RequestId: "capture-1", PaymentIntentId: pi, Amount: 3000}
	got, err := h.client.CapturePayment(ctx, capture)
	if err != nil || got.GetStatus() != "succeeded" || got.GetAmountCaptured() != 3000 || got.GetReplayed() ||
		got.GetPaymentStatus() != billingv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED || got.GetPaymentIntentId() != pi {
		t.Fatalf("CapturePayment = %v, %v", got, err)
	}
	again, err := h.client.CapturePayment(ctx, capture)
	if err != nil || !again.GetReplayed() || again.GetAmountCaptured() != 3000 {
		t.Fatalf("repeat = %v, %v", again, err)
	}
	if n := requests(h.sim, http.MethodPost, "/v1/payment_intents/{id}/capture"); n != 1 {
		t.Errorf("capture POSTs = %d, want 1", n)
	}
	if op := opState(t, h.harness, "capture-1"); op.GetState() != billingv1.Operation_STATE_SUCCEEDED ||
		op.GetMethod() != "CapturePayment" || op.GetCapture().GetAmountCaptured() != 3000 {
		t.Errorf("GetOperation = %v", op)
	}
	// The charge itself is followed to SUCCEEDED.
	waitState(t, h.harness, "auth-1", service.StateSucceeded)
	// A second capture is another request: Stripe refuses it, final.
	_, err = h.client.CapturePayment(ctx, &billingv1.CapturePaymentRequest{RequestId: "capture-2", PaymentIntentId: pi})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "STRIPE_STATE" {
		t.Errorf("second capture: %v", ei)
	}

	pi2 := authorized(t, h.harness, "auth-2", 2000)
	cancel := &billingv1.CancelPaymentRequest{RequestId: "cancel-1", PaymentIntentId: pi2, Reason: "requested_by_customer"}
	c, err := h.client.CancelPayment(ctx, cancel)
	if err != nil || c.GetStatus() != "canceled" || c.GetCancellationReason() != "requested_by_customer" ||
		c.GetPaymentStatus() != billingv1.PaymentStatus_PAYMENT_STATUS_CANCELED {
		t.Fatalf("CancelPayment = %v, %v", c, err)
	}
	if c, err := h.client.CancelPayment(ctx, cancel); err != nil || !c.GetReplayed() {
		t.Fatalf("repeat = %v, %v", c, err)
	}
	if n := requests(h.sim, http.MethodPost, "/v1/payment_intents/{id}/cancel"); n != 1 {
		t.Errorf("cancel POSTs = %d, want 1", n)
	}
	rec := waitState(t, h.harness, "auth-2", service.StateFailed)
	if service.ReasonOf(rec.Err) != service.ReasonCanceled {
		t.Errorf("the canceled charge: %+v", rec.Err)
	}
	// Capturing what was canceled: FAILED_PRECONDITION, and the same request
	// id with another amount is another request.
	_, err = h.client.CapturePayment(ctx, &billingv1.CapturePaymentRequest{RequestId: "capture-3", PaymentIntentId: pi2})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "STRIPE_STATE" {
		t.Errorf("capture of a canceled PaymentIntent: %v", ei)
	}
	_, err = h.client.CapturePayment(ctx, &billingv1.CapturePaymentRequest{RequestId: "capture-1", PaymentIntentId: pi, Amount: 10})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("reuse: %v", ei)
	}
}

// CancelSubscription now ends the subscription (and the Subscribe record
// that waited for its first payment ends CANCELED); a repeat is replayed.
func TestCancelSubscriptionNow(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	sub, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "s-1", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	req := &billingv1.CancelSubscriptionRequest{RequestId: "end-1", SubscriptionId: sub.GetSubscriptionId()}
	got, err := h.client.CancelSubscription(ctx, req)
	if err != nil || got.GetStatus() != "canceled" || got.GetSubscriptionStatus() != billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_CANCELED {
		t.Fatalf("CancelSubscription = %v, %v", got, err)
	}
	if got, err := h.client.CancelSubscription(ctx, req); err != nil || !got.GetReplayed() || got.GetStatus() != "canceled" {
		t.Fatalf("repeat = %v, %v", got, err)
	}
	if n := requests(h.sim, http.MethodDelete, "/v1/subscriptions/{id}"); n != 1 {
		t.Errorf("DELETEs = %d, want 1", n)
	}
	rec := waitState(t, h.harness, "s-1", service.StateFailed)
	if service.ReasonOf(rec.Err) != service.ReasonCanceled {
		t.Errorf("the Subscribe record: %+v", rec.Err)
	}
}

// A caller acts only on objects billingd created for it: another caller's
// PaymentIntent or subscription is NOT_FOUND, with nothing sent to Stripe
// that changes anything; so is one made outside billingd, unless the
// operator allows those.
func TestLifecycleIsolation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{srvCfg: new(authConfig(t))})
	ctx := h.ctx()
	a, b := as(ctx, tokenA), as(ctx, tokenB)
	req := visa("a-auth")
	req.CaptureMethod = "manual"
	charged, err := h.client.Charge(a, req)
	if err != nil {
		t.Fatal(err)
	}
	pi := charged.GetPaymentIntentId()
	sub, err := h.client.Subscribe(a, &billingv1.SubscribeRequest{RequestId: "a-sub", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	foreign := createOutside(t, h)

	notFound := func(what string, err error, id string) {
		t.Helper()
		st, ei := errInfo(t, err, codes.NotFound)
		if ei.GetReason() != "RESOURCE_MISSING" || strings.Contains(st.Message(), "a-auth") {
			t.Errorf("%s: %v", what, st)
		}
		if ri := resourceInfo(st); ri == nil || ri.GetResourceName() != id {
			t.Errorf("%s: ResourceInfo %v", what, ri)
		}
	}
	for _, c := range []struct {
		name string
		id   string
		call func() error
	}{
		{"B refunds A's", pi, func() error {
			_, err := h.client.Refund(b, &billingv1.RefundRequest{RequestId: "b-1", PaymentIntentId: pi})
			return err
		}},
		{"B captures A's", pi, func() error {
			_, err := h.client.CapturePayment(b, &billingv1.CapturePaymentRequest{RequestId: "b-2", PaymentIntentId: pi})
			return err
		}},
		{"B cancels A's", pi, func() error {
			_, err := h.client.CancelPayment(b, &billingv1.CancelPaymentRequest{RequestId: "b-3", PaymentIntentId: pi})
			return err
		}},
		{"B cancels A's subscription", sub.GetSubscriptionId(), func() error {
			_, err := h.client.CancelSubscription(b, &billingv1.CancelSubscriptionRequest{RequestId: "b-4", SubscriptionId: sub.GetSubscriptionId()})
			return err
		}},
		{"A captures one made outside billingd", foreign, func() error {
			_, err := h.client.CapturePayment(a, &billingv1.CapturePaymentRequest{RequestId: "a-foreign", PaymentIntentId: foreign})
			return err
		}},
		{"A captures one that does not exist", "pi_missing", func() error {
			_, err := h.client.CapturePayment(a, &billingv1.CapturePaymentRequest{RequestId: "a-missing", PaymentIntentId: "pi_missing"})
			return err
		}},
	} {
		notFound(c.name, c.call(), c.id)
		// The same answer again, from the record.
		notFound(c.name+", repeated", c.call(), c.id)
	}
	for _, path := range []string{"/v1/refunds", "/v1/payment_intents/{id}/capture", "/v1/payment_intents/{id}/cancel"} {
		if n := requests(h.sim, http.MethodPost, path); n != 0 {
			t.Errorf("POST %s reached the simulator %d times", path, n)
		}
	}
	if n := requests(h.sim, http.MethodDelete, "/v1/subscriptions/{id}"); n != 0 {
		t.Errorf("DELETE reached the simulator %d times", n)
	}
	for _, id := range []string{"a-auth", "a-sub"} {
		_, err := h.client.GetOperation(b, &billingv1.GetOperationRequest{RequestId: id})
		errInfo(t, err, codes.NotFound)
		stream, err := h.client.WatchOperation(b, &billingv1.GetOperationRequest{RequestId: id})
		if err == nil {
			_, err = stream.Recv()
		}
		errInfo(t, err, codes.NotFound)
	}
	// The owner may.
	got, err := h.client.CapturePayment(a, &billingv1.CapturePaymentRequest{RequestId: "a-capture", PaymentIntentId: pi})
	if err != nil || got.GetStatus() != "succeeded" {
		t.Fatalf("A's own capture = %v, %v", got, err)
	}
}

// With --allow-foreign-objects, an object made outside billingd may be acted
// on; another caller's still may not.
func TestLifecycleAllowForeignObjects(t *testing.T) {
	t.Parallel()
	cfg := testServiceConfig()
	cfg.AllowForeignObjects = true
	h := newHarness(t, harnessOpts{svcCfg: &cfg, srvCfg: new(authConfig(t))})
	ctx := h.ctx()
	foreign := createOutside(t, h)
	got, err := h.client.CapturePayment(as(ctx, tokenA), &billingv1.CapturePaymentRequest{RequestId: "f-1", PaymentIntentId: foreign})
	if err != nil || got.GetStatus() != "succeeded" {
		t.Fatalf("capture of a foreign PaymentIntent = %v, %v", got, err)
	}
	req := visa("b-auth")
	req.CaptureMethod = "manual"
	charged, err := h.client.Charge(as(ctx, tokenB), req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.client.CancelPayment(as(ctx, tokenA), &billingv1.CancelPaymentRequest{RequestId: "f-2", PaymentIntentId: charged.GetPaymentIntentId()})
	errInfo(t, err, codes.NotFound)
}

// createOutside makes an authorised PaymentIntent directly at the
// simulator, as code other than billingd would: it has no billingd metadata.
func createOutside(t *testing.T, h *harness) string {
	t.Helper()
	form := "amount=1500&currency=usd&confirm=true&capture_method=manual&payment_method=pm_card_visa&payment_method_types[0]=card"
	req, _ := http.NewRequest(http.MethodPost, h.simURL+"/v1/payment_intents", strings.NewReader(form))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create outside billingd: %d", resp.StatusCode)
	}
	for _, pi := range h.sim.PaymentIntents() {
		if len(pi.Metadata) == 0 && pi.Status == "requires_capture" {
			return pi.ID
		}
	}
	t.Fatal("the PaymentIntent made outside billingd is not at the simulator")
	return ""
}

// CancelSubscription at the period's end keeps the subscription active and
// marked; it ends when the period does, and its Subscribe record, final,
// stays SUCCEEDED.
func TestCancelSubscriptionAtPeriodEnd(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	sub, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "s-2", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
	if err != nil {
		t.Fatal(err)
	}
	var invoicePI string
	for _, in := range h.sim.Invoices() {
		if in.Subscription == sub.GetSubscriptionId() {
			invoicePI = in.PaymentIntent
		}
	}
	if err := h.sim.Authenticate(invoicePI, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.harness, "s-2", service.StateSucceeded)
	req := &billingv1.CancelSubscriptionRequest{RequestId: "end-2", SubscriptionId: sub.GetSubscriptionId(), AtPeriodEnd: true}
	got, err := h.client.CancelSubscription(ctx, req)
	if err != nil || got.GetStatus() != "active" || !got.GetCancelAtPeriodEnd() || got.GetReplayed() {
		t.Fatalf("CancelSubscription = %v, %v", got, err)
	}
	if got, err := h.client.CancelSubscription(ctx, req); err != nil || !got.GetReplayed() || !got.GetCancelAtPeriodEnd() {
		t.Fatalf("repeat = %v, %v", got, err)
	}
	if n := requests(h.sim, http.MethodPost, "/v1/subscriptions/{id}"); n != 1 {
		t.Errorf("update POSTs = %d, want 1", n)
	}
	h.clock.Advance(32 * 24 * time.Hour)
	h.sim.ApplyDueTransitions()
	waitFor(t, func() bool {
		for _, s := range h.sim.Subscriptions() {
			if s.ID == sub.GetSubscriptionId() {
				return s.Status == "canceled"
			}
		}
		return false
	})
	if rec, _ := h.record(caller, "s-2"); rec.State != service.StateSucceeded {
		t.Errorf("the Subscribe record = %v, want SUCCEEDED (final)", rec.State)
	}
}
