package stripeapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"

	"github.com/billingd/billingd/internal/redact"
	"github.com/billingd/billingd/service"
)

// call is what the last HTTP exchange of one API call looked like. stripe-go
// drops the response when its body is not JSON (a proxy's 502 page), so the
// recorder keeps the facts classification needs.
type call struct {
	status     int // 0: no response
	requestID  string
	retryAfter time.Duration
	// shouldRetry is Stripe-Should-Retry: true: Stripe says the request
	// may succeed if sent again, so the answer is no outcome.
	shouldRetry bool
	// tokenUsed: the first attempt has spent the rate token begin took;
	// later attempts (retries) take their own.
	tokenUsed bool
	// wire is the time the call's attempts spent on the wire, from sending
	// each to its answer's headers (timed).
	wire time.Duration
}

type callKey struct{}

// begin starts one API call once a slot is free (Config.MaxInFlight) and,
// with Config.Rate, a token of the pace is due; done frees the slot. The
// request runs under reqCtx: ctx plus the call record and the client's
// Timeout, which bounds the whole call, retries and backoff included, from
// the moment it has its slot. (http.Client.Timeout would do the same at the
// price of two goroutines and a timer per request.) classify is given ctx
// itself, so that Timeout firing reads as Stripe being unavailable and only
// the caller's own deadline reads as the caller's.
//
// Nothing has been sent when begin fails. If ctx ends while the call waits,
// begin returns ctx's error. If ctx names its caller's deadline
// (service.CallerDeadline) and the wait for the slot or the token would
// outlast it, begin answers at once UpstreamRateLimited (HTTPStatus 0) rather
// than letting the caller run into DEADLINE_EXCEEDED; a call without one (a
// background drive) just waits.
func (c *Client) begin(ctx context.Context) (reqCtx context.Context, rec *call, done context.CancelFunc, err error) {
	dl, bounded := service.CallerDeadline(ctx)
	if r, ok := ctx.Value(roomKey{}).(*room); !ok || !r.take() {
		if err := c.takeSlot(ctx, dl, bounded); err != nil {
			return nil, nil, nil, err
		}
	}
	if c.pace != nil {
		r, delay, ok := c.pace.reserve(patience(dl, c.pace.now()), bounded)
		if !ok {
			<-c.slots
			c.refused.Add(1)
			return nil, nil, nil, tooLate(delay)
		}
		if err := c.pace.sleep(ctx, r, delay); err != nil {
			<-c.slots
			return nil, nil, nil, err
		}
	}
	rec = &call{}
	reqCtx, cancel := context.WithTimeout(context.WithValue(ctx, callKey{}, rec), c.timeout)
	start := time.Now()
	return reqCtx, rec, func() { cancel(); c.held(time.Since(start)); <-c.slots }, nil
}

// Admit is service.Gate: it takes a slot for the drive about to start, on
// its caller's goroutine, waiting as takeSlot does; the drive's first call
// uses it (begin).
func (c *Client) Admit(ctx context.Context) (context.Context, func(), error) {
	dl, bounded := ctx.Deadline()
	if err := c.takeSlot(ctx, dl, bounded); err != nil {
		return nil, nil, err
	}
	ctx, release := c.withRoom(ctx)
	return ctx, release, nil
}

// TryAdmit is service.Gate's Admit without the wait.
func (c *Client) TryAdmit(ctx context.Context) (context.Context, func(), bool) {
	select {
	case c.slots <- struct{}{}:
	default:
		return nil, nil, false
	}
	ctx, release := c.withRoom(ctx)
	return ctx, release, true
}

// withRoom hands the slot just taken to ctx's first call (begin).
func (c *Client) withRoom(ctx context.Context) (context.Context, func()) {
	r := &room{c: c}
	r.held.Store(true)
	return context.WithValue(ctx, roomKey{}, r), r.release
}

type roomKey struct{}

// room is a slot Admit took for a drive: its first call takes it over.
type room struct {
	c    *Client
	held atomic.Bool
}

func (r *room) take() bool { return r.held.CompareAndSwap(true, false) }

func (r *room) release() {
	if r.take() {
		<-r.c.slots
	}
}

// held folds one call's time in its slot into the running mean that
// predicts how long a caller will wait for a slot.
func (c *Client) held(d time.Duration) {
	old := c.holdMean.Load()
	if old == 0 {
		c.holdMean.Store(int64(d))
		return
	}
	c.holdMean.Store(old + (int64(d)-old)/16) // races lose an update: a mean, not a count
}

// takeSlot takes a slot of Config.MaxInFlight, waiting while ctx allows and,
// when bounded, no longer than the caller's deadline dl allows.
func (c *Client) takeSlot(ctx context.Context, dl time.Time, bounded bool) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default: // all taken: wait, unless ctx is already over
	}
	c.waited.Add(1)
	ahead := c.queued.Add(1)
	defer c.queued.Add(-1)
	var giveUp <-chan time.Time
	if bounded {
		wait := patience(dl, time.Now())
		// One who cannot make it is told at once, and when to come back.
		expect := c.expectedWait(ahead)
		if wait <= 0 || expect > wait {
			c.refused.Add(1)
			return tooLate(expect)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		giveUp = t.C
	}
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-giveUp:
		c.refused.Add(1)
		return tooLate(c.expectedWait(c.queued.Load()))
	}
}

// expectedWait is how long a caller with ahead callers in front of it (itself
// included) would wait for a slot: slots free up about every
// holdMean/MaxInFlight.
func (c *Client) expectedWait(ahead int64) time.Duration {
	return time.Duration(ahead * c.holdMean.Load() / int64(cap(c.slots)))
}

// recorder is the outermost RoundTripper: it sees the response stripe-go
// gets, after retries. http.Client calls it on the caller's goroutine, so the
// call it fills is read after Do returns without a race.
type recorder struct{ next http.RoundTripper }

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if c, ok := req.Context().Value(callKey{}).(*call); ok && resp != nil {
		c.status = resp.StatusCode
		c.requestID = resp.Header.Get("Request-Id")
		c.retryAfter = retryAfter(resp.Header.Get("Retry-After"))
		c.shouldRetry = strings.EqualFold(strings.TrimSpace(resp.Header.Get("Stripe-Should-Retry")), "true")
	}
	return resp, err
}

// timed is the innermost RoundTripper: it adds each attempt's time on the
// wire, up to the answer's headers, to the call's record. Attempts of one
// call run one after another, so the sum needs no lock.
type timed struct{ next http.RoundTripper }

func (t *timed) RoundTrip(req *http.Request) (*http.Response, error) {
	c, ok := req.Context().Value(callKey{}).(*call)
	if !ok {
		return t.next.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	c.wire += time.Since(start)
	return resp, err
}

// retryAfter parses a Retry-After in seconds; dates and junk give 0.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// isObjectState reports whether a 4xx code describes the state of an
// existing object rather than a bad request; such errors become
// UpstreamObjectState (STRIPE_STATE, FAILED_PRECONDITION). The set is small on
// purpose: codes reachable from creating a card PaymentIntent or a
// subscription, plus any code ending in _unexpected_state or _invalid_state
// (payment_intent_unexpected_state, intent_invalid_state, ...).
func isObjectState(code string) bool {
	switch code {
	case "customer_max_subscriptions",
		"customer_max_payment_methods",
		"resource_already_exists",
		"status_transition_invalid",
		"payment_method_unactivated",
		"product_inactive",
		"charge_already_captured",
		"charge_already_refunded",
		"charge_expired_for_capture":
		return true
	}
	return strings.HasSuffix(code, "_unexpected_state") || strings.HasSuffix(code, "_invalid_state")
}

// classify reduces a stripe-go error to a *service.UpstreamError, or to the
// context's error when the caller's context ended first. It never keeps the
// stripe-go error: its Error() serialises the PaymentIntent, client_secret
// included.
func (c *Client) classify(ctx context.Context, method string, rec *call, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		return c.fromStripe(method, rec, se)
	}
	if rec.status != 0 {
		// A response came back but was not a Stripe error object
		// (non-JSON body, or a body cut short): go by its status.
		return &service.UpstreamError{
			Kind:       kindOf(method, rec.status, rec.shouldRetry, false, "", ""),
			HTTPStatus: rec.status,
			RequestID:  rec.requestID,
			RetryAfter: rec.retryAfter,
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	// Network error, timeout (the client's own Timeout included): nothing
	// definitive is known.
	return &service.UpstreamError{Kind: service.UpstreamUnavailable}
}

func (c *Client) fromStripe(method string, rec *call, se *stripe.Error) *service.UpstreamError {
	ue := &service.UpstreamError{
		HTTPStatus:  se.HTTPStatusCode,
		Type:        string(se.Type),
		Code:        string(se.Code),
		DeclineCode: string(se.DeclineCode),
		Param:       se.Param,
		Message:     c.scrub(se.Msg),
		RequestID:   se.RequestID,
		RetryAfter:  rec.retryAfter,
	}
	if ue.HTTPStatus == 0 {
		ue.HTTPStatus = rec.status
	}
	if ue.RequestID == "" && se.LastResponse != nil {
		ue.RequestID = se.LastResponse.RequestID
	}
	if ue.RequestID == "" {
		ue.RequestID = rec.requestID
	}
	if se.PaymentIntent != nil {
		ue.ObjectID = se.PaymentIntent.ID
	}
	ue.Kind = kindOf(method, ue.HTTPStatus, rec.shouldRetry, true, ue.Type, ue.Code)
	return ue
}

// kindOf is the table of docs/design.md, "Errors", Stripe side, for the answer
// left after retries. shouldRetry is Stripe-Should-Retry: true; stripeError says the body
// was a Stripe error object, with typ and code from it.
func kindOf(method string, status int, shouldRetry, stripeError bool, typ, code string) service.UpstreamKind {
	switch {
	case status == http.StatusConflict:
		// Any 409, whatever its type (invalid_request_error and
		// idempotency_error have both been seen with idempotency_key_in_use)
		// or body: a conflict with a concurrent request that Stripe
		// neither executed nor saved under the key. Sending the key again
		// is the way on, as stripe-go does.
		return service.UpstreamInUse
	case status == http.StatusTooManyRequests:
		return service.UpstreamRateLimited
	case shouldRetry:
		// Stripe says another attempt may succeed: not an outcome.
		return service.UpstreamUnavailable
	case status == http.StatusBadRequest && typ == string(stripe.ErrorTypeIdempotency):
		// The key was used with other parameters or another endpoint.
		return service.UpstreamIdempotencyMismatch
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return service.UpstreamAuth
	case status >= 500:
		if method == http.MethodPost && (status == 500 || status == 502 || status == 504) {
			return service.UpstreamServerError
		}
		return service.UpstreamUnavailable
	case !stripeError:
		// Not a Stripe error object (a proxy's page, say): nothing
		// definitive, even for a 4xx.
		return service.UpstreamUnavailable
	case status == http.StatusPaymentRequired || typ == string(stripe.ErrorTypeCard):
		return service.UpstreamDeclined
	case code == string(stripe.ErrorCodeResourceMissing):
		return service.UpstreamMissing
	case status >= 400 && isObjectState(code):
		return service.UpstreamObjectState
	case status >= 400:
		return service.UpstreamInvalidRequest
	}
	return service.UpstreamUnavailable
}

// emptyAnswer is a 2xx whose object has no id: a broken answer, not an
// outcome. Sending the same key again gets Stripe's stored answer.
func emptyAnswer(rec *call) error {
	return &service.UpstreamError{Kind: service.UpstreamUnavailable, HTTPStatus: rec.status, RequestID: rec.requestID}
}

// scrub removes secrets from Stripe's human message. Stripe's messages are
// safe by design; this is a second line for the 401 message, which echoes a
// masked key.
func (c *Client) scrub(msg string) string {
	if c.key != "" {
		msg = strings.ReplaceAll(msg, c.key, "[redacted]")
	}
	return redact.Scrub(msg)
}
