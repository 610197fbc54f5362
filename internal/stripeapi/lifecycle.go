package stripeapi

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/form"

	"github.com/billingd/billingd/service"
)

// The calls on existing objects: refunds, capture and cancel of a
// PaymentIntent, cancel of a subscription. Each decodes only what billingd
// reads, as the creates do.

// refund is the part of a Refund billingd reads.
type refund struct {
	stripe.APIResource
	ID            string       `json:"id"`
	Status        string       `json:"status"`
	Amount        int64        `json:"amount"`
	Currency      string       `json:"currency"`
	PaymentIntent string       `json:"payment_intent"`
	FailureReason string       `json:"failure_reason"`
	Metadata      billingdTags `json:"metadata"`
}

// billingdTags is the billingd metadata of an object, without the rest of
// its metadata map (decoding a struct allocates no map).
type billingdTags struct {
	RequestKey string `json:"billingd_request_key"`
	Caller     string `json:"billingd_caller"`
}

// refundList is a page of GET /v1/refunds.
type refundList struct {
	stripe.APIResource
	Data    []refund `json:"data"`
	HasMore bool     `json:"has_more"`
}

func refundResult(r *refund, rec *call) service.Result {
	res := service.Result{ObjectID: r.ID, Status: r.Status, Amount: r.Amount, Currency: r.Currency,
		ParentID: r.PaymentIntent, Owner: r.Metadata.Caller, StripeRequestID: rec.requestID, StripeTime: rec.wire}
	if r.FailureReason != "" {
		res.Failure = &service.UpstreamError{Kind: service.UpstreamDeclined, Code: r.FailureReason, ObjectID: r.ID}
	}
	return res
}

// CreateRefund refunds a PaymentIntent with key as its Idempotency-Key.
func (c *Client) CreateRefund(ctx context.Context, key string, p service.RefundParams) (service.Result, error) {
	v := &form.Values{}
	if p.Amount > 0 {
		v.Add("amount", strconv.FormatInt(p.Amount, 10))
	}
	for _, k := range slices.Sorted(maps.Keys(p.Metadata)) {
		v.Add("metadata["+k+"]", p.Metadata[k])
	}
	v.Add("payment_intent", p.PaymentIntentID)
	if p.Reason != "" {
		v.Add("reason", p.Reason)
	}
	var r refund
	rec, err := c.post(ctx, EndpointCreateRefund, key, "/v1/refunds", v, &r)
	if err != nil {
		return service.Result{}, err
	}
	if r.ID == "" {
		return service.Result{}, emptyAnswer(rec)
	}
	return refundResult(&r, rec), nil
}

// GetRefund retrieves a refund by id.
func (c *Client) GetRefund(ctx context.Context, id string) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	var r refund
	rec, err := c.get(ctx, EndpointGetRefund, stripe.FormatURLPath("/v1/refunds/%s", id), nil, &r)
	if err != nil {
		return service.Result{}, err
	}
	if r.ID == "" {
		return service.Result{}, emptyAnswer(rec)
	}
	return refundResult(&r, rec), nil
}

// maxRefundPages bounds FindRefund's walk through a PaymentIntent's refunds
// (100 a page): a charge refunded more often than that is not a thing.
const maxRefundPages = 10

// FindRefund lists the PaymentIntent's refunds for the one billingd made
// for requestKey. Listing is consistent at once, unlike search.
func (c *Client) FindRefund(ctx context.Context, paymentIntentID, requestKey string) (service.Result, bool, error) {
	if paymentIntentID == "" || requestKey == "" {
		return service.Result{}, false, ErrNoObjectID
	}
	after := ""
	for range maxRefundPages {
		q := &form.Values{}
		q.Add("limit", "100")
		q.Add("payment_intent", paymentIntentID)
		if after != "" {
			q.Add("starting_after", after)
		}
		var page refundList
		rec, err := c.get(ctx, EndpointListRefunds, "/v1/refunds", q, &page)
		if err != nil {
			return service.Result{}, false, err
		}
		for i := range page.Data {
			if page.Data[i].Metadata.RequestKey == requestKey {
				return refundResult(&page.Data[i], rec), true, nil
			}
		}
		if !page.HasMore || len(page.Data) == 0 {
			return service.Result{}, false, nil
		}
		after = page.Data[len(page.Data)-1].ID
	}
	return service.Result{}, false, nil
}

// CapturePaymentIntent captures amount (0: all) of an authorised PaymentIntent.
func (c *Client) CapturePaymentIntent(ctx context.Context, key, id string, amount int64) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	v := &form.Values{}
	if amount > 0 {
		v.Add("amount_to_capture", strconv.FormatInt(amount, 10))
	}
	return c.postIntent(ctx, EndpointCapturePaymentIntent, key, stripe.FormatURLPath("/v1/payment_intents/%s/capture", id), v)
}

// CancelPaymentIntent cancels a PaymentIntent that is not paid.
func (c *Client) CancelPaymentIntent(ctx context.Context, key, id, reason string) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	v := &form.Values{}
	if reason != "" {
		v.Add("cancellation_reason", reason)
	}
	return c.postIntent(ctx, EndpointCancelPaymentIntent, key, stripe.FormatURLPath("/v1/payment_intents/%s/cancel", id), v)
}

func (c *Client) postIntent(ctx context.Context, endpoint, key, path string, v *form.Values) (service.Result, error) {
	var pi createdIntent
	rec, err := c.post(ctx, endpoint, key, path, v, &pi)
	if err != nil {
		return service.Result{}, err
	}
	if pi.ID == "" {
		return service.Result{}, emptyAnswer(rec)
	}
	res := c.intentResult(&pi.intent, rec, true)
	res.Amount = pi.AmountReceived
	res.StripeRequestID = rec.requestID
	return res, nil
}

// CancelSubscription cancels a subscription now (DELETE, which Stripe keys
// no idempotency for: it is idempotent by nature) or at the end of its
// period (an update with cancel_at_period_end, under key).
func (c *Client) CancelSubscription(ctx context.Context, key, id string, atPeriodEnd bool) (service.Result, error) {
	if id == "" {
		return service.Result{}, ErrNoObjectID
	}
	path := stripe.FormatURLPath("/v1/subscriptions/%s", id)
	var (
		sub createdSubscription
		rec *call
		err error
	)
	if atPeriodEnd {
		v := &form.Values{}
		v.Add("cancel_at_period_end", "true")
		rec, err = c.post(ctx, EndpointCancelSubscription, key, path, v, &sub)
	} else {
		rec, err = c.call(ctx, EndpointCancelSubscription, http.MethodDelete, "", path, nil, &sub)
	}
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

// post and get make one observed call under a slot: a POST carries key as
// its Idempotency-Key.
func (c *Client) post(ctx context.Context, endpoint, key, path string, v *form.Values, out stripe.LastResponseSetter) (*call, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	return c.call(ctx, endpoint, http.MethodPost, key, path, v, out)
}

func (c *Client) get(ctx context.Context, endpoint, path string, q *form.Values, out stripe.LastResponseSetter) (*call, error) {
	return c.call(ctx, endpoint, http.MethodGet, "", path, q, out)
}

func (c *Client) call(ctx context.Context, endpoint, method, key, path string, v *form.Values, out stripe.LastResponseSetter) (rec *call, err error) {
	start := time.Now()
	defer func() { c.observed(endpoint, start, err) }()
	reqCtx, rec, done, err := c.begin(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	params := &stripe.Params{Context: reqCtx}
	if key != "" {
		params.IdempotencyKey = stripe.String(key)
	}
	if err := callRaw(c.api.PaymentIntents.B, method, path, c.api.PaymentIntents.Key, v, params, out); err != nil {
		return rec, c.classify(ctx, method, rec, err)
	}
	return rec, nil
}
