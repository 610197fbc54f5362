package stripesim

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors returned by the fixture helpers (AddCustomer, AddPrice)
// and the simulator-only methods (Authenticate, Settle). HTTP clients never
// see these: they get Stripe-shaped JSON errors instead.
var (
	ErrNotFound             = errors.New("stripesim: no such object")
	ErrUnexpectedState      = errors.New("stripesim: object is not in a state for that")
	ErrExists               = errors.New("stripesim: object already exists")
	ErrUnknownPaymentMethod = errors.New("stripesim: unknown test payment method")
	ErrUnknownCurrency      = errors.New("stripesim: unknown currency")
	ErrInvalidFixture       = errors.New("stripesim: invalid fixture")
)

// Stripe error types as they appear in the "type" field of an error body.
const (
	typeAPI            = "api_error"
	typeCard           = "card_error"
	typeIdempotency    = "idempotency_error"
	typeInvalidRequest = "invalid_request_error"
)

// apiError is the JSON object under "error" in every Stripe error body; it
// is also the shape of PaymentIntent.last_payment_error, which is why it can
// carry the payment method that failed.
type apiError struct {
	Type          string          `json:"type"`
	Code          string          `json:"code,omitempty"`
	DeclineCode   string          `json:"decline_code,omitempty"`
	Message       string          `json:"message"`
	Param         string          `json:"param,omitempty"`
	DocURL        string          `json:"doc_url,omitempty"`
	Charge        string          `json:"charge,omitempty"`
	PaymentIntent json.RawMessage `json:"payment_intent,omitempty"`
	PaymentMethod json.RawMessage `json:"payment_method,omitempty"`
}

// failure is an error answer that has not been encoded yet, so it can be
// decided under the lock and marshalled after it is released.
type failure struct {
	status      int
	err         apiError
	shouldRetry string // value of Stripe-Should-Retry, "" for none
}

func (f *failure) response() response {
	body, err := json.Marshal(struct {
		Error apiError `json:"error"`
	}{f.err})
	if err != nil {
		// Only a RawMessage we built ourselves could fail; that is a bug.
		panic(fmt.Sprintf("stripesim: encode error body: %v", err))
	}
	return response{status: f.status, body: body, shouldRetry: f.shouldRetry}
}

// goError is the error a simulator-only Go method returns for the answer
// its HTTP twin would give; nil for none.
func (f *failure) goError(op string) error {
	if f == nil {
		return nil
	}
	sentinel := ErrUnexpectedState
	if f.status == 404 {
		sentinel = ErrNotFound
	}
	return fmt.Errorf("%s: %s: %w", op, f.err.Message, sentinel)
}

func docURL(code string) string {
	if code == "" {
		return ""
	}
	return "https://stripe.com/docs/error-codes/" + strings.ReplaceAll(code, "_", "-")
}

// invalidRequest builds a 400 invalid_request_error.
func invalidRequest(code, param, msg string) *failure {
	return &failure{status: 400, err: apiError{Type: typeInvalidRequest, Code: code, Param: param, Message: msg, DocURL: docURL(code)}}
}

func paramMissing(param string) *failure {
	return invalidRequest("parameter_missing", param, "Missing required param: "+param+".")
}

func paramUnknown(param string) *failure {
	return invalidRequest("parameter_unknown", param,
		"Received unknown parameter: "+param+" (stripesim accepts only the parameters it simulates)")
}

func invalidInteger(param, value string) *failure {
	return invalidRequest("parameter_invalid_integer", param, "Invalid integer: "+value)
}

func invalidEmpty(param string) *failure {
	return invalidRequest("parameter_invalid_empty", param,
		"You passed an empty string for '"+param+"'. We assume empty values are an attempt to unset a parameter; however '"+param+"' cannot be unset. You should remove '"+param+"' from your request or supply a non-empty value.")
}

// invalidValue is Stripe's answer to a value outside an enum: no code, just a param.
func invalidValue(param, msg string) *failure {
	return invalidRequest("", param, msg)
}

func resourceMissing(status int, param, kind, id string) *failure {
	f := invalidRequest("resource_missing", param, fmt.Sprintf("No such %s: '%s'", kind, id))
	f.status = status
	return f
}

func notFoundURL(method, path string) *failure {
	return &failure{status: 404, err: apiError{Type: typeInvalidRequest,
		Message: fmt.Sprintf("Unrecognized request URL (%s: %s). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", method, path)}}
}

func rateLimited() *failure {
	return &failure{status: 429, err: apiError{Type: typeInvalidRequest, Code: "rate_limit", DocURL: docURL("rate_limit"),
		Message: "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits."}}
}

func lockTimeout() *failure {
	return &failure{status: 429, shouldRetry: "true", err: apiError{Type: typeInvalidRequest, Code: "lock_timeout", DocURL: docURL("lock_timeout"),
		Message: "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request."}}
}

func unavailable(shouldRetry string) *failure {
	return &failure{status: 503, shouldRetry: shouldRetry, err: apiError{Type: typeAPI,
		Message: "Stripe is temporarily unavailable. Please retry your request."}}
}

func serverError() *failure {
	return &failure{status: 500, err: apiError{Type: typeAPI,
		Message: "Sorry, something went wrong. We've already been notified of the problem, but if you need any help, you can reach us at support.stripe.com/contact."}}
}
