package server_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
)

// Tokens of the authenticated tests' callers.
const (
	tokenA = "tok_a_4d1f0c9e7b2a"
	tokenB = "tok_b_83e5a61c0f7d"
)

func testTokens(t *testing.T, pairs ...string) *interceptors.Tokens {
	t.Helper()
	var ts interceptors.Tokens
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := ts.Add(pairs[i], pairs[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	return &ts
}

// authConfig is the default server config with callers caller_a and caller_b.
func authConfig(t *testing.T) server.Config {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.Tokens = testTokens(t, "caller_a", tokenA, "caller_b", tokenB)
	return cfg
}

// as returns ctx sending "authorization: Bearer token".
func as(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// recordCount counts every record in the harness's database.
func (h *harness) recordCount() int {
	h.t.Helper()
	n := 0
	if err := h.db.Scan(context.Background(), func(service.Record) bool { n++; return true }); err != nil {
		h.t.Fatalf("scan: %v", err)
	}
	return n
}

// checkNothingHappened fails unless the database is empty and the simulator
// saw no request at all.
func (h *harness) checkNothingHappened() {
	h.t.Helper()
	if n := h.recordCount(); n != 0 {
		h.t.Errorf("%d records written", n)
	}
	if reqs := h.sim.Stats().Requests; len(reqs) != 0 {
		h.t.Errorf("requests reached the simulator: %v", reqs)
	}
}

func TestUnauthenticatedCallsChangeNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{srvCfg: new(authConfig(t))})
	ctx := h.ctx()
	tests := []struct {
		name string
		ctx  context.Context
	}{
		{"no token", ctx},
		{"wrong token", as(ctx, "tok_a_wrong")},
		{"token prefix", as(ctx, tokenA[:len(tokenA)-1])},
		{"wrong scheme", metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+tokenA)},
		{"bare token", metadata.AppendToOutgoingContext(ctx, "authorization", tokenA)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, call := range []func() error{
				func() error { _, err := h.client.Charge(tt.ctx, visa("unauth-1")); return err },
				func() error {
					_, err := h.client.Subscribe(tt.ctx, &billingv1.SubscribeRequest{RequestId: "unauth-2", CustomerId: "cus_demo", PriceId: "price_basic_monthly", Quantity: 1})
					return err
				},
				func() error {
					_, err := h.client.GetOperation(tt.ctx, &billingv1.GetOperationRequest{RequestId: "unauth-1"})
					return err
				},
			} {
				st := status.Convert(call())
				if st.Code() != codes.Unauthenticated || st.Message() != "unauthenticated" || len(st.Details()) != 0 {
					t.Errorf("got %v %q %v, want UNAUTHENTICATED \"unauthenticated\", no details", st.Code(), st.Message(), st.Details())
				}
			}
		})
	}
	h.checkNothingHappened()

	// The right token gets in, as its caller.
	if _, err := h.client.Charge(as(ctx, tokenA), visa("unauth-1")); err != nil {
		t.Fatalf("caller_a: %v", err)
	}
	if _, found := h.record("caller_a", "unauth-1"); !found {
		t.Error("no record under caller_a")
	}
}

func TestHealthAndReflectionNeedNoToken(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{srvCfg: new(authConfig(t))})
	ctx := h.ctx()
	if _, err := healthpb.NewHealthClient(h.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health Check without a token: %v", err)
	}
	// Watch is a stream: the stream chain exempts it too.
	w, err := healthpb.NewHealthClient(h.conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if err != nil {
		t.Errorf("health Watch without a token: %v", err)
	}
	if err := listServices(ctx, h); err != nil {
		t.Errorf("reflection without a token: %v", err)
	}
}

func TestReflectionAuthConfigurable(t *testing.T) {
	t.Parallel()
	cfg := authConfig(t)
	cfg.AuthReflection = true
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := h.ctx()
	if err := listServices(ctx, h); status.Code(err) != codes.Unauthenticated {
		t.Errorf("reflection without a token: %v, want UNAUTHENTICATED", err)
	}
	if err := listServices(as(ctx, tokenB), h); err != nil {
		t.Errorf("reflection with a token: %v", err)
	}
	if _, err := healthpb.NewHealthClient(h.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health still needs no token: %v", err)
	}
}

func listServices(ctx context.Context, h *harness) error {
	s, err := reflectionv1.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		return err
	}
	// Send says io.EOF when the server has already ended the stream (as
	// it does on refusing the call); the status is then Recv's to return.
	if err := s.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestCallersAreIsolated: the same request_id from two callers is two
// operations, each with its own Stripe key and metadata, and neither can
// read the other's.
func TestCallersAreIsolated(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{srvCfg: new(authConfig(t))})
	ctx := h.ctx()

	a, err := h.client.Charge(as(ctx, tokenA), visa("order-1"))
	if err != nil {
		t.Fatalf("caller_a: %v", err)
	}
	// Same request_id, other amount: for caller_b this is not a reuse.
	req := visa("order-1")
	req.Amount = 3000
	b, err := h.client.Charge(as(ctx, tokenB), req)
	if err != nil {
		t.Fatalf("caller_b: %v", err)
	}
	if b.GetReplayed() || b.GetPaymentIntentId() == a.GetPaymentIntentId() || b.GetAmount() != 3000 {
		t.Errorf("caller_b got %v, want its own new charge (caller_a got %v)", b, a)
	}
	if got := h.sim.Stats().PaymentIntentsCreated; got != 2 {
		t.Errorf("PaymentIntentsCreated = %d, want 2", got)
	}
	for _, c := range []struct {
		caller string
		pi     string
		amount int64
	}{{"caller_a", a.GetPaymentIntentId(), 2000}, {"caller_b", b.GetPaymentIntentId(), 3000}} {
		pis := h.intentsFor(c.caller, "order-1")
		if len(pis) != 1 {
			t.Fatalf("%s: %d PaymentIntents, want 1", c.caller, len(pis))
		}
		pi := pis[0]
		if pi.ID != c.pi || pi.Amount != c.amount || pi.Metadata[service.MetadataCaller] != c.caller ||
			pi.IdempotencyKey != service.StripeKey(c.caller, "order-1", "create_payment_intent") {
			t.Errorf("%s: PaymentIntent %+v", c.caller, pi)
		}
		rec, found := h.record(c.caller, "order-1")
		if !found || rec.Result.ObjectID != c.pi {
			t.Errorf("%s: record %+v, found %v", c.caller, rec, found)
		}
	}

	// Each caller replays its own, and reads its own.
	if r, err := h.client.Charge(as(ctx, tokenA), visa("order-1")); err != nil || !r.GetReplayed() || r.GetPaymentIntentId() != a.GetPaymentIntentId() {
		t.Errorf("caller_a replay = %v, %v", r, err)
	}
	op, err := h.client.GetOperation(as(ctx, tokenB), &billingv1.GetOperationRequest{RequestId: "order-1"})
	if err != nil || op.GetStripeObjectId() != b.GetPaymentIntentId() {
		t.Errorf("caller_b GetOperation = %v, %v", op, err)
	}

	// caller_a's other operation does not exist for caller_b.
	if _, err := h.client.Charge(as(ctx, tokenA), visa("a-only")); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.GetOperation(as(ctx, tokenB), &billingv1.GetOperationRequest{RequestId: "a-only"})
	if _, ei := errInfo(t, err, codes.NotFound); ei.GetReason() != "NOT_FOUND" {
		t.Errorf("reason = %s", ei.GetReason())
	}
	if got := h.sim.Stats().PaymentIntentsCreated; got != 3 {
		t.Errorf("PaymentIntentsCreated = %d, want 3", got)
	}
}

func TestOpenServerOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{}) // open: no tokens, no client CA
	lis, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := h.srv.Serve(lis); !errors.Is(err, server.ErrOpenNotLoopback) {
		t.Errorf("open Serve on %s = %v, want ErrOpenNotLoopback", lis.Addr(), err)
	}
	// With tokens the same address is fine to configure.
	if err := authConfig(t).CheckListener(lis.Addr().String()); err != nil {
		t.Errorf("CheckListener with tokens = %v", err)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:50051", true},
		{"127.5.5.5:1", true},
		{"[::1]:50051", true},
		{"localhost:50051", true},
		{":50051", false},
		{"0.0.0.0:50051", false},
		{"[::]:50051", false},
		{"10.0.0.1:50051", false},
		{"billing.internal:50051", false},
		{"127.0.0.1", false},
	}
	for _, tt := range tests {
		if got := server.IsLoopback(tt.addr); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
}
