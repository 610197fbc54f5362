package stripesim_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestTestCards(t *testing.T) {
	t.Parallel()
	tests := []struct {
		pm              string
		wantStatus      int
		wantCode        string
		wantDeclineCode string
		wantPIStatus    string
	}{
		{"pm_card_visa", 200, "", "", "succeeded"},
		{"pm_card_mastercard", 200, "", "", "succeeded"},
		{"pm_card_chargeDeclined", 402, "card_declined", "generic_decline", "requires_payment_method"},
		{"pm_card_chargeDeclinedInsufficientFunds", 402, "card_declined", "insufficient_funds", "requires_payment_method"},
		{"pm_card_chargeDeclinedExpiredCard", 402, "expired_card", "expired_card", "requires_payment_method"},
		{"pm_card_chargeDeclinedIncorrectCvc", 402, "incorrect_cvc", "incorrect_cvc", "requires_payment_method"},
		{"pm_card_chargeDeclinedFraudulent", 402, "card_declined", "fraudulent", "requires_payment_method"},
	}
	for _, tt := range tests {
		t.Run(tt.pm, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", charge(tt.pm, "customer", "cus_demo"))
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.raw)
			}
			piJSON := r.raw
			if tt.wantStatus != 200 {
				e := r.errBody(t)
				if e.Type != "card_error" || e.Code != tt.wantCode || e.DeclineCode != tt.wantDeclineCode {
					t.Errorf("error = %+v, want card_error %s/%s", e, tt.wantCode, tt.wantDeclineCode)
				}
				piJSON = e.PaymentIntent
			}
			var pi struct {
				ID               string `json:"id"`
				Status           string `json:"status"`
				ClientSecret     string `json:"client_secret"`
				LastPaymentError *struct {
					Code string `json:"code"`
				} `json:"last_payment_error"`
			}
			if err := json.Unmarshal(piJSON, &pi); err != nil {
				t.Fatalf("payment intent JSON: %v: %s", err, piJSON)
			}
			if pi.Status != tt.wantPIStatus || !strings.HasPrefix(pi.ClientSecret, pi.ID+"_secret_") {
				t.Errorf("payment intent status %q secret %q, want %q and %s_secret_...", pi.Status, pi.ClientSecret, tt.wantPIStatus, pi.ID)
			}
			if tt.wantStatus != 200 && (pi.LastPaymentError == nil || pi.LastPaymentError.Code != tt.wantCode) {
				t.Errorf("last_payment_error = %+v, want code %s", pi.LastPaymentError, tt.wantCode)
			}
			snaps := sim.PaymentIntents()
			if len(snaps) != 1 || snaps[0].ID != pi.ID || snaps[0].Status != tt.wantPIStatus || snaps[0].Customer != "cus_demo" {
				t.Errorf("snapshots = %+v, want one %s %s", snaps, pi.ID, tt.wantPIStatus)
			}
		})
	}
}

func TestPaymentIntentValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		form      url.Values
		wantCode  string
		wantParam string
	}{
		{"missing amount", charge("pm_card_visa", "amount", ""), "parameter_missing", "amount"},
		{"missing currency", charge("pm_card_visa", "currency", ""), "parameter_missing", "currency"},
		{"unknown currency", charge("pm_card_visa", "currency", "abc"), "", "currency"},
		{"zero amount", charge("pm_card_visa", "amount", "0"), "parameter_invalid_integer", "amount"},
		{"amount too small", charge("pm_card_visa", "amount", "49"), "amount_too_small", "amount"},
		{"gbp minimum is 30", charge("pm_card_visa", "currency", "gbp", "amount", "29"), "amount_too_small", "amount"},
		{"amount too large", charge("pm_card_visa", "amount", "100000000"), "amount_too_large", "amount"},
		{"unknown payment method", charge("pm_card_bogus"), "resource_missing", "payment_method"},
		{"unknown customer", charge("pm_card_visa", "customer", "cus_bogus"), "resource_missing", "customer"},
		{"unknown parameter", charge("pm_card_visa", "amuont", "1"), "parameter_unknown", "amuont"},
		{"unknown nested parameter", charge("pm_card_visa", "automatic_payment_methods[foo]", "1"), "parameter_unknown", "automatic_payment_methods[foo]"},
		{"both apm and types", charge("pm_card_visa", "automatic_payment_methods[enabled]", "true", "automatic_payment_methods[allow_redirects]", "never"), "parameters_exclusive", "automatic_payment_methods"},
		{"apm redirects without return_url", charge("pm_card_visa", "payment_method_types[0]", "", "automatic_payment_methods[enabled]", "true"), "", "return_url"},
		{"default apm without return_url", charge("pm_card_visa", "payment_method_types[0]", ""), "", "return_url"},
		{"off_session without confirm", charge("pm_card_visa", "confirm", "false", "off_session", "true"), "", "off_session"},
		{"confirm without payment method", charge("pm_card_visa", "payment_method", ""), "payment_intent_unexpected_state", ""},
		{"bad boolean", charge("pm_card_visa", "confirm", "yes"), "", "confirm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", tt.form)
			if r.status != 400 {
				t.Fatalf("status = %d, want 400: %s", r.status, r.raw)
			}
			e := r.errBody(t)
			if e.Type != "invalid_request_error" || e.Code != tt.wantCode || e.Param != tt.wantParam {
				t.Errorf("error = %+v, want invalid_request_error code %q param %q", e, tt.wantCode, tt.wantParam)
			}
			if got := len(sim.PaymentIntents()); got != 0 {
				t.Errorf("payment intents = %d, want 0", got)
			}
		})
	}
}

func TestEmptyStringParameter(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	r := request(t, srv, "POST", "/v1/payment_intents", testKey, "",
		"amount=100&currency=usd&customer=&payment_method_types[0]=card")
	if e := r.errBody(t); r.status != 400 || e.Code != "parameter_invalid_empty" || e.Param != "customer" {
		t.Errorf("got %d %+v, want 400 parameter_invalid_empty customer", r.status, e)
	}
}

func TestPaymentIntentSucceedsWithAutomaticPaymentMethods(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		form url.Values
	}{
		{"allow_redirects never", charge("pm_card_visa", "payment_method_types[0]", "",
			"automatic_payment_methods[enabled]", "true", "automatic_payment_methods[allow_redirects]", "never")},
		{"return_url", charge("pm_card_visa", "payment_method_types[0]", "", "return_url", "https://example.com/back")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", tt.form)
			if r.status != 200 || r.object(t)["status"] != "succeeded" {
				t.Errorf("got %d %s, want a succeeded payment intent", r.status, r.raw)
			}
		})
	}
}

func TestPaymentIntentStatuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantPI     string
	}{
		{"unconfirmed without method", charge("pm_card_visa", "confirm", "", "payment_method", ""), 200, "requires_payment_method"},
		{"unconfirmed with method", charge("pm_card_visa", "confirm", "false"), 200, "requires_confirmation"},
		{"manual capture", charge("pm_card_visa", "capture_method", "manual"), 200, "requires_capture"},
		{"3DS on session", charge("pm_card_authenticationRequired"), 200, "requires_action"},
		{"3DS off session", charge("pm_card_authenticationRequired", "off_session", "true"), 402, "requires_payment_method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/payment_intents", "", tt.form)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.raw)
			}
			if pis := sim.PaymentIntents(); len(pis) != 1 || pis[0].Status != tt.wantPI {
				t.Errorf("payment intents = %+v, want one %s", pis, tt.wantPI)
			}
		})
	}
}

func TestGetPaymentIntent(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	created := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa"))
	got := get(t, srv, "/v1/payment_intents/"+created.id(t))
	if got.status != 200 || string(got.raw) != string(created.raw) {
		t.Errorf("GET = %d %s, want the created object", got.status, got.raw)
	}
	missing := get(t, srv, "/v1/payment_intents/pi_missing")
	if e := missing.errBody(t); missing.status != 404 || e.Code != "resource_missing" || e.Param != "id" {
		t.Errorf("GET missing = %d %+v, want 404 resource_missing param id", missing.status, e)
	}
	unknown := get(t, srv, "/v1/payment_intents/pi_x/confirm")
	if unknown.status != 404 || unknown.errBody(t).Type != "invalid_request_error" {
		t.Errorf("unknown URL = %d %s, want 404", unknown.status, unknown.raw)
	}
}
