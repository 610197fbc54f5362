package stripesim_test

import (
	"errors"
	"net/url"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestCreateSubscription(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		form        url.Values
		wantStatus  int
		wantCode    string
		wantParam   string
		wantSubStat string // "" when no subscription may be created
	}{
		{"default method succeeds", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}, 200, "", "", "active"},
		{"default method declines", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}}, 200, "", "", "incomplete"},
		{"explicit method overrides default", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}, "default_payment_method": {"pm_card_visa"}}, 200, "", "", "active"},
		{"default_incomplete", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"default_incomplete"}}, 200, "", "", "incomplete"},
		{"error_if_incomplete declines", url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"error_if_incomplete"}}, 402, "card_declined", "", ""},
		{"unknown customer", url.Values{"customer": {"cus_nope"}, "items[0][price]": {"price_basic_monthly"}}, 400, "resource_missing", "customer", ""},
		{"unknown price", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_nope"}}, 400, "resource_missing", "items[0][price]", ""},
		{"unknown second price", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "items[1][price]": {"price_nope"}}, 400, "resource_missing", "items[1][price]", ""},
		{"unknown default method", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "default_payment_method": {"pm_nope"}}, 400, "resource_missing", "default_payment_method", ""},
		{"missing customer", url.Values{"items[0][price]": {"price_basic_monthly"}}, 400, "parameter_missing", "customer", ""},
		{"missing items", url.Values{"customer": {"cus_demo"}}, 400, "parameter_missing", "items", ""},
		{"item without price", url.Values{"customer": {"cus_demo"}, "items[0][quantity]": {"2"}}, 400, "parameter_missing", "items[0][price]", ""},
		{"bad quantity", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "items[0][quantity]": {"two"}}, 400, "parameter_invalid_integer", "items[0][quantity]", ""},
		{"unsimulated parameter", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "trial_period_days": {"7"}}, 400, "parameter_unknown", "trial_period_days", ""},
		{"pending_if_incomplete on create", url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}, "payment_behavior": {"pending_if_incomplete"}}, 400, "", "payment_behavior", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim, srv := newSim(t, stripesim.Config{})
			r := post(t, srv, "/v1/subscriptions", "", tt.form)
			if r.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.wantStatus, r.raw)
			}
			if tt.wantStatus != 200 {
				if e := r.errBody(t); e.Code != tt.wantCode || e.Param != tt.wantParam {
					t.Errorf("error = %+v, want code %q param %q", e, tt.wantCode, tt.wantParam)
				}
			}
			subs := sim.Subscriptions()
			if tt.wantSubStat == "" {
				if len(subs) != 0 {
					t.Errorf("subscriptions = %+v, want none", subs)
				}
				return
			}
			if len(subs) != 1 || subs[0].Status != tt.wantSubStat || r.object(t)["status"] != tt.wantSubStat || subs[0].ID != r.id(t) {
				t.Errorf("subscriptions = %+v, answer %s; want one %s", subs, r.raw, tt.wantSubStat)
			}
		})
	}
}

func TestMaxSubscriptionsPerCustomerIsConfigurable(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, stripesim.Config{MaxSubscriptionsPerCustomer: 2})
	form := url.Values{"customer": {"cus_demo"}, "items[0][price]": {"price_basic_monthly"}}
	var statuses []int
	for range 3 {
		statuses = append(statuses, post(t, srv, "/v1/subscriptions", "", form).status)
	}
	if statuses[0] != 200 || statuses[1] != 200 || statuses[2] != 400 {
		t.Errorf("statuses = %v, want [200 200 400]", statuses)
	}
	// The cap is per customer.
	other := url.Values{"customer": {"cus_declined"}, "items[0][price]": {"price_basic_monthly"}}
	if r := post(t, srv, "/v1/subscriptions", "", other); r.status != 200 {
		t.Errorf("other customer: %d %s", r.status, r.raw)
	}
}

func TestAddPriceAndCustomer(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{})
	price, err := sim.AddPrice(stripesim.Price{Currency: "EUR", UnitAmount: 1200, Interval: "year"})
	if err != nil {
		t.Fatal(err)
	}
	cus, err := sim.AddCustomer(stripesim.Customer{Email: "x@example.com", DefaultPaymentMethod: "pm_card_mastercard"})
	if err != nil {
		t.Fatal(err)
	}
	r := post(t, srv, "/v1/subscriptions", "", url.Values{"customer": {cus.ID}, "items[0][price]": {price.ID}})
	if r.status != 200 || r.object(t)["status"] != "active" || r.object(t)["currency"] != "eur" {
		t.Errorf("subscription = %d %s", r.status, r.raw)
	}

	errTests := []struct {
		name string
		err  error
		want error
	}{
		{"duplicate customer", second(sim.AddCustomer(stripesim.Customer{ID: "cus_demo"})), stripesim.ErrExists},
		{"unknown payment method", second(sim.AddCustomer(stripesim.Customer{DefaultPaymentMethod: "pm_nope"})), stripesim.ErrUnknownPaymentMethod},
		{"duplicate price", second(sim.AddPrice(stripesim.Price{ID: "price_basic_monthly", Currency: "usd"})), stripesim.ErrExists},
		{"unknown currency", second(sim.AddPrice(stripesim.Price{Currency: "zzz"})), stripesim.ErrUnknownCurrency},
		{"bad interval", second(sim.AddPrice(stripesim.Price{Currency: "usd", Interval: "fortnight"})), stripesim.ErrInvalidFixture},
	}
	for _, tt := range errTests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, tt.err, tt.want)
		}
	}
}

func second[T any](_ T, err error) error { return err }
