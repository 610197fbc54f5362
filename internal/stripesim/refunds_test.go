package stripesim_test

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	stripe "github.com/stripe/stripe-go/v76"

	"github.com/billingd/billingd/internal/stripesim"
)

// refundJSON is the part of a refund these tests look at.
type refundJSON struct {
	ID            string            `json:"id"`
	Object        string            `json:"object"`
	Status        string            `json:"status"`
	Amount        int64             `json:"amount"`
	PaymentIntent string            `json:"payment_intent"`
	FailureReason string            `json:"failure_reason"`
	Metadata      map[string]string `json:"metadata"`
}

func decodeRefund(t *testing.T, raw []byte) refundJSON {
	t.Helper()
	var r refundJSON
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("decode refund: %v: %s", err, raw)
	}
	return r
}

// paidIntent charges 2000 usd to pm and returns the PaymentIntent's id.
func paidIntent(t *testing.T, srv *httptest.Server, pm string) string {
	t.Helper()
	r := post(t, srv, "/v1/payment_intents", "", charge(pm))
	if p := r.pi(t); r.status != 200 || p.Status != "succeeded" {
		t.Fatalf("charge %s = %d %s", pm, r.status, r.raw)
	}
	return r.id(t)
}

func refundForm(pi string, extra ...string) url.Values {
	v := url.Values{
		"payment_intent":                 {pi},
		"metadata[billingd_caller]":      {"shop"},
		"metadata[billingd_request_key]": {"rk_" + pi},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// billingd's calls, through stripe-go: partial refunds accumulate, the
// default is what is left, a fully refunded charge refuses more, and the
// refunds list newest first.
func TestStripeGoRefunds(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	sc := stripeAPI(t, srv, testKey)
	pi, err := sc.PaymentIntents.New(cardCharge("pm_card_visa", "rk1"))
	if err != nil {
		t.Fatal(err)
	}

	params := &stripe.RefundParams{PaymentIntent: stripe.String(pi.ID), Amount: stripe.Int64(500),
		Reason: stripe.String(string(stripe.RefundReasonRequestedByCustomer))}
	params.AddMetadata("billingd_caller", "shop")
	params.AddMetadata("billingd_request_key", "rk-refund-1")
	params.SetIdempotencyKey("bd1_refund_1")
	first, err := sc.Refunds.New(params)
	if err != nil {
		t.Fatalf("refund: %v", err)
	}
	if !strings.HasPrefix(first.ID, "re_") || first.Object != "refund" || first.Status != stripe.RefundStatusSucceeded ||
		first.Amount != 500 || first.Currency != stripe.CurrencyUSD || first.PaymentIntent == nil || first.PaymentIntent.ID != pi.ID ||
		first.Charge == nil || first.Charge.ID != pi.LatestCharge.ID || first.FailureReason != "" ||
		first.Reason != stripe.RefundReasonRequestedByCustomer ||
		first.Metadata["billingd_caller"] != "shop" || first.Metadata["billingd_request_key"] != "rk-refund-1" {
		t.Errorf("refund = %+v", first)
	}
	again, err := sc.Refunds.New(params)
	if err != nil || again.ID != first.ID || again.LastResponse.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry with the key = %+v, %v; want the replay of %s", again, err, first.ID)
	}

	rest, err := sc.Refunds.New(&stripe.RefundParams{PaymentIntent: stripe.String(pi.ID)})
	if err != nil || rest.Amount != 1999-500 || rest.Reason != "" {
		t.Fatalf("refund of the rest = %+v, %v; want amount %d", rest, err, 1999-500)
	}
	_, err = sc.Refunds.New(&stripe.RefundParams{PaymentIntent: stripe.String(pi.ID), Amount: stripe.Int64(1)})
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodeChargeAlreadyRefunded ||
		se.Msg != "Charge "+pi.LatestCharge.ID+" has already been refunded." {
		t.Errorf("refund of a refunded charge: %v", err)
	}

	got, err := sc.Refunds.Get(first.ID, nil)
	if err != nil || got.ID != first.ID || got.Amount != 500 || got.Metadata["billingd_request_key"] != "rk-refund-1" {
		t.Errorf("get = %+v, %v", got, err)
	}
	_, err = sc.Refunds.Get("re_nope", nil)
	if !errors.As(err, &se) || se.HTTPStatusCode != 404 || se.Code != stripe.ErrorCodeResourceMissing {
		t.Errorf("get of a missing refund: %v", err)
	}

	lp := &stripe.RefundListParams{PaymentIntent: stripe.String(pi.ID)}
	lp.Limit = stripe.Int64(100)
	var ids []string
	for it := sc.Refunds.List(lp); it.Next(); {
		ids = append(ids, it.Refund().ID)
	}
	if len(ids) != 2 || ids[0] != rest.ID || ids[1] != first.ID {
		t.Errorf("list = %v, want [%s %s] (newest first)", ids, rest.ID, first.ID)
	}

	snap := sim.PaymentIntents()
	if len(snap) != 1 || snap[0].AmountRefunded != 1999 {
		t.Errorf("snapshot amount refunded = %+v, want 1999", snap)
	}
	refunds := sim.Refunds()
	if len(refunds) != 2 || refunds[0].ID != first.ID || refunds[0].IdempotencyKey != "bd1_refund_1" ||
		refunds[0].Reason != "requested_by_customer" || refunds[1].Amount != 1499 {
		t.Errorf("refund snapshots = %+v", refunds)
	}
	if st := sim.Stats(); st.RefundsCreated != 2 || st.Count("POST", "/v1/refunds", 400) != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// The list speaks Stripe's list object and pages with starting_after.
func TestListRefundsPages(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	a, b := paidIntent(t, srv, "pm_card_visa"), paidIntent(t, srv, "pm_card_visa")
	var want []string // newest first
	for i, pi := range []string{a, b, a, a} {
		r := post(t, srv, "/v1/refunds", "", refundForm(pi, "amount", "100"))
		if r.status != 200 {
			t.Fatalf("refund %d = %d %s", i, r.status, r.raw)
		}
		if pi == a {
			want = append([]string{r.id(t)}, want...)
		}
	}
	type page struct {
		Object  string       `json:"object"`
		Data    []refundJSON `json:"data"`
		HasMore bool         `json:"has_more"`
		URL     string       `json:"url"`
	}
	list := func(query string) page {
		r := get(t, srv, "/v1/refunds?"+query)
		if r.status != 200 {
			t.Fatalf("list %s = %d %s", query, r.status, r.raw)
		}
		var p page
		if err := json.Unmarshal(r.raw, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := list("payment_intent=" + a + "&limit=2")
	if p.Object != "list" || p.URL != "/v1/refunds" || !p.HasMore || len(p.Data) != 2 || p.Data[0].ID != want[0] || p.Data[1].ID != want[1] {
		t.Errorf("first page = %+v, want %v and has_more", p, want[:2])
	}
	p = list("payment_intent=" + a + "&limit=2&starting_after=" + want[1])
	if p.HasMore || len(p.Data) != 1 || p.Data[0].ID != want[2] {
		t.Errorf("second page = %+v, want [%s] and no more", p, want[2])
	}
	if p := list("limit=100"); len(p.Data) != 4 || p.HasMore {
		t.Errorf("all refunds = %+v, want 4", p)
	}
	if p := list("payment_intent=pi_unknown"); len(p.Data) != 0 || p.HasMore {
		t.Errorf("refunds of an unknown intent = %+v, want none", p)
	}
	for _, q := range []string{"starting_after=re_nope", "limit=0", "charge=ch_x"} {
		if r := get(t, srv, "/v1/refunds?"+q); r.status != 400 {
			t.Errorf("list %s = %d %s, want 400", q, r.status, r.raw)
		}
	}
}

func TestRefundErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		pm        string // "" for an unknown PaymentIntent
		capture   string
		form      func(pi string) url.Values
		wantCode  string
		wantParam string
		wantMsg   string // "%s" stands for the PaymentIntent's id
		cached    bool   // an executed error: replayed under the key
	}{
		{name: "more than was received", pm: "pm_card_visa", form: func(pi string) url.Values { return refundForm(pi, "amount", "2001") },
			wantCode: "amount_too_large", wantParam: "amount", wantMsg: "Refund amount ($20.01) is greater than unrefunded amount on charge ($20.00)", cached: true},
		{name: "requires_capture", pm: "pm_card_visa", capture: "manual", form: func(pi string) url.Values { return refundForm(pi) },
			wantMsg: "This PaymentIntent (%s) does not have a successful charge to refund.", cached: true},
		{name: "requires_action", pm: "pm_card_threeDSecure2Required", form: func(pi string) url.Values { return refundForm(pi) },
			wantMsg: "This PaymentIntent (%s) does not have a successful charge to refund.", cached: true},
		{name: "unknown intent", form: func(string) url.Values { return refundForm("pi_nope") },
			wantCode: "resource_missing", wantParam: "payment_intent", wantMsg: "No such payment_intent: 'pi_nope'", cached: true},
		{name: "no payment_intent", pm: "pm_card_visa", form: func(string) url.Values { return url.Values{"amount": {"100"}} },
			wantCode: "parameter_missing", wantParam: "payment_intent"},
		{name: "zero amount", pm: "pm_card_visa", form: func(pi string) url.Values { return refundForm(pi, "amount", "0") },
			wantCode: "parameter_invalid_integer", wantParam: "amount"},
		{name: "bad reason", pm: "pm_card_visa", form: func(pi string) url.Values { return refundForm(pi, "reason", "bored") },
			wantParam: "reason"},
		{name: "by charge", pm: "pm_card_visa", form: func(pi string) url.Values { return refundForm(pi, "charge", "ch_x") },
			wantCode: "parameter_unknown", wantParam: "charge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			pi := "pi_nope"
			if tt.pm != "" {
				pi = post(t, srv, "/v1/payment_intents", "", charge(tt.pm, "capture_method", tt.capture)).id(t)
			}
			r := post(t, srv, "/v1/refunds", "k1", tt.form(pi))
			e := r.errBody(t)
			if r.status != 400 || e.Type != "invalid_request_error" || e.Code != tt.wantCode || e.Param != tt.wantParam {
				t.Fatalf("refund = %d %+v, want 400 code %q param %q", r.status, e, tt.wantCode, tt.wantParam)
			}
			if want := strings.ReplaceAll(tt.wantMsg, "%s", pi); tt.wantMsg != "" && e.Message != want {
				t.Errorf("message = %q, want %q", e.Message, want)
			}
			again := post(t, srv, "/v1/refunds", "k1", tt.form(pi))
			if replayed := again.header.Get("Idempotent-Replayed") == "true"; replayed != tt.cached || string(again.raw) != string(r.raw) {
				t.Errorf("same key again = %d replayed %v, want the same answer, replayed %v", again.status, replayed, tt.cached)
			}
			if got := sim.Refunds(); len(got) != 0 {
				t.Errorf("refunds after an error = %+v, want none", got)
			}
			if tt.pm == "pm_card_visa" && tt.capture == "" {
				// Nothing was reserved: the whole charge is still refundable.
				if ok := post(t, srv, "/v1/refunds", "", refundForm(pi)); ok.status != 200 || decodeRefund(t, ok.raw).Amount != 2000 {
					t.Errorf("refund after the error = %d %s, want 2000 refunded", ok.status, ok.raw)
				}
			}
		})
	}
}

// A refund is a POST under faults like any other: dropped after
// processing, it exists once, and the retry with its key replays it.
func TestRefundDroppedAfterProcessing(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	pi := paidIntent(t, srv, "pm_card_visa")
	sim.FailNext("/v1/refunds", stripesim.FaultDropAfter, 1)
	if r := post(t, srv, "/v1/refunds", "k-drop", refundForm(pi, "amount", "700")); r.err == nil {
		t.Fatalf("dropped request answered %d %s", r.status, r.raw)
	}
	r := post(t, srv, "/v1/refunds", "k-drop", refundForm(pi, "amount", "700"))
	if r.status != 200 || r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry = %d %s, want the replay", r.status, r.raw)
	}
	if got := sim.Refunds(); len(got) != 1 || got[0].ID != r.id(t) || got[0].Amount != 700 {
		t.Errorf("refunds = %+v, want the one of the replay", got)
	}
	if p := sim.PaymentIntents()[0]; p.AmountRefunded != 700 {
		t.Errorf("amount refunded = %d, want 700", p.AmountRefunded)
	}
}

// Stripe's asynchronous refund test cards: pm_card_pendingRefund starts
// pending, pm_card_refundFail succeeded; settling decides them, and a
// failed refund gives its amount back.
func TestRefundTestCards(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pm, outcome   string
		wantFirst, wantThen string
	}{
		{"pending succeeds", "pm_card_pendingRefund", "succeed", "pending", "succeeded"},
		{"pending fails", "pm_card_pendingRefund", "fail", "pending", "failed"},
		{"refundFail fails", "pm_card_refundFail", "fail", "succeeded", "failed"},
		{"refundFail kept", "pm_card_refundFail", "succeed", "succeeded", "succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			pi := paidIntent(t, srv, tt.pm)
			r := post(t, srv, "/v1/refunds", "", refundForm(pi))
			created := decodeRefund(t, r.raw)
			if r.status != 200 || created.Status != tt.wantFirst || created.Amount != 2000 {
				t.Fatalf("refund = %d %s, want %s", r.status, r.raw, tt.wantFirst)
			}
			s := simPost(t, srv, "/_sim/refunds/"+created.ID+"/settle", url.Values{"outcome": {tt.outcome}})
			settled := decodeRefund(t, s.raw)
			if s.status != 200 || settled.Status != tt.wantThen || settled.Metadata["billingd_caller"] != "shop" {
				t.Fatalf("settle = %d %s, want %s", s.status, s.raw, tt.wantThen)
			}
			if got := get(t, srv, "/v1/refunds/"+created.ID); string(got.raw) != string(s.raw) {
				t.Errorf("GET after settle = %s, want %s", got.raw, s.raw)
			}
			wantReason, wantLeft := "", int64(0)
			if tt.wantThen == "failed" {
				wantReason, wantLeft = "expired_or_canceled_card", 2000
			}
			if settled.FailureReason != wantReason {
				t.Errorf("failure_reason = %q, want %q", settled.FailureReason, wantReason)
			}
			if p := sim.PaymentIntents()[0]; p.AmountReceived-p.AmountRefunded != wantLeft {
				t.Errorf("refundable after settle = %d, want %d", p.AmountReceived-p.AmountRefunded, wantLeft)
			}
			if !errors.Is(sim.SettleRefund(created.ID, true), stripesim.ErrUnexpectedState) {
				t.Errorf("a second settle was accepted")
			}
			next := post(t, srv, "/v1/refunds", "", refundForm(pi))
			if wantLeft == 0 && (next.status != 400 || next.errBody(t).Code != "charge_already_refunded") {
				t.Errorf("refund of what is left = %d %s, want charge_already_refunded", next.status, next.raw)
			}
			if wantLeft > 0 && (next.status != 200 || decodeRefund(t, next.raw).Amount != wantLeft) {
				t.Errorf("refund after the failure = %d %s, want %d", next.status, next.raw, wantLeft)
			}
		})
	}
}

func TestSettleRefundErrors(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	visa := post(t, srv, "/v1/refunds", "", refundForm(paidIntent(t, srv, "pm_card_visa"))).id(t)
	if err := sim.SettleRefund(visa, false); !errors.Is(err, stripesim.ErrUnexpectedState) {
		t.Errorf("settle of a visa refund: %v, want ErrUnexpectedState", err)
	}
	if err := sim.SettleRefund("re_nope", true); !errors.Is(err, stripesim.ErrNotFound) {
		t.Errorf("settle of a missing refund: %v, want ErrNotFound", err)
	}
	tests := []struct {
		path       string
		form       url.Values
		wantStatus int
		wantCode   string
	}{
		{"/_sim/refunds/re_nope/settle", url.Values{"outcome": {"succeed"}}, 404, "resource_missing"},
		{"/_sim/refunds/" + visa + "/settle", url.Values{"outcome": {"fail"}}, 400, ""},
		{"/_sim/refunds/" + visa + "/settle", url.Values{}, 400, "parameter_missing"},
		{"/_sim/refunds/" + visa + "/authenticate", url.Values{"outcome": {"fail"}}, 404, ""},
	}
	for _, tt := range tests {
		r := simPost(t, srv, tt.path, tt.form)
		if e := r.errBody(t); r.status != tt.wantStatus || e.Code != tt.wantCode {
			t.Errorf("%s %v = %d %+v, want %d %q", tt.path, tt.form, r.status, e, tt.wantStatus, tt.wantCode)
		}
	}
	if got := sim.Refunds(); got[0].Status != "succeeded" {
		t.Errorf("the visa refund changed: %+v", got[0])
	}
}

// Refund events as Stripe sends them under API version 2023-10-16
// (charge.refunded with the charge, charge.refund.updated with the refund),
// and with Config.RefundObjectEvents the refund.* events of later versions.
func TestRefundWebhooks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		pm         string
		outcome    string
		objectEvts bool
		want       []string // type and data.object status, after the PaymentIntent's two
	}{
		{"pending then succeeded", "pm_card_pendingRefund", "succeed", false,
			[]string{"charge.refunded succeeded", "charge.refund.updated succeeded"}},
		{"failed asynchronously", "pm_card_refundFail", "fail", false,
			[]string{"charge.refunded succeeded", "charge.refund.updated failed"}},
		{"pending then succeeded, refund events", "pm_card_pendingRefund", "succeed", true,
			[]string{"charge.refunded succeeded", "refund.created pending", "charge.refund.updated succeeded", "refund.updated succeeded"}},
		{"failed asynchronously, refund events", "pm_card_refundFail", "fail", true,
			[]string{"charge.refunded succeeded", "refund.created succeeded", "charge.refund.updated failed", "refund.updated failed", "refund.failed failed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			const secret = "whsec_refunds"
			sink, hook := newEventSink(t, secret)
			sim, srv := newSim(t, stripesim.Config{WebhookURL: hook.URL, WebhookSecret: secret, RefundObjectEvents: tt.objectEvts})
			t.Cleanup(sim.Close)
			pi := paidIntent(t, srv, tt.pm)
			id := post(t, srv, "/v1/refunds", "", refundForm(pi, "amount", "1500")).id(t)
			if err := sim.SettleRefund(id, tt.outcome == "succeed"); err != nil {
				t.Fatal(err)
			}
			got := sink.wait(t, 2+len(tt.want))[2:]
			if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Fatalf("events = %v, want %v", got, tt.want)
			}
			sink.mu.Lock()
			events := append([]stripe.Event(nil), sink.events[2:]...)
			sink.mu.Unlock()
			var ch stripe.Charge
			if err := json.Unmarshal(events[0].Data.Raw, &ch); err != nil || ch.Object != "charge" || ch.AmountRefunded != 1500 ||
				ch.Refunded || ch.PaymentIntent == nil || ch.PaymentIntent.ID != pi || ch.AmountCaptured != 2000 {
				t.Errorf("charge.refunded object = %+v, %v", ch, err)
			}
			for _, ev := range events[1:] {
				var rf stripe.Refund
				if err := json.Unmarshal(ev.Data.Raw, &rf); err != nil || rf.ID != id || rf.Metadata["billingd_request_key"] != "rk_"+pi {
					t.Errorf("%s object = %+v, %v", ev.Type, rf, err)
				}
				if rf.Status == "failed" && rf.FailureReason != stripe.RefundFailureReasonExpiredOrCanceledCard {
					t.Errorf("%s failure_reason = %q", ev.Type, rf.FailureReason)
				}
			}
		})
	}
}

// Concurrent refunds never give back more than was received: the amount
// left is read and reserved in one step.
func TestConcurrentRefundsNeverOverRefund(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{Faults: stripesim.Faults{LatencyJitter: 20 * time.Millisecond}})
	pi := paidIntent(t, srv, "pm_card_visa")
	statuses := make([]int, 10)
	var wg sync.WaitGroup
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = post(t, srv, "/v1/refunds", "k"+strconv.Itoa(i), refundForm(pi, "amount", "500")).status
		}()
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if p := sim.PaymentIntents()[0]; ok != 4 || p.AmountRefunded != 2000 || len(sim.Refunds()) != 4 {
		t.Errorf("statuses %v, refunded %d, want 4 refunds of 500", statuses, p.AmountRefunded)
	}
}
