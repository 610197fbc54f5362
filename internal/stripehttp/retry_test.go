package stripehttp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripehttp"
)

// step answers one attempt at the scripted server.
type step func(w http.ResponseWriter, r *http.Request)

func reply(code int, body string, header ...string) step {
	return func(w http.ResponseWriter, _ *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		io.WriteString(w, body)
	}
}

// hangUp reads the whole request, then closes the connection without an
// answer: the request was sent, its outcome is unknown.
func hangUp(t *testing.T) step {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	}
}

// stall answers only once the client gives up on the attempt.
func stall(w http.ResponseWriter, r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(5 * time.Second):
	}
}

type seen struct {
	method, key, body string
	length            int64 // Content-Length; -1 when unknown (chunked)
}

// scripted is a server that answers attempt i with steps[i] (the last step
// repeats) and records what each attempt sent.
type scripted struct {
	*httptest.Server
	mu   sync.Mutex
	seen []seen
}

func newScripted(t *testing.T, steps ...step) *scripted {
	t.Helper()
	s := &scripted{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		n := len(s.seen)
		s.seen = append(s.seen, seen{r.Method, r.Header.Get("Idempotency-Key"), string(b), r.ContentLength})
		s.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		steps[min(n, len(steps)-1)](w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *scripted) attempts() []seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// noKeepAlive keeps net/http from replaying a request on a fresh connection
// by itself, so the server counts exactly Retry's attempts.
func noKeepAlive() http.RoundTripper { return &http.Transport{DisableKeepAlives: true} }

func noWait(time.Duration) time.Duration { return 0 }

func TestRetryPolicy(t *testing.T) {
	t.Parallel()
	const (
		inUse    = `{"error":{"type":"invalid_request_error","code":"idempotency_key_in_use","message":"in use"}}`
		conflict = `{"error":{"type":"invalid_request_error","code":"resource_already_exists","message":"exists"}}`
		apiError = `{"error":{"type":"api_error","message":"boom"}}`
		ok       = `{"id":"pi_1"}`
	)
	tests := []struct {
		name        string
		method      string
		opts        []stripehttp.RetryOption
		steps       func(t *testing.T) []step
		wantCode    int // 0: an error is expected
		wantBody    string
		wantReasons []string
	}{
		{"2xx returned at once", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(200, ok)} }, 200, ok, nil},
		{"POST 503 retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(503, apiError), reply(200, ok)} }, 200, ok, []string{"unavailable"}},
		{"429 retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(429, apiError), reply(200, ok)} }, 200, ok, []string{"rate_limited"}},
		{"409 idempotency_key_in_use retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(409, inUse), reply(200, ok)} }, 200, ok, []string{"in_use"}},
		{"409 of another code retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(409, conflict), reply(200, ok)} }, 200, ok, []string{"in_use"}},
		{"409 non-JSON retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(409, "<html>"), reply(200, ok)} }, 200, ok, []string{"in_use"}},
		{"409 after retries returned intact", http.MethodPost, []stripehttp.RetryOption{stripehttp.WithMaxAttempts(2)},
			func(*testing.T) []step { return []step{reply(409, conflict)} }, 409, conflict, []string{"in_use"}},
		{"POST 500 never retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(500, apiError), reply(200, ok)} }, 500, apiError, nil},
		{"POST 502 never retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(502, apiError), reply(200, ok)} }, 502, apiError, nil},
		{"POST 504 never retried", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(504, apiError), reply(200, ok)} }, 504, apiError, nil},
		{"GET 500 retried", http.MethodGet, nil,
			func(*testing.T) []step { return []step{reply(500, apiError), reply(200, ok)} }, 200, ok, []string{"unavailable"}},
		{"GET 504 retried", http.MethodGet, nil,
			func(*testing.T) []step { return []step{reply(504, apiError), reply(200, ok)} }, 200, ok, []string{"unavailable"}},
		{"DELETE 502 retried", http.MethodDelete, nil,
			func(*testing.T) []step { return []step{reply(502, apiError), reply(200, ok)} }, 200, ok, []string{"unavailable"}},
		{"400 returned", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(400, conflict), reply(200, ok)} }, 400, conflict, nil},
		{"402 returned", http.MethodPost, nil,
			func(*testing.T) []step { return []step{reply(402, apiError), reply(200, ok)} }, 402, apiError, nil},
		{"Should-Retry true retries a POST 500", http.MethodPost, nil,
			func(*testing.T) []step {
				return []step{reply(500, apiError, "Stripe-Should-Retry", "true"), reply(200, ok)}
			}, 200, ok, []string{"should_retry"}},
		{"Should-Retry true retries a 400", http.MethodPost, nil,
			func(*testing.T) []step {
				return []step{reply(400, apiError, "Stripe-Should-Retry", "true"), reply(200, ok)}
			}, 200, ok, []string{"should_retry"}},
		{"Should-Retry false beats 503", http.MethodPost, nil,
			func(*testing.T) []step {
				return []step{reply(503, apiError, "Stripe-Should-Retry", "false"), reply(200, ok)}
			}, 503, apiError, nil},
		{"Should-Retry false beats 429", http.MethodPost, nil,
			func(*testing.T) []step {
				return []step{reply(429, apiError, "Stripe-Should-Retry", "false"), reply(200, ok)}
			}, 429, apiError, nil},
		{"Should-Retry false beats 409 in use", http.MethodPost, nil,
			func(*testing.T) []step {
				return []step{reply(409, inUse, "Stripe-Should-Retry", "false"), reply(200, ok)}
			}, 409, inUse, nil},
		{"connection closed after the request was sent", http.MethodPost, nil,
			func(t *testing.T) []step { return []step{hangUp(t), reply(200, ok)} }, 200, ok, []string{"network"}},
		{"attempt timeout retried", http.MethodPost,
			[]stripehttp.RetryOption{stripehttp.WithAttemptTimeout(50 * time.Millisecond)},
			func(*testing.T) []step { return []step{stall, reply(200, ok)} }, 200, ok, []string{"timeout"}},
		{"attempts run out: last response returned intact", http.MethodPost,
			[]stripehttp.RetryOption{stripehttp.WithMaxAttempts(3)},
			func(*testing.T) []step {
				return []step{reply(503, `{"n":1}`), reply(429, `{"n":2}`), reply(503, `{"n":3}`)}
			},
			503, `{"n":3}`, []string{"unavailable", "rate_limited"}},
		{"attempts run out: last error returned", http.MethodPost,
			[]stripehttp.RetryOption{stripehttp.WithMaxAttempts(2)},
			func(t *testing.T) []step { return []step{hangUp(t)} }, 0, "", []string{"network"}},
		{"one attempt means no retries", http.MethodPost,
			[]stripehttp.RetryOption{stripehttp.WithMaxAttempts(1)},
			func(*testing.T) []step { return []step{reply(503, apiError), reply(200, ok)} }, 503, apiError, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, tt.steps(t)...)
			var mu sync.Mutex
			var reasons []string
			opts := append([]stripehttp.RetryOption{
				stripehttp.WithJitter(noWait),
				stripehttp.WithRetryObserver(func(r string) { mu.Lock(); reasons = append(reasons, r); mu.Unlock() }),
			}, tt.opts...)
			client := &http.Client{Transport: stripehttp.Retry(noKeepAlive(), opts...)}

			var body io.Reader
			if tt.method == http.MethodPost {
				body = strings.NewReader("amount=100&currency=usd")
			}
			req, err := http.NewRequest(tt.method, srv.URL+"/v1/payment_intents", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Idempotency-Key", "bd1_key")
			resp, err := client.Do(req)
			if tt.wantCode == 0 {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got status %d, want an error", resp.StatusCode)
				}
			} else {
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatalf("read body: %v", err)
				}
				if resp.StatusCode != tt.wantCode || string(got) != tt.wantBody {
					t.Errorf("got %d %q, want %d %q", resp.StatusCode, got, tt.wantCode, tt.wantBody)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(reasons, tt.wantReasons) {
				t.Errorf("retry reasons = %q, want %q", reasons, tt.wantReasons)
			}
			if got, want := len(srv.attempts()), len(tt.wantReasons)+1; got != want {
				t.Errorf("server saw %d attempts, want %d", got, want)
			}
		})
	}
}

// TestRetryWithoutIdempotencyKey: a request that may have reached the server
// is resent only if that is harmless.
func TestRetryWithoutIdempotencyKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		method       string
		timeout      time.Duration
		first        func(t *testing.T) step
		wantAttempts int
	}{
		{"POST not resent after a hang-up", http.MethodPost, 0, hangUp, 1},
		{"POST not resent after an attempt timeout", http.MethodPost, 50 * time.Millisecond, func(*testing.T) step { return stall }, 1},
		{"POST still retried on 503", http.MethodPost, 0, func(*testing.T) step { return reply(503, "{}") }, 2},
		{"GET resent after a hang-up", http.MethodGet, 0, hangUp, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, tt.first(t), reply(200, "{}"))
			rt := stripehttp.Retry(noKeepAlive(), stripehttp.WithJitter(noWait), stripehttp.WithAttemptTimeout(tt.timeout))
			var body io.Reader
			if tt.method == http.MethodPost {
				body = strings.NewReader("a=1")
			}
			req, _ := http.NewRequest(tt.method, srv.URL, body)
			resp, err := rt.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			if got := len(srv.attempts()); got != tt.wantAttempts {
				t.Errorf("server saw %d attempts, want %d (last: %v)", got, tt.wantAttempts, err)
			}
		})
	}
}

// noGetBody hides the body's type from http.NewRequest, so the request has
// no GetBody and Retry must buffer it.
type noGetBody struct{ io.Reader }

// The three shapes of request body Retry gets: one net/http knows the
// length of and can copy (GetBody), one it can do neither with, and
// stripe-go's: ContentLength 0 with a body and GetBody, which net/http would
// send chunked.
const (
	bodyWithGetBody = "with GetBody"
	bodyUnsized     = "without GetBody"
	bodyStripeGo    = "stripe-go's, length unknown"
)

// stripeGoBody is the body stripe-go's BackendImplementation.Do gives a
// request made with http.NewRequest(method, path, nil).
type stripeGoBody struct{ io.Reader }

func (stripeGoBody) Close() error { return nil }

func TestRetrySendsSameKeyAndBody(t *testing.T) {
	t.Parallel()
	const payload = "amount=2000&currency=usd&metadata[billingd_request_key]=abc"
	for _, shape := range []string{bodyWithGetBody, bodyUnsized, bodyStripeGo} {
		t.Run(shape, func(t *testing.T) {
			t.Parallel()
			srv := newScripted(t, reply(503, "{}"), hangUp(t), reply(409, `{"error":{"code":"idempotency_key_in_use"}}`), reply(200, "{}"))
			client := &http.Client{Transport: stripehttp.Retry(noKeepAlive(), stripehttp.WithJitter(noWait))}
			var req *http.Request
			switch shape {
			case bodyWithGetBody:
				req, _ = http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(payload))
			case bodyUnsized:
				req, _ = http.NewRequest(http.MethodPost, srv.URL, noGetBody{strings.NewReader(payload)})
			case bodyStripeGo:
				req, _ = http.NewRequest(http.MethodPost, srv.URL, nil)
				req.Body = stripeGoBody{strings.NewReader(payload)}
				req.GetBody = func() (io.ReadCloser, error) { return stripeGoBody{strings.NewReader(payload)}, nil }
			}
			if got, want := req.GetBody != nil, shape != bodyUnsized; got != want {
				t.Fatalf("request has GetBody = %v, want %v", got, want)
			}
			req.Header.Set("Idempotency-Key", "bd1_same")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			got := srv.attempts()
			if len(got) != 4 {
				t.Fatalf("server saw %d attempts, want 4", len(got))
			}
			for i, a := range got {
				if a.key != "bd1_same" || a.body != payload || a.method != http.MethodPost {
					t.Errorf("attempt %d sent %s key %q body %q, want POST key %q body %q", i+1, a.method, a.key, a.body, "bd1_same", payload)
				}
				// Sent with its length, the body goes out with the headers,
				// not in chunks net/http flushes one by one.
				if a.length != int64(len(payload)) {
					t.Errorf("attempt %d sent Content-Length %d, want %d", i+1, a.length, len(payload))
				}
			}
		})
	}
}

func TestRetryContextCancelCutsBackoffShort(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(503, "{}"))
	client := &http.Client{Transport: stripehttp.Retry(noKeepAlive(),
		stripehttp.WithBackoff(time.Minute, time.Minute),
		stripehttp.WithJitter(func(d time.Duration) time.Duration { return d }))}
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL, strings.NewReader("a=1"))
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want context.Canceled", resp.StatusCode)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("returned after %v, want promptly after cancel", elapsed)
	}
	if got := len(srv.attempts()); got != 1 {
		t.Errorf("server saw %d attempts, want 1", got)
	}
}

func TestRetryDeadlineCutsBackoffShort(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(429, "{}"))
	rt := stripehttp.Retry(noKeepAlive(),
		stripehttp.WithBackoff(time.Minute, time.Minute),
		stripehttp.WithJitter(func(d time.Duration) time.Duration { return d }))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want an error", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want context.DeadlineExceeded", err)
	}
}

func TestRetryBackoffIsCappedExponential(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(503, "{}"))
	var limits []time.Duration
	rt := stripehttp.Retry(noKeepAlive(),
		stripehttp.WithMaxAttempts(6),
		stripehttp.WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		stripehttp.WithJitter(func(d time.Duration) time.Duration { limits = append(limits, d); return 0 }))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond}
	if !slices.Equal(limits, want) {
		t.Errorf("backoff limits = %v, want %v", limits, want)
	}
	if got := len(srv.attempts()); got != 6 {
		t.Errorf("server saw %d attempts, want 6 (WithMaxAttempts)", got)
	}
}

func TestRetryDefaultMaxAttempts(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(503, "{}"))
	rt := stripehttp.Retry(noKeepAlive(), stripehttp.WithJitter(noWait))
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("a=1"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := len(srv.attempts()), 4; got != want {
		t.Errorf("server saw %d attempts, want %d", got, want)
	}
}

// closeRecorder records which response bodies were closed.
type closeRecorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	closed []bool
}

type recordedBody struct {
	io.ReadCloser
	rec *closeRecorder
	i   int
}

func (b *recordedBody) Close() error {
	b.rec.mu.Lock()
	b.rec.closed[b.i] = true
	b.rec.mu.Unlock()
	return b.ReadCloser.Close()
}

func (c *closeRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.closed = append(c.closed, false)
	resp.Body = &recordedBody{resp.Body, c, len(c.closed) - 1}
	c.mu.Unlock()
	return resp, nil
}

func TestRetryClosesDiscardedResponses(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(503, "{}"), reply(409, `{"error":{"code":"idempotency_key_in_use"}}`), reply(200, `{"id":"x"}`))
	rec := &closeRecorder{next: noKeepAlive()}
	rt := stripehttp.Retry(rec, stripehttp.WithJitter(noWait))
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("a=1"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	if got, want := rec.closed, []bool{true, true, false}; !slices.Equal(got, want) {
		t.Errorf("closed before the caller closes = %v, want %v", got, want)
	}
	rec.mu.Unlock()
	resp.Body.Close()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !rec.closed[2] {
		t.Error("returned body not closed by the caller's Close")
	}
}

func TestRetryNilNextUsesDefaultTransport(t *testing.T) {
	t.Parallel()
	srv := newScripted(t, reply(200, "{}"))
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	resp, err := stripehttp.Retry(nil).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
}

func TestRetryLongConflictBodyIsIntact(t *testing.T) {
	// The last 409, returned once attempts run out, has its whole body.
	t.Parallel()
	long := `{"error":{"code":"other","message":"` + strings.Repeat("x", 200<<10) + `"}}`
	srv := newScripted(t, reply(409, long))
	rt := stripehttp.Retry(noKeepAlive(), stripehttp.WithJitter(noWait))
	req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("a=1"))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != long {
		t.Errorf("body is %d bytes, want the original %d", len(got), len(long))
	}
}

// TestRetryStripeAnswers is the retry half of the table Stripe's answers are
// classified by (stripeapi's TestStripeAnswerKinds is the other half): which
// answers Retry sends again, always with the same Idempotency-Key and body.
func TestRetryStripeAnswers(t *testing.T) {
	t.Parallel()
	stripeErr := func(typ, code string) string {
		return `{"error":{"type":"` + typ + `","code":"` + code + `","message":"m"}}`
	}
	tests := []struct {
		name        string
		method      string
		status      int
		body        string
		shouldRetry string // Stripe-Should-Retry, "" for none
		retried     bool
	}{
		{"409 invalid_request_error idempotency_key_in_use", http.MethodPost, 409, stripeErr("invalid_request_error", "idempotency_key_in_use"), "", true},
		{"409 idempotency_error idempotency_key_in_use", http.MethodPost, 409, stripeErr("idempotency_error", "idempotency_key_in_use"), "", true},
		{"409 idempotency_error without code", http.MethodPost, 409, stripeErr("idempotency_error", ""), "", true},
		{"409 lock_timeout", http.MethodPost, 409, stripeErr("invalid_request_error", "lock_timeout"), "", true},
		{"409 non-JSON", http.MethodPost, 409, "<html>conflict</html>", "", true},
		{"409 empty body", http.MethodPost, 409, "", "", true},
		{"GET 409", http.MethodGet, 409, stripeErr("invalid_request_error", "idempotency_key_in_use"), "", true},
		{"409 with Should-Retry true", http.MethodPost, 409, stripeErr("idempotency_error", "idempotency_key_in_use"), "true", true},
		{"409 with Should-Retry false", http.MethodPost, 409, stripeErr("idempotency_error", "idempotency_key_in_use"), "false", false},
		{"400 idempotency_error", http.MethodPost, 400, stripeErr("idempotency_error", ""), "", false},
		{"402 card_error", http.MethodPost, 402, stripeErr("card_error", "card_declined"), "", false},
		{"404 resource_missing", http.MethodGet, 404, stripeErr("invalid_request_error", "resource_missing"), "", false},
		{"429 rate_limit", http.MethodPost, 429, stripeErr("invalid_request_error", "rate_limit"), "", true},
		{"429 lock_timeout", http.MethodPost, 429, stripeErr("invalid_request_error", "lock_timeout"), "", true},
		{"POST 500", http.MethodPost, 500, stripeErr("api_error", ""), "", false},
		{"POST 502", http.MethodPost, 502, "<html>bad gateway</html>", "", false},
		{"POST 503", http.MethodPost, 503, stripeErr("api_error", ""), "", true},
		{"POST 504", http.MethodPost, 504, "gateway timeout", "", false},
		{"GET 500", http.MethodGet, 500, stripeErr("api_error", ""), "", true},
		{"GET 502", http.MethodGet, 502, "<html>bad gateway</html>", "", true},
		{"GET 503", http.MethodGet, 503, stripeErr("api_error", ""), "", true},
		{"GET 504", http.MethodGet, 504, "gateway timeout", "", true},
		{"401", http.MethodPost, 401, stripeErr("invalid_request_error", ""), "", false},
		{"403", http.MethodGet, 403, stripeErr("invalid_request_error", "secret_key_required"), "", false},
		{"400 with Should-Retry true", http.MethodPost, 400, stripeErr("invalid_request_error", "parameter_invalid"), "true", true},
		{"400 with Should-Retry false", http.MethodPost, 400, stripeErr("invalid_request_error", "parameter_invalid"), "false", false},
		{"POST 500 with Should-Retry true", http.MethodPost, 500, stripeErr("api_error", ""), "true", true},
		{"GET 500 with Should-Retry false", http.MethodGet, 500, stripeErr("api_error", ""), "false", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var header []string
			if tt.shouldRetry != "" {
				header = []string{"Stripe-Should-Retry", tt.shouldRetry}
			}
			srv := newScripted(t, reply(tt.status, tt.body, header...), reply(200, `{"id":"pi_1"}`))
			client := &http.Client{Transport: stripehttp.Retry(noKeepAlive(), stripehttp.WithJitter(noWait))}
			const payload = "amount=100&currency=usd"
			var body io.Reader
			if tt.method == http.MethodPost {
				body = strings.NewReader(payload)
			}
			req, err := http.NewRequest(tt.method, srv.URL+"/v1/payment_intents", body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Idempotency-Key", "bd1_same")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantCode, wantBody, wantAttempts := tt.status, tt.body, 1
			if tt.retried {
				wantCode, wantBody, wantAttempts = 200, `{"id":"pi_1"}`, 2
			}
			if resp.StatusCode != wantCode || string(got) != wantBody {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, got, wantCode, wantBody)
			}
			attempts := srv.attempts()
			if len(attempts) != wantAttempts {
				t.Fatalf("server saw %d attempts, want %d", len(attempts), wantAttempts)
			}
			for i, a := range attempts {
				if a.key != "bd1_same" || a.method != tt.method || (tt.method == http.MethodPost && a.body != payload) {
					t.Errorf("attempt %d sent %s key %q body %q", i+1, a.method, a.key, a.body)
				}
			}
		})
	}
}
