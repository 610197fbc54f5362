package interceptors_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/billingd/billingd/interceptors"
)

// reasonErr has the shape of service.Error, which interceptors cannot import.
type reasonErr struct {
	reason, msg  string
	md           map[string]string
	retry        time.Duration
	violations   [][2]string
	resTyp, name string
}

func (e *reasonErr) Error() string                    { return "service: " + e.reason + ": " + e.msg }
func (e *reasonErr) ErrorReason() string              { return e.reason }
func (e *reasonErr) PublicMessage() string            { return e.msg }
func (e *reasonErr) ErrorMetadata() map[string]string { return e.md }
func (e *reasonErr) RetryDelay() time.Duration        { return e.retry }
func (e *reasonErr) FieldViolations() [][2]string     { return e.violations }
func (e *reasonErr) Resource() (string, string)       { return e.resTyp, e.name }

// ErrorCode answers as service.Error does for the reasons these tests use.
func (e *reasonErr) ErrorCode() string { return fakeClasses[e.reason] }

var fakeClasses = map[string]string{
	"INVALID_ARGUMENT": "INVALID_ARGUMENT", "STRIPE_INVALID_REQUEST": "INVALID_ARGUMENT",
	"REQUEST_ID_REUSED": "FAILED_PRECONDITION", "CARD_DECLINED": "FAILED_PRECONDITION",
	"RESOURCE_MISSING": "NOT_FOUND", "REQUEST_IN_PROGRESS": "UNAVAILABLE",
	"UPSTREAM_RATE_LIMITED": "UNAVAILABLE", "OUTCOME_PENDING_RECONCILIATION": "UNAVAILABLE",
	"UPSTREAM_UNAVAILABLE": "UNAVAILABLE", "RATE_LIMITED": "RESOURCE_EXHAUSTED",
	"STORAGE_UNAVAILABLE": "UNAVAILABLE", "TOO_MANY_WATCHES": "RESOURCE_EXHAUSTED",
	"STRIPE_AUTH": "INTERNAL",
}

// bareErr implements only the required interface, none of the extras.
type bareErr struct{ reason string }

func (e bareErr) Error() string                    { return e.reason }
func (e bareErr) ErrorReason() string              { return e.reason }
func (e bareErr) PublicMessage() string            { return "bare" }
func (e bareErr) ErrorMetadata() map[string]string { return nil }

func durationProto(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func checkProto(t *testing.T, what string, want proto.Message, got any) {
	t.Helper()
	g, ok := got.(proto.Message)
	if !ok {
		t.Errorf("%s: got %T (%v), want %s", what, got, got, prototext.Format(want))
		return
	}
	if !proto.Equal(want, g) {
		t.Errorf("%s:\ngot  %s\nwant %s", what, prototext.Format(g), prototext.Format(want))
	}
}

func errorInfo(reason string, md map[string]string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Domain: "billingd", Reason: reason, Metadata: md}
}

// codedErr names its code as service.Error does.
type codedErr struct {
	bareErr
	code string
}

func (e codedErr) ErrorCode() string { return e.code }

// The code is the one the error names (its package keeps the reason → code
// table); an unknown name, or none, is INTERNAL.
func TestStatusOfCodes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		code string
		want codes.Code
	}{
		{"INVALID_ARGUMENT", codes.InvalidArgument},
		{"FAILED_PRECONDITION", codes.FailedPrecondition},
		{"NOT_FOUND", codes.NotFound},
		{"UNAVAILABLE", codes.Unavailable},
		{"RESOURCE_EXHAUSTED", codes.ResourceExhausted},
		{"INTERNAL", codes.Internal},
		{"OK", codes.Internal},
		{"unavailable", codes.Internal},
		{"", codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			t.Parallel()
			st := interceptors.StatusOf(codedErr{bareErr{reason: "SOME_REASON"}, tt.code})
			if got := st.Code(); got != tt.want {
				t.Errorf("code = %v, want %v", got, tt.want)
			}
			checkProto(t, "first detail", errorInfo("SOME_REASON", nil), st.Details()[0])
			wantDetails := 1
			if tt.want == codes.ResourceExhausted {
				wantDetails = 2 // QuotaFailure
			}
			if len(st.Details()) != wantDetails {
				t.Errorf("got %d details, want %d", len(st.Details()), wantDetails)
			}
		})
	}
	if got := interceptors.StatusOf(bareErr{reason: "CARD_DECLINED"}).Code(); got != codes.Internal {
		t.Errorf("an error naming no code: %v, want INTERNAL", got)
	}
}

func TestStatusOfExtras(t *testing.T) {
	t.Parallel()
	md := map[string]string{"param": "amount"}
	tests := []struct {
		name string
		err  error
		code codes.Code
		want []proto.Message // after ErrorInfo
	}{
		{
			name: "BadRequest from field violations",
			err: &reasonErr{reason: "INVALID_ARGUMENT", msg: "bad", md: md, violations: [][2]string{
				{"amount", "must be positive"}, {"currency", "unknown"},
			}},
			code: codes.InvalidArgument,
			want: []proto.Message{&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
				{Field: "amount", Description: "must be positive"}, {Field: "currency", Description: "unknown"},
			}}},
		},
		{
			name: "ResourceInfo",
			err:  &reasonErr{reason: "RESOURCE_MISSING", msg: "no such customer", md: md, resTyp: "customer", name: "cus_1"},
			code: codes.NotFound,
			want: []proto.Message{&errdetails.ResourceInfo{ResourceType: "customer", ResourceName: "cus_1"}},
		},
		{
			name: "RetryInfo",
			err:  &reasonErr{reason: "UPSTREAM_UNAVAILABLE", msg: "try later", md: md, retry: 1500 * time.Millisecond},
			code: codes.Unavailable,
			want: []proto.Message{&errdetails.RetryInfo{RetryDelay: durationProto(1500 * time.Millisecond)}},
		},
		{
			name: "QuotaFailure then RetryInfo",
			err:  &reasonErr{reason: "RATE_LIMITED", msg: "slow down", md: md, retry: time.Second},
			code: codes.ResourceExhausted,
			want: []proto.Message{
				&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "caller", Description: "slow down"}}},
				&errdetails.RetryInfo{RetryDelay: durationProto(time.Second)},
			},
		},
		{
			name: "all extras in fixed order",
			err: &reasonErr{reason: "STRIPE_INVALID_REQUEST", msg: "bad", md: md, retry: time.Second,
				violations: [][2]string{{"amount", "too large"}}, resTyp: "price", name: "price_1"},
			code: codes.InvalidArgument,
			want: []proto.Message{
				&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "amount", Description: "too large"}}},
				&errdetails.ResourceInfo{ResourceType: "price", ResourceName: "price_1"},
				&errdetails.RetryInfo{RetryDelay: durationProto(time.Second)},
			},
		},
		{
			name: "zero extras add nothing",
			err:  &reasonErr{reason: "CARD_DECLINED", msg: "declined", md: md},
			code: codes.FailedPrecondition,
		},
		{
			name: "only the required interface",
			err:  codedErr{bareErr{"STRIPE_STATE"}, "FAILED_PRECONDITION"},
			code: codes.FailedPrecondition,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := interceptors.StatusOf(tt.err)
			if got := st.Code(); got != tt.code {
				t.Errorf("code = %v, want %v", got, tt.code)
			}
			got := st.Details()
			if len(got) != len(tt.want)+1 {
				t.Fatalf("got %d details, want ErrorInfo + %d: %v", len(got), len(tt.want), got)
			}
			if _, ok := got[0].(*errdetails.ErrorInfo); !ok {
				t.Errorf("first detail is %T, want ErrorInfo", got[0])
			}
			for i, w := range tt.want {
				checkProto(t, fmt.Sprintf("detail %d", i+1), w, got[i+1])
			}
		})
	}
}

func TestStatusOfIsDeterministic(t *testing.T) {
	t.Parallel()
	md := map[string]string{}
	for i := range 32 {
		md[fmt.Sprintf("key_%02d", i)] = fmt.Sprint(i)
	}
	err := &reasonErr{reason: "CARD_DECLINED", msg: "declined", md: md, retry: time.Second,
		violations: [][2]string{{"a", "b"}}, resTyp: "payment_intent", name: "pi_1"}
	first, _ := proto.Marshal(interceptors.StatusOf(err).Proto())
	for range 50 {
		// A fresh map each time, as when a stored error is decoded.
		again := map[string]string{}
		for k, v := range md {
			again[k] = v
		}
		err.md = again
		got, _ := proto.Marshal(interceptors.StatusOf(fmt.Errorf("replay: %w", err)).Proto())
		if !bytes.Equal(got, first) {
			t.Fatal("two translations of the same error differ byte-wise")
		}
	}
}

func TestStatusOfWrapped(t *testing.T) {
	t.Parallel()
	base := &reasonErr{reason: "CARD_DECLINED", msg: "declined", md: map[string]string{"decline_code": "insufficient_funds"}}
	want := interceptors.StatusOf(base).Proto()
	for _, err := range []error{
		fmt.Errorf("x: %w", base),
		fmt.Errorf("y: %w", fmt.Errorf("x: %w", base)),
		errors.Join(errors.New("other"), base),
	} {
		checkProto(t, fmt.Sprintf("StatusOf(%v)", err), want, interceptors.StatusOf(err).Proto())
	}
}

func TestStatusOfContextAndUnknown(t *testing.T) {
	t.Parallel()
	secret := errors.New(`{"payment_intent":{"client_secret":"pi_123_secret_abc"}} key sk_test_secret`)
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"canceled", context.Canceled, codes.Canceled, "context canceled"},
		{"canceled wrapped", fmt.Errorf("charge: %w", context.Canceled), codes.Canceled, "context canceled"},
		{"deadline", context.DeadlineExceeded, codes.DeadlineExceeded, "context deadline exceeded"},
		{"deadline in url.Error", &url.Error{Op: "Post", URL: "https://api.stripe.com/v1/x", Err: context.DeadlineExceeded}, codes.DeadlineExceeded, "context deadline exceeded"},
		{"unknown", errors.New("boom"), codes.Internal, "internal error"},
		{"unknown with secrets", secret, codes.Internal, "internal error"},
		{"unknown with secrets wrapped", fmt.Errorf("stripe: %w", secret), codes.Internal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			st := interceptors.StatusOf(tt.err)
			if st.Code() != tt.code || st.Message() != tt.msg {
				t.Errorf("got %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.msg)
			}
			if len(st.Details()) != 0 {
				t.Errorf("unexpected details %v", st.Details())
			}
			b, _ := proto.Marshal(st.Proto())
			for _, s := range []string{"sk_test_secret", "pi_123_secret_abc", "client_secret"} {
				if bytes.Contains(b, []byte(s)) {
					t.Errorf("status carries %q", s)
				}
			}
		})
	}
}

func TestStatusOfPassesStatusesThrough(t *testing.T) {
	t.Parallel()
	in, err := status.New(codes.Unauthenticated, "bad token").WithDetails(&errdetails.ErrorInfo{Reason: "AUTH", Domain: "billingd"})
	if err != nil {
		t.Fatal(err)
	}
	checkProto(t, "passed-through status", in.Proto(), interceptors.StatusOf(in.Err()).Proto())
	plain := status.Error(codes.InvalidArgument, "amount: must be positive")
	if st := interceptors.StatusOf(plain); st.Code() != codes.InvalidArgument || st.Message() != "amount: must be positive" {
		t.Errorf("got %v %q", st.Code(), st.Message())
	}
}

func TestStatusOfNil(t *testing.T) {
	t.Parallel()
	if got := interceptors.StatusOf(nil).Code(); got != codes.OK {
		t.Errorf("StatusOf(nil) = %v, want OK", got)
	}
}

func TestErrorStatusInterceptor(t *testing.T) {
	t.Parallel()
	secret := errors.New("pi_123_secret_abc sk_test_secret")
	declined := &reasonErr{reason: "CARD_DECLINED", msg: "Your card was declined.", md: map[string]string{"code": "card_declined"}}
	tests := []struct {
		name string
		err  error
		code codes.Code
	}{
		{"nil", nil, codes.OK},
		{"reason error wrapped", fmt.Errorf("charge: %w", declined), codes.FailedPrecondition},
		{"status passes", status.Error(codes.PermissionDenied, "no"), codes.PermissionDenied},
		{"unknown", secret, codes.Internal},
		{"context", context.Canceled, codes.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var observed []error
			icpt := interceptors.ErrorStatus(interceptors.WithStatusObserver(
				func(_ context.Context, method string, err error, st *status.Status) {
					if method != "/billing.v1.BillingService/Charge" {
						t.Errorf("observer method = %q", method)
					}
					if st.Code() != tt.code {
						t.Errorf("observer code = %v, want %v", st.Code(), tt.code)
					}
					observed = append(observed, err)
				}))
			info := &grpc.UnaryServerInfo{FullMethod: "/billing.v1.BillingService/Charge"}
			resp, err := icpt(t.Context(), "req", info, func(context.Context, any) (any, error) { return "resp", tt.err })
			if tt.err == nil {
				if err != nil || resp != "resp" || len(observed) != 0 {
					t.Errorf("got %v, %v (observed %d), want resp, nil, unobserved", resp, err, len(observed))
				}
				return
			}
			st, ok := status.FromError(err)
			if !ok {
				t.Fatalf("returned error %T is not a status", err)
			}
			if st.Code() != tt.code {
				t.Errorf("code = %v, want %v", st.Code(), tt.code)
			}
			checkProto(t, "interceptor status vs StatusOf", interceptors.StatusOf(tt.err).Proto(), st.Proto())
			if strings.Contains(st.Message(), "secret") {
				t.Errorf("message leaks: %q", st.Message())
			}
			if len(observed) != 1 || observed[0] != tt.err {
				t.Errorf("observer saw %v, want the original error once", observed)
			}
		})
	}
}
