// Package server is billingd's gRPC adapter: listener options, the interceptor
// chain, health, reflection, graceful shutdown, and proto ⇄ service types.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"time"

	"buf.build/go/protovalidate"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/service"
)

// Config holds the server's limits; DefaultConfig returns the defaults.
type Config struct {
	// MaxRecvMsgSize bounds a request: billingd's largest valid request (50
	// metadata pairs of 40+500 bytes) is under 32 KiB.
	MaxRecvMsgSize int
	// MaxConcurrentStreams bounds in-flight RPCs per connection.
	MaxConcurrentStreams uint32
	// KeepaliveMinTime is the most often a client may ping; faster pings are
	// answered with GOAWAY.
	KeepaliveMinTime time.Duration
	// MaxConnectionIdle closes connections idle this long.
	MaxConnectionIdle time.Duration
	// Reflection registers gRPC server reflection (v1 and v1alpha).
	Reflection bool
	// ExtraInterceptors run innermost, after validation (used by tests).
	ExtraInterceptors []grpc.UnaryServerInterceptor
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		MaxRecvMsgSize:       64 << 10,
		MaxConcurrentStreams: 1024,
		KeepaliveMinTime:     10 * time.Second,
		MaxConnectionIdle:    15 * time.Minute,
		Reflection:           true,
	}
}

// Server serves BillingService, health and reflection on one grpc.Server.
type Server struct {
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
}

// New assembles the gRPC server and its interceptor chain, in one place.
func New(cfg Config, svc *service.Service, log *slog.Logger) (*Server, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	chain := []grpc.UnaryServerInterceptor{
		// Outermost: log the final code of every call, start and finish only
		// (payload events would carry card data).
		logging.UnaryServerInterceptor(slogAdapter(log), logging.WithLogOnEvents(logging.FinishCall)),
		recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
			// Never log the panic value itself: it may hold request data.
			log.ErrorContext(ctx, "panic in handler recovered")
			return status.Error(codes.Internal, "internal error")
		})),
		interceptors.ErrorStatus(),
		interceptors.ReplayHeader(),
		interceptors.Validate(validator),
	}
	chain = append(chain, cfg.ExtraInterceptors...)

	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(chain...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.MaxConnectionIdle}),
	)
	billingv1.RegisterBillingServiceServer(gs, &billing{svc: svc})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(billingv1.BillingService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if cfg.Reflection {
		reflection.Register(gs)
	}
	return &Server{grpc: gs, health: hs, log: log}, nil
}

// Serve accepts connections on lis until Shutdown.
func (s *Server) Serve(lis net.Listener) error {
	err := s.grpc.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown drains: health turns NOT_SERVING so load balancers stop sending,
// in-flight calls finish until ctx is done, and then the rest are cut off.
func (s *Server) Shutdown(ctx context.Context) {
	s.health.Shutdown()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("graceful stop timed out; closing remaining connections")
		s.grpc.Stop()
		<-done
	}
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
