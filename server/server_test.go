//lint:file-ignore SA1019 reflection v1alpha is deprecated, and tested on purpose: older clients speak only v1alpha.

package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/server"
)

func TestHealthAndReflection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	ctx := h.ctx()

	hc := healthpb.NewHealthClient(h.conn)
	for _, svc := range []string{"", "billing.v1.BillingService"} {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatalf("health %q: %v", svc, err)
		}
		if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health %q = %v, want SERVING", svc, got)
		}
	}

	// v1: what grpcurl speaks today.
	s1, err := reflectionv1.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r1, err := s1.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r1.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"billing.v1.BillingService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection v1 lists %v, missing %s", names, want)
		}
	}

	// v1alpha: what older clients (and ghz) speak.
	s2, err := reflectionv1alpha.NewServerReflectionClient(h.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "billing.v1.BillingService"}}); err != nil {
		t.Fatal(err)
	}
	r2, err := s2.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(r2.GetFileDescriptorResponse().GetFileDescriptorProto()) == 0 {
		t.Errorf("reflection v1alpha returned no descriptor for BillingService: %v", r2)
	}
}

// blocker holds Charge calls whose request_id is "block" until released.
type blocker struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blocker) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if r, ok := req.(*billingv1.ChargeRequest); ok {
		switch r.GetRequestId() {
		case "block":
			close(b.entered)
			<-b.release
		case "panic":
			panic("handler exploded with card 4242424242424242")
		}
	}
	return handler(ctx, req)
}

func TestGracefulShutdownFinishesInFlightCall(t *testing.T) {
	t.Parallel()
	b := &blocker{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := server.DefaultConfig()
	cfg.ExtraInterceptors = []grpc.UnaryServerInterceptor{b.intercept}
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := h.ctx()

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch, err := healthpb.NewHealthClient(h.conn).Watch(wctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := watch.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first watch = %v, %v", m, err)
	}

	type result struct {
		resp *billingv1.ChargeResponse
		err  error
	}
	inflight := make(chan result, 1)
	go func() {
		resp, err := h.client.Charge(ctx, visa("block"))
		inflight <- result{resp, err}
	}()
	<-b.entered

	stopped := make(chan struct{})
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.srv.Shutdown(sctx)
		close(stopped)
	}()

	// Draining: health says NOT_SERVING to watchers first.
	m, err := watch.Recv()
	if err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch during shutdown = %v, %v; want NOT_SERVING", m, err)
	}
	stopWatch() // a watch is a stream: GracefulStop would wait for it too
	select {
	case <-stopped:
		t.Fatal("Shutdown returned while a call was in flight")
	default:
	}

	close(b.release)
	r := <-inflight
	if r.err != nil {
		t.Fatalf("in-flight call failed during graceful shutdown: %v", r.err)
	}
	if r.resp.GetPaymentIntentId() == "" || r.resp.GetStatus() != "succeeded" {
		t.Errorf("in-flight call = %v", r.resp)
	}
	<-stopped
	if got := len(h.intentsFor("anonymous", "block")); got != 1 {
		t.Errorf("PaymentIntents at the simulator = %d, want 1", got)
	}
}

func TestPanicBecomesInternal(t *testing.T) {
	t.Parallel()
	b := &blocker{}
	cfg := server.DefaultConfig()
	cfg.ExtraInterceptors = []grpc.UnaryServerInterceptor{b.intercept}
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := h.ctx()

	_, err := h.client.Charge(ctx, visa("panic"))
	st, _ := status.FromError(err)
	if st.Code() != codes.Internal {
		t.Fatalf("panic answered %v, want INTERNAL", err)
	}
	if st.Message() != "internal error" {
		t.Errorf("panic message leaks details: %q", st.Message())
	}
	// The process survived and still serves.
	resp, err := h.client.Charge(ctx, visa("after-panic"))
	if err != nil || resp.GetStatus() != "succeeded" {
		t.Fatalf("call after panic = %v, %v", resp, err)
	}
}
