package server_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
)

const caller = "anonymous" // no auth configured in these tests

func TestChargeThenReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	req := visa("order-1")
	req.Metadata = map[string]string{"order": "1"}

	var hdr metadata.MD
	first, err := h.client.Charge(ctx, req, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	if first.GetReplayed() || first.GetStatus() != "succeeded" || first.GetAmount() != 2000 || first.GetCurrency() != "usd" {
		t.Errorf("first = %v", first)
	}
	if got := hdr.Get("idempotent-replayed"); len(got) != 0 {
		t.Errorf("first answer has idempotent-replayed %v", got)
	}

	before := h.db.Stats()
	second, err := h.client.Charge(ctx, req, grpc.Header(&hdr))
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if after := h.db.Stats(); after != before {
		t.Errorf("a replay wrote to the store: %+v → %+v; it should be one read-only transaction", before, after)
	}
	if !second.GetReplayed() || second.GetPaymentIntentId() != first.GetPaymentIntentId() {
		t.Errorf("replay = %v, want replayed copy of %v", second, first)
	}
	if got := hdr.Get("idempotent-replayed"); len(got) != 1 || got[0] != "true" {
		t.Errorf("replay header = %v", got)
	}

	pis := h.intentsFor(caller, "order-1")
	if len(pis) != 1 {
		t.Fatalf("simulator holds %d PaymentIntents, want 1", len(pis))
	}
	pi := pis[0]
	if pi.ID != first.GetPaymentIntentId() || pi.Amount != 2000 || pi.Status != "succeeded" {
		t.Errorf("simulator PI = %+v", pi)
	}
	if want := service.StripeKey(caller, "order-1", "create_payment_intent"); pi.IdempotencyKey != want {
		t.Errorf("Idempotency-Key = %q, want derived %q", pi.IdempotencyKey, want)
	}
	if pi.Metadata["billingd_caller"] != caller || pi.Metadata["order"] != "1" {
		t.Errorf("metadata = %v", pi.Metadata)
	}
	if strings.Contains(pi.IdempotencyKey, "order-1") || strings.Contains(pi.Metadata[service.MetadataRequestKey], "order-1") {
		t.Error("raw request_id leaked into the Stripe key or metadata")
	}
	if got := h.sim.Stats().PaymentIntentsCreated; got != 1 {
		t.Errorf("PaymentIntentsCreated = %d", got)
	}

	rec, _ := h.record(caller, "order-1")
	if rec.State != service.StateSucceeded || rec.Result.ObjectID != pi.ID || rec.Attempts != 1 {
		t.Errorf("record = %+v", rec)
	}
	op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: "order-1"})
	if err != nil {
		t.Fatal(err)
	}
	if op.GetState() != billingv1.Operation_STATE_SUCCEEDED || op.GetStripeObjectId() != pi.ID ||
		op.GetCharge().GetPaymentIntentId() != pi.ID || op.GetMethod() != "Charge" || op.GetAttempts() != 1 {
		t.Errorf("operation = %v", op)
	}
}

func TestSubscribeThenReplay(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	req := &billingv1.SubscribeRequest{RequestId: "sub-1", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 2}
	first, err := h.client.Subscribe(ctx, req)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	second, err := h.client.Subscribe(ctx, req)
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	// default_incomplete: the subscription waits for its first payment, which
	// the customer confirms with the first invoice's client_secret.
	if first.GetReplayed() || !second.GetReplayed() || first.GetSubscriptionId() != second.GetSubscriptionId() ||
		first.GetStatus() != "incomplete" || first.GetClientSecret() == "" || second.GetClientSecret() != first.GetClientSecret() {
		t.Errorf("first = %v, second = %v", first, second)
	}
	subs := h.subscriptionsFor(caller, "sub-1")
	if len(subs) != 1 || subs[0].ID != first.GetSubscriptionId() || subs[0].Customer != "cus_demo" ||
		len(subs[0].Items) != 1 || subs[0].Items[0].Quantity != 2 {
		t.Fatalf("simulator subscriptions = %+v", subs)
	}
}

func TestRequestIDReused(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	if _, err := h.client.Charge(ctx, visa("reuse")); err != nil {
		t.Fatal(err)
	}
	other := visa("reuse")
	other.Amount = 2500
	_, err := h.client.Charge(ctx, other)
	_, ei := errInfo(t, err, codes.FailedPrecondition)
	if ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	_, err = h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "reuse", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
	if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("other method: reason = %s", ei.GetReason())
	}
	if got := len(h.intentsFor(caller, "reuse")); got != 1 {
		t.Errorf("PaymentIntents = %d, want 1", got)
	}
	if got := h.sim.Stats().SubscriptionsCreated; got != 0 {
		t.Errorf("subscriptions created = %d", got)
	}
	rec, _ := h.record(caller, "reuse")
	if rec.State != service.StateSucceeded || rec.Method != service.MethodCharge {
		t.Errorf("record changed: %+v", rec)
	}
}

func TestDeclinesAreFinalAndReplayIdentically(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pm, code, decline string
	}{
		{"pm_card_chargeDeclined", "card_declined", "generic_decline"},
		{"pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"},
		{"pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"},
	}
	h := newHarness(t, harnessOpts{})
	for _, tt := range tests {
		t.Run(tt.pm, func(t *testing.T) {
			t.Parallel()
			ctx := h.ctx()
			req := visa("decline-" + tt.pm)
			req.PaymentMethodId = tt.pm
			_, err := h.client.Charge(ctx, req)
			st, ei := errInfo(t, err, codes.FailedPrecondition)
			if ei.GetReason() != "CARD_DECLINED" || ei.GetMetadata()["code"] != tt.code ||
				ei.GetMetadata()["decline_code"] != tt.decline || !strings.HasPrefix(ei.GetMetadata()["stripe_request_id"], "req_") {
				t.Errorf("ErrorInfo = %v", ei)
			}
			if strings.Contains(st.Message(), "secret") || strings.Contains(st.String(), "_secret_") {
				t.Errorf("status leaks a client_secret: %v", st.Proto())
			}
			var hdr metadata.MD
			_, err2 := h.client.Charge(ctx, req, grpc.Header(&hdr))
			st2, _ := status.FromError(err2)
			if got := hdr.Get("idempotent-replayed"); len(got) != 1 || got[0] != "true" {
				t.Errorf("replayed decline header = %v", got)
			}
			if !proto.Equal(st.Proto(), st2.Proto()) {
				t.Errorf("replayed status differs:\n%v\n%v", st.Proto(), st2.Proto())
			}
			pis := h.intentsFor(caller, req.GetRequestId())
			if len(pis) != 1 || pis[0].Status != "requires_payment_method" {
				t.Fatalf("simulator PIs = %+v, want one declined", pis)
			}
			rec, _ := h.record(caller, req.GetRequestId())
			if rec.State != service.StateFailed || rec.Err == nil || rec.Err.Reason != service.ReasonCardDeclined {
				t.Errorf("record = %+v", rec)
			}
			op, err := h.client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: req.GetRequestId()})
			if err != nil {
				t.Fatal(err)
			}
			if op.GetState() != billingv1.Operation_STATE_FAILED || !proto.Equal(op.GetError(), st.Proto()) || op.GetStripeObjectId() != pis[0].ID {
				t.Errorf("operation = %v", op)
			}
		})
	}
}

func TestStripeRefusalsMapToStatuses(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{MaxSubscriptionsPerCustomer: 1}})
	ctx := h.ctx()

	// 400 invalid_request_error (executed): below Stripe's minimum in a
	// currency whose minimum Stripe does not document (so billingd cannot
	// check it before sending; below a documented one is INVALID_ARGUMENT
	// with nothing sent, see TestEveryValidationRuleRejects).
	small := visa("too-small")
	small.Amount, small.Currency = 10, "kes"
	_, err := h.client.Charge(ctx, small)
	st, ei := errInfo(t, err, codes.InvalidArgument)
	if ei.GetReason() != "STRIPE_INVALID_REQUEST" || ei.GetMetadata()["code"] != "amount_too_small" {
		t.Errorf("ErrorInfo = %v", ei)
	}
	if br := badRequest(st); len(br) != 1 || br[0].GetField() != "amount" {
		t.Errorf("BadRequest = %v", br)
	}
	if rec, _ := h.record(caller, "too-small"); rec.State != service.StateFailed {
		t.Errorf("record = %+v", rec)
	}

	// resource_missing: a payment method Stripe does not know.
	missing := visa("missing-pm")
	missing.PaymentMethodId = "pm_does_not_exist"
	_, err = h.client.Charge(ctx, missing)
	st, ei = errInfo(t, err, codes.NotFound)
	if ei.GetReason() != "RESOURCE_MISSING" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	if ri := resourceInfo(st); ri == nil || ri.GetResourceType() != "stripe.com/PaymentMethod" || ri.GetResourceName() != "pm_does_not_exist" {
		t.Errorf("ResourceInfo = %v", ri)
	}
	_, err = h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "missing-cus", CustomerId: "cus_nobody", PriceId: "price_basic_monthly", Quantity: 1})
	st, _ = errInfo(t, err, codes.NotFound)
	if ri := resourceInfo(st); ri == nil || ri.GetResourceType() != "stripe.com/Customer" || ri.GetResourceName() != "cus_nobody" {
		t.Errorf("ResourceInfo = %v", ri)
	}

	// Object state: the customer already has its maximum of subscriptions.
	sub := func(id string) error {
		_, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: id, CustomerId: "cus_demo", PriceId: "price_pro_monthly", Quantity: 1})
		return err
	}
	if err := sub("state-1"); err != nil {
		t.Fatal(err)
	}
	_, ei = errInfo(t, sub("state-2"), codes.FailedPrecondition)
	if ei.GetReason() != "STRIPE_STATE" || ei.GetMetadata()["code"] != "customer_max_subscriptions" {
		t.Errorf("ErrorInfo = %v", ei)
	}
	if rec, _ := h.record(caller, "state-2"); rec.State != service.StateFailed {
		t.Errorf("record = %+v", rec)
	}
}

func TestStripeAuthFailureStaysPending(t *testing.T) {
	t.Parallel()
	const wrongKey = "sk_test_wrong_key_1234"
	for _, tt := range []struct {
		name string
		cfg  stripesim.Config
	}{
		{"401 unknown key", stripesim.Config{APIKeys: []string{testKey}}},
		{"403 forbidden key", stripesim.Config{ForbiddenKeys: []string{wrongKey}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{simCfg: tt.cfg, stripeKey: wrongKey})
			_, err := h.client.Charge(h.ctx(), visa("auth"))
			st, ei := errInfo(t, err, codes.Internal)
			if ei.GetReason() != "STRIPE_AUTH" {
				t.Errorf("reason = %s", ei.GetReason())
			}
			if strings.Contains(st.String(), "wrong_key") || strings.Contains(st.String(), "1234") {
				t.Errorf("status leaks the Stripe key: %v", st.Proto())
			}
			if rec, _ := h.record(caller, "auth"); rec.State != service.StatePending {
				t.Errorf("record = %+v, want PENDING", rec)
			}
			if got := h.sim.Stats().PaymentIntentsCreated; got != 0 {
				t.Errorf("created %d", got)
			}
		})
	}
}

// A restored (or lost) database cannot cause a second charge: the Stripe key
// is derived, so Stripe replays the same request and refuses a changed one.
func TestLostDatabaseCannotDoubleCharge(t *testing.T) {
	t.Parallel()
	first := newHarness(t, harnessOpts{})
	restored := newHarness(t, harnessOpts{sim: first.sim, simURL: first.simURL, clock: first.clock})
	ctx := first.ctx()

	orig, err := first.client.Charge(ctx, visa("lost-db"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := restored.client.Charge(ctx, visa("lost-db"))
	if err != nil {
		t.Fatal(err)
	}
	if again.GetPaymentIntentId() != orig.GetPaymentIntentId() {
		t.Errorf("restored instance charged anew: %s vs %s", again.GetPaymentIntentId(), orig.GetPaymentIntentId())
	}

	changed := visa("lost-db-2")
	if _, err := first.client.Charge(ctx, changed); err != nil {
		t.Fatal(err)
	}
	changed.Amount = 9999
	_, err = restored.client.Charge(ctx, changed)
	if _, ei := errInfo(t, err, codes.Internal); ei.GetReason() != "STRIPE_IDEMPOTENCY_MISMATCH" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	if got := first.sim.Stats().PaymentIntentsCreated; got != 2 {
		t.Errorf("PaymentIntentsCreated = %d, want 2", got)
	}
}

func TestUpstreamFailuresStayPendingThenSucceed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fault  stripesim.Fault
		reason string
	}{
		{stripesim.FaultRateLimit, "UPSTREAM_RATE_LIMITED"},
		{stripesim.FaultUnavailable, "UPSTREAM_UNAVAILABLE"},
		{stripesim.FaultDropBefore, "UPSTREAM_UNAVAILABLE"},
		{stripesim.FaultLockTimeout, "UPSTREAM_RATE_LIMITED"},
	}
	for _, tt := range tests {
		t.Run(tt.fault.String(), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, harnessOpts{})
			ctx := h.ctx()
			h.sim.FailNext("/v1/payment_intents", tt.fault, 4) // every attempt of one call
			_, err := h.client.Charge(ctx, visa("flaky"))
			st, ei := errInfo(t, err, codes.Unavailable)
			if ei.GetReason() != tt.reason {
				t.Errorf("reason = %s, want %s", ei.GetReason(), tt.reason)
			}
			if ri := retryInfo(st); ri == nil || ri.GetRetryDelay().AsDuration() <= 0 {
				t.Errorf("no RetryInfo: %v", st.Proto())
			}
			rec, _ := h.record(caller, "flaky")
			if rec.State != service.StatePending || rec.Err == nil || string(rec.Err.Reason) != tt.reason {
				t.Errorf("record = %+v", rec)
			}
			if got := h.sim.Stats().PaymentIntentsCreated; got != 0 {
				t.Fatalf("created %d during the outage", got)
			}

			resp, err := h.client.Charge(ctx, visa("flaky"))
			if err != nil {
				t.Fatalf("retry after outage: %v", err)
			}
			if resp.GetReplayed() || resp.GetStatus() != "succeeded" {
				t.Errorf("retry = %v", resp)
			}
			if pis := h.intentsFor(caller, "flaky"); len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
				t.Errorf("PIs = %+v", pis)
			}
			if rec, _ := h.record(caller, "flaky"); rec.State != service.StateSucceeded || rec.Attempts != 2 {
				t.Errorf("record = %+v, want SUCCEEDED after 2 attempts", rec)
			}
		})
	}
}

func TestShouldRetryFalseIsNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultShouldRetryFalse, 1)
	_, err := h.client.Charge(h.ctx(), visa("no-retry"))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "UPSTREAM_UNAVAILABLE" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	posts := 0
	for k, n := range h.sim.Stats().Requests {
		if k.Method == "POST" && k.Path == "/v1/payment_intents" {
			posts += n
		}
	}
	if posts != 1 {
		t.Errorf("POSTs = %d, want 1 (Stripe-Should-Retry: false)", posts)
	}
}

func TestResponseLostAfterProcessing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 1)
	resp, err := h.client.Charge(h.ctx(), visa("lost-response"))
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	pis := h.intentsFor(caller, "lost-response")
	if len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
		t.Fatalf("PIs = %+v, answer %v", pis, resp)
	}
	if st := h.sim.Stats(); st.Replays != 1 || st.PaymentIntentsCreated != 1 {
		t.Errorf("stats: replays %d created %d; want the retry served from Stripe's cache", st.Replays, st.PaymentIntentsCreated)
	}
}

func TestServerErrorIsIndeterminateAndNeverResent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{simCfg: stripesim.Config{SearchLag: time.Minute}})
	ctx := h.ctx()
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultServerError, 1)

	_, err := h.client.Charge(ctx, visa("five-hundred"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "OUTCOME_PENDING_RECONCILIATION" || retryInfo(st) == nil {
		t.Errorf("status = %v", st.Proto())
	}
	if rec, _ := h.record(caller, "five-hundred"); rec.State != service.StateIndeterminate {
		t.Fatalf("record = %+v, want INDETERMINATE", rec)
	}

	// Search has not caught up: still unknown, and nothing is re-sent.
	_, err = h.client.Charge(ctx, visa("five-hundred"))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "OUTCOME_PENDING_RECONCILIATION" {
		t.Errorf("retry reason = %s", ei.GetReason())
	}

	// Once search shows the object, the record settles on it.
	h.clock.Advance(2 * time.Minute)
	resp, err := h.client.Charge(ctx, visa("five-hundred"))
	if err != nil {
		t.Fatalf("retry after search lag: %v", err)
	}
	pis := h.intentsFor(caller, "five-hundred")
	if len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() || !resp.GetReplayed() {
		t.Fatalf("PIs = %+v, answer %v", pis, resp)
	}
	posts := 0
	for k, n := range h.sim.Stats().Requests {
		if k.Method == "POST" && k.Path == "/v1/payment_intents" {
			posts += n
		}
	}
	if posts != 1 {
		t.Errorf("create POSTs = %d, want exactly 1: an INDETERMINATE record is never re-sent", posts)
	}
	if rec, _ := h.record(caller, "five-hundred"); rec.State != service.StateSucceeded {
		t.Errorf("record = %+v", rec)
	}
}

// A decline whose answer was a 500 is reconciled as the decline it was, not
// as a success because a PaymentIntent exists.
func TestServerErrorOnDeclineReconcilesAsDecline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	req := visa("declined-500")
	req.PaymentMethodId = "pm_card_chargeDeclined"
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultServerError, 1)
	_, err := h.client.Charge(ctx, req)
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "OUTCOME_PENDING_RECONCILIATION" {
		t.Fatalf("reason = %s", ei.GetReason())
	}
	_, err = h.client.Charge(ctx, req)
	_, ei := errInfo(t, err, codes.FailedPrecondition)
	pis := h.intentsFor(caller, "declined-500")
	if ei.GetReason() != "CARD_DECLINED" || ei.GetMetadata()["decline_code"] != "generic_decline" ||
		len(pis) != 1 || ei.GetMetadata()["stripe_object_id"] != pis[0].ID {
		t.Errorf("ErrorInfo = %v, PIs = %+v", ei, pis)
	}
	if rec, _ := h.record(caller, "declined-500"); rec.State != service.StateFailed {
		t.Errorf("record = %+v", rec)
	}
}

func TestCallerGoneChargeCompletes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.sim.SetFaults(stripesim.Faults{Latency: 2 * time.Second})

	// Stripe is slower than the caller's deadline: billingd answers before
	// it, REQUEST_IN_PROGRESS with RetryInfo, rather than letting the call
	// run into DEADLINE_EXCEEDED; the drive goes on. A second of deadline
	// leaves the answer 50 ms to reach the caller (a twentieth): with 100
	// ms and its 5 ms, a loaded machine running the race detector
	// sometimes delivered it late.
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := h.client.Charge(short, visa("impatient"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "REQUEST_IN_PROGRESS" || retryInfo(st) == nil {
		t.Fatalf("err = %v (%v), want UNAVAILABLE REQUEST_IN_PROGRESS with RetryInfo", err, ei)
	}
	h.sim.SetFaults(stripesim.Faults{})

	// The retry joins the drive still in flight or replays its record.
	resp, err := h.client.Charge(h.ctx(), visa("impatient"))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if !resp.GetReplayed() {
		t.Errorf("retry = %v, want replayed (the first call made the charge)", resp)
	}
	pis := h.intentsFor(caller, "impatient")
	if len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
		t.Fatalf("PIs = %+v", pis)
	}
}

func TestStoreRefusingWritesFailsClosed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Charge(h.ctx(), visa("no-disk"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "STORAGE_UNAVAILABLE" || retryInfo(st) == nil {
		t.Errorf("status = %v", st.Proto())
	}
	if n := len(h.sim.Stats().Requests); n != 0 {
		t.Errorf("simulator saw requests %v: money must not move unrecorded", h.sim.Stats().Requests)
	}
}

// Final outcomes are cached in memory: a replay needs neither the store nor
// Stripe, while anything new still fails closed without the store.
func TestReplayFromMemoryWhenStoreIsGone(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	first, err := h.client.Charge(ctx, visa("cached"))
	if err != nil {
		t.Fatal(err)
	}
	declined := visa("cached-decline")
	declined.PaymentMethodId = "pm_card_chargeDeclined"
	_, derr := h.client.Charge(ctx, declined)
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := h.client.Charge(ctx, visa("cached"))
	if err != nil || !again.GetReplayed() || again.GetPaymentIntentId() != first.GetPaymentIntentId() {
		t.Fatalf("replay without the store = %v, %v", again, err)
	}
	_, derr2 := h.client.Charge(ctx, declined)
	if st1, st2 := status.Convert(derr), status.Convert(derr2); !proto.Equal(st1.Proto(), st2.Proto()) {
		t.Errorf("cached decline differs:\n%v\n%v", st1.Proto(), st2.Proto())
	}
	other := visa("cached")
	other.Amount++
	if _, ei := errInfo(t, func() error { _, err := h.client.Charge(ctx, other); return err }(), codes.FailedPrecondition); ei.GetReason() != "REQUEST_ID_REUSED" {
		t.Errorf("reuse against the cache: %s", ei.GetReason())
	}
	_, err = h.client.Charge(ctx, visa("not-cached"))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "STORAGE_UNAVAILABLE" {
		t.Errorf("new request without the store: %s", ei.GetReason())
	}
	if got := h.sim.Stats().PaymentIntentsCreated; got != 2 {
		t.Errorf("PaymentIntents created = %d, want 2", got)
	}
}

func TestConcurrentDuplicatesCoalesce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	h.sim.SetFaults(stripesim.Faults{Latency: 50 * time.Millisecond})
	ctx := h.ctx()
	const n = 32
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		ids       = map[string]int{}
		originals int
		errs      []error
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := h.client.Charge(ctx, visa("double-click"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			ids[resp.GetPaymentIntentId()]++
			if !resp.GetReplayed() {
				originals++
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(ids) != 1 || originals != 1 {
		t.Errorf("ids = %v, originals = %d; want one id, one original", ids, originals)
	}
	st := h.sim.Stats()
	if st.PaymentIntentsCreated != 1 || st.KeysInUse != 0 || st.Replays != 0 {
		t.Errorf("simulator: created %d, in-use %d, replays %d; want duplicates coalesced in billingd", st.PaymentIntentsCreated, st.KeysInUse, st.Replays)
	}
}

func TestDuplicatePastItsDeadlineGetsRequestInProgress(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	// The original holds Stripe for 3 s; the duplicate's 1 s deadline leaves
	// ample room for the round trip on a loaded machine.
	h.sim.SetFaults(stripesim.Faults{Latency: 3 * time.Second})
	ctx := h.ctx()
	done := make(chan error, 1)
	go func() { _, err := h.client.Charge(ctx, visa("slow")); done <- err }()
	waitFor(t, func() bool { return h.sim.Stats().InFlight == 1 })

	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := h.client.Charge(short, visa("slow"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "REQUEST_IN_PROGRESS" || retryInfo(st) == nil {
		t.Errorf("status = %v", st.Proto())
	}
	if err := <-done; err != nil {
		t.Fatalf("original: %v", err)
	}
	if got := h.sim.Stats().PaymentIntentsCreated; got != 1 {
		t.Errorf("created %d", got)
	}
}

// Another process holding the same Stripe key (a restored database on a
// second host): Stripe answers 409 idempotency_key_in_use until the first
// finishes; billingd retries, then answers REQUEST_IN_PROGRESS.
func TestKeyInUseAtStripe(t *testing.T) {
	t.Parallel()
	first := newHarness(t, harnessOpts{})
	second := newHarness(t, harnessOpts{sim: first.sim, simURL: first.simURL, clock: first.clock})
	ctx := first.ctx()
	first.sim.SetFaults(stripesim.Faults{Latency: 2 * time.Second})
	done := make(chan error, 1)
	go func() { _, err := first.client.Charge(ctx, visa("contended")); done <- err }()
	waitFor(t, func() bool { return first.sim.Stats().InFlight == 1 })
	first.sim.SetFaults(stripesim.Faults{})

	_, err := second.client.Charge(ctx, visa("contended"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "REQUEST_IN_PROGRESS" || retryInfo(st) == nil {
		t.Errorf("status = %v", st.Proto())
	}
	if rec, _ := second.record(caller, "contended"); rec.State != service.StatePending {
		t.Errorf("record = %+v", rec)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	resp, err := second.client.Charge(ctx, visa("contended"))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if pis := first.intentsFor(caller, "contended"); len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
		t.Errorf("PIs = %+v", pis)
	}
}

func TestKeyWindowSearchesBeforeResending(t *testing.T) {
	t.Parallel()
	t.Run("object exists", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOpts{})
		ctx := h.ctx()
		// Stripe creates the charge, but every answer is lost.
		h.sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 4)
		_, err := h.client.Charge(ctx, visa("day-old"))
		if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "UPSTREAM_UNAVAILABLE" {
			t.Fatalf("reason = %s", ei.GetReason())
		}
		// A day later Stripe has forgotten the key: a blind resend would charge twice.
		h.clock.Advance(24 * time.Hour)
		resp, err := h.client.Charge(ctx, visa("day-old"))
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		pis := h.intentsFor(caller, "day-old")
		if len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
			t.Fatalf("PIs = %+v, answer %v", pis, resp)
		}
		if rec, _ := h.record(caller, "day-old"); rec.State != service.StateSucceeded {
			t.Errorf("record = %+v", rec)
		}
	})
	t.Run("nothing created", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t, harnessOpts{})
		ctx := h.ctx()
		h.sim.FailNext("/v1/payment_intents", stripesim.FaultUnavailable, 4)
		if _, err := h.client.Charge(ctx, visa("never-sent")); status.Code(err) != codes.Unavailable {
			t.Fatalf("err = %v", err)
		}
		h.clock.Advance(24 * time.Hour)
		resp, err := h.client.Charge(ctx, visa("never-sent"))
		if err != nil {
			t.Fatalf("retry: %v", err)
		}
		if pis := h.intentsFor(caller, "never-sent"); len(pis) != 1 || pis[0].ID != resp.GetPaymentIntentId() {
			t.Fatalf("PIs = %+v", pis)
		}
		searches := 0
		for k, n := range h.sim.Stats().Requests {
			if k.Path == "/v1/payment_intents/search" {
				searches += n
			}
		}
		if searches != 1 {
			t.Errorf("searches = %d, want 1 before the resend", searches)
		}
	})
}

func TestInvalidInputChangesNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()
	charge := func(mut func(r *billingv1.ChargeRequest)) *billingv1.ChargeRequest {
		r := visa("bad-input")
		mut(r)
		return r
	}
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"empty request_id", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.RequestId = "" }))
			return err
		}, "request_id"},
		{"request_id with space", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.RequestId = "a b" }))
			return err
		}, "request_id"},
		{"zero amount", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.Amount = 0 }))
			return err
		}, "amount"},
		{"huge amount", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.Amount = 100_000_000 }))
			return err
		}, "amount"},
		{"currency not a code", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.Currency = "us" }))
			return err
		}, "currency"},
		{"payment method prefix", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.PaymentMethodId = "card_123" }))
			return err
		}, "payment_method_id"},
		{"customer prefix", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.CustomerId = "acct_1" }))
			return err
		}, "customer_id"},
		{"reserved metadata", func() error {
			_, err := h.client.Charge(ctx, charge(func(r *billingv1.ChargeRequest) { r.Metadata = map[string]string{"billingd_caller": "x"} }))
			return err
		}, "metadata"},
		{"quantity", func() error {
			_, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "bad-input", CustomerId: "cus_demo", PriceId: "price_basic_monthly"})
			return err
		}, "quantity"},
		{"price prefix", func() error {
			_, err := h.client.Subscribe(ctx, &billingv1.SubscribeRequest{RequestId: "bad-input", CustomerId: "cus_demo", PriceId: "plan_1", Quantity: 1})
			return err
		}, "price_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, ei := errInfo(t, tt.call(), codes.InvalidArgument)
			if ei.GetReason() != "INVALID_ARGUMENT" {
				t.Errorf("reason = %s", ei.GetReason())
			}
			br := badRequest(st)
			if len(br) == 0 || !strings.HasPrefix(br[0].GetField(), tt.field) {
				t.Errorf("field violations = %v, want %s", br, tt.field)
			}
		})
	}
	if _, found := h.record(caller, "bad-input"); found {
		t.Error("invalid input wrote a record")
	}
	if n := len(h.sim.Stats().Requests); n != 0 {
		t.Errorf("invalid input reached Stripe: %v", h.sim.Stats().Requests)
	}
}

func TestGetOperationNotFound(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	_, err := h.client.GetOperation(h.ctx(), &billingv1.GetOperationRequest{RequestId: "never"})
	if _, ei := errInfo(t, err, codes.NotFound); ei.GetReason() != "NOT_FOUND" {
		t.Errorf("reason = %s", ei.GetReason())
	}
}

func badRequest(st *status.Status) []*errdetails.BadRequest_FieldViolation {
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			return br.GetFieldViolations()
		}
	}
	return nil
}

func resourceInfo(st *status.Status) *errdetails.ResourceInfo {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.ResourceInfo); ok {
			return ri
		}
	}
	return nil
}

// waitFor polls cond for up to 10 s: a bounded wait for an event another
// goroutine causes, not a timing assertion.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Every reason of the service reaches callers with its class's gRPC code:
// the two tables (service's classes, interceptors' code names) agree.
func TestEveryReasonReachesItsCode(t *testing.T) {
	t.Parallel()
	for _, r := range service.Reasons() {
		st := interceptors.StatusOf(&service.Error{Reason: r, Message: "m"})
		if got, want := st.Code().String(), r.Class(); strings.ToUpper(codeName(got)) != string(want) {
			t.Errorf("%s: code %s, want %s", r, got, want)
		}
	}
}

// codeName turns codes.Code's String ("FailedPrecondition") into its
// canonical name ("FAILED_PRECONDITION").
func codeName(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// A 409 from Stripe is a request still executing under the same key,
// whatever the type of its body (Stripe has answered invalid_request_error
// and idempotency_error): billingd retries the key and then answers
// UNAVAILABLE REQUEST_IN_PROGRESS, never INTERNAL, and the retry gets the
// one PaymentIntent. Two billingd processes on separate databases (a
// restored backup, say) send the same deterministic key at once.
func TestStripe409IsInProgressWhateverItsType(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{stripesim.InUseInvalidRequest, stripesim.InUseIdempotency} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			clock := stripesim.NewManualClock(epoch)
			sim := stripesim.New(stripesim.Config{Seed: 1, Clock: clock, InUseErrorType: typ,
				Faults: stripesim.Faults{Latency: 400 * time.Millisecond}})
			srv := httptest.NewServer(sim)
			t.Cleanup(srv.Close)
			a := newHarness(t, harnessOpts{sim: sim, simURL: srv.URL, clock: clock})
			// One attempt: the 409 is what the service gets to classify.
			b := newHarness(t, harnessOpts{sim: sim, simURL: srv.URL, clock: clock, stripeAttempts: 1})
			first := make(chan error, 1)
			go func() { _, err := a.client.Charge(a.ctx(), visa("twin")); first <- err }()
			waitFor(t, func() bool { return sim.Stats().InFlight > 0 })
			_, err := b.client.Charge(b.ctx(), visa("twin"))
			if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "REQUEST_IN_PROGRESS" {
				t.Fatalf("the second process: %v", ei)
			}
			if rec, _ := b.record(caller, "twin"); rec.State != service.StatePending {
				t.Errorf("its record = %v, want PENDING", rec.State)
			}
			if err := <-first; err != nil {
				t.Fatalf("the first process: %v", err)
			}
			resp, err := b.client.Charge(b.ctx(), visa("twin"))
			pis := a.intentsFor(caller, "twin")
			if err != nil || len(pis) != 1 || resp.GetPaymentIntentId() != pis[0].ID {
				t.Fatalf("retry = %v, %v; PaymentIntents %d", resp, err, len(pis))
			}
		})
	}
}

// TestCrowdWaitingForAStripeSlot: with every Stripe slot taken, a caller
// whose wait for one would outlast its deadline is answered at once
// UNAVAILABLE UPSTREAM_RATE_LIMITED with RetryInfo, before anything is
// written or sent: no record, nothing at Stripe. Its retry, once a slot is
// free, charges once.
func TestCrowdWaitingForAStripeSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{stripeSlots: 1})
	h.sim.SetFaults(stripesim.Faults{Latency: 300 * time.Millisecond})
	if _, err := h.client.Charge(h.ctx(), visa("slot-first")); err != nil { // calls hold a slot ~300 ms
		t.Fatal(err)
	}
	h.sim.SetFaults(stripesim.Faults{Latency: 3 * time.Second})
	holder := make(chan error, 1)
	go func() { _, err := h.client.Charge(h.ctx(), visa("slot-holder")); holder <- err }()
	for deadline := time.Now().Add(10 * time.Second); h.sim.Stats().InFlight == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first charge never reached Stripe")
		}
	}

	short, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := h.client.Charge(short, visa("slot-crowd"))
	st, ei := errInfo(t, err, codes.Unavailable)
	if ei.GetReason() != "UPSTREAM_RATE_LIMITED" || retryInfo(st) == nil {
		t.Fatalf("err = %v (%v), want UNAVAILABLE UPSTREAM_RATE_LIMITED with RetryInfo", err, ei)
	}
	if rec, found := h.record(caller, "slot-crowd"); found {
		t.Errorf("a caller refused a slot left a record: %+v", rec)
	}
	if pis := h.intentsFor(caller, "slot-crowd"); len(pis) != 0 {
		t.Errorf("a caller refused a slot reached Stripe: %+v", pis)
	}

	if err := <-holder; err != nil {
		t.Fatal(err)
	}
	h.sim.SetFaults(stripesim.Faults{})
	if _, err := h.client.Charge(h.ctx(), visa("slot-crowd")); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if pis := h.intentsFor(caller, "slot-crowd"); len(pis) != 1 {
		t.Errorf("after the retry %d PaymentIntents, want 1", len(pis))
	}
}

// TestLogLineCarriesStripeTime: the log line of the call that made the
// Stripe request says how long Stripe took on the wire (stripe_ms), so that
// billingd's own share of the caller's latency can be read request by
// request; a replay, which made none, has none.
func TestLogLineCarriesStripeTime(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	h := newHarness(t, harnessOpts{log: &logs})
	h.sim.SetFaults(stripesim.Faults{Latency: 30 * time.Millisecond})
	for range 2 {
		if _, err := h.client.Charge(h.ctx(), visa("timed")); err != nil {
			t.Fatal(err)
		}
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err == nil && m["request_id"] == "timed" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("%d log lines for the request, want 2:\n%s", len(lines), logs.String())
	}
	first, replay := lines[0], lines[1]
	if ms, ok := first["stripe_ms"].(float64); !ok || ms < 30 || first["replayed"] != false {
		t.Errorf("the charging call's line: stripe_ms %v, replayed %v; want ≥ 30 (the simulator's latency), false", first["stripe_ms"], first["replayed"])
	}
	if _, ok := replay["stripe_ms"]; ok || replay["replayed"] != true {
		t.Errorf("the replay's line: %v; want replayed and no stripe_ms", replay)
	}
}

// TestRepeatOfAnOpenRecordNeedsNoSlot: with every Stripe slot taken, the
// repeat of a charge that waits for the customer (REQUIRES_ACTION) is still
// answered at once from its record: only a request that may call Stripe
// waits for a slot.
func TestRepeatOfAnOpenRecordNeedsNoSlot(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{stripeSlots: 1})
	req := &billingv1.ChargeRequest{RequestId: "slot-3ds", Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_authenticationRequired"}
	first, err := h.client.Charge(h.ctx(), req)
	if err != nil || first.GetStatus() != "requires_action" {
		t.Fatalf("3-D Secure charge: %v, %v", first, err)
	}
	h.sim.SetFaults(stripesim.Faults{Latency: 3 * time.Second})
	holder := make(chan error, 1)
	go func() { _, err := h.client.Charge(h.ctx(), visa("slot-busy")); holder <- err }()
	for deadline := time.Now().Add(10 * time.Second); h.sim.Stats().InFlight == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow charge never reached Stripe")
		}
	}

	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	again, err := h.client.Charge(short, req)
	if err != nil || again.GetPaymentIntentId() != first.GetPaymentIntentId() || again.GetStatus() != "requires_action" {
		t.Errorf("the repeat with every slot taken: %v, %v; want the same PaymentIntent, requires_action", again, err)
	}
	if err := <-holder; err != nil {
		t.Fatal(err)
	}
}
