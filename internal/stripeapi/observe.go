package stripeapi

import (
	"context"
	"errors"
	"time"

	"github.com/billingd/billingd/service"
	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/form"
)

// The endpoints an Observation names.
const (
	EndpointCreatePaymentIntent  = "payment_intents.create"
	EndpointCreateSubscription   = "subscriptions.create"
	EndpointSearchPaymentIntent  = "payment_intents.search"
	EndpointSearchSubscription   = "subscriptions.search"
	EndpointGetPaymentIntent     = "payment_intents.retrieve"
	EndpointGetSubscription      = "subscriptions.retrieve"
	EndpointCreateRefund         = "refunds.create"
	EndpointGetRefund            = "refunds.retrieve"
	EndpointListRefunds          = "refunds.list"
	EndpointCapturePaymentIntent = "payment_intents.capture"
	EndpointCancelPaymentIntent  = "payment_intents.cancel"
	EndpointCancelSubscription   = "subscriptions.cancel"
)

// Observation is one finished Stripe call, after retries: what metrics count.
type Observation struct {
	Endpoint string
	// Outcome is "ok", "canceled" (our context ended), or the failure class:
	// declined, invalid_request, object_state, missing, auth,
	// idempotency_mismatch, in_use, rate_limited, server_error, unavailable,
	// "throttled" for a call held back by the pacing (Config.Rate,
	// MaxInFlight) past its caller's deadline, or "local" for a call
	// refused before sending for misuse.
	Outcome string
	// ErrorType is Stripe's error type (card_error, invalid_request_error,
	// api_error, idempotency_error, …) or api_connection_error when no Stripe
	// answer arrived: the signal to alert on when it spikes.
	ErrorType string
	Code      string // Stripe's error code, e.g. card_declined
	Duration  time.Duration
}

var kindNames = map[service.UpstreamKind]string{
	service.UpstreamUnavailable:         "unavailable",
	service.UpstreamRateLimited:         "rate_limited",
	service.UpstreamInUse:               "in_use",
	service.UpstreamServerError:         "server_error",
	service.UpstreamDeclined:            "declined",
	service.UpstreamInvalidRequest:      "invalid_request",
	service.UpstreamObjectState:         "object_state",
	service.UpstreamMissing:             "missing",
	service.UpstreamAuth:                "auth",
	service.UpstreamIdempotencyMismatch: "idempotency_mismatch",
}

func (c *Client) observed(endpoint string, start time.Time, err error) {
	if c.observe == nil {
		return
	}
	o := Observation{Endpoint: endpoint, Outcome: "ok", Duration: time.Since(start)}
	var ue *service.UpstreamError
	switch {
	case err == nil:
	case errors.As(err, &ue) && ue.Kind == service.UpstreamRateLimited && ue.HTTPStatus == 0:
		o.Outcome = "throttled"
	case errors.As(err, &ue):
		o.Outcome, o.ErrorType, o.Code = kindNames[ue.Kind], ue.Type, ue.Code
		if o.ErrorType == "" && ue.HTTPStatus == 0 {
			o.ErrorType = "api_connection_error"
		}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		o.Outcome = "canceled"
	default:
		o.Outcome = "local"
	}
	c.observe(o)
}

// CreatePaymentIntent creates and confirms a card PaymentIntent with key as
// its Idempotency-Key.
func (c *Client) CreatePaymentIntent(ctx context.Context, key string, p service.ChargeParams) (service.Result, error) {
	start := time.Now()
	res, err := c.createPaymentIntent(ctx, key, p)
	c.observed(EndpointCreatePaymentIntent, start, err)
	return res, err
}

// CreateSubscription creates a one-item subscription with key as its
// Idempotency-Key and payment_behavior=default_incomplete, and reports the
// PaymentIntent of its first invoice (PaymentStatus, ClientSecret, next
// action, Failure).
func (c *Client) CreateSubscription(ctx context.Context, key string, p service.SubscribeParams) (service.Result, error) {
	start := time.Now()
	res, err := c.createSubscription(ctx, key, p)
	c.observed(EndpointCreateSubscription, start, err)
	return res, err
}

// FindPaymentIntent returns the PaymentIntent whose metadata
// billingd_request_key is requestKey, as far as Stripe's eventually
// consistent search sees it.
func (c *Client) FindPaymentIntent(ctx context.Context, requestKey string) (service.Result, bool, error) {
	start := time.Now()
	res, found, err := c.findPaymentIntent(ctx, requestKey)
	c.observed(EndpointSearchPaymentIntent, start, err)
	return res, found, err
}

// FindSubscription is FindPaymentIntent for subscriptions.
func (c *Client) FindSubscription(ctx context.Context, requestKey string) (service.Result, bool, error) {
	start := time.Now()
	res, found, err := c.findSubscription(ctx, requestKey)
	c.observed(EndpointSearchSubscription, start, err)
	return res, found, err
}

// GetPaymentIntent retrieves a PaymentIntent by id and fills Result as
// FindPaymentIntent does.
func (c *Client) GetPaymentIntent(ctx context.Context, id string) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	var pi retrievedIntent
	rec, err := c.get(ctx, EndpointGetPaymentIntent, stripe.FormatURLPath("/v1/payment_intents/%s", id), nil, &pi)
	if err != nil {
		return service.Result{}, err
	}
	if pi.ID == "" {
		return service.Result{}, emptyAnswer(rec)
	}
	res := c.intentResult(&pi.intent, rec, true)
	res.StripeRequestID = rec.requestID
	res.Owner = pi.Metadata.Caller
	return res, nil
}

// GetSubscription retrieves a subscription by id, with the PaymentIntent of
// its latest invoice, and fills Result as CreateSubscription does.
func (c *Client) GetSubscription(ctx context.Context, id string) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	query := &form.Values{}
	query.Add("expand[0]", subscriptionPaymentIntent)
	var sub createdSubscription
	rec, err := c.get(ctx, EndpointGetSubscription, stripe.FormatURLPath("/v1/subscriptions/%s", id), query, &sub)
	if err != nil {
		return service.Result{}, err
	}
	if sub.ID == "" {
		return service.Result{}, emptyAnswer(rec)
	}
	res := c.subscriptionResult(&sub.subscription, rec)
	res.StripeRequestID = rec.requestID
	return res, nil
}
