package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
)

const whsec = "whsec_test_billingd"

// webhookHarness is a harness whose simulator posts signed events to
// billingd's webhook handler over real HTTP.
type webhookHarness struct {
	*harness
	hookURL string
}

func newWebhookHarness(t *testing.T) *webhookHarness {
	t.Helper()
	var handler atomic.Pointer[http.Handler]
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(hook.Close)
	clock := stripesim.NewManualClock(epoch)
	sim := stripesim.New(stripesim.Config{Seed: 1, Clock: clock, WebhookURL: hook.URL + server.WebhookPath, WebhookSecret: whsec})
	t.Cleanup(sim.Close)
	simSrv := httptest.NewServer(sim)
	t.Cleanup(simSrv.Close)
	h := newHarness(t, harnessOpts{sim: sim, simURL: simSrv.URL, clock: clock})
	var hh http.Handler = server.NewWebhookHandler(whsec, service.NewWebhooks(h.svc, h.db), slog.New(slog.DiscardHandler))
	handler.Store(&hh)
	return &webhookHarness{harness: h, hookURL: hook.URL + server.WebhookPath}
}

// post delivers payload signed with secret and returns the status and outcome.
func (h *webhookHarness) post(payload []byte, secret string) (int, string) {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.hookURL, bytes.NewReader(payload))
	req.Header.Set("Stripe-Signature", stripesim.SignWebhook(payload, secret, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var body struct{ Outcome string }
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body.Outcome
}

// event builds a Stripe event of typ around the simulator's PaymentIntent.
func event(t *testing.T, id, typ string, pi stripesim.PaymentIntent) []byte {
	t.Helper()
	obj := map[string]any{
		"id": pi.ID, "object": "payment_intent", "amount": pi.Amount, "currency": pi.Currency,
		"status": pi.Status, "metadata": pi.Metadata,
	}
	b, err := json.Marshal(map[string]any{
		"id": id, "object": "event", "api_version": stripesim.APIVersion, "type": typ,
		"created": epoch.Unix(), "data": map[string]any{"object": obj},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A charge whose every answer is lost stays PENDING; the simulator's webhook
// settles it on the right PaymentIntent, and a later Charge replays it.
func TestWebhookSettlesLostAnswer(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 4)
	_, err := h.client.Charge(h.ctx(), visa("hooked"))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "UPSTREAM_UNAVAILABLE" {
		t.Fatalf("reason = %s", ei.GetReason())
	}
	rec := waitState(t, h.harness, "hooked", service.StateSucceeded)
	pis := h.intentsFor(caller, "hooked")
	if len(pis) != 1 || rec.Result.ObjectID != pis[0].ID || rec.Result.Amount != 2000 {
		t.Fatalf("record %+v, PIs %+v", rec.Result, pis)
	}
	resp, err := h.client.Charge(h.ctx(), visa("hooked"))
	if err != nil || !resp.GetReplayed() || resp.GetPaymentIntentId() != pis[0].ID {
		t.Errorf("retry = %v, %v", resp, err)
	}
	if got := posts(h.sim); got != 4 {
		t.Errorf("create POSTs = %d, want the 4 of the first call only", got)
	}
}

// INDETERMINATE records (Stripe answered 500 after processing) settle from
// webhooks alone — no search, no reconciler in this harness — to match what
// the simulator holds, and a retry then replays the settled outcome.
func TestWebhookSettlesIndeterminate(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	ctx := h.ctx()
	tests := []struct {
		id, pm string
		want   service.State
	}{
		{"indet-ok", "pm_card_visa", service.StateSucceeded},
		{"indet-declined", "pm_card_chargeDeclined", service.StateFailed},
	}
	for _, tt := range tests {
		req := visa(tt.id)
		req.PaymentMethodId = tt.pm
		h.sim.FailNext("/v1/payment_intents", stripesim.FaultServerError, 1)
		_, err := h.client.Charge(ctx, req)
		if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "OUTCOME_PENDING_RECONCILIATION" {
			t.Fatalf("%s: reason = %s", tt.id, ei.GetReason())
		}
		rec := waitState(t, h.harness, tt.id, tt.want)
		pis := h.intentsFor(caller, tt.id)
		if len(pis) != 1 || rec.Result.ObjectID != pis[0].ID {
			t.Fatalf("%s: record %+v, PIs %+v", tt.id, rec, pis)
		}
		resp, err := h.client.Charge(ctx, req)
		switch tt.want {
		case service.StateSucceeded:
			if err != nil || !resp.GetReplayed() || resp.GetPaymentIntentId() != pis[0].ID {
				t.Errorf("%s: retry = %v, %v", tt.id, resp, err)
			}
		case service.StateFailed:
			if _, ei := errInfo(t, err, codes.FailedPrecondition); ei.GetReason() != "CARD_DECLINED" || ei.GetMetadata()["stripe_object_id"] != pis[0].ID {
				t.Errorf("%s: retry = %v", tt.id, ei)
			}
		}
	}
	if got := posts(h.sim); got != 2 {
		t.Errorf("create POSTs = %d, want one per operation", got)
	}
	for k, n := range h.sim.Stats().Requests {
		if strings.HasSuffix(k.Path, "/search") {
			t.Errorf("%d searches (%v): the webhooks alone should have settled the records", n, k)
		}
	}
}

func TestWebhookSignatureAndDuplicates(t *testing.T) {
	t.Parallel()
	h := newWebhookHarness(t)
	// A charge whose answers are lost, so that a PaymentIntent exists.
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 4)
	_, _ = h.client.Charge(h.ctx(), visa("dup"))
	pis := h.intentsFor(caller, "dup")
	if len(pis) != 1 {
		t.Fatalf("PIs = %+v", pis)
	}
	// Wait for the simulator's own events to be handled, then reset the
	// record to PENDING to replay a crafted event against it.
	waitState(t, h.harness, "dup", service.StateSucceeded)
	rec, _ := h.record(caller, "dup")
	rec.State, rec.Result = service.StatePending, service.Result{}
	if err := h.db.Put(h.ctx(), rec); err != nil {
		t.Fatal(err)
	}

	ev := event(t, "evt_crafted_1", "payment_intent.succeeded", pis[0])
	if code, _ := h.post(ev, "whsec_wrong"); code != http.StatusBadRequest {
		t.Errorf("bad signature: status %d, want 400", code)
	}
	if got, _ := h.record(caller, "dup"); got.State != service.StatePending {
		t.Errorf("bad signature changed the record: %v", got.State)
	}
	if code, out := h.post(ev, whsec); code != http.StatusOK || out != "settled" {
		t.Errorf("first delivery: %d %q", code, out)
	}
	if got, _ := h.record(caller, "dup"); got.State != service.StateSucceeded || got.Result.ObjectID != pis[0].ID {
		t.Errorf("record = %v %+v", got.State, got.Result)
	}
	// Same event again, with the record reset: deduplicated, not re-applied.
	if err := h.db.Put(h.ctx(), rec); err != nil {
		t.Fatal(err)
	}
	if code, out := h.post(ev, whsec); code != http.StatusOK || out != "duplicate" {
		t.Errorf("second delivery: %d %q", code, out)
	}
	if got, _ := h.record(caller, "dup"); got.State != service.StatePending {
		t.Errorf("duplicate was applied: %v", got.State)
	}
	// Unknown types are acknowledged and ignored.
	if code, out := h.post(event(t, "evt_crafted_2", "charge.refunded", pis[0]), whsec); code != http.StatusOK || out != "ignored" {
		t.Errorf("unknown type: %d %q", code, out)
	}
	// A payment_failed event settles the decline.
	fail := event(t, "evt_crafted_3", "payment_intent.payment_failed", pis[0])
	if code, out := h.post(fail, whsec); code != http.StatusOK || out != "settled" {
		t.Errorf("payment_failed: %d %q", code, out)
	}
	if got, _ := h.record(caller, "dup"); got.State != service.StateFailed || service.ReasonOf(got.Err) != service.ReasonCardDeclined {
		t.Errorf("record = %v %+v", got.State, got.Err)
	}
}

// A generated secret is Stripe's whsec_ form, new every time, and verifies
// what is signed with it alone.
func TestNewWebhookSecret(t *testing.T) {
	t.Parallel()
	secret, other := server.NewWebhookSecret(), server.NewWebhookSecret()
	if !strings.HasPrefix(secret, "whsec_") || len(secret) != len("whsec_")+48 || secret == other {
		t.Fatalf("secrets %q, %q: want two different whsec_ and 48 hex digits", secret, other)
	}
	payload := []byte(`{"id":"evt_1","object":"event","type":"ping.test","data":{"object":{}}}`)
	hh := server.NewWebhookHandler(secret, nil, slog.New(slog.DiscardHandler))
	tests := []struct {
		name, signer string
		want         int
	}{
		{"signed with it", secret, http.StatusOK},
		{"signed with another", other, http.StatusBadRequest},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodPost, server.WebhookPath, bytes.NewReader(payload))
		req.Header.Set("Stripe-Signature", stripesim.SignWebhook(payload, tt.signer, time.Now()))
		w := httptest.NewRecorder()
		hh.ServeHTTP(w, req)
		if got := w.Code; got != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.want)
		}
	}
}
