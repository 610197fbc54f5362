package stripeapi

import (
	"encoding/json"
	"net/http"

	"github.com/stripe/stripe-go/v76"

	"github.com/billingd/billingd/service"
)

// The decode types below are the parts of Stripe's objects billingd reads.
// stripe.PaymentIntent has over a hundred fields, each expandable object with
// its own UnmarshalJSON; decoding a create's answer into it was 6 % of a new
// charge's CPU and most of its garbage. Stripe's errors are parsed by
// stripe-go before these decodes, exactly as for its own resource calls.

// intent is the part of a PaymentIntent billingd reads.
type intent struct {
	ID                 string       `json:"id"`
	Status             string       `json:"status"`
	Amount             int64        `json:"amount"`
	AmountReceived     int64        `json:"amount_received"`
	Currency           string       `json:"currency"`
	ClientSecret       string       `json:"client_secret"`
	CancellationReason string       `json:"cancellation_reason"`
	NextAction         *nextAction  `json:"next_action"`
	LastPaymentError   *paymentFail `json:"last_payment_error"`
}

// nextAction is a PaymentIntent's next_action: its type (use_stripe_sdk,
// redirect_to_url, ...) and, for redirect_to_url, where to send the customer.
type nextAction struct {
	Type          string `json:"type"`
	RedirectToURL *struct {
		URL string `json:"url"`
	} `json:"redirect_to_url"`
}

// paymentFail is a PaymentIntent's last_payment_error: the same shape as an
// API error, of which billingd keeps the codes and the message.
type paymentFail struct {
	Type        string `json:"type"`
	Code        string `json:"code"`
	DeclineCode string `json:"decline_code"`
	Param       string `json:"param"`
	Message     string `json:"message"`
}

// expandableIntent is a field holding a PaymentIntent or, unexpanded, its id
// (an invoice's payment_intent).
type expandableIntent struct{ intent }

func (e *expandableIntent) UnmarshalJSON(data []byte) error {
	if id, ok := stripe.ParseID(data); ok {
		e.intent = intent{ID: id}
		return nil
	}
	return json.Unmarshal(data, &e.intent)
}

// createdIntent is a PaymentIntent as a create answers it.
type createdIntent struct {
	stripe.APIResource
	intent
}

// retrievedIntent is a PaymentIntent as a retrieve answers it, with the
// billingd metadata that says whom billingd made it for.
type retrievedIntent struct {
	createdIntent
	Metadata billingdTags `json:"metadata"`
}

// subscription is the part of a Subscription billingd reads.
type subscription struct {
	ID                string       `json:"id"`
	Status            string       `json:"status"`
	CancelAtPeriodEnd bool         `json:"cancel_at_period_end"`
	LatestInvoice     *invoice     `json:"latest_invoice"`
	Metadata          billingdTags `json:"metadata"`
}

// invoice is a subscription's latest_invoice: an Invoice or, unexpanded,
// its id.
type invoice struct {
	ID            string            `json:"id"`
	PaymentIntent *expandableIntent `json:"payment_intent"`
}

func (i *invoice) UnmarshalJSON(data []byte) error {
	if id, ok := stripe.ParseID(data); ok {
		*i = invoice{ID: id}
		return nil
	}
	type plain invoice // without this method
	return json.Unmarshal(data, (*plain)(i))
}

// createdSubscription is a subscription as a create or a retrieve answers it.
type createdSubscription struct {
	stripe.APIResource
	subscription
}

// searchResult is one page of a search.
type searchResult[T any] struct {
	stripe.APIResource
	Data []T `json:"data"`
}

// intentResult is what a PaymentIntent says about a charge. A lookup also
// reports its cancellation reason and its failed payment, if any.
func (c *Client) intentResult(pi *intent, rec *call, lookup bool) service.Result {
	res := service.Result{
		ObjectID: pi.ID,
		Status:   pi.Status,
		Amount:   pi.Amount,
		Currency: pi.Currency,
	}
	res.ClientSecret, res.NextActionType, res.RedirectURL = pi.customerFields()
	if rec != nil {
		res.StripeTime = rec.wire
	}
	if lookup {
		res.CancellationReason = pi.CancellationReason
		res.Failure = c.paymentFailure(pi, rec)
	}
	return res
}

// subscriptionResult is what a subscription and the PaymentIntent of its
// latest invoice say. Without an expanded PaymentIntent (none: a trial, a
// zero amount; or only its id) the payment fields stay empty.
func (c *Client) subscriptionResult(sub *subscription, rec *call) service.Result {
	res := service.Result{ObjectID: sub.ID, Status: sub.Status, CancelAtPeriodEnd: sub.CancelAtPeriodEnd, Owner: sub.Metadata.Caller}
	if rec != nil {
		res.StripeTime = rec.wire
	}
	if sub.LatestInvoice == nil || sub.LatestInvoice.PaymentIntent == nil {
		return res
	}
	pi := &sub.LatestInvoice.PaymentIntent.intent
	res.PaymentStatus = pi.Status
	res.ClientSecret, res.NextActionType, res.RedirectURL = pi.customerFields()
	res.Failure = c.paymentFailure(pi, rec)
	return res
}

// customerFields are what a front end needs to take the customer through
// the PaymentIntent's next step: its client_secret and next action.
//
// RedirectURL is Stripe's redirect_to_url.url as is: Stripe's hosted
// authentication URLs can carry the client_secret in their query, so the URL
// is as secret as the client_secret itself.
func (pi *intent) customerFields() (clientSecret, nextActionType, redirectURL string) {
	clientSecret = pi.ClientSecret
	if na := pi.NextAction; na != nil {
		nextActionType = na.Type
		if na.RedirectToURL != nil {
			redirectURL = na.RedirectToURL.URL
		}
	}
	return clientSecret, nextActionType, redirectURL
}

// paymentFailure reports the failed payment a PaymentIntent records: a
// declined confirm, or a failed 3-D Secure authentication
// (payment_intent_authentication_failure), leaves the object in
// requires_payment_method with last_payment_error set, and the payment failed
// even though the object exists.
func (c *Client) paymentFailure(pi *intent, rec *call) *service.UpstreamError {
	lpe := pi.LastPaymentError
	if pi.Status != string(stripe.PaymentIntentStatusRequiresPaymentMethod) || lpe == nil {
		return nil
	}
	return &service.UpstreamError{
		Kind:        service.UpstreamDeclined,
		HTTPStatus:  http.StatusPaymentRequired,
		Type:        lpe.Type,
		Code:        lpe.Code,
		DeclineCode: lpe.DeclineCode,
		Param:       lpe.Param,
		Message:     c.scrub(lpe.Message),
		RequestID:   rec.requestID,
		ObjectID:    pi.ID,
	}
}
