// Package stripeapi implements service.Payments on stripe-go v76, with
// stripe-go's own retries and logging off and billingd's retry policy
// (interceptors.Retry) on the wire.
package stripeapi

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
	"github.com/stripe/stripe-go/v76/form"
	"golang.org/x/time/rate"

	"github.com/billingd/billingd/internal/stripehttp"
	"github.com/billingd/billingd/service"
)

// RequestKeyMetadata is the metadata key every billingd object carries and
// the Find methods search on (docs/design.md, rule 4).
const RequestKeyMetadata = "billingd_request_key"

// Errors of New and of the Create, Find and Get methods. They report misuse
// by billingd itself, before anything is sent to Stripe.
var (
	ErrNoAPIKey          = errors.New("stripeapi: no Stripe API key")
	ErrIdempotencyKey    = errors.New("stripeapi: idempotency key must be 1 to 255 characters")
	ErrNoRequestKeyValue = errors.New("stripeapi: empty request key")
	ErrNoObjectID        = errors.New("stripeapi: empty object id")
)

// Config configures New. Key is required; zero values of the rest take the
// defaults of DefaultConfig.
type Config struct {
	// Key is the Stripe secret key. It is sent only as the Authorization
	// header: never logged, never part of an error.
	Key string
	// URL is the API base, e.g. a stripe-mock or fake; "" means Stripe.
	URL string
	// Transport carries the requests. New always wraps it in
	// stripehttp.Retry(Transport, RetryOptions...), so pass an unwrapped
	// transport; to turn retries off, pass stripehttp.WithMaxAttempts(1).
	// nil means a transport tuned for many concurrent calls to one host
	// (MaxIdleConnsPerHost idle connections, explicit timeouts, HTTP/2).
	Transport http.RoundTripper
	// MaxInFlight bounds the Stripe calls under way at once; more wait for
	// a slot as long as their context allows, and one that gives up waiting
	// sent nothing. Stripe itself answers a burst past its rate limit (100
	// operations a second in live mode by default) with 429s, so sending
	// more at once buys retries, not throughput, and every call in flight
	// holds a connection, its buffers and goroutines. Searches count too.
	MaxInFlight int
	// Rate paces the HTTP attempts sent to Stripe, retries included, in
	// requests a second (0: no pacing): Stripe allows about 100 operations
	// a second in live mode and 25 in test mode, answers more with 429, and
	// recommends limiting on the client. DefaultRate(Key) is the usual
	// choice. Searches share it (and the service paces them further). A
	// 429 halves the rate in force, down to a tenth of Rate; it climbs back
	// by a twentieth of Rate every second without a 429.
	Rate rate.Limit
	// Burst is how many attempts may go at once above Rate; 0 means
	// DefaultBurst(Rate).
	Burst int
	// MaxIdleConnsPerHost sizes the idle pool of the default transport
	// (ignored when Transport is set); 0 means MaxInFlight, the most
	// connections the calls can use at once. stripe-go's default of 2
	// redials under load.
	MaxIdleConnsPerHost int
	// Timeout bounds one call, retries and backoff included.
	Timeout time.Duration
	// RetryOptions tune interceptors.Retry.
	RetryOptions []stripehttp.RetryOption
	// Instrument, when set, wraps the transport inside the retry layer, so
	// it sees every attempt (e.g. otelhttp for one client span per attempt).
	Instrument func(http.RoundTripper) http.RoundTripper
	// Observe, when set, is told about every finished call (after retries),
	// for metrics. It must be cheap and safe for concurrent use.
	Observe func(Observation)
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{MaxInFlight: DefaultMaxInFlight, Timeout: 30 * time.Second}
}

// DefaultMaxInFlight is Config.MaxInFlight's default: at Stripe's typical
// 0.3-1 s per confirmed PaymentIntent, 64 calls in flight already reach its
// default live-mode rate limit.
const DefaultMaxInFlight = 64

// Client is service.Payments on the Stripe API.
type Client struct {
	api     *client.API
	key     string // only to scrub it from Stripe's messages
	timeout time.Duration
	observe func(Observation)
	slots   chan struct{} // one token per call in flight (Config.MaxInFlight)
	waited  atomic.Uint64 // calls that found every slot taken
	pace    *pacer        // nil without Config.Rate
	refused atomic.Uint64 // calls answered before sending: the caller's deadline was too near
	// queued counts the callers waiting for a slot now, and holdMean is
	// the running mean time a call holds one (ns): their product over
	// MaxInFlight is how long a new caller would wait (takeSlot).
	queued   atomic.Int64
	holdMean atomic.Int64
}

// PaceStats is the state of a Client's pacing (Config.Rate), for metrics.
type PaceStats struct {
	// Rate is the rate in force now, in requests a second: Config.Rate, or
	// less after 429s. Limit is Config.Rate. Both are 0 without pacing.
	Rate, Limit float64
	// Cuts counts the times a 429 lowered Rate.
	Cuts uint64
	// Refused counts calls answered UpstreamRateLimited without sending:
	// the wait for a slot or a token would have outlasted the caller's
	// deadline.
	Refused uint64
}

// Pace reports the Client's pacing: the rate in force, the configured one,
// the 429 cuts and the calls refused before sending.
func (c *Client) Pace() PaceStats {
	st := PaceStats{Refused: c.refused.Load()}
	if c.pace != nil {
		st.Rate, st.Limit, st.Cuts = float64(c.pace.rate()), float64(c.pace.limit), c.pace.cuts.Load()
	}
	return st
}

// Slots reports the Stripe calls under way now, Config.MaxInFlight, and how
// many calls so far found every slot taken and waited: for metrics.
func (c *Client) Slots() (inFlight, limit int, waited uint64) {
	return len(c.slots), cap(c.slots), c.waited.Load()
}

var (
	_ service.Payments = (*Client)(nil)
	_ service.Gate     = (*Client)(nil)
)

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if strings.TrimSpace(cfg.Key) == "" {
		return nil, ErrNoAPIKey
	}
	def := DefaultConfig()
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = def.MaxInFlight
	}
	if cfg.MaxIdleConnsPerHost <= 0 {
		cfg.MaxIdleConnsPerHost = cfg.MaxInFlight
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = def.Timeout
	}
	transport := cfg.Transport
	if transport == nil {
		transport = newTransport(cfg.MaxIdleConnsPerHost)
	}
	transport = &timed{next: transport}
	if cfg.Instrument != nil {
		transport = cfg.Instrument(transport)
	}
	var pace *pacer
	if cfg.Rate > 0 {
		if cfg.Burst <= 0 {
			cfg.Burst = DefaultBurst(cfg.Rate)
		}
		pace = newPacer(cfg.Rate, cfg.Burst, nil)
		transport = &paced{next: transport, p: pace}
	}
	httpClient := &http.Client{
		Transport: &recorder{next: stripehttp.Retry(transport, cfg.RetryOptions...)},
		// No Timeout here: each call's context carries cfg.Timeout (begin).
		// Stripe does not redirect; following one could resend a POST.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	bc := &stripe.BackendConfig{
		HTTPClient:        httpClient,
		MaxNetworkRetries: stripe.Int64(0), // one retry layer, ours (docs/design.md, rule 5)
		LeveledLogger:     silent{},
		// stripe-go's telemetry marshals the previous request's id and
		// duration into a header of the next one: JSON on every call, for
		// figures only Stripe sees. billingd has its own metrics.
		EnableTelemetry: stripe.Bool(false),
	}
	if cfg.URL != "" {
		bc.URL = stripe.String(cfg.URL)
	}
	b := stripe.GetBackendWithConfig(stripe.APIBackend, bc)
	return &Client{
		api:     client.New(cfg.Key, &stripe.Backends{API: b, Connect: b, Uploads: b}),
		key:     cfg.Key,
		timeout: cfg.Timeout,
		observe: cfg.Observe,
		slots:   make(chan struct{}, cfg.MaxInFlight),
		pace:    pace,
	}, nil
}

func newTransport(idlePerHost int) *http.Transport {
	t, ok := http.DefaultTransport.(*http.Transport)
	if !ok { // replaced by someone: start from net/http's own defaults
		t = &http.Transport{Proxy: http.ProxyFromEnvironment}
	}
	t = t.Clone()
	t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 10 * time.Second
	// Past this an attempt is cut and retried with the same key, which is
	// safe, while the default 30 s call budget still leaves room for it.
	t.ResponseHeaderTimeout = 20 * time.Second
	t.ExpectContinueTimeout = time.Second
	t.IdleConnTimeout = 90 * time.Second
	t.MaxIdleConnsPerHost = idlePerHost
	t.MaxIdleConns = max(idlePerHost, t.MaxIdleConns)
	t.ForceAttemptHTTP2 = true
	return t
}

// silent is a stripe-go logger that logs nothing: stripe-go's messages can
// hold response bodies, and billingd logs at its edge only.
type silent struct{}

func (silent) Debugf(string, ...any) {}
func (silent) Infof(string, ...any)  {}
func (silent) Warnf(string, ...any)  {}
func (silent) Errorf(string, ...any) {}

func (c *Client) createPaymentIntent(ctx context.Context, key string, p service.ChargeParams) (service.Result, error) {
	if err := checkKey(key); err != nil {
		return service.Result{}, err
	}
	reqCtx, call, done, err := c.begin(ctx)
	if err != nil {
		return service.Result{}, err
	}
	defer done()
	// PaymentIntents.New, decoding only what billingd keeps (see intent).
	var pi createdIntent
	pis := c.api.PaymentIntents
	params := &stripe.Params{Context: reqCtx, IdempotencyKey: stripe.String(key)}
	if err := callRaw(pis.B, http.MethodPost, "/v1/payment_intents", pis.Key, paymentIntentForm(p), params, &pi); err != nil {
		return service.Result{}, c.classify(ctx, http.MethodPost, call, err)
	}
	if pi.ID == "" {
		return service.Result{}, emptyAnswer(call)
	}
	res := c.intentResult(&pi.intent, call, false)
	res.StripeRequestID = call.requestID
	return res, nil
}

// callRaw is b.CallRaw without the wrapper CallRaw puts around v for
// stripe-go's telemetry (off here, see New): that wrapper is a
// json.Unmarshaler whose UnmarshalJSON calls json.Unmarshal again, so every
// answer was validated and scanned twice more before it was decoded.
// NewRequest and Do are what CallRaw calls, with the same body, errors and
// retries.
func callRaw(b stripe.Backend, method, path, key string, f *form.Values, params *stripe.Params, v stripe.LastResponseSetter) error {
	bi, ok := b.(*stripe.BackendImplementation)
	if !ok {
		return b.CallRaw(method, path, key, f, params, v)
	}
	var body string
	if f != nil && !f.Empty() {
		body = f.Encode()
		if method == http.MethodGet { // the payload goes in the URL
			path += "?" + body
			body = ""
		}
	}
	req, err := bi.NewRequest(method, path, key, "application/x-www-form-urlencoded", params)
	if err != nil {
		return err
	}
	return bi.Do(req, bytes.NewBufferString(body), v)
}

// paymentIntentForm is the body of the PaymentIntent create: what
// form.AppendTo makes of the equivalent stripe.PaymentIntentParams (metadata
// keys sorted, as its map encoder sorts them), without the reflection that
// walks all of that struct's fields on every call.
// TestCreatePaymentIntentRequest and the stripe-mock test check the fields.
func paymentIntentForm(p service.ChargeParams) *form.Values {
	v := &form.Values{}
	v.Add("amount", strconv.FormatInt(p.Amount, 10))
	if p.CaptureMethod != "" {
		v.Add("capture_method", p.CaptureMethod)
	}
	v.Add("confirm", "true")
	v.Add("currency", p.Currency)
	if p.CustomerID != "" {
		v.Add("customer", p.CustomerID)
	}
	if p.Description != "" {
		v.Add("description", p.Description)
	}
	for _, k := range slices.Sorted(maps.Keys(p.Metadata)) {
		v.Add("metadata["+k+"]", p.Metadata[k])
	}
	if p.OffSession {
		v.Add("off_session", "true")
	}
	v.Add("payment_method", p.PaymentMethodID)
	// Card only: no redirect-based method, so no return_url is needed.
	v.Add("payment_method_types[0]", "card")
	return v
}

// subscriptionPaymentIntent is the expansion that puts the first invoice's
// PaymentIntent (its status, client_secret and next action) into a
// subscription's answer.
const subscriptionPaymentIntent = "latest_invoice.payment_intent"

func (c *Client) createSubscription(ctx context.Context, key string, p service.SubscribeParams) (service.Result, error) {
	if err := checkKey(key); err != nil {
		return service.Result{}, err
	}
	reqCtx, call, done, err := c.begin(ctx)
	if err != nil {
		return service.Result{}, err
	}
	defer done()
	item := &stripe.SubscriptionItemsParams{Price: stripe.String(p.PriceID)}
	if p.Quantity > 0 {
		item.Quantity = stripe.Int64(p.Quantity)
	}
	params := &stripe.SubscriptionParams{
		Params:   stripe.Params{Context: reqCtx, IdempotencyKey: stripe.String(key)},
		Customer: stripe.String(p.CustomerID),
		Items:    []*stripe.SubscriptionItemsParams{item},
		Metadata: p.Metadata,
		// Stripe's recommendation for SCA: the subscription starts
		// incomplete and its first invoice's PaymentIntent waits to be
		// confirmed by the customer (the client_secret of the expansion
		// below), rather than Stripe attempting the payment in this call.
		PaymentBehavior: stripe.String("default_incomplete"),
	}
	params.AddExpand(subscriptionPaymentIntent)
	var sub createdSubscription
	if err := c.api.Subscriptions.B.Call(http.MethodPost, "/v1/subscriptions", c.api.Subscriptions.Key, params, &sub); err != nil {
		return service.Result{}, c.classify(ctx, http.MethodPost, call, err)
	}
	if sub.ID == "" {
		return service.Result{}, emptyAnswer(call)
	}
	res := c.subscriptionResult(&sub.subscription, call)
	res.StripeRequestID = call.requestID
	return res, nil
}

func (c *Client) findPaymentIntent(ctx context.Context, requestKey string) (service.Result, bool, error) {
	if requestKey == "" {
		return service.Result{}, false, ErrNoRequestKeyValue
	}
	reqCtx, call, done, err := c.begin(ctx)
	if err != nil {
		return service.Result{}, false, err
	}
	defer done()
	pis := c.api.PaymentIntents
	var page searchResult[intent]
	if err := callRaw(pis.B, http.MethodGet, "/v1/payment_intents/search", pis.Key, searchForm(requestKey, ""), &stripe.Params{Context: reqCtx}, &page); err != nil {
		return service.Result{}, false, c.classify(ctx, http.MethodGet, call, err)
	}
	if len(page.Data) == 0 {
		return service.Result{}, false, nil
	}
	return c.intentResult(&page.Data[0], call, true), true, nil
}

func (c *Client) findSubscription(ctx context.Context, requestKey string) (service.Result, bool, error) {
	if requestKey == "" {
		return service.Result{}, false, ErrNoRequestKeyValue
	}
	reqCtx, call, done, err := c.begin(ctx)
	if err != nil {
		return service.Result{}, false, err
	}
	defer done()
	subs := c.api.Subscriptions
	var page searchResult[subscription]
	// A search result's objects are under data.
	query := searchForm(requestKey, "data."+subscriptionPaymentIntent)
	if err := callRaw(subs.B, http.MethodGet, "/v1/subscriptions/search", subs.Key, query, &stripe.Params{Context: reqCtx}, &page); err != nil {
		return service.Result{}, false, c.classify(ctx, http.MethodGet, call, err)
	}
	if len(page.Data) == 0 {
		return service.Result{}, false, nil
	}
	return c.subscriptionResult(&page.Data[0], call), true, nil
}

// searchForm is the query of a one-hit search for requestKey, with expand
// when it is not "". (stripe-go's search params have no Metadata field, which
// its Backend.Call requires, so the searches send their form themselves.)
func searchForm(requestKey, expand string) *form.Values {
	v := &form.Values{}
	v.Add("query", SearchQuery(requestKey))
	v.Add("limit", "1") // the first hit is the answer
	if expand != "" {
		v.Add("expand[0]", expand)
	}
	return v
}

// SearchQuery returns the Stripe search query matching objects whose
// billingd_request_key metadata is requestKey, quotes and backslashes escaped.
func SearchQuery(requestKey string) string {
	v := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(requestKey)
	return "metadata['" + RequestKeyMetadata + "']:'" + v + "'"
}

// checkKey refuses keys stripe-go would reject locally or, empty, send
// without idempotency.
func checkKey(key string) error {
	if k := strings.TrimSpace(key); k == "" || len(k) > 255 {
		return ErrIdempotencyKey
	}
	return nil
}
