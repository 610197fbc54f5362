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

	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/internal/stripeapi"
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
		RetryOptions: []interceptors.RetryOption{interceptors.WithJitter(func(time.Duration) time.Duration { return 0 })},
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
			if want := (service.Result{ObjectID: "pi_9", Status: "succeeded", Amount: 2000, Currency: "usd", StripeRequestID: "req_abc"}); got != want {
				t.Errorf("result = %+v, want %+v", got, want)
			}
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
	if want := (service.Result{ObjectID: "sub_9", Status: "active", StripeRequestID: "req_abc"}); got != want {
		t.Errorf("result = %+v, want %+v", got, want)
	}
	r := f.requests()[0]
	want := url.Values{"customer": {"cus_1"}, "items[0][price]": {"price_1"}, "items[0][quantity]": {"3"}, "metadata[billingd_request_key]": {"rk2"}}
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
		want      service.Result
		wantFound bool
	}{
		{"payment intent found", findPI, piHit, "/v1/payment_intents/search", service.Result{ObjectID: "pi_7", Status: "succeeded", Amount: 500, Currency: "eur"}, true},
		{"payment intent not found", findPI, none, "/v1/payment_intents/search", service.Result{}, false},
		{"subscription found", findSub, subHit, "/v1/subscriptions/search", service.Result{ObjectID: "sub_7", Status: "incomplete"}, true},
		{"subscription not found", findSub, none, "/v1/subscriptions/search", service.Result{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFake(t, respond(200, tt.body))
			got, found, err := tt.find(t.Context(), newClient(t, f.URL), `k'1\`)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want || found != tt.wantFound {
				t.Errorf("got %+v, %v; want %+v, %v", got, found, tt.want, tt.wantFound)
			}
			r := f.requests()[0]
			want := url.Values{"query": {`metadata['billingd_request_key']:'k\'1\\'`}, "limit": {"1"}}
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
	}, RetryOptions: []interceptors.RetryOption{interceptors.WithMaxAttempts(1)}})
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

	close(release)
	for range calls {
		if err := <-errs; err != nil {
			t.Errorf("call: %v", err)
		}
	}
	if n := len(f.requests()); n != calls {
		t.Errorf("Stripe saw %d requests, want %d", n, calls)
	}
	if n, _, waited := c.Slots(); n != 0 || waited != calls-2+1 {
		t.Errorf("Slots() after = %d in flight, %d waited; want 0, %d (the find that gave up included)", n, waited, calls-2+1)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak != 2 {
		t.Errorf("%d calls were at Stripe at once, want 2 (MaxInFlight)", peak)
	}
}
