// Package server is billingd's gRPC adapter: listener options, the interceptor
// chain, health, reflection, graceful shutdown, proto ⇄ service types, and
// the background work that runs beside it.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	grpcmw "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/internal/redact"
	"github.com/billingd/billingd/internal/telemetry"
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

	// Tokens authenticates callers by "authorization: Bearer <token>".
	// Without tokens and without mutual TLS the server is open: every call
	// is caller "anonymous", and Serve accepts only loopback listeners.
	Tokens *interceptors.Tokens
	// TLS serves TLS when set (see LoadTLS). When it requires verified client
	// certificates (mutual TLS), a certificate's subject CommonName
	// identifies its caller; a bearer token sent as well must name the same caller.
	TLS *tls.Config
	// AuthReflection requires authentication for server reflection too. By
	// default reflection, like health, answers without credentials: it
	// describes the public contract, nothing of any caller's.
	AuthReflection bool
	// RateLimit is each caller's budget for BillingService calls; a zero
	// Rate turns the limit off.
	RateLimit interceptors.Budget
	// ReplayRateLimit is each caller's second budget, used once RateLimit is
	// spent, for calls answered from the records alone: repeats of requests
	// whose record is final, and GetOperation. Zero means ten times RateLimit.
	ReplayRateLimit interceptors.Budget

	// Metrics, when set, adds the standard gRPC server metrics to the chain.
	Metrics *telemetry.Metrics
	// Tracing adds OpenTelemetry's gRPC stats handler (server spans, trace
	// context from callers) using the global tracer provider.
	Tracing bool
}

// Open reports whether c authenticates nobody: no tokens, no mutual TLS.
func (c Config) Open() bool {
	return c.Tokens.Len() == 0 && !mutualTLS(c.TLS)
}

// CheckListener refuses an open server (Open) on anything but loopback.
// addr is a listener's address, or a listen address.
func (c Config) CheckListener(addr string) error {
	if c.Open() && !IsLoopback(addr) {
		return ErrOpenNotLoopback
	}
	return nil
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
	cfg    Config
	grpc   *grpc.Server
	health *health.Server
	log    *slog.Logger
	svc    *service.Service
	store  storeHealth
}

// The services the chain tells apart (health and, unless
// Config.AuthReflection, reflection answer without credentials: load balancers
// probe health, reflection describes only the public contract), and what New warns.
const (
	healthService            = "grpc.health.v1.Health"
	reflectionService        = "grpc.reflection.v1.ServerReflection"
	reflectionServiceV1alpha = "grpc.reflection.v1alpha.ServerReflection"
	billingServiceName       = "billing.v1.BillingService"
	replayBudgetFactor       = 10
	openModeWarning          = "authentication is off: no caller tokens and no client CA; every call is caller \"anonymous\" and only loopback listeners are accepted"
	plaintextTokenWarning    = "caller tokens travel in plaintext: serve TLS (--tls-cert, --tls-key) unless a proxy on this host terminates it"
)

// New assembles the gRPC server: its interceptor chain (chain), limits,
// credentials, and the services it registers.
func New(cfg Config, svc *service.Service, log *slog.Logger) (*Server, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	b := &billing{svc: svc}
	s := &Server{cfg: cfg, log: log, svc: svc}
	s.store.up.Store(true)
	unary, stream := s.chain(b, validator)
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		// Reuse handler goroutines: a fresh goroutine per call regrows its
		// stack every time (11-17 % of replay CPU in profiles).
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: cfg.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.MaxConnectionIdle}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	if cfg.Tracing {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	}
	gs := grpc.NewServer(opts...)
	billingv1.RegisterBillingServiceServer(gs, b)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(billingv1.BillingService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	if cfg.Reflection {
		reflection.Register(gs)
	}
	if cfg.Metrics != nil {
		cfg.Metrics.GRPC.InitializeMetrics(gs)
	}
	s.grpc, s.health = gs, hs
	return s, nil
}

// chain returns the unary and stream interceptors, outermost first:
//
//  1. call fields: a place inner layers (auth, the handler) leave the
//     caller, request_id, replayed, attempts and Stripe request id for the
//     log line.
//  2. logging: sees every call's final code, refusals included (start and
//     finish only: payload events would carry card data).
//  3. metrics (with Config.Metrics), right inside logging, so refusals
//     count too.
//  4. recovery: a panic anywhere below, auth included, becomes INTERNAL.
//  5. auth (unless Config.Open): nothing below runs for a stranger (health
//     and, by default, reflection exempt).
//  6. rate limit (unary, BillingService, with Config.RateLimit): needs the
//     caller; before validation, so an over-budget caller costs no
//     validation, no record, no Stripe call.
//  7. ErrorStatus: errors become statuses once, next to the handler.
//  8. ReplayHeader (unary).
//  9. the refusal of unknown fields on calls that move money (unary).
//  10. protovalidate.
//  11. Config.ExtraInterceptors (unary).
func (s *Server) chain(b *billing, validator protovalidate.Validator) ([]grpc.UnaryServerInterceptor, []grpc.StreamServerInterceptor) {
	cfg, log := s.cfg, s.log
	observe := func(ctx context.Context, method string, err error, st *status.Status) {
		logInternalCause(ctx, method, err, st)
		if service.ReasonOf(err) == service.ReasonStorageUnavailable {
			s.StoreFailed(err)
		}
	}
	logger := logging.WithLogOnEvents(logging.FinishCall)
	recoverer := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		// Never log the panic value itself: it may hold request data or secrets.
		log.ErrorContext(ctx, "panic in handler recovered")
		return status.Error(codes.Internal, "internal error")
	})
	fieldsUnary, fieldsStream := interceptors.CollectCallFields()
	unary := []grpc.UnaryServerInterceptor{
		fieldsUnary,
		logging.UnaryServerInterceptor(slogAdapter(log), logger),
	}
	stream := []grpc.StreamServerInterceptor{
		fieldsStream,
		logging.StreamServerInterceptor(slogAdapter(log), logger),
	}
	if cfg.Metrics != nil {
		unary = append(unary, cfg.Metrics.GRPC.UnaryServerInterceptor())
		stream = append(stream, cfg.Metrics.GRPC.StreamServerInterceptor())
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverer))
	stream = append(stream, recovery.StreamServerInterceptor(recoverer))
	if cfg.Open() {
		log.Warn(openModeWarning)
	} else {
		authUnary, authStream := authInterceptors(cfg, log)
		unary = append(unary, authUnary)
		stream = append(stream, authStream)
	}
	if cfg.RateLimit.Rate > 0 {
		unary = append(unary, rateLimitInterceptor(cfg, b))
	}
	unary = append(unary,
		interceptors.ErrorStatus(interceptors.WithStatusObserver(observe)),
		interceptors.ReplayHeader(),
		interceptors.RejectUnknownFields(movesMoney),
		interceptors.Validate(validator),
	)
	unary = append(unary, cfg.ExtraInterceptors...)
	stream = append(stream,
		interceptors.ErrorStatusStream(interceptors.WithStatusObserver(observe)),
		interceptors.ValidateStream(validator),
	)
	return unary, stream
}

// authInterceptors authenticate every call but health's (and, unless
// Config.AuthReflection, reflection's) by token or client certificate; it
// warns when tokens travel without TLS.
func authInterceptors(cfg Config, log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	var opts []interceptors.AuthOption
	if mutualTLS(cfg.TLS) {
		opts = append(opts, interceptors.WithClientCertCallers())
	}
	if cfg.TLS == nil {
		log.Warn(plaintextTokenWarning)
	}
	authFn := interceptors.Authenticate(cfg.Tokens, opts...)
	needsAuth := selector.MatchFunc(func(_ context.Context, c grpcmw.CallMeta) bool {
		switch c.Service {
		case healthService:
			return false
		case reflectionService, reflectionServiceV1alpha:
			return cfg.AuthReflection
		}
		return true
	})
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(authFn), needsAuth),
		selector.StreamServerInterceptor(auth.StreamServerInterceptor(authFn), needsAuth)
}

// rateLimitInterceptor limits each caller's BillingService calls to
// Config.RateLimit, with the replay budget behind it.
func rateLimitInterceptor(cfg Config, b *billing) grpc.UnaryServerInterceptor {
	replay := cfg.ReplayRateLimit
	if replay.Rate <= 0 {
		replay = interceptors.Budget{Rate: replayBudgetFactor * cfg.RateLimit.Rate, Burst: replayBudgetFactor * max(cfg.RateLimit.Burst, 1)}
	}
	limit := interceptors.RateLimit(cfg.RateLimit, interceptors.WithReplayBudget(replay, b.answeredFromRecord))
	billingOnly := selector.MatchFunc(func(_ context.Context, c grpcmw.CallMeta) bool { return c.Service == billingServiceName })
	return selector.UnaryServerInterceptor(limit, billingOnly)
}

// Serve accepts connections on lis until Shutdown. An open server (see
// Config.Open) refuses a listener that is not on loopback.
func (s *Server) Serve(lis net.Listener) error {
	if err := s.cfg.CheckListener(lis.Addr().String()); err != nil {
		return err
	}
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
	// Watches last until their payment ends; a drain must not wait for that.
	s.svc.DrainWatches()
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

// movesMoney reports whether fullMethod creates or changes a Stripe object:
// such requests must carry no field this server does not know. Read-only
// methods stay lenient.
func movesMoney(fullMethod string) bool {
	switch fullMethod {
	case billingv1.BillingService_GetOperation_FullMethodName, billingv1.BillingService_WatchOperation_FullMethodName:
		return false
	}
	return strings.HasPrefix(fullMethod, "/"+billingServiceName+"/")
}

// logInternalCause puts the cause of an INTERNAL answer, which the caller
// only sees as "internal error", on the call's log line, with anything that
// looks like a Stripe key or client_secret scrubbed: without it a billingd
// bug would leave no trace.
func logInternalCause(ctx context.Context, _ string, err error, st *status.Status) {
	if st.Code() == codes.Internal {
		interceptors.SetCallField(ctx, "cause", redact.Scrub(err.Error()))
	}
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, interceptors.AppendCallFields(ctx, fields)...)
	})
}

// answeredFromRecord is the rate limiter's replay check: true when req will be
// answered from caller's records without a Stripe call. GetOperation only
// reads. A Charge or Subscribe whose record is final is either replayed or,
// with other parameters, refused as REQUEST_ID_REUSED: neither reaches Stripe,
// so the fingerprint need not be compared here. One record read, run only
// for calls over the main budget.
func (b *billing) answeredFromRecord(ctx context.Context, caller string, req any) bool {
	if _, ok := req.(*billingv1.GetOperationRequest); ok {
		return true
	}
	r, ok := req.(interface{ GetRequestId() string })
	if !ok {
		return false
	}
	id := r.GetRequestId()
	if id == "" {
		return false
	}
	rec, err := b.svc.GetOperation(ctx, caller, id)
	return err == nil && rec.State.Final()
}
