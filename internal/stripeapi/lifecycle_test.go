package stripeapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/service"
)

// The calls on existing objects send exactly these requests, and read these
// answers.
func TestLifecycleRequests(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, key string
		form              url.Values
	}
	refund := `{"id":"re_1","object":"refund","status":"pending","amount":500,"currency":"usd","payment_intent":"pi_1",
		"failure_reason":null,"metadata":{"billingd_caller":"shop","billingd_request_key":"rk1","other":"x"}}`
	intent := `{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":2000,"amount_received":1500,"currency":"usd",
		"cancellation_reason":"abandoned","client_secret":"pi_1_secret_x","metadata":{"billingd_caller":"shop"}}`
	sub := `{"id":"sub_1","object":"subscription","status":"active","cancel_at_period_end":true,"metadata":{"billingd_caller":"shop"}}`
	tests := []struct {
		name   string
		answer string
		call   func(c *stripeapi.Client) (service.Result, error)
		want   seen
		check  func(service.Result) bool
	}{
		{"refund, all that is left", refund,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CreateRefund(context.Background(), "bd1_r", service.RefundParams{PaymentIntentID: "pi_1",
					Metadata: map[string]string{"billingd_caller": "shop", "billingd_request_key": "rk1"}})
			},
			seen{"POST", "/v1/refunds", "bd1_r", url.Values{"payment_intent": {"pi_1"},
				"metadata[billingd_caller]": {"shop"}, "metadata[billingd_request_key]": {"rk1"}}},
			func(r service.Result) bool {
				return r.ObjectID == "re_1" && r.Status == "pending" && r.Amount == 500 && r.ParentID == "pi_1" && r.Owner == "shop"
			}},
		{"refund, an amount and a reason", refund,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CreateRefund(context.Background(), "bd1_r2", service.RefundParams{PaymentIntentID: "pi_1", Amount: 500, Reason: "duplicate"})
			},
			seen{"POST", "/v1/refunds", "bd1_r2", url.Values{"payment_intent": {"pi_1"}, "amount": {"500"}, "reason": {"duplicate"}}},
			func(r service.Result) bool { return r.ObjectID == "re_1" }},
		{"retrieve a refund", refund,
			func(c *stripeapi.Client) (service.Result, error) { return c.GetRefund(context.Background(), "re_1") },
			seen{"GET", "/v1/refunds/re_1", "", url.Values{}},
			func(r service.Result) bool { return r.Status == "pending" }},
		{"capture part", intent,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CapturePaymentIntent(context.Background(), "bd1_c", "pi_1", 1500)
			},
			seen{"POST", "/v1/payment_intents/pi_1/capture", "bd1_c", url.Values{"amount_to_capture": {"1500"}}},
			func(r service.Result) bool { return r.Status == "succeeded" && r.Amount == 1500 }},
		{"capture all", intent,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CapturePaymentIntent(context.Background(), "bd1_c2", "pi_1", 0)
			},
			seen{"POST", "/v1/payment_intents/pi_1/capture", "bd1_c2", url.Values{}},
			func(r service.Result) bool { return r.ObjectID == "pi_1" }},
		{"cancel with a reason", intent,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CancelPaymentIntent(context.Background(), "bd1_x", "pi_1", "abandoned")
			},
			seen{"POST", "/v1/payment_intents/pi_1/cancel", "bd1_x", url.Values{"cancellation_reason": {"abandoned"}}},
			func(r service.Result) bool { return r.CancellationReason == "abandoned" }},
		{"cancel a subscription now", sub,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CancelSubscription(context.Background(), "bd1_s", "sub_1", false)
			},
			// A DELETE: Stripe keeps no idempotency for it, so billingd's key
			// is not sent (stripe-go adds a random one of its own, which
			// Stripe ignores; the check below drops it).
			seen{"DELETE", "/v1/subscriptions/sub_1", "", url.Values{}},
			func(r service.Result) bool { return r.ObjectID == "sub_1" }},
		{"cancel a subscription at period end", sub,
			func(c *stripeapi.Client) (service.Result, error) {
				return c.CancelSubscription(context.Background(), "bd1_s2", "sub_1", true)
			},
			seen{"POST", "/v1/subscriptions/sub_1", "bd1_s2", url.Values{"cancel_at_period_end": {"true"}}},
			func(r service.Result) bool { return r.CancelAtPeriodEnd && r.Owner == "shop" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got seen
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				form, _ := url.ParseQuery(string(b))
				if r.Method == http.MethodGet || r.Method == http.MethodDelete {
					form = r.URL.Query()
				}
				got = seen{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), form}
				if r.Method == http.MethodDelete && !strings.HasPrefix(got.key, "bd1_") {
					got.key = ""
				}
				w.Header().Set("Request-Id", "req_1")
				_, _ = io.WriteString(w, tt.answer)
			}))
			defer srv.Close()
			c, err := stripeapi.New(stripeapi.Config{Key: "sk_test_1", URL: srv.URL, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			res, err := tt.call(c)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("request = %+v\nwant      %+v", got, tt.want)
			}
			if !tt.check(res) {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

// FindRefund walks the PaymentIntent's refunds for the one with the request
// key, across pages.
func TestFindRefundPages(t *testing.T) {
	t.Parallel()
	var queries []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.Query())
		if r.URL.Query().Get("starting_after") == "" {
			_, _ = io.WriteString(w, `{"object":"list","has_more":true,"data":[{"id":"re_a","status":"succeeded","metadata":{"billingd_request_key":"other"}}]}`)
			return
		}
		_, _ = io.WriteString(w, `{"object":"list","has_more":false,"data":[{"id":"re_b","status":"succeeded","amount":7,"metadata":{"billingd_request_key":"rk1"}}]}`)
	}))
	defer srv.Close()
	c, err := stripeapi.New(stripeapi.Config{Key: "sk_test_1", URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	res, found, err := c.FindRefund(context.Background(), "pi_1", "rk1")
	if err != nil || !found || res.ObjectID != "re_b" || res.Amount != 7 {
		t.Fatalf("FindRefund = %+v, %v, %v", res, found, err)
	}
	if len(queries) != 2 || queries[0].Get("payment_intent") != "pi_1" || queries[1].Get("starting_after") != "re_a" {
		t.Errorf("queries = %v", queries)
	}
	if _, found, err := c.FindRefund(context.Background(), "pi_1", "missing"); err != nil || found {
		t.Errorf("a missing refund: found %v, %v", found, err)
	}
}
