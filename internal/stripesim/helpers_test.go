package stripesim_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

const testKey = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"

// epoch is where manual clocks start, far from the real time so a test
// that accidentally reads the system clock shows up.
var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newSim serves a simulator over real HTTP for the duration of the test.
func newSim(t *testing.T, cfg stripesim.Config) (*stripesim.Sim, *httptest.Server) {
	t.Helper()
	sim := stripesim.New(cfg)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv
}

// stripeAPI is a stripe-go client for srv with stripe-go's own retries off,
// as billingd configures it.
func stripeAPI(t *testing.T, srv *httptest.Server, key string) *client.API {
	t.Helper()
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(srv.URL),
		MaxNetworkRetries: stripe.Int64(0),
		HTTPClient:        srv.Client(),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return client.New(key, &stripe.Backends{API: backend})
}

// result is a raw HTTP answer.
type result struct {
	status int
	header http.Header
	raw    []byte
	err    error // transport error, e.g. a dropped connection
}

// stripeErr is the "error" object of a Stripe error body.
type stripeErr struct {
	Type          string          `json:"type"`
	Code          string          `json:"code"`
	DeclineCode   string          `json:"decline_code"`
	Message       string          `json:"message"`
	Param         string          `json:"param"`
	PaymentIntent json.RawMessage `json:"payment_intent"`
}

func (r result) errBody(t *testing.T) stripeErr {
	t.Helper()
	var b struct {
		Error *stripeErr `json:"error"`
	}
	if err := json.Unmarshal(r.raw, &b); err != nil || b.Error == nil {
		t.Fatalf("body is not a Stripe error (status %d): %s", r.status, r.raw)
	}
	return *b.Error
}

// object decodes a JSON object body into a generic map.
func (r result) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.raw, &m); err != nil {
		t.Fatalf("decode body (status %d): %v: %s", r.status, err, r.raw)
	}
	return m
}

func (r result) id(t *testing.T) string {
	t.Helper()
	id, _ := r.object(t)["id"].(string)
	return id
}

// request sends one raw request. Each call uses a fresh connection, so a
// connection the simulator drops is reported as an error instead of being
// silently retried by the transport.
func request(t *testing.T, srv *httptest.Server, method, path, key, idemKey, body string) result {
	t.Helper()
	return requestCtx(context.Background(), t, srv, method, path, key, idemKey, body)
}

func requestCtx(ctx context.Context, t *testing.T, srv *httptest.Server, method, path, key, idemKey, body string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, raw: raw, err: err}
}

func post(t *testing.T, srv *httptest.Server, path, idemKey string, form url.Values) result {
	t.Helper()
	return request(t, srv, http.MethodPost, path, testKey, idemKey, form.Encode())
}

func get(t *testing.T, srv *httptest.Server, path string) result {
	t.Helper()
	return request(t, srv, http.MethodGet, path, testKey, "", "")
}

// charge is a valid card charge; extra pairs override or add parameters.
func charge(pm string, extra ...string) url.Values {
	v := url.Values{
		"amount":                         {"2000"},
		"currency":                       {"usd"},
		"payment_method":                 {pm},
		"confirm":                        {"true"},
		"payment_method_types[0]":        {"card"},
		"metadata[billingd_request_key]": {"rk_" + pm},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			v.Del(extra[i])
			continue
		}
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
