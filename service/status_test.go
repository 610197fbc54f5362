package service

import "testing"

// The status table, row by row: nothing is SUCCEEDED before the money moved
// (or the subscription started), and every failure carries its reason.
func TestStatusTable(t *testing.T) {
	t.Parallel()
	s := New(nil, nil)
	decline := &UpstreamError{Kind: UpstreamDeclined, Type: "card_error", Code: "card_declined", DeclineCode: "insufficient_funds"}
	authFailed := &UpstreamError{Kind: UpstreamDeclined, Type: "invalid_request_error", Code: "payment_intent_authentication_failure"}
	authRequired := &UpstreamError{Kind: UpstreamDeclined, Type: "card_error", Code: "authentication_required", DeclineCode: "authentication_required"}
	tests := []struct {
		name       string
		method     Method
		res        Result
		want       State
		wantReason Reason
		wantMeta   map[string]string
	}{
		{"pi succeeded", MethodCharge, Result{Status: "succeeded"}, StateSucceeded, "", nil},
		{"pi requires_action", MethodCharge, Result{Status: "requires_action"}, StateRequiresAction, "", nil},
		{"pi requires_confirmation", MethodCharge, Result{Status: "requires_confirmation"}, StateRequiresAction, "", nil},
		{"pi processing", MethodCharge, Result{Status: "processing"}, StateProcessing, "", nil},
		{"pi requires_capture", MethodCharge, Result{Status: "requires_capture"}, StateAuthorized, "", nil},
		{"pi requires_payment_method without an error", MethodCharge, Result{Status: "requires_payment_method"}, StateRequiresAction, "", nil},
		{"pi declined", MethodCharge, Result{ObjectID: "pi_1", Status: "requires_payment_method", Failure: decline}, StateFailed, ReasonCardDeclined,
			map[string]string{"code": "card_declined", "decline_code": "insufficient_funds", "stripe_object_id": "pi_1"}},
		{"pi authentication failed", MethodCharge, Result{ObjectID: "pi_1", Status: "requires_payment_method", Failure: authFailed}, StateFailed, ReasonAuthenticationFailed,
			map[string]string{"code": "payment_intent_authentication_failure", "stripe_object_id": "pi_1"}},
		{"pi authentication required off session", MethodCharge, Result{ObjectID: "pi_1", Status: "requires_payment_method", Failure: authRequired}, StateRequiresAction, ReasonAuthenticationRequired,
			map[string]string{"code": "authentication_required", "decline_code": "authentication_required", "stripe_object_id": "pi_1"}},
		{"pi canceled", MethodCharge, Result{ObjectID: "pi_1", Status: "canceled", CancellationReason: "abandoned"}, StateFailed, ReasonCanceled,
			map[string]string{"stripe_object_id": "pi_1", "cancellation_reason": "abandoned"}},
		{"pi status unknown to billingd", MethodCharge, Result{Status: "requires_reauthorization"}, StateProcessing, "", nil},
		{"sub active", MethodSubscribe, Result{Status: "active", PaymentStatus: "succeeded"}, StateSucceeded, "", nil},
		{"sub trialing", MethodSubscribe, Result{Status: "trialing"}, StateSucceeded, "", nil},
		{"sub past_due", MethodSubscribe, Result{Status: "past_due"}, StateSucceeded, "", nil},
		{"sub unpaid", MethodSubscribe, Result{Status: "unpaid"}, StateSucceeded, "", nil},
		{"sub paused", MethodSubscribe, Result{Status: "paused"}, StateSucceeded, "", nil},
		{"sub incomplete, invoice needs a payment method", MethodSubscribe, Result{Status: "incomplete", PaymentStatus: "requires_payment_method"}, StateRequiresAction, "", nil},
		{"sub incomplete, invoice needs 3-D Secure", MethodSubscribe, Result{Status: "incomplete", PaymentStatus: "requires_action"}, StateRequiresAction, "", nil},
		{"sub incomplete, invoice declined", MethodSubscribe, Result{Status: "incomplete", PaymentStatus: "requires_payment_method", Failure: decline}, StateRequiresAction, "", nil},
		{"sub incomplete, invoice processing", MethodSubscribe, Result{Status: "incomplete", PaymentStatus: "processing"}, StateProcessing, "", nil},
		{"sub incomplete_expired", MethodSubscribe, Result{ObjectID: "sub_1", Status: "incomplete_expired"}, StateFailed, ReasonSubscriptionExpired,
			map[string]string{"stripe_object_id": "sub_1"}},
		{"sub canceled before it started", MethodSubscribe, Result{ObjectID: "sub_1", Status: "canceled"}, StateFailed, ReasonCanceled,
			map[string]string{"stripe_object_id": "sub_1"}},
		{"sub status unknown to billingd", MethodSubscribe, Result{Status: "suspended"}, StateProcessing, "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			o := s.outcomeOf(tt.method, tt.res)
			if o.state != tt.want {
				t.Errorf("state = %v, want %v", o.state, tt.want)
			}
			var got Reason
			if o.err != nil {
				got = o.err.Reason
			}
			if got != tt.wantReason {
				t.Fatalf("reason = %q, want %q", got, tt.wantReason)
			}
			if tt.wantReason == "" {
				return
			}
			for k, v := range tt.wantMeta {
				if o.err.Metadata[k] != v {
					t.Errorf("metadata[%s] = %q, want %q (all: %v)", k, o.err.Metadata[k], v, o.err.Metadata)
				}
			}
			if o.err.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

// Every reason a FAILED record can carry is a final one, answered from the
// record to every repeat; AUTHENTICATION_REQUIRED is the one answer of a
// record that is not final.
func TestReasonsOfTheStatusTable(t *testing.T) {
	t.Parallel()
	for _, r := range []Reason{ReasonCardDeclined, ReasonAuthenticationFailed, ReasonCanceled, ReasonSubscriptionExpired} {
		if !r.final() || !r.answered() {
			t.Errorf("%s: final %v, answered %v; want both", r, r.final(), r.answered())
		}
	}
	if r := ReasonAuthenticationRequired; r.final() || !r.answered() {
		t.Errorf("%s: final %v, answered %v; want answered only", r, r.final(), r.answered())
	}
}

// Every reason the service answers with is in the class table, and its class
// is the one the API documents: a new reason cannot silently become INTERNAL.
func TestEveryReasonHasItsClass(t *testing.T) {
	t.Parallel()
	want := map[Reason]Class{
		ReasonInvalidArgument: ClassInvalidArgument, ReasonStripeInvalidRequest: ClassInvalidArgument,
		ReasonRequestIDReused: ClassFailedPrecondition, ReasonCardDeclined: ClassFailedPrecondition,
		ReasonStripeState: ClassFailedPrecondition, ReasonNotCreated: ClassFailedPrecondition,
		ReasonAuthenticationRequired: ClassFailedPrecondition, ReasonAuthenticationFailed: ClassFailedPrecondition,
		ReasonCanceled: ClassFailedPrecondition, ReasonSubscriptionExpired: ClassFailedPrecondition,
		ReasonRefundFailed: ClassFailedPrecondition, ReasonRequestIDExpired: ClassFailedPrecondition,
		ReasonResourceMissing: ClassNotFound, ReasonNotFound: ClassNotFound,
		ReasonRequestInProgress: ClassUnavailable, ReasonUpstreamRateLimited: ClassUnavailable,
		ReasonUpstreamUnavailable: ClassUnavailable, ReasonOutcomePending: ClassUnavailable,
		ReasonStorageUnavailable: ClassUnavailable, ReasonShuttingDown: ClassUnavailable,
		ReasonTooManyWatches: ClassResourceExhausted,
		ReasonStripeAuth:     ClassInternal, ReasonIdempotencyMismatch: ClassInternal,
	}
	if got := Reasons(); len(got) != len(want) {
		t.Errorf("Reasons() = %v: %d, want the %d of this table", got, len(got), len(want))
	}
	for r, c := range want {
		if got := r.Class(); got != c {
			t.Errorf("%s: class %s, want %s", r, got, c)
		}
		if got := (&Error{Reason: r}).ErrorCode(); got != string(c) {
			t.Errorf("%s: ErrorCode %s, want %s", r, got, c)
		}
	}
	// Every final reason is a failure the caller must not retry blindly.
	for _, r := range Reasons() {
		if r.answered() && r.Class() != ClassFailedPrecondition && r.Class() != ClassInvalidArgument && r.Class() != ClassNotFound {
			t.Errorf("%s is answered from the record but is %s", r, r.Class())
		}
	}
	if got := Reason("SOMETHING_NEW").Class(); got != ClassInternal {
		t.Errorf("an unknown reason is %s, want INTERNAL", got)
	}
}
