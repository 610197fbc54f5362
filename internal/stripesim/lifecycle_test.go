package stripesim_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
)

// piJSON is the part of a PaymentIntent these tests look at.
type piJSON struct {
	ID                 string  `json:"id"`
	Status             string  `json:"status"`
	ClientSecret       string  `json:"client_secret"`
	CancellationReason *string `json:"cancellation_reason"`
	AmountReceived     int64   `json:"amount_received"`
	AmountCapturable   int64   `json:"amount_capturable"`
	PaymentMethod      *string `json:"payment_method"`
	NextAction         *struct {
		Type          string `json:"type"`
		RedirectToURL *struct {
			URL       string `json:"url"`
			ReturnURL string `json:"return_url"`
		} `json:"redirect_to_url"`
		UseStripeSDK map[string]any `json:"use_stripe_sdk"`
	} `json:"next_action"`
	LastPaymentError *struct {
		Type        string `json:"type"`
		Code        string `json:"code"`
		DeclineCode string `json:"decline_code"`
		Message     string `json:"message"`
	} `json:"last_payment_error"`
}

func decodePI(t *testing.T, raw []byte) piJSON {
	t.Helper()
	var p piJSON
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("decode payment intent: %v: %s", err, raw)
	}
	return p
}

// pi returns the PaymentIntent of an answer, 402s included.
func (r result) pi(t *testing.T) piJSON {
	t.Helper()
	if r.status == 402 {
		return decodePI(t, r.errBody(t).PaymentIntent)
	}
	return decodePI(t, r.raw)
}

// simPost posts to a simulator-only endpoint, which needs no API key.
func simPost(t *testing.T, srv *httptest.Server, path string, form url.Values) result {
	t.Helper()
	return request(t, srv, "POST", path, "", "", form.Encode())
}

func authenticate(t *testing.T, srv *httptest.Server, id, outcome string) result {
	t.Helper()
	return simPost(t, srv, "/_sim/payment_intents/"+id+"/authenticate", url.Values{"outcome": {outcome}})
}

func TestAuthenticationCards(t *testing.T) {
	t.Parallel()
	const failMsg = "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again."
	tests := []struct {
		name        string
		form        url.Values
		wantStatus  int    // of the create
		wantPI      string // after the create
		wantNext    string // next_action.type
		outcome     string // of the authentication, "" for none
		wantAfter   string
		wantErrType string // last_payment_error after
		wantErrCode string
		wantDecline string
		wantMsg     string
	}{
		{name: "3184 off session", form: charge("pm_card_authenticationRequired", "off_session", "true"),
			wantStatus: 402, wantPI: "requires_payment_method"},
		{name: "3184 succeed", form: charge("pm_card_authenticationRequired"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "use_stripe_sdk", outcome: "succeed", wantAfter: "succeeded"},
		{name: "3220 off session", form: charge("pm_card_threeDSecure2Required", "off_session", "true"),
			wantStatus: 402, wantPI: "requires_payment_method"},
		{name: "3220 fail", form: charge("pm_card_threeDSecure2Required"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "use_stripe_sdk", outcome: "fail", wantAfter: "requires_payment_method",
			wantErrType: "invalid_request_error", wantErrCode: "payment_intent_authentication_failure", wantMsg: failMsg},
		{name: "3220 with return_url", form: charge("pm_card_threeDSecure2Required", "return_url", "https://shop.example/back"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "redirect_to_url", outcome: "succeed", wantAfter: "succeeded"},
		{name: "3220 manual capture", form: charge("pm_card_threeDSecure2Required", "capture_method", "manual"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "use_stripe_sdk", outcome: "succeed", wantAfter: "requires_capture"},
		{name: "3155 on session", form: charge("pm_card_authenticationRequiredOnSetup"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "use_stripe_sdk", outcome: "succeed", wantAfter: "succeeded"},
		{name: "3155 off session, not set up", form: charge("pm_card_authenticationRequiredOnSetup", "customer", "cus_demo", "off_session", "true"),
			wantStatus: 402, wantPI: "requires_payment_method"},
		{name: "3178 declines after authentication", form: charge("pm_card_authenticationRequiredChargeDeclinedInsufficientFunds"),
			wantStatus: 200, wantPI: "requires_action", wantNext: "use_stripe_sdk", outcome: "succeed", wantAfter: "requires_payment_method",
			wantErrType: "card_error", wantErrCode: "card_declined", wantDecline: "insufficient_funds", wantMsg: "Your card has insufficient funds."},
		{name: "3178 off session", form: charge("pm_card_authenticationRequiredChargeDeclinedInsufficientFunds", "off_session", "true"),
			wantStatus: 402, wantPI: "requires_payment_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", tt.form)
			if r.status != tt.wantStatus {
				t.Fatalf("create = %d, want %d: %s", r.status, tt.wantStatus, r.raw)
			}
			p := r.pi(t)
			if p.Status != tt.wantPI || p.CancellationReason != nil || !strings.HasPrefix(p.ClientSecret, p.ID+"_secret_") {
				t.Errorf("created %+v, want status %s, no cancellation_reason, a client_secret", p, tt.wantPI)
			}
			if tt.wantStatus == 402 {
				e := r.errBody(t)
				if e.Type != "card_error" || e.Code != "authentication_required" || e.DeclineCode != "authentication_required" {
					t.Errorf("off-session error = %+v, want card_error authentication_required/authentication_required", e)
				}
				if p.LastPaymentError == nil || p.LastPaymentError.Code != "authentication_required" {
					t.Errorf("last_payment_error = %+v", p.LastPaymentError)
				}
				return
			}
			switch {
			case p.NextAction == nil || p.NextAction.Type != tt.wantNext:
				t.Errorf("next_action = %+v, want type %s", p.NextAction, tt.wantNext)
			case tt.wantNext == "redirect_to_url" && (p.NextAction.RedirectToURL == nil ||
				p.NextAction.RedirectToURL.URL != srv.URL+"/_sim/payment_intents/"+p.ID+"/authenticate" ||
				p.NextAction.RedirectToURL.ReturnURL != "https://shop.example/back"):
				t.Errorf("redirect_to_url = %+v", p.NextAction.RedirectToURL)
			case tt.wantNext == "use_stripe_sdk" && (p.NextAction.UseStripeSDK == nil || p.NextAction.RedirectToURL != nil):
				t.Errorf("next_action = %+v, want use_stripe_sdk only", p.NextAction)
			}

			a := authenticate(t, srv, p.ID, tt.outcome)
			if a.status != 200 {
				t.Fatalf("authenticate = %d %s", a.status, a.raw)
			}
			after := decodePI(t, a.raw)
			if after.Status != tt.wantAfter || after.NextAction != nil {
				t.Errorf("after %s: status %s next_action %+v, want %s and none", tt.outcome, after.Status, after.NextAction, tt.wantAfter)
			}
			if got := get(t, srv, "/v1/payment_intents/"+p.ID); string(got.raw) != string(a.raw) {
				t.Errorf("GET after authentication = %s, want %s", got.raw, a.raw)
			}
			le := after.LastPaymentError
			switch {
			case tt.wantErrCode == "" && le != nil:
				t.Errorf("last_payment_error = %+v, want none", le)
			case tt.wantErrCode != "" && (le == nil || le.Type != tt.wantErrType || le.Code != tt.wantErrCode ||
				le.DeclineCode != tt.wantDecline || le.Message != tt.wantMsg):
				t.Errorf("last_payment_error = %+v, want %s %s/%s %q", le, tt.wantErrType, tt.wantErrCode, tt.wantDecline, tt.wantMsg)
			}
			if tt.wantErrCode != "" && after.PaymentMethod != nil {
				t.Errorf("payment_method = %s after a failure, want null", *after.PaymentMethod)
			}
			if pis := sim.PaymentIntents(); len(pis) != 1 || pis[0].Status != tt.wantAfter {
				t.Errorf("snapshots = %+v", pis)
			}
			// A second authentication finds nothing pending.
			again := authenticate(t, srv, p.ID, "succeed")
			if e := again.errBody(t); again.status != 400 || e.Code != "payment_intent_unexpected_state" {
				t.Errorf("second authenticate = %d %+v, want 400 payment_intent_unexpected_state", again.status, e)
			}
		})
	}
}

// A card authenticated with setup_future_usage=off_session for a customer
// is set up: 3155 then charges off session without authentication.
func TestAuthenticationRequiredOnSetupOnceSetUp(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	pm := "pm_card_authenticationRequiredOnSetup"
	first := post(t, srv, "/v1/payment_intents", "", charge(pm, "customer", "cus_demo", "setup_future_usage", "off_session"))
	if err := sim.Authenticate(first.id(t), true); err != nil {
		t.Fatal(err)
	}
	r := post(t, srv, "/v1/payment_intents", "", charge(pm, "customer", "cus_demo", "off_session", "true"))
	if r.status != 200 || r.pi(t).Status != "succeeded" {
		t.Errorf("off session after set-up = %d %s, want succeeded", r.status, r.raw)
	}
	other := post(t, srv, "/v1/payment_intents", "", charge(pm, "customer", "cus_declined", "off_session", "true"))
	if other.status != 402 {
		t.Errorf("another customer's off-session charge = %d, want 402", other.status)
	}
}

func TestSimEndpointErrors(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	visa := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa")).id(t)
	tests := []struct {
		name       string
		path       string
		form       url.Values
		wantStatus int
		wantCode   string
	}{
		{"not requires_action", "/_sim/payment_intents/" + visa + "/authenticate", url.Values{"outcome": {"succeed"}}, 400, "payment_intent_unexpected_state"},
		{"not processing", "/_sim/payment_intents/" + visa + "/settle", url.Values{"outcome": {"fail"}}, 400, "payment_intent_unexpected_state"},
		{"unknown intent", "/_sim/payment_intents/pi_nope/authenticate", url.Values{"outcome": {"succeed"}}, 404, "resource_missing"},
		{"missing outcome", "/_sim/payment_intents/" + visa + "/authenticate", url.Values{}, 400, "parameter_missing"},
		{"bad outcome", "/_sim/payment_intents/" + visa + "/authenticate", url.Values{"outcome": {"maybe"}}, 400, ""},
		{"unknown action", "/_sim/payment_intents/" + visa + "/refund", url.Values{"outcome": {"succeed"}}, 404, ""},
	}
	for _, tt := range tests {
		r := simPost(t, srv, tt.path, tt.form)
		if e := r.errBody(t); r.status != tt.wantStatus || e.Code != tt.wantCode || e.Type != "invalid_request_error" {
			t.Errorf("%s: %d %+v, want %d %q", tt.name, r.status, e, tt.wantStatus, tt.wantCode)
		}
	}
	errTests := []struct {
		name string
		err  error
		want error
	}{
		{"authenticate succeeded", sim.Authenticate(visa, true), stripesim.ErrUnexpectedState},
		{"settle succeeded", sim.Settle(visa, true), stripesim.ErrUnexpectedState},
		{"authenticate missing", sim.Authenticate("pi_nope", false), stripesim.ErrNotFound},
	}
	for _, tt := range errTests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
	if pis := sim.PaymentIntents(); pis[0].Status != "succeeded" {
		t.Errorf("the succeeded PaymentIntent changed: %+v", pis[0])
	}
}

func TestProcessingPayments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, outcome, capture string
		wantStatus, wantCode   string
	}{
		{"settles", "succeed", "", "succeeded", ""},
		{"settles authorised", "succeed", "manual", "requires_capture", ""},
		{"fails", "fail", "", "requires_payment_method", "card_declined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", charge(stripesim.SimProcessingPaymentMethod, "capture_method", tt.capture))
			if p := r.pi(t); r.status != 200 || p.Status != "processing" || p.NextAction != nil {
				t.Fatalf("create = %d %s, want processing", r.status, r.raw)
			}
			s := simPost(t, srv, "/_sim/payment_intents/"+r.id(t)+"/settle", url.Values{"outcome": {tt.outcome}})
			p := decodePI(t, s.raw)
			if s.status != 200 || p.Status != tt.wantStatus {
				t.Errorf("settle = %d %s, want %s", s.status, s.raw, tt.wantStatus)
			}
			if got := ""; p.LastPaymentError != nil {
				got = p.LastPaymentError.Code
				if got != tt.wantCode {
					t.Errorf("last_payment_error code %q, want %q", got, tt.wantCode)
				}
			} else if tt.wantCode != "" {
				t.Errorf("no last_payment_error, want %s", tt.wantCode)
			}
		})
	}
}

func TestCaptureAndCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		pm         string
		manual     bool
		path       string // capture or cancel
		form       url.Values
		wantStatus int
		wantCode   string
		wantParam  string
		wantPI     string
		wantAmount int64 // amount_received after
		wantReason string
	}{
		{"capture all", "pm_card_visa", true, "capture", nil, 200, "", "", "succeeded", 2000, ""},
		{"capture part", "pm_card_visa", true, "capture", url.Values{"amount_to_capture": {"1500"}}, 200, "", "", "succeeded", 1500, ""},
		{"capture too much", "pm_card_visa", true, "capture", url.Values{"amount_to_capture": {"2001"}}, 400, "amount_too_large", "amount_to_capture", "requires_capture", 0, ""},
		{"capture succeeded", "pm_card_visa", false, "capture", nil, 400, "payment_intent_unexpected_state", "", "succeeded", 2000, ""},
		{"capture bad amount", "pm_card_visa", true, "capture", url.Values{"amount_to_capture": {"lots"}}, 400, "parameter_invalid_integer", "amount_to_capture", "requires_capture", 0, ""},
		{"cancel authorised", "pm_card_visa", true, "cancel", url.Values{"cancellation_reason": {"requested_by_customer"}}, 200, "", "", "canceled", 0, "requested_by_customer"},
		{"cancel requires_action", "pm_card_authenticationRequired", false, "cancel", url.Values{"cancellation_reason": {"abandoned"}}, 200, "", "", "canceled", 0, "abandoned"},
		{"cancel succeeded", "pm_card_visa", false, "cancel", nil, 400, "payment_intent_unexpected_state", "", "succeeded", 2000, ""},
		{"cancel bad reason", "pm_card_visa", true, "cancel", url.Values{"cancellation_reason": {"bored"}}, 400, "", "cancellation_reason", "requires_capture", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, srv := newSim(t, stripesim.Config{})
			form := charge(tt.pm)
			if tt.manual {
				form.Set("capture_method", "manual")
			}
			id := post(t, srv, "/v1/payment_intents", "", form).id(t)
			r := post(t, srv, "/v1/payment_intents/"+id+"/"+tt.path, "k-"+tt.path, tt.form)
			if r.status != tt.wantStatus {
				t.Fatalf("%s = %d, want %d: %s", tt.path, r.status, tt.wantStatus, r.raw)
			}
			if tt.wantStatus != 200 {
				if e := r.errBody(t); e.Code != tt.wantCode || e.Param != tt.wantParam {
					t.Errorf("error = %+v, want code %q param %q", e, tt.wantCode, tt.wantParam)
				}
			}
			p := decodePI(t, get(t, srv, "/v1/payment_intents/"+id).raw)
			reason := ""
			if p.CancellationReason != nil {
				reason = *p.CancellationReason
			}
			if p.Status != tt.wantPI || p.AmountReceived != tt.wantAmount || reason != tt.wantReason {
				t.Errorf("after: %+v, want %s received %d reason %q", p, tt.wantPI, tt.wantAmount, tt.wantReason)
			}
			// Under the idempotency layer: the same key replays the answer.
			again := post(t, srv, "/v1/payment_intents/"+id+"/"+tt.path, "k-"+tt.path, tt.form)
			if tt.wantCode != "parameter_invalid_integer" && tt.wantParam != "cancellation_reason" &&
				(string(again.raw) != string(r.raw) || again.header.Get("Idempotent-Replayed") != "true") {
				t.Errorf("retry with the key = %d %s, want the replay of %s", again.status, again.raw, r.raw)
			}
		})
	}
	_, srv := newSim(t, stripesim.Config{})
	if r := post(t, srv, "/v1/payment_intents/pi_nope/capture", "", nil); r.status != 404 || r.errBody(t).Code != "resource_missing" {
		t.Errorf("capture of a missing intent = %d %s", r.status, r.raw)
	}
}

func TestStripeGoCaptureCancel(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	sc := stripeAPI(t, srv, testKey)
	p := cardCharge("pm_card_visa", "rk")
	p.OffSession = nil
	p.CaptureMethod = stripe.String("manual")
	pi, err := sc.PaymentIntents.New(p)
	if err != nil || pi.Status != stripe.PaymentIntentStatusRequiresCapture || pi.AmountCapturable != 1999 {
		t.Fatalf("create = %+v, %v", pi, err)
	}
	got, err := sc.PaymentIntents.Capture(pi.ID, &stripe.PaymentIntentCaptureParams{AmountToCapture: stripe.Int64(1000)})
	if err != nil || got.Status != stripe.PaymentIntentStatusSucceeded || got.AmountReceived != 1000 || got.AmountCapturable != 0 {
		t.Errorf("capture = %+v, %v", got, err)
	}
	_, err = sc.PaymentIntents.Cancel(pi.ID, nil)
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != 400 || se.Code != stripe.ErrorCodePaymentIntentUnexpectedState {
		t.Errorf("cancel of a succeeded intent: %v", err)
	}
	p.CaptureMethod = nil
	p.PaymentMethod = stripe.String("pm_card_threeDSecure2Required")
	pending, err := sc.PaymentIntents.New(p)
	if err != nil {
		t.Fatal(err)
	}
	canceled, err := sc.PaymentIntents.Cancel(pending.ID, &stripe.PaymentIntentCancelParams{CancellationReason: stripe.String("duplicate")})
	if err != nil || canceled.Status != stripe.PaymentIntentStatusCanceled || canceled.CancellationReason != stripe.PaymentIntentCancellationReasonDuplicate ||
		canceled.CanceledAt == 0 || canceled.NextAction != nil {
		t.Errorf("cancel = %+v, %v", canceled, err)
	}
}

func TestAuthorisationsExpire(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	sim, srv := newSim(t, stripesim.Config{Clock: clock})
	id := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "capture_method", "manual")).id(t)
	clock.Advance(stripesim.AuthorizationValidity - time.Second)
	if n := sim.ApplyDueTransitions(); n != 0 {
		t.Errorf("applied %d transitions a second early", n)
	}
	clock.Advance(time.Second)
	if n := sim.ApplyDueTransitions(); n != 1 {
		t.Errorf("applied %d transitions at 7 days, want 1", n)
	}
	p := decodePI(t, get(t, srv, "/v1/payment_intents/"+id).raw)
	if p.Status != "canceled" || p.CancellationReason == nil || *p.CancellationReason != "automatic" || p.AmountCapturable != 0 {
		t.Errorf("after 7 days: %+v, want canceled automatic", p)
	}
	r := post(t, srv, "/v1/payment_intents/"+id+"/capture", "", nil)
	if r.status != 400 || r.errBody(t).Code != "payment_intent_unexpected_state" {
		t.Errorf("capture of an expired authorisation = %d %s", r.status, r.raw)
	}

	// A request applies due transitions itself.
	id2 := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "capture_method", "manual")).id(t)
	clock.Advance(stripesim.AuthorizationValidity)
	if p := decodePI(t, get(t, srv, "/v1/payment_intents/"+id2).raw); p.Status != "canceled" {
		t.Errorf("GET after 7 days: %s, want canceled", p.Status)
	}
}

// The hosted test page's form completes the authentication and sends the
// customer on to return_url, as Stripe's page does.
func TestHostedAuthenticationPage(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	created := post(t, srv, "/v1/payment_intents", "", charge("pm_card_threeDSecure2Required", "return_url", "https://shop.example/back?order=7"))
	p := created.pi(t)
	page := request(t, srv, "GET", "/_sim/payment_intents/"+p.ID+"/authenticate", "", "", "")
	if page.status != 200 || !strings.Contains(string(page.raw), "Complete authentication") || !strings.Contains(string(page.raw), "Fail authentication") {
		t.Fatalf("page = %d %s", page.status, page.raw)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.PostForm(srv.URL+"/_sim/payment_intents/"+p.ID+"/authenticate", url.Values{"outcome": {"succeed"}, "redirect": {"true"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://shop.example/back?order=7&payment_intent=" + p.ID + "&payment_intent_client_secret=" + p.ClientSecret + "&redirect_status=succeeded"
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
		t.Errorf("redirect = %d to %q, want 303 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if got := decodePI(t, get(t, srv, "/v1/payment_intents/"+p.ID).raw); got.Status != "succeeded" {
		t.Errorf("status after the page = %s, want succeeded", got.Status)
	}
}
