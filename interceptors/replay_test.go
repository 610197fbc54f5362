package interceptors_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
)

// billing answers Charge by request_id: "replayed" → a replayed response,
// "declined" → a billingd error, anything else → a fresh response.
type billing struct {
	billingv1.UnimplementedBillingServiceServer
}

func (billing) Charge(_ context.Context, req *billingv1.ChargeRequest) (*billingv1.ChargeResponse, error) {
	switch req.GetRequestId() {
	case "replayed":
		return &billingv1.ChargeResponse{PaymentIntentId: "pi_1", Replayed: true}, nil
	case "declined":
		return nil, &reasonErr{reason: "CARD_DECLINED", msg: "Your card was declined.",
			md: map[string]string{"code": "card_declined", "decline_code": "insufficient_funds"}}
	}
	return &billingv1.ChargeResponse{PaymentIntentId: "pi_2"}, nil
}

// dialBilling serves billing over bufconn with the given interceptors.
func dialBilling(t *testing.T, chain ...grpc.UnaryServerInterceptor) billingv1.BillingServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(chain...))
	billingv1.RegisterBillingServiceServer(srv, billing{})
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return billingv1.NewBillingServiceClient(conn)
}

func TestReplayHeader(t *testing.T) {
	t.Parallel()
	client := dialBilling(t, interceptors.ReplayHeader(), interceptors.ErrorStatus())
	tests := []struct {
		requestID string
		want      []string
	}{
		{"replayed", []string{"true"}},
		{"fresh", nil},
	}
	for _, tt := range tests {
		t.Run(tt.requestID, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			var header metadata.MD
			if _, err := client.Charge(ctx, &billingv1.ChargeRequest{RequestId: tt.requestID}, grpc.Header(&header)); err != nil {
				t.Fatal(err)
			}
			got := header.Get("idempotent-replayed")
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Errorf("idempotent-replayed = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestErrorStatusOverTheWire checks that what StatusOf builds reaches a
// client intact, details included.
func TestErrorStatusOverTheWire(t *testing.T) {
	t.Parallel()
	client := dialBilling(t, interceptors.ReplayHeader(), interceptors.ErrorStatus())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var header metadata.MD
	_, err := client.Charge(ctx, &billingv1.ChargeRequest{RequestId: "declined"}, grpc.Header(&header))
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition || st.Message() != "Your card was declined." {
		t.Fatalf("got %v %q, want FailedPrecondition %q", st.Code(), st.Message(), "Your card was declined.")
	}
	want := &errdetails.ErrorInfo{Domain: "billingd", Reason: "CARD_DECLINED",
		Metadata: map[string]string{"code": "card_declined", "decline_code": "insufficient_funds"}}
	if d := st.Details(); len(d) != 1 {
		t.Fatalf("got details %v, want one ErrorInfo", d)
	} else {
		checkProto(t, "ErrorInfo", want, d[0])
	}
	if got := header.Get("idempotent-replayed"); len(got) != 0 {
		t.Errorf("error answer marked replayed: %q", got)
	}
}
