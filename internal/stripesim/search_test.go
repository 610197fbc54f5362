package stripesim_test

import (
	"net/url"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
)

func searchIDs(t *testing.T, r result) []string {
	t.Helper()
	obj := r.object(t)
	if obj["object"] != "search_result" {
		t.Fatalf("object = %v, want search_result: %s", obj["object"], r.raw)
	}
	var ids []string
	for _, d := range obj["data"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	return ids
}

func TestSearchLag(t *testing.T) {
	t.Parallel()
	clock := stripesim.NewManualClock(epoch)
	_, srv := newSim(t, stripesim.Config{Clock: clock, SearchLag: 10 * time.Second})
	created := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa"))
	q := "/v1/payment_intents/search?query=" + url.QueryEscape("metadata['billingd_request_key']:'rk_pm_card_visa'")

	if ids := searchIDs(t, get(t, srv, q)); len(ids) != 0 {
		t.Errorf("immediately: %v, want nothing (search is eventually consistent)", ids)
	}
	if r := get(t, srv, "/v1/payment_intents/"+created.id(t)); r.status != 200 {
		t.Errorf("retrieve by id = %d, want 200 at once", r.status)
	}
	clock.Advance(9 * time.Second)
	if ids := searchIDs(t, get(t, srv, q)); len(ids) != 0 {
		t.Errorf("after 9s: %v, want nothing", ids)
	}
	clock.Advance(time.Second)
	if ids := searchIDs(t, get(t, srv, q)); len(ids) != 1 || ids[0] != created.id(t) {
		t.Errorf("after 10s: %v, want [%s]", ids, created.id(t))
	}
}

func TestSearchQueries(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	visa := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "metadata[caller]", "shop", "customer", "cus_demo")).id(t)
	declined := post(t, srv, "/v1/payment_intents", "", charge("pm_card_chargeDeclined", "metadata[caller]", "shop")).errBody(t)
	_ = declined
	eur := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa", "currency", "eur", "metadata[caller]", "it's")).id(t)

	tests := []struct {
		name    string
		query   string
		wantLen int
		wantID  string
	}{
		{"metadata", `metadata['caller']:'shop'`, 2, ""},
		{"metadata and status", `metadata['caller']:'shop' AND status:'succeeded'`, 1, visa},
		{"double quotes", `metadata["caller"]:"shop" AND customer:"cus_demo"`, 1, visa},
		{"escaped quote", `metadata['caller']:'it\'s'`, 1, eur},
		{"currency", `currency:'eur'`, 1, eur},
		{"amount unquoted", `amount:2000 AND currency:'usd'`, 2, ""},
		{"no match", `metadata['caller']:'nobody'`, 0, ""},
		{"unknown metadata key", `metadata['nope']:'shop'`, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ids := searchIDs(t, get(t, srv, "/v1/payment_intents/search?query="+url.QueryEscape(tt.query)))
			if len(ids) != tt.wantLen || tt.wantID != "" && ids[0] != tt.wantID {
				t.Errorf("ids = %v, want %d (first %q)", ids, tt.wantLen, tt.wantID)
			}
		})
	}
}

func TestSearchRejectsWhatItCannotAnswer(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{})
	tests := []struct {
		name, path string
		wantCode   string
	}{
		{"missing query", "/v1/payment_intents/search", "parameter_missing"},
		{"OR", "/v1/payment_intents/search?query=" + url.QueryEscape(`status:'a' OR status:'b'`), ""},
		{"negation", "/v1/payment_intents/search?query=" + url.QueryEscape(`-status:'a'`), ""},
		{"substring operator", "/v1/customers/search?query=" + url.QueryEscape(`email~'example'`), ""},
		{"unsupported field", "/v1/subscriptions/search?query=" + url.QueryEscape(`email:'a@b.c'`), ""},
		{"unterminated", "/v1/payment_intents/search?query=" + url.QueryEscape(`metadata['k']:'v`), ""},
		{"missing AND", "/v1/payment_intents/search?query=" + url.QueryEscape(`status:'a' status:'b'`), ""},
		{"limit too big", "/v1/payment_intents/search?limit=101&query=" + url.QueryEscape(`status:'a'`), "parameter_invalid_integer"},
		{"bad page", "/v1/payment_intents/search?page=xyz&query=" + url.QueryEscape(`status:'a'`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := get(t, srv, tt.path)
			if e := r.errBody(t); r.status != 400 || e.Type != "invalid_request_error" || e.Code != tt.wantCode {
				t.Errorf("got %d %+v, want 400 invalid_request_error code %q", r.status, e, tt.wantCode)
			}
		})
	}
}

func TestCustomerValidation(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		form      url.Values
		wantCode  string
		wantParam string
	}{
		{"bad email", url.Values{"email": {"nope"}}, "email_invalid", "email"},
		{"unknown payment method", url.Values{"payment_method": {"pm_nope"}}, "resource_missing", "payment_method"},
		{"default not attached", url.Values{"invoice_settings[default_payment_method]": {"pm_card_visa"}}, "resource_missing", "invoice_settings[default_payment_method]"},
		{"unknown invoice setting", url.Values{"invoice_settings[footer]": {"x"}}, "parameter_unknown", "invoice_settings[footer]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/customers", "", tt.form)
			if e := r.errBody(t); r.status != 400 || e.Code != tt.wantCode || e.Param != tt.wantParam {
				t.Errorf("got %d %+v, want 400 %s %s", r.status, e, tt.wantCode, tt.wantParam)
			}
			if got := len(sim.Customers()); got != 2 {
				t.Errorf("customers = %d, want only the 2 fixtures", got)
			}
		})
	}
}
