package interceptors_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"buf.build/go/protovalidate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/service"
)

// BenchmarkStatusOf translates the errors billingd answers most, as the
// ErrorStatus interceptor does for every failed call (and replays of stored
// failures). "wire" adds the marshalling grpc-go does to send the details
// as grpc-status-details-bin.
func BenchmarkStatusOf(b *testing.B) {
	declined := &service.Error{Reason: service.ReasonCardDeclined, Message: "Your card was declined.",
		Metadata: map[string]string{"stripe_request_id": "req_8Hd2kLx0", "code": "card_declined",
			"decline_code": "generic_decline", "stripe_object_id": "pi_3Pq9xY2eZvKYlo2C"}}
	tests := []struct {
		name string
		err  error
	}{
		{"declined", declined},
		{"declined-wrapped", fmt.Errorf("charge: %w", declined)},
		{"in-progress", &service.Error{Reason: service.ReasonRequestInProgress,
			Message: "an identical request is in progress; retry with the same request_id", RetryAfter: time.Second}},
		{"invalid", &service.Error{Reason: service.ReasonInvalidArgument, Message: "invalid request",
			Violations: []service.FieldViolation{{Field: "metadata[billingd_x]", Description: "keys starting with billingd_ are reserved"}}}},
		{"unknown", errors.New("boom")},
		{"deadline", context.DeadlineExceeded},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if st := interceptors.StatusOf(tt.err); st.Code() == codes.OK {
					b.Fatal("OK")
				}
			}
		})
	}
	b.Run("declined/wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := proto.Marshal(interceptors.StatusOf(declined).Proto()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkValidate is protovalidate on a valid ChargeRequest, paid by every
// Charge before anything else, replays included.
func BenchmarkValidate(b *testing.B) {
	v, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	validate := interceptors.Validate(v)
	info := &grpc.UnaryServerInfo{FullMethod: billingv1.BillingService_Charge_FullMethodName}
	ok := func(context.Context, any) (any, error) { return nil, nil }
	for _, tt := range []struct {
		name string
		req  *billingv1.ChargeRequest
	}{
		{"charge", &billingv1.ChargeRequest{RequestId: "4b7d9c52-8f7e-4a57-9d55-0e0b7a1d2c3f", Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_visa"}},
		{"charge+metadata=3", &billingv1.ChargeRequest{RequestId: "4b7d9c52-8f7e-4a57-9d55-0e0b7a1d2c3f", Amount: 2000, Currency: "usd",
			PaymentMethodId: "pm_card_visa", Description: "order 1001",
			Metadata: map[string]string{"order_id": "1001", "cart": "c-77", "channel": "web"}}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			ctx := context.Background()
			// protovalidate compiles a message's rules on first use.
			if _, err := validate(ctx, tt.req, info, ok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := validate(ctx, tt.req, info, ok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
