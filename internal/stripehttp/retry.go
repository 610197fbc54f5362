// Package stripehttp is the HTTP transport policy of billingd's Stripe calls:
// one retry layer, with Stripe's rules for what may be sent again.
package stripehttp

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// The reasons a RetryObserver is told about, one per retried attempt.
const (
	RetryReasonNetwork     = "network"      // connection error, EOF or reset, before or after the request was sent
	RetryReasonTimeout     = "timeout"      // the per-attempt timeout fired
	RetryReasonInUse       = "in_use"       // 409: a concurrent request holds the key (idempotency_key_in_use) or the object
	RetryReasonRateLimited = "rate_limited" // 429
	RetryReasonUnavailable = "unavailable"  // 503, or 500/502/504 to an idempotent method
	RetryReasonShouldRetry = "should_retry" // Stripe-Should-Retry: true
)

// drainLimit bounds how much of a discarded body is drained so its
// connection is reused.
const drainLimit = 64 << 10

// RetryOption configures Retry.
type RetryOption func(*retryConfig)

type retryConfig struct {
	maxAttempts    int
	base, max      time.Duration
	attemptTimeout time.Duration
	observe        func(reason string)
	jitter         func(limit time.Duration) time.Duration
}

// WithMaxAttempts sets the total number of attempts, the first included
// (default 4). Values below 1 mean 1: no retries.
func WithMaxAttempts(n int) RetryOption {
	return func(c *retryConfig) { c.maxAttempts = max(n, 1) }
}

// WithBackoff sets the exponential backoff: before retry n (1-based) Retry
// waits a random duration in [0, min(max, base·2^(n-1))] (full jitter).
// Defaults: 100ms, 2s.
func WithBackoff(base, max time.Duration) RetryOption {
	return func(c *retryConfig) { c.base, c.max = base, max }
}

// WithAttemptTimeout bounds each attempt, from sending the request to closing
// the response body; an attempt that runs out is retried. 0 (the default)
// leaves attempts bounded only by the request's context.
func WithAttemptTimeout(d time.Duration) RetryOption {
	return func(c *retryConfig) { c.attemptTimeout = d }
}

// WithRetryObserver calls observe with one of the RetryReason constants
// before each retry, for metrics. It must not block.
func WithRetryObserver(observe func(reason string)) RetryOption {
	return func(c *retryConfig) { c.observe = observe }
}

// WithJitter replaces the random source of the backoff: jitter receives the
// capped exponential delay and returns the wait, normally in [0, limit].
// Tests use it to make waits deterministic.
func WithJitter(jitter func(limit time.Duration) time.Duration) RetryOption {
	return func(c *retryConfig) { c.jitter = jitter }
}

// Retry returns a RoundTripper that retries what docs/design.md, rule 5, says is
// safe to retry, and nothing else.
//
// Retried: connection errors (even after the request was sent: every Stripe
// POST carries an Idempotency-Key, so Stripe executes it at most once), attempt
// timeouts, every 409, 429, 503, any response with Stripe-Should-Retry: true,
// and 500/502/504 to idempotent methods (GET, HEAD, OPTIONS, DELETE, PUT). A
// 409 is a conflict with a concurrent request (idempotency_key_in_use: the
// same key still executing) that Stripe neither executed nor saved under the
// key, whatever its body's error type (invalid_request_error or
// idempotency_error have both been seen) and even without a JSON body, as
// stripe-go retries it too. Never retried: a response with
// Stripe-Should-Retry: false (it beats every other rule); a POST answered
// 500/502/504: Stripe has cached that answer under the key, so it is returned
// as is and the record becomes INDETERMINATE; a connection error or timeout of
// a POST without an Idempotency-Key, which might execute twice; certificate
// errors, which do not heal in seconds.
//
// Every attempt sends the same body and headers (so the same Idempotency-Key).
// When attempts run out the last response or error is returned; a response
// that is returned always has its body intact. Every wait ends early when the
// request's context is done, returning the context's error. Retry never logs.
// A nil next means http.DefaultTransport.
func Retry(next http.RoundTripper, opts ...RetryOption) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	cfg := retryConfig{
		maxAttempts: 4,
		base:        100 * time.Millisecond,
		max:         2 * time.Second,
		jitter:      fullJitter,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return &retryTransport{next: next, cfg: cfg}
}

func fullJitter(limit time.Duration) time.Duration {
	if limit <= 0 {
		return 0
	}
	return time.Duration(rand.Int64N(int64(limit) + 1))
}

type retryTransport struct {
	next http.RoundTripper
	cfg  retryConfig
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	first, getBody, length, err := bodySource(req)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		body := first // the next RoundTripper closes it
		if attempt > 1 && getBody != nil {
			if body, err = getBody(); err != nil {
				return nil, err
			}
		}
		resp, err := t.attempt(req, body, length)
		if ctx.Err() != nil {
			// The caller is gone: stop now. A response that made it back
			// is still the truth about what Stripe did; return it.
			if resp != nil {
				return resp, nil
			}
			return nil, err
		}
		var reason string
		if err != nil {
			reason = errorReason(req, err)
		} else {
			reason = responseReason(req.Method, resp)
		}
		if reason == "" || attempt >= t.cfg.maxAttempts {
			return resp, err
		}
		discard(resp)
		if t.cfg.observe != nil {
			t.cfg.observe(reason)
		}
		if err := wait(ctx, t.cfg.jitter(t.backoff(attempt))); err != nil {
			return nil, err
		}
	}
}

// bodySource returns the body of the first attempt, how to get a fresh copy
// for later ones, and its length. A body of known length is sent as it is,
// fresh copies from GetBody. One of unknown length (stripe-go's: a
// ContentLength of 0 with a body) is read into memory here, once: a form is
// small, and sent with its length it is one write with the headers instead
// of chunks that net/http flushes one by one (headers, chunk, terminator).
// req is not modified.
func bodySource(req *http.Request) (io.ReadCloser, func() (io.ReadCloser, error), int64, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return req.Body, nil, req.ContentLength, nil
	}
	if req.ContentLength > 0 && req.GetBody != nil {
		return req.Body, req.GetBody, req.ContentLength, nil
	}
	b, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, nil, 0, err
	}
	if len(b) == 0 {
		return http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }, 0, nil
	}
	// io.NopCloser of a *bytes.Reader is a body net/http knows is in
	// memory, so it does not flush the headers before it.
	fresh := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	first, _ := fresh()
	return first, fresh, int64(len(b)), nil
}

// attempt sends one copy of req with body. With an attempt timeout, the
// timeout's context lives until the returned body is closed. The copy is
// shallow (WithContext): it shares req's headers and URL, which no
// RoundTripper may modify, and has a body of its own.
func (t *retryTransport) attempt(req *http.Request, body io.ReadCloser, length int64) (*http.Response, error) {
	if t.cfg.attemptTimeout <= 0 {
		r := req.WithContext(req.Context())
		r.Body, r.ContentLength = body, length
		return t.next.RoundTrip(r)
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), t.cfg.attemptTimeout, errAttemptTimeout)
	r := req.WithContext(ctx)
	r.Body, r.ContentLength = body, length
	resp, err := t.next.RoundTrip(r)
	if err != nil {
		if context.Cause(ctx) == errAttemptTimeout {
			err = &attemptTimeoutError{err: err}
		}
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

var errAttemptTimeout = errors.New("stripehttp: attempt timeout")

// attemptTimeoutError marks an error caused by the per-attempt timeout. It is
// a net.Error with Timeout() true, so callers see a timeout, not a cancellation.
type attemptTimeoutError struct{ err error }

func (e *attemptTimeoutError) Error() string   { return "retry: attempt timed out: " + e.err.Error() }
func (e *attemptTimeoutError) Unwrap() error   { return e.err }
func (e *attemptTimeoutError) Timeout() bool   { return true }
func (e *attemptTimeoutError) Temporary() bool { return true }

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// errorReason says why a failed attempt should be retried, "" if it must not.
// A request that may have reached Stripe is resent only when resending is
// harmless: an idempotent method, or an Idempotency-Key.
func errorReason(req *http.Request, err error) string {
	var (
		verr  *tls.CertificateVerificationError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cierr x509.CertificateInvalidError
	)
	if errors.As(err, &verr) || errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cierr) {
		return ""
	}
	if !idempotent(req.Method) && req.Header.Get("Idempotency-Key") == "" {
		return ""
	}
	var ate *attemptTimeoutError
	if errors.As(err, &ate) {
		return RetryReasonTimeout
	}
	return RetryReasonNetwork
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete, http.MethodPut, http.MethodTrace:
		return true
	}
	return false
}

// responseReason says why resp should be retried, "" if it must be returned.
// It reads headers only: the body is left as it came.
func responseReason(method string, resp *http.Response) string {
	switch strings.ToLower(strings.TrimSpace(resp.Header.Get("Stripe-Should-Retry"))) {
	case "false":
		return ""
	case "true":
		return RetryReasonShouldRetry
	}
	switch resp.StatusCode {
	case http.StatusConflict:
		return RetryReasonInUse
	case http.StatusTooManyRequests:
		return RetryReasonRateLimited
	case http.StatusServiceUnavailable:
		return RetryReasonUnavailable
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		if idempotent(method) {
			return RetryReasonUnavailable
		}
	}
	return ""
}

func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainLimit))
	resp.Body.Close()
}

// backoff returns the capped exponential delay before retry n (1-based).
func (t *retryTransport) backoff(n int) time.Duration {
	d := t.cfg.base
	for i := 1; i < n && d < t.cfg.max; i++ {
		d *= 2
	}
	return min(d, t.cfg.max)
}

func wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
