package stripeapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripehttp"
	"github.com/billingd/billingd/service"
)

const testKey = "sk_test_secret"

// captured is one request as the fake Stripe saw it.
type captured struct {
	method, path, key, auth string
	form                    url.Values
}

// fakeStripe answers every request with handler and records what was sent.
type fakeStripe struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []captured
}

func newFake(t *testing.T, handler http.HandlerFunc) *fakeStripe {
	t.Helper()
	f := &fakeStripe{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("parse form: %v", err)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, captured{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), r.Header.Get("Authorization"), r.Form})
		f.mu.Unlock()
		handler(w, r)
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeStripe) requests() []captured {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]captured(nil), f.reqs...)
}

func newClient(t *testing.T, u string, opts ...func(*stripeapi.Config)) *stripeapi.Client {
	t.Helper()
	cfg := stripeapi.Config{
		Key:          testKey,
		URL:          u,
		RetryOptions: []stripehttp.RetryOption{stripehttp.WithJitter(func(time.Duration) time.Duration { return 0 })},
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := stripeapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func respond(code int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Request-Id", "req_abc")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

func stripeError(typ, code, declineCode, param, msg, extra string) string {
	return fmt.Sprintf(`{"error":{"type":%q,"code":%q,"decline_code":%q,"param":%q,"message":%q%s}}`,
		typ, code, declineCode, param, msg, extra)
}

const declinedPI = `,"payment_intent":{"id":"pi_123","object":"payment_intent","amount":2000,"currency":"usd",` +
	`"status":"requires_payment_method","client_secret":"pi_123_secret_abc"}`

func charge() service.ChargeParams {
	return service.ChargeParams{
		Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa",
		Metadata: map[string]string{"billingd_request_key": "rk1", "billingd_caller": "shop"},
	}
}

// op is one Payments call; post says whether it is a POST.
type op struct {
	name string
	post bool
	call func(context.Context, *stripeapi.Client) error
}

var (
	opCharge = op{"charge", true, func(ctx context.Context, c *stripeapi.Client) error {
		_, err := c.CreatePaymentIntent(ctx, "bd1_key", charge())
		return err
	}}
	opSubscribe = op{"subscribe", true, func(ctx context.Context, c *stripeapi.Client) error {
		_, err := c.CreateSubscription(ctx, "bd1_key", service.SubscribeParams{CustomerID: "cus_1", PriceID: "price_1", Quantity: 1})
		return err
	}}
	opFind = op{"find", false, func(ctx context.Context, c *stripeapi.Client) error {
		_, _, err := c.FindPaymentIntent(ctx, "rk1")
		return err
	}}
	opGetPI = op{"get payment intent", false, func(ctx context.Context, c *stripeapi.Client) error {
		_, err := c.GetPaymentIntent(ctx, "pi_404")
		return err
	}}
	opGetSub = op{"get subscription", false, func(ctx context.Context, c *stripeapi.Client) error {
		_, err := c.GetSubscription(ctx, "sub_404")
		return err
	}}
)

func TestErrorClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		op       op
		handler  http.HandlerFunc
		want     service.UpstreamError // RequestID req_abc unless the call never got an answer
		attempts int
	}{
		{
			name: "402 card_error", op: opCharge,
			handler: respond(402, stripeError("card_error", "card_declined", "insufficient_funds", "", "Your card has insufficient funds.", declinedPI)),
			want: service.UpstreamError{Kind: service.UpstreamDeclined, HTTPStatus: 402, Type: "card_error", Code: "card_declined",
				DeclineCode: "insufficient_funds", Message: "Your card has insufficient funds.", ObjectID: "pi_123"},
			attempts: 1,
		},
		{
			name: "idempotency_error", op: opCharge,
			handler: respond(400, stripeError("idempotency_error", "", "", "", "Keys for idempotent requests can only be used with the same parameters", "")),
			want: service.UpstreamError{Kind: service.UpstreamIdempotencyMismatch, HTTPStatus: 400, Type: "idempotency_error",
				Message: "Keys for idempotent requests can only be used with the same parameters"},
			attempts: 1,
		},
		{
			name: "409 idempotency_key_in_use after retries", op: opCharge,
			handler:  respond(409, stripeError("invalid_request_error", "idempotency_key_in_use", "", "", "in use", "")),
			want:     service.UpstreamError{Kind: service.UpstreamInUse, HTTPStatus: 409, Type: "invalid_request_error", Code: "idempotency_key_in_use", Message: "in use"},
			attempts: 4,
		},
		{
			name: "429 after retries", op: opCharge,
			handler:  respond(429, stripeError("invalid_request_error", "rate_limit", "", "", "Too many requests", "")),
			want:     service.UpstreamError{Kind: service.UpstreamRateLimited, HTTPStatus: 429, Type: "invalid_request_error", Code: "rate_limit", Message: "Too many requests"},
			attempts: 4,
		},
		{
			name: "401 with the key echoed", op: opCharge,
			handler: respond(401, stripeError("invalid_request_error", "", "", "", "Invalid API Key provided: sk_test_****cret and "+testKey, "")),
			want: service.UpstreamError{Kind: service.UpstreamAuth, HTTPStatus: 401, Type: "invalid_request_error",
				Message: "Invalid API Key provided: [redacted] and [redacted]"},
			attempts: 1,
		},
		{
			name: "403", op: opFind,
			handler:  respond(403, stripeError("invalid_request_error", "secret_key_required", "", "", "forbidden", "")),
			want:     service.UpstreamError{Kind: service.UpstreamAuth, HTTPStatus: 403, Type: "invalid_request_error", Code: "secret_key_required", Message: "forbidden"},
			attempts: 1,
		},
		{
			name: "404 resource_missing", op: opSubscribe,
			handler: respond(404, stripeError("invalid_request_error", "resource_missing", "", "customer", "No such customer: 'cus_1'", "")),
			want: service.UpstreamError{Kind: service.UpstreamMissing, HTTPStatus: 404, Type: "invalid_request_error", Code: "resource_missing",
				Param: "customer", Message: "No such customer: 'cus_1'"},
			attempts: 1,
		},
		{
			name: "retrieve PaymentIntent 404 resource_missing", op: opGetPI,
			handler: respond(404, stripeError("invalid_request_error", "resource_missing", "", "intent", "No such payment_intent: 'pi_404'", "")),
			want: service.UpstreamError{Kind: service.UpstreamMissing, HTTPStatus: 404, Type: "invalid_request_error", Code: "resource_missing",
				Param: "intent", Message: "No such payment_intent: 'pi_404'"},
			attempts: 1,
		},
		{
			name: "retrieve subscription 404 resource_missing", op: opGetSub,
			handler: respond(404, stripeError("invalid_request_error", "resource_missing", "", "id", "No such subscription: 'sub_404'", "")),
			want: service.UpstreamError{Kind: service.UpstreamMissing, HTTPStatus: 404, Type: "invalid_request_error", Code: "resource_missing",
				Param: "id", Message: "No such subscription: 'sub_404'"},
			attempts: 1,
		},
		{
			name: "retrieve 200 without id", op: opGetSub,
			handler:  respond(200, `{"object":"subscription"}`),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 200},
			attempts: 1,
		},
		{
			name: "400 resource_missing", op: opCharge,
			handler: respond(400, stripeError("invalid_request_error", "resource_missing", "", "payment_method", "No such PaymentMethod: 'pm_x'", "")),
			want: service.UpstreamError{Kind: service.UpstreamMissing, HTTPStatus: 400, Type: "invalid_request_error", Code: "resource_missing",
				Param: "payment_method", Message: "No such PaymentMethod: 'pm_x'"},
			attempts: 1,
		},
		{
			name: "400 payment_intent_unexpected_state", op: opCharge,
			handler: respond(400, stripeError("invalid_request_error", "payment_intent_unexpected_state", "", "", "state", declinedPI)),
			want: service.UpstreamError{Kind: service.UpstreamObjectState, HTTPStatus: 400, Type: "invalid_request_error",
				Code: "payment_intent_unexpected_state", Message: "state", ObjectID: "pi_123"},
			attempts: 1,
		},
		{
			name: "400 customer_max_subscriptions", op: opSubscribe,
			handler: respond(400, stripeError("invalid_request_error", "customer_max_subscriptions", "", "", "too many", "")),
			want: service.UpstreamError{Kind: service.UpstreamObjectState, HTTPStatus: 400, Type: "invalid_request_error",
				Code: "customer_max_subscriptions", Message: "too many"},
			attempts: 1,
		},
		{
			name: "400 invalid_request_error", op: opCharge,
			handler: respond(400, stripeError("invalid_request_error", "parameter_invalid_integer", "", "amount", "Invalid integer", "")),
			want: service.UpstreamError{Kind: service.UpstreamInvalidRequest, HTTPStatus: 400, Type: "invalid_request_error",
				Code: "parameter_invalid_integer", Param: "amount", Message: "Invalid integer"},
			attempts: 1,
		},
		{
			name: "POST 500 is not retried", op: opCharge,
			handler:  respond(500, stripeError("api_error", "", "", "", "boom", "")),
			want:     service.UpstreamError{Kind: service.UpstreamServerError, HTTPStatus: 500, Type: "api_error", Message: "boom"},
			attempts: 1,
		},
		{
			name: "POST 502 non-JSON", op: opSubscribe,
			handler:  respond(502, "<html>bad gateway</html>"),
			want:     service.UpstreamError{Kind: service.UpstreamServerError, HTTPStatus: 502},
			attempts: 1,
		},
		{
			name: "POST 504 non-JSON", op: opCharge,
			handler:  respond(504, "gateway timeout"),
			want:     service.UpstreamError{Kind: service.UpstreamServerError, HTTPStatus: 504},
			attempts: 1,
		},
		{
			name: "POST 503 after retries", op: opCharge,
			handler:  respond(503, stripeError("api_error", "", "", "", "unavailable", "")),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 503, Type: "api_error", Message: "unavailable"},
			attempts: 4,
		},
		{
			name: "GET 500 after retries", op: opFind,
			handler:  respond(500, stripeError("api_error", "", "", "", "boom", "")),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 500, Type: "api_error", Message: "boom"},
			attempts: 4,
		},
		{
			name: "GET 502 non-JSON after retries", op: opFind,
			handler:  respond(502, "<html>"),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 502},
			attempts: 4,
		},
		{
			name: "POST 400 non-JSON", op: opCharge,
			handler:  respond(400, "<html>bad request</html>"),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 400},
			attempts: 1,
		},
		{
			name: "POST 200 non-JSON", op: opCharge,
			handler:  respond(200, "not json"),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 200},
			attempts: 1,
		},
		{
			name: "POST 200 without id", op: opCharge,
			handler:  respond(200, `{"object":"payment_intent"}`),
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: 200},
			attempts: 1,
		},
		{
			name: "connection closed after the request, after retries", op: opCharge,
			handler: func(w http.ResponseWriter, r *http.Request) {
				conn, _, _ := w.(http.Hijacker).Hijack()
				conn.Close()
			},
			want:     service.UpstreamError{Kind: service.UpstreamUnavailable},
			attempts: 4,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, tt.handler)
			c := newClient(t, f.URL, func(c *stripeapi.Config) { c.Transport = &http.Transport{DisableKeepAlives: true} })
			err := tt.op.call(t.Context(), c)
			var ue *service.UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %T %v, want *service.UpstreamError", err, err)
			}
			want := tt.want
			if want.HTTPStatus != 0 {
				want.RequestID = "req_abc"
			}
			if !reflect.DeepEqual(*ue, want) {
				t.Errorf("got  %+v\nwant %+v", *ue, want)
			}
			if got := len(f.requests()); got != tt.attempts {
				t.Errorf("Stripe saw %d attempts, want %d", got, tt.attempts)
			}
			for _, leak := range []string{"pi_123_secret_abc", "client_secret", testKey, "sk_test_"} {
				if s := fmt.Sprintf("%s %+v %#v", err.Error(), *ue, *ue); strings.Contains(s, leak) {
					t.Errorf("error leaks %q: %s", leak, s)
				}
			}
		})
	}
}

func TestContextErrors(t *testing.T) {
	t.Parallel()
	stall := func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}
	t.Run("canceled before the call", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, respond(200, `{"id":"pi_1"}`))
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		err := opCharge.call(ctx, newClient(t, f.URL))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
		var ue *service.UpstreamError
		if errors.As(err, &ue) {
			t.Errorf("err is an UpstreamError: %v", ue)
		}
	})
	t.Run("deadline while Stripe is slow", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, stall)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if err := opFind.call(ctx, newClient(t, f.URL)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want context.DeadlineExceeded", err)
		}
	})
	t.Run("our own call timeout is upstream unavailability", func(t *testing.T) {
		t.Parallel()
		f := newFake(t, stall)
		c := newClient(t, f.URL, func(c *stripeapi.Config) { c.Timeout = 100 * time.Millisecond })
		err := opCharge.call(t.Context(), c)
		var ue *service.UpstreamError
		if !errors.As(err, &ue) || ue.Kind != service.UpstreamUnavailable {
			t.Errorf("err = %v, want UpstreamUnavailable", err)
		}
	})
}

func TestCreatePaymentIntentRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params service.ChargeParams
		want   url.Values
	}{
		{
			name:   "without customer",
			params: charge(),
			want: url.Values{
				"amount": {"2000"}, "currency": {"usd"}, "payment_method": {"pm_card_visa"}, "confirm": {"true"},
				"payment_method_types[0]":        {"card"},
				"metadata[billingd_request_key]": {"rk1"}, "metadata[billingd_caller]": {"shop"},
			},
		},
		{
			name: "with customer and description, off session",
			params: func() service.ChargeParams {
				p := charge()
				p.CustomerID, p.Description, p.OffSession = "cus_1", "order 42", true
				return p
			}(),
			want: url.Values{
				"amount": {"2000"}, "currency": {"usd"}, "payment_method": {"pm_card_visa"}, "confirm": {"true"},
				"payment_method_types[0]": {"card"}, "customer": {"cus_1"}, "off_session": {"true"}, "description": {"order 42"},
				"metadata[billingd_request_key]": {"rk1"}, "metadata[billingd_caller]": {"shop"},
			},
		},
		{
			name: "customer on session, manual capture",
			params: func() service.ChargeParams {
				p := charge()
				p.CustomerID, p.CaptureMethod = "cus_1", "manual"
				return p
			}(),
			want: url.Values{
				"amount": {"2000"}, "currency": {"usd"}, "payment_method": {"pm_card_visa"}, "confirm": {"true"},
				"payment_method_types[0]": {"card"}, "customer": {"cus_1"}, "capture_method": {"manual"},
				"metadata[billingd_request_key]": {"rk1"}, "metadata[billingd_caller]": {"shop"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, respond(200, `{"id":"pi_9","object":"payment_intent","amount":2000,"currency":"usd","status":"succeeded","client_secret":"pi_9_secret_x"}`))
			got, err := newClient(t, f.URL).CreatePaymentIntent(t.Context(), "bd1_abc", tt.params)
			if err != nil {
				t.Fatal(err)
			}
			want := service.Result{ObjectID: "pi_9", Status: "succeeded", Amount: 2000, Currency: "usd", ClientSecret: "pi_9_secret_x", StripeRequestID: "req_abc"}
			sameResult(t, got, want)
			reqs := f.requests()
			if len(reqs) != 1 {
				t.Fatalf("Stripe saw %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/v1/payment_intents" || r.key != "bd1_abc" || r.auth != "Bearer "+testKey {
				t.Errorf("sent %s %s key %q auth %q", r.method, r.path, r.key, r.auth)
			}
			if !reflect.DeepEqual(r.form, tt.want) {
				t.Errorf("form = %v\nwant   %v", r.form, tt.want)
			}
		})
	}
}

func TestCreateSubscriptionRequest(t *testing.T) {
	t.Parallel()
	f := newFake(t, respond(200, `{"id":"sub_9","object":"subscription","status":"active","currency":"usd"}`))
	got, err := newClient(t, f.URL).CreateSubscription(t.Context(), "bd1_sub", service.SubscribeParams{
		CustomerID: "cus_1", PriceID: "price_1", Quantity: 3, Metadata: map[string]string{"billingd_request_key": "rk2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	sameResult(t, got, service.Result{ObjectID: "sub_9", Status: "active", StripeRequestID: "req_abc"})
	r := f.requests()[0]
	want := url.Values{"customer": {"cus_1"}, "items[0][price]": {"price_1"}, "items[0][quantity]": {"3"}, "metadata[billingd_request_key]": {"rk2"},
		"payment_behavior": {"default_incomplete"}, "expand[0]": {"latest_invoice.payment_intent"}}
	if r.method != http.MethodPost || r.path != "/v1/subscriptions" || r.key != "bd1_sub" {
		t.Errorf("sent %s %s key %q", r.method, r.path, r.key)
	}
	if !reflect.DeepEqual(r.form, want) {
		t.Errorf("form = %v\nwant   %v", r.form, want)
	}
}

func TestFind(t *testing.T) {
	t.Parallel()
	const (
		piHit  = `{"object":"search_result","data":[{"id":"pi_7","object":"payment_intent","amount":500,"currency":"eur","status":"succeeded"}],"has_more":false}`
		subHit = `{"object":"search_result","data":[{"id":"sub_7","object":"subscription","status":"incomplete"}],"has_more":false}`
		none   = `{"object":"search_result","data":[],"has_more":false}`
	)
	type find func(context.Context, *stripeapi.Client, string) (service.Result, bool, error)
	findPI := func(ctx context.Context, c *stripeapi.Client, k string) (service.Result, bool, error) {
		return c.FindPaymentIntent(ctx, k)
	}
	findSub := func(ctx context.Context, c *stripeapi.Client, k string) (service.Result, bool, error) {
		return c.FindSubscription(ctx, k)
	}
	tests := []struct {
		name      string
		find      find
		body      string
		path      string
		expand    []string
		want      service.Result
		wantFound bool
	}{
		{"payment intent found", findPI, piHit, "/v1/payment_intents/search", nil, service.Result{ObjectID: "pi_7", Status: "succeeded", Amount: 500, Currency: "eur"}, true},
		{"payment intent not found", findPI, none, "/v1/payment_intents/search", nil, service.Result{}, false},
		{"subscription found", findSub, subHit, "/v1/subscriptions/search", []string{"data.latest_invoice.payment_intent"}, service.Result{ObjectID: "sub_7", Status: "incomplete"}, true},
		{"subscription not found", findSub, none, "/v1/subscriptions/search", []string{"data.latest_invoice.payment_intent"}, service.Result{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, respond(200, tt.body))
			got, found, err := tt.find(t.Context(), newClient(t, f.URL), `k'1\`)
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.wantFound {
				t.Errorf("found %v, want %v", found, tt.wantFound)
			}
			if found {
				sameResult(t, got, tt.want)
			} else if got != (service.Result{}) {
				t.Errorf("not found, yet result %+v", got)
			}
			r := f.requests()[0]
			want := url.Values{"query": {`metadata['billingd_request_key']:'k\'1\\'`}, "limit": {"1"}}
			if tt.expand != nil {
				want["expand[0]"] = tt.expand
			}
			if r.method != http.MethodGet || r.path != tt.path || !reflect.DeepEqual(r.form, want) {
				t.Errorf("sent %s %s %v, want GET %s %v", r.method, r.path, r.form, tt.path, want)
			}
		})
	}
}

func TestSearchQuery(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"bd1_abc-_", `metadata['billingd_request_key']:'bd1_abc-_'`},
		{`a'b`, `metadata['billingd_request_key']:'a\'b'`},
		{`a\'`, `metadata['billingd_request_key']:'a\\\''`},
	}
	for _, tt := range tests {
		if got := stripeapi.SearchQuery(tt.in); got != tt.want {
			t.Errorf("SearchQuery(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestMisuseSendsNothing(t *testing.T) {
	t.Parallel()
	if _, err := stripeapi.New(stripeapi.Config{}); !errors.Is(err, stripeapi.ErrNoAPIKey) {
		t.Errorf("New without key: %v, want ErrNoAPIKey", err)
	}
	f := newFake(t, respond(200, `{"id":"pi_1"}`))
	c := newClient(t, f.URL)
	for _, key := range []string{"", "  ", strings.Repeat("k", 256)} {
		if _, err := c.CreatePaymentIntent(t.Context(), key, charge()); !errors.Is(err, stripeapi.ErrIdempotencyKey) {
			t.Errorf("CreatePaymentIntent(key %q): %v, want ErrIdempotencyKey", key, err)
		}
		if _, err := c.CreateSubscription(t.Context(), key, service.SubscribeParams{}); !errors.Is(err, stripeapi.ErrIdempotencyKey) {
			t.Errorf("CreateSubscription(key %q): %v, want ErrIdempotencyKey", key, err)
		}
	}
	if _, _, err := c.FindPaymentIntent(t.Context(), ""); !errors.Is(err, stripeapi.ErrNoRequestKeyValue) {
		t.Errorf("FindPaymentIntent(\"\"): %v", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("Stripe saw %d requests, want 0", n)
	}
}

func TestObserveReportsEveryCall(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Request-Id", "req_obs")
		w.WriteHeader(http.StatusPaymentRequired)
		_, _ = w.Write([]byte(`{"error":{"type":"card_error","code":"card_declined","decline_code":"generic_decline","message":"Your card was declined."}}`))
	}))
	defer srv.Close()
	var (
		mu  sync.Mutex
		got []stripeapi.Observation
	)
	c, err := stripeapi.New(stripeapi.Config{Key: "sk_test_obs", URL: srv.URL, Observe: func(o stripeapi.Observation) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, o)
	}})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.CreatePaymentIntent(t.Context(), "bd1_obs", service.ChargeParams{Amount: 100, Currency: "usd", PaymentMethodID: "pm_card_chargeDeclined"})

	down, err := stripeapi.New(stripeapi.Config{Key: "sk_test_obs", URL: "http://127.0.0.1:1", Observe: func(o stripeapi.Observation) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, o)
	}, RetryOptions: []stripehttp.RetryOption{stripehttp.WithMaxAttempts(1)}})
	if err != nil {
		t.Fatal(err)
	}
	_, _, _ = down.FindSubscription(t.Context(), "rk_x")

	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("observations = %+v", got)
	}
	if o := got[0]; o.Endpoint != stripeapi.EndpointCreatePaymentIntent || o.Outcome != "declined" || o.ErrorType != "card_error" || o.Code != "card_declined" {
		t.Errorf("decline observed as %+v", o)
	}
	if o := got[1]; o.Endpoint != stripeapi.EndpointSearchSubscription || o.Outcome != "unavailable" || o.ErrorType != "api_connection_error" {
		t.Errorf("connection failure observed as %+v", o)
	}
}

// TestMaxInFlight: past Config.MaxInFlight calls wait for a slot instead of
// opening more connections, and one whose context ends while it waits sends
// nothing.
func TestMaxInFlight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var mu sync.Mutex
	cur, peak := 0, 0
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cur++
		peak = max(peak, cur)
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		mu.Lock()
		cur--
		mu.Unlock()
		respond(200, `{"id":"pi_1","object":"payment_intent","status":"succeeded","amount":2000,"currency":"usd"}`)(w, r)
	})
	c := newClient(t, f.URL, func(c *stripeapi.Config) { c.MaxInFlight = 2 })

	const calls = 5
	errs := make(chan error, calls)
	for range calls {
		go func() { errs <- opCharge.call(t.Context(), c) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(f.requests()) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(f.requests()); n != 2 {
		t.Fatalf("Stripe saw %d requests while the first two were stuck, want 2", n)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, _, waited := c.Slots(); waited == calls-2 {
			break
		}
	}
	if n, limit, waited := c.Slots(); n != 2 || limit != 2 || waited != calls-2 {
		t.Errorf("Slots() = %d in flight of %d, %d waited; want 2 of 2, %d waited", n, limit, waited, calls-2)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := opFind.call(ctx, c); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a call that found no slot before its deadline: err = %v, want context.DeadlineExceeded", err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("Stripe saw %d requests with every slot taken, want 2", n)
	}
	// A drive whose caller's deadline comes before a slot is answered
	// UPSTREAM_RATE_LIMITED, nothing sent, before that deadline; the
	// drive's own context goes on.
	callerCtx := service.WithCallerDeadline(t.Context(), time.Now().Add(200*time.Millisecond))
	var ue *service.UpstreamError
	if err := opFind.call(callerCtx, c); !errors.As(err, &ue) || ue.Kind != service.UpstreamRateLimited || ue.HTTPStatus != 0 {
		t.Errorf("a drive whose caller's deadline came before a slot: err = %v, want UpstreamRateLimited, nothing sent", err)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("Stripe saw %d requests with every slot taken, want 2", n)
	}
	if got := c.Pace().Refused; got != 1 {
		t.Errorf("Pace().Refused = %d, want 1", got)
	}

	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("call: %v", err)
		}
	}
	if n := len(f.requests()); n != calls {
		t.Errorf("Stripe saw %d requests, want %d", n, calls)
	}
	if n, _, waited := c.Slots(); n != 0 || waited != calls-2+2 {
		t.Errorf("Slots() after = %d in flight, %d waited; want 0, %d (the finds that gave up included)", n, waited, calls-2+2)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != 2 {
		t.Errorf("%d calls were at Stripe at once, want 2 (MaxInFlight)", peak)
	}
}

// The PaymentIntent of the shape tests: its client_secret is what must never
// leave through anything but Result.ClientSecret (and the redirect URL Stripe
// builds around it).
const (
	piSecret    = "pi_1_secret_s3cr3tXYZ"
	redirectURL = "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_1&payment_intent_client_secret=" +
		piSecret + "&publishable_key=pk_test_abc"
)

// piJSON is a PaymentIntent pi_1 of 2000 usd in status, with extra fields
// (",..." JSON members) such as next_action or last_payment_error.
func piJSON(status, extra string) string {
	return `{"id":"pi_1","object":"payment_intent","amount":2000,"amount_capturable":0,"currency":"usd","status":"` + status +
		`","client_secret":"` + piSecret + `","capture_method":"automatic","payment_method":"pm_1","metadata":{"billingd_request_key":"rk1"}` + extra + `}`
}

const (
	useStripeSDK = `,"next_action":{"type":"use_stripe_sdk","use_stripe_sdk":{"type":"three_d_secure_redirect","stripe_js":"https://hooks.stripe.com/redirect/authenticate/src_1?client_secret=src_client_secret_abc","source":"src_1"}}`
	redirectTo   = `,"next_action":{"type":"redirect_to_url","redirect_to_url":{"return_url":"https://shop.example/back","url":"` + redirectURL + `"}}`
	cardDeclined = `,"last_payment_error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","charge":"ch_1",` +
		`"doc_url":"https://stripe.com/docs/error-codes/card-declined","message":"Your card has insufficient funds.",` +
		`"payment_method":{"id":"pm_1","object":"payment_method","type":"card"}}`
	authFailed = `,"last_payment_error":{"type":"invalid_request_error","code":"payment_intent_authentication_failure",` +
		`"doc_url":"https://stripe.com/docs/error-codes/payment-intent-authentication-failure",` +
		`"message":"The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",` +
		`"payment_method":{"id":"pm_1","object":"payment_method","type":"card"}}`
)

var (
	declineFailure = &service.UpstreamError{Kind: service.UpstreamDeclined, HTTPStatus: 402, Type: "card_error", Code: "card_declined",
		DeclineCode: "insufficient_funds", Message: "Your card has insufficient funds.", RequestID: "req_abc", ObjectID: "pi_1"}
	authFailure = &service.UpstreamError{Kind: service.UpstreamDeclined, HTTPStatus: 402, Type: "invalid_request_error",
		Code:      "payment_intent_authentication_failure",
		Message:   "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
		RequestID: "req_abc", ObjectID: "pi_1"}
)

// sameResult compares Results with their Failures by value.
func sameResult(t *testing.T, got, want service.Result) {
	t.Helper()
	if got.StripeTime <= 0 { // every result here came over HTTP
		t.Errorf("StripeTime = %v: the call's time on the wire is missing", got.StripeTime)
	}
	got.StripeTime = 0
	if !reflect.DeepEqual(got, want) {
		t.Errorf("result\n got %+v (failure %+v)\nwant %+v (failure %+v)", got, got.Failure, want, want.Failure)
	}
}

// checkNoSecret fails if secret is anywhere in err or res but ClientSecret
// and RedirectURL (which carries it exactly when Stripe's URL does).
func checkNoSecret(t *testing.T, res service.Result, err error, secret string) {
	t.Helper()
	if err != nil {
		s := err.Error()
		var ue *service.UpstreamError
		if errors.As(err, &ue) {
			s += fmt.Sprintf(" %+v %#v", *ue, *ue)
		}
		if strings.Contains(s, secret) {
			t.Errorf("error carries the client_secret: %s", s)
		}
	}
	rest := res
	rest.ClientSecret, rest.RedirectURL, rest.Failure = "", "", nil
	s := fmt.Sprintf("%+v %#v", rest, rest)
	if res.Failure != nil {
		s += fmt.Sprintf(" %+v %#v %s", *res.Failure, *res.Failure, res.Failure.Error())
	}
	if strings.Contains(s, secret) {
		t.Errorf("result carries the client_secret outside ClientSecret: %s", s)
	}
}

// TestPaymentIntentShapes: each documented PaymentIntent shape, answered to a
// create, a retrieve and a search, fills Result with what Stripe said.
func TestPaymentIntentShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		// create: the shape can be a confirming create's 200 answer.
		create bool
		// want is a lookup's result; a create reports neither Failure nor
		// CancellationReason.
		want service.Result
	}{
		{"succeeded", piJSON("succeeded", `,"next_action":null,"last_payment_error":null`), true,
			service.Result{ObjectID: "pi_1", Status: "succeeded", Amount: 2000, Currency: "usd", ClientSecret: piSecret}},
		{"requires_action use_stripe_sdk", piJSON("requires_action", useStripeSDK), true,
			service.Result{ObjectID: "pi_1", Status: "requires_action", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				NextActionType: "use_stripe_sdk"}},
		{"requires_action redirect_to_url", piJSON("requires_action", redirectTo), true,
			service.Result{ObjectID: "pi_1", Status: "requires_action", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				NextActionType: "redirect_to_url", RedirectURL: redirectURL}},
		{"processing", piJSON("processing", `,"next_action":null,"processing":{"type":"card","card":{}}`), true,
			service.Result{ObjectID: "pi_1", Status: "processing", Amount: 2000, Currency: "usd", ClientSecret: piSecret}},
		{"requires_capture", piJSON("requires_capture", `,"capture_method":"manual","amount_capturable":2000`), true,
			service.Result{ObjectID: "pi_1", Status: "requires_capture", Amount: 2000, Currency: "usd", ClientSecret: piSecret}},
		{"canceled with cancellation_reason", piJSON("canceled", `,"canceled_at":1700000000,"cancellation_reason":"abandoned"`), false,
			service.Result{ObjectID: "pi_1", Status: "canceled", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				CancellationReason: "abandoned"}},
		{"requires_payment_method after a card decline", piJSON("requires_payment_method", cardDeclined), false,
			service.Result{ObjectID: "pi_1", Status: "requires_payment_method", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				Failure: declineFailure}},
		{"requires_payment_method after a failed 3-D Secure authentication", piJSON("requires_payment_method", authFailed), false,
			service.Result{ObjectID: "pi_1", Status: "requires_payment_method", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				Failure: authFailure}},
		{"requires_payment_method never confirmed", piJSON("requires_payment_method", `,"last_payment_error":null`), false,
			service.Result{ObjectID: "pi_1", Status: "requires_payment_method", Amount: 2000, Currency: "usd", ClientSecret: piSecret}},
		{"a last_payment_error outside requires_payment_method is no failure", piJSON("requires_action", useStripeSDK+cardDeclined), true,
			service.Result{ObjectID: "pi_1", Status: "requires_action", Amount: 2000, Currency: "usd", ClientSecret: piSecret,
				NextActionType: "use_stripe_sdk"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			t.Run("GetPaymentIntent", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, tt.body))
				got, err := newClient(t, f.URL).GetPaymentIntent(t.Context(), "pi_1")
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.StripeRequestID = "req_abc"
				sameResult(t, got, want)
				checkNoSecret(t, got, err, piSecret)
				checkRequest(t, f, http.MethodGet, "/v1/payment_intents/pi_1", "", url.Values{})
			})
			t.Run("FindPaymentIntent", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, `{"object":"search_result","url":"/v1/payment_intents/search","has_more":false,"next_page":null,"data":[`+tt.body+`]}`))
				got, found, err := newClient(t, f.URL).FindPaymentIntent(t.Context(), "rk1")
				if err != nil || !found {
					t.Fatalf("found %v, err %v", found, err)
				}
				sameResult(t, got, tt.want)
				checkNoSecret(t, got, err, piSecret)
				checkRequest(t, f, http.MethodGet, "/v1/payment_intents/search", "",
					url.Values{"query": {"metadata['billingd_request_key']:'rk1'"}, "limit": {"1"}})
			})
			if !tt.create {
				return
			}
			t.Run("CreatePaymentIntent", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, tt.body))
				got, err := newClient(t, f.URL).CreatePaymentIntent(t.Context(), "bd1_key", charge())
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.Failure, want.CancellationReason, want.StripeRequestID = nil, "", "req_abc"
				sameResult(t, got, want)
				checkNoSecret(t, got, err, piSecret)
			})
		})
	}
}

// checkRequest asserts the one request f saw.
func checkRequest(t *testing.T, f *fakeStripe, method, path, key string, form url.Values) {
	t.Helper()
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("Stripe saw %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.method != method || r.path != path || r.key != key || r.auth != "Bearer "+testKey {
		t.Errorf("sent %s %s key %q auth %q, want %s %s key %q", r.method, r.path, r.key, r.auth, method, path, key)
	}
	if !reflect.DeepEqual(r.form, form) {
		t.Errorf("form = %v\nwant   %v", r.form, form)
	}
}

// subJSON is subscription sub_1 in status whose latest_invoice is invoice
// (a JSON value: an object, an id string or null).
func subJSON(status, invoice string) string {
	return `{"id":"sub_1","object":"subscription","status":"` + status + `","customer":"cus_1","currency":"usd",` +
		`"items":{"object":"list","data":[],"has_more":false},"metadata":{"billingd_request_key":"rk2"},"latest_invoice":` + invoice + `}`
}

// invoiceJSON is invoice in_1 whose payment_intent is pi (a JSON value).
func invoiceJSON(status, pi string) string {
	return `{"id":"in_1","object":"invoice","status":"` + status + `","amount_due":2000,"subscription":"sub_1","payment_intent":` + pi + `}`
}

// TestSubscriptionShapes: a subscription and its first invoice's
// PaymentIntent, in each documented shape (expanded or as ids), answered to
// a create, a retrieve and a search.
func TestSubscriptionShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want service.Result // as a search finds it
	}{
		{"incomplete, PaymentIntent waiting for a payment method",
			subJSON("incomplete", invoiceJSON("open", piJSON("requires_payment_method", `,"last_payment_error":null`))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "requires_payment_method", ClientSecret: piSecret}},
		{"incomplete, PaymentIntent requires_action use_stripe_sdk",
			subJSON("incomplete", invoiceJSON("open", piJSON("requires_action", useStripeSDK))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "requires_action", ClientSecret: piSecret,
				NextActionType: "use_stripe_sdk"}},
		{"incomplete, PaymentIntent requires_action redirect_to_url",
			subJSON("incomplete", invoiceJSON("open", piJSON("requires_action", redirectTo))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "requires_action", ClientSecret: piSecret,
				NextActionType: "redirect_to_url", RedirectURL: redirectURL}},
		{"incomplete, PaymentIntent processing",
			subJSON("incomplete", invoiceJSON("open", piJSON("processing", ""))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "processing", ClientSecret: piSecret}},
		{"incomplete, card declined",
			subJSON("incomplete", invoiceJSON("open", piJSON("requires_payment_method", cardDeclined))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "requires_payment_method", ClientSecret: piSecret,
				Failure: declineFailure}},
		{"incomplete, 3-D Secure failed",
			subJSON("incomplete", invoiceJSON("open", piJSON("requires_payment_method", authFailed))),
			service.Result{ObjectID: "sub_1", Status: "incomplete", PaymentStatus: "requires_payment_method", ClientSecret: piSecret,
				Failure: authFailure}},
		{"active, first invoice paid",
			subJSON("active", invoiceJSON("paid", piJSON("succeeded", ""))),
			service.Result{ObjectID: "sub_1", Status: "active", PaymentStatus: "succeeded", ClientSecret: piSecret}},
		{"incomplete_expired, PaymentIntent canceled",
			subJSON("incomplete_expired", invoiceJSON("void", piJSON("canceled", `,"cancellation_reason":"void_invoice"`))),
			service.Result{ObjectID: "sub_1", Status: "incomplete_expired", PaymentStatus: "canceled", ClientSecret: piSecret}},
		{"trialing, invoice without PaymentIntent",
			subJSON("trialing", invoiceJSON("paid", "null")),
			service.Result{ObjectID: "sub_1", Status: "trialing"}},
		{"invoice as a bare id",
			subJSON("incomplete", `"in_1"`),
			service.Result{ObjectID: "sub_1", Status: "incomplete"}},
		{"PaymentIntent as a bare id",
			subJSON("incomplete", invoiceJSON("open", `"pi_1"`)),
			service.Result{ObjectID: "sub_1", Status: "incomplete"}},
		{"no latest invoice",
			subJSON("active", "null"),
			service.Result{ObjectID: "sub_1", Status: "active"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			t.Run("CreateSubscription", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, tt.body))
				got, err := newClient(t, f.URL).CreateSubscription(t.Context(), "bd1_sub", service.SubscribeParams{
					CustomerID: "cus_1", PriceID: "price_1", Metadata: map[string]string{"billingd_request_key": "rk2"},
				})
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.StripeRequestID = "req_abc"
				sameResult(t, got, want)
				checkNoSecret(t, got, err, piSecret)
				checkRequest(t, f, http.MethodPost, "/v1/subscriptions", "bd1_sub", url.Values{
					"customer": {"cus_1"}, "items[0][price]": {"price_1"}, "metadata[billingd_request_key]": {"rk2"},
					"payment_behavior": {"default_incomplete"}, "expand[0]": {"latest_invoice.payment_intent"},
				})
			})
			t.Run("GetSubscription", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, tt.body))
				got, err := newClient(t, f.URL).GetSubscription(t.Context(), "sub_1")
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.StripeRequestID = "req_abc"
				sameResult(t, got, want)
				checkNoSecret(t, got, err, piSecret)
				checkRequest(t, f, http.MethodGet, "/v1/subscriptions/sub_1", "", url.Values{"expand[0]": {"latest_invoice.payment_intent"}})
			})
			t.Run("FindSubscription", func(t *testing.T) {
				t.Parallel()
				f := newFake(t, respond(200, `{"object":"search_result","url":"/v1/subscriptions/search","has_more":false,"next_page":null,"data":[`+tt.body+`]}`))
				got, found, err := newClient(t, f.URL).FindSubscription(t.Context(), "rk2")
				if err != nil || !found {
					t.Fatalf("found %v, err %v", found, err)
				}
				sameResult(t, got, tt.want)
				checkNoSecret(t, got, err, piSecret)
				checkRequest(t, f, http.MethodGet, "/v1/subscriptions/search", "", url.Values{
					"query": {"metadata['billingd_request_key']:'rk2'"}, "limit": {"1"}, "expand[0]": {"data.latest_invoice.payment_intent"},
				})
			})
		})
	}
}

// TestClientSecretStaysInClientSecret: whatever Stripe answers, the
// client_secret reaches billingd only as Result.ClientSecret (and inside
// Stripe's own redirect URL): never in an error, its message or any other
// field, even when an error's body embeds the PaymentIntent or a message
// quotes the secret.
func TestClientSecretStaysInClientSecret(t *testing.T) {
	t.Parallel()
	embedded := `,"payment_intent":` + piJSON("requires_payment_method", redirectTo+cardDeclined)
	quoting := `,"last_payment_error":{"type":"card_error","code":"card_declined","message":"declined for ` + piSecret + `"}`
	calls := []struct {
		name string
		call func(context.Context, *stripeapi.Client) (service.Result, error)
	}{
		{"CreatePaymentIntent", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			return c.CreatePaymentIntent(ctx, "bd1_key", charge())
		}},
		{"CreateSubscription", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			return c.CreateSubscription(ctx, "bd1_key", service.SubscribeParams{CustomerID: "cus_1", PriceID: "price_1"})
		}},
		{"GetPaymentIntent", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			return c.GetPaymentIntent(ctx, "pi_1")
		}},
		{"GetSubscription", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			return c.GetSubscription(ctx, "sub_1")
		}},
		{"FindPaymentIntent", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			r, _, err := c.FindPaymentIntent(ctx, "rk1")
			return r, err
		}},
		{"FindSubscription", func(ctx context.Context, c *stripeapi.Client) (service.Result, error) {
			r, _, err := c.FindSubscription(ctx, "rk1")
			return r, err
		}},
	}
	answers := []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"402 embedding the PaymentIntent", respond(402, stripeError("card_error", "card_declined", "generic_decline", "", "Your card was declined.", embedded))},
		{"400 embedding the PaymentIntent", respond(400, stripeError("invalid_request_error", "payment_intent_unexpected_state", "", "", "state", embedded))},
		{"400 quoting the secret", respond(400, stripeError("invalid_request_error", "parameter_invalid", "", "x", "bad "+piSecret, ""))},
		{"PaymentIntent whose failure quotes the secret", func(w http.ResponseWriter, r *http.Request) {
			pi := piJSON("requires_payment_method", redirectTo+quoting)
			switch {
			case strings.HasPrefix(r.URL.Path, "/v1/subscriptions/search"):
				respond(200, `{"object":"search_result","data":[`+subJSON("incomplete", invoiceJSON("open", pi))+`]}`)(w, r)
			case strings.HasPrefix(r.URL.Path, "/v1/subscriptions"):
				respond(200, subJSON("incomplete", invoiceJSON("open", pi)))(w, r)
			case strings.HasSuffix(r.URL.Path, "/search"):
				respond(200, `{"object":"search_result","data":[`+pi+`]}`)(w, r)
			default:
				respond(200, pi)(w, r)
			}
		}},
	}
	for _, a := range answers {
		for _, c := range calls {
			t.Run(a.name+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				f := newFake(t, a.handler)
				res, err := c.call(t.Context(), newClient(t, f.URL))
				checkNoSecret(t, res, err, piSecret)
				if err == nil {
					if res.ClientSecret != piSecret || res.RedirectURL != redirectURL {
						t.Errorf("ClientSecret %q RedirectURL %q, want Stripe's", res.ClientSecret, res.RedirectURL)
					}
					// A create reports no Failure (Payments: lookups do).
					if c.name != "CreatePaymentIntent" && (res.Failure == nil || res.Failure.Message != "declined for [redacted]") {
						t.Errorf("failure = %+v, want the scrubbed message", res.Failure)
					}
				}
			})
		}
	}
}

func TestLookupsWithoutIDSendNothing(t *testing.T) {
	t.Parallel()
	f := newFake(t, respond(200, `{"id":"pi_1"}`))
	c := newClient(t, f.URL)
	if _, err := c.GetPaymentIntent(t.Context(), ""); !errors.Is(err, stripeapi.ErrNoObjectID) {
		t.Errorf("GetPaymentIntent(\"\"): %v, want ErrNoObjectID", err)
	}
	if _, err := c.GetSubscription(t.Context(), ""); !errors.Is(err, stripeapi.ErrNoObjectID) {
		t.Errorf("GetSubscription(\"\"): %v, want ErrNoObjectID", err)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("Stripe saw %d requests, want 0", n)
	}
}

// TestStripeAnswerKinds is the table of docs/design.md, "Errors", over real HTTP: Stripe's
// answers (status × error type × code × Stripe-Should-Retry), as Stripe and
// its client libraries are known to produce them, through the retry layer to
// the UpstreamKind the service acts on. attempts says whether the retry layer
// sent the request again (4: retried until attempts ran out).
func TestStripeAnswerKinds(t *testing.T) {
	t.Parallel()
	answer := func(status int, body, shouldRetry string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if shouldRetry != "" {
				w.Header().Set("Stripe-Should-Retry", shouldRetry)
			}
			respond(status, body)(w, r)
		}
	}
	apiErr := func(typ, code string) string { return stripeError(typ, code, "", "", "m", "") }
	opGet := opGetPI
	tests := []struct {
		name        string
		op          op
		status      int
		body        string
		shouldRetry string
		want        service.UpstreamKind
		attempts    int
	}{
		{"409 invalid_request_error idempotency_key_in_use", opCharge, 409, apiErr("invalid_request_error", "idempotency_key_in_use"), "", service.UpstreamInUse, 4},
		{"409 idempotency_error idempotency_key_in_use", opCharge, 409, apiErr("idempotency_error", "idempotency_key_in_use"), "", service.UpstreamInUse, 4},
		{"409 idempotency_error without code", opSubscribe, 409, apiErr("idempotency_error", ""), "", service.UpstreamInUse, 4},
		{"409 lock_timeout", opCharge, 409, apiErr("invalid_request_error", "lock_timeout"), "", service.UpstreamInUse, 4},
		{"409 non-JSON", opCharge, 409, "<html>conflict</html>", "", service.UpstreamInUse, 4},
		{"GET 409", opGet, 409, apiErr("invalid_request_error", "idempotency_key_in_use"), "", service.UpstreamInUse, 4},
		{"409 with Should-Retry false", opCharge, 409, apiErr("idempotency_error", "idempotency_key_in_use"), "false", service.UpstreamInUse, 1},
		{"400 idempotency_error", opCharge, 400, apiErr("idempotency_error", ""), "", service.UpstreamIdempotencyMismatch, 1},
		{"400 idempotency_error with Should-Retry false", opSubscribe, 400, apiErr("idempotency_error", ""), "false", service.UpstreamIdempotencyMismatch, 1},
		{"402 card_error", opCharge, 402, stripeError("card_error", "card_declined", "generic_decline", "", "declined", declinedPI), "", service.UpstreamDeclined, 1},
		{"POST 404 resource_missing", opSubscribe, 404, apiErr("invalid_request_error", "resource_missing"), "", service.UpstreamMissing, 1},
		{"GET 404 resource_missing", opGet, 404, apiErr("invalid_request_error", "resource_missing"), "", service.UpstreamMissing, 1},
		{"429 rate_limit", opCharge, 429, apiErr("invalid_request_error", "rate_limit"), "", service.UpstreamRateLimited, 4},
		{"429 lock_timeout", opCharge, 429, apiErr("invalid_request_error", "lock_timeout"), "", service.UpstreamRateLimited, 4},
		{"GET 429", opFind, 429, apiErr("invalid_request_error", "rate_limit"), "", service.UpstreamRateLimited, 4},
		{"POST 500", opCharge, 500, apiErr("api_error", ""), "", service.UpstreamServerError, 1},
		{"POST 502 non-JSON", opCharge, 502, "<html>bad gateway</html>", "", service.UpstreamServerError, 1},
		{"POST 503", opCharge, 503, apiErr("api_error", ""), "", service.UpstreamUnavailable, 4},
		{"POST 504 non-JSON", opSubscribe, 504, "gateway timeout", "", service.UpstreamServerError, 1},
		{"GET 500", opGet, 500, apiErr("api_error", ""), "", service.UpstreamUnavailable, 4},
		{"GET 502 non-JSON", opGet, 502, "<html>bad gateway</html>", "", service.UpstreamUnavailable, 4},
		{"GET 503", opFind, 503, apiErr("api_error", ""), "", service.UpstreamUnavailable, 4},
		{"GET 504 non-JSON", opGetSub, 504, "gateway timeout", "", service.UpstreamUnavailable, 4},
		{"401", opCharge, 401, apiErr("invalid_request_error", ""), "", service.UpstreamAuth, 1},
		{"403", opGet, 403, apiErr("invalid_request_error", "secret_key_required"), "", service.UpstreamAuth, 1},
		{"400 with Should-Retry true", opCharge, 400, apiErr("invalid_request_error", "parameter_invalid"), "true", service.UpstreamUnavailable, 4},
		{"400 with Should-Retry false", opCharge, 400, apiErr("invalid_request_error", "parameter_invalid"), "false", service.UpstreamInvalidRequest, 1},
		{"POST 500 with Should-Retry true", opCharge, 500, apiErr("api_error", ""), "true", service.UpstreamUnavailable, 4},
		{"POST 500 with Should-Retry false", opCharge, 500, apiErr("api_error", ""), "false", service.UpstreamServerError, 1},
		{"GET 500 with Should-Retry true", opGet, 500, apiErr("api_error", ""), "true", service.UpstreamUnavailable, 4},
		{"GET 500 with Should-Retry false", opGet, 500, apiErr("api_error", ""), "false", service.UpstreamUnavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, answer(tt.status, tt.body, tt.shouldRetry))
			c := newClient(t, f.URL, func(c *stripeapi.Config) { c.Transport = &http.Transport{DisableKeepAlives: true} })
			err := tt.op.call(t.Context(), c)
			var ue *service.UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err = %T %v, want *service.UpstreamError", err, err)
			}
			if ue.Kind != tt.want || ue.HTTPStatus != tt.status || ue.RequestID != "req_abc" {
				t.Errorf("kind %d status %d request %q, want kind %d status %d request req_abc", ue.Kind, ue.HTTPStatus, ue.RequestID, tt.want, tt.status)
			}
			reqs := f.requests()
			if len(reqs) != tt.attempts {
				t.Errorf("Stripe saw %d attempts, want %d", len(reqs), tt.attempts)
			}
			for i, r := range reqs {
				if r.key != reqs[0].key || (tt.op.post && r.key != "bd1_key") {
					t.Errorf("attempt %d sent key %q, want %q", i+1, r.key, "bd1_key")
				}
			}
		})
	}
}
