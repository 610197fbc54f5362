package server

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/billingd/billingd/service"
)

// BackgroundConfig says what runs beside the gRPC server;
// DefaultBackgroundConfig returns the defaults.
type BackgroundConfig struct {
	// Reconciler drives open records to their end (service.Reconciler).
	Reconciler service.ReconcilerConfig
	// Sweeper enforces retention (service.Sweeper).
	Sweeper service.SweeperConfig
	// StoreProbeInterval is how often health pings the record store
	// (FollowStore); it must be positive.
	StoreProbeInterval time.Duration
	// AdminPath, when set, is the database file whose admin socket
	// (AdminSocketPath) serves `billingd ops` while this process holds it.
	AdminPath string
	// Webhooks, when set, serves Stripe's webhook endpoint (WebhookPath),
	// verified with WebhookSecret.
	Webhooks      net.Listener
	WebhookSecret string
}

// DefaultBackgroundConfig returns the production defaults: no admin socket
// and no webhooks.
func DefaultBackgroundConfig() BackgroundConfig {
	return BackgroundConfig{
		Reconciler:         service.DefaultReconcilerConfig(),
		Sweeper:            service.DefaultSweeperConfig(),
		StoreProbeInterval: time.Second,
	}
}

// BackgroundStore is the record store the background work runs on.
type BackgroundStore interface {
	service.Store
	AdminStore
	Pinger
}

// Background is the work that runs beside the gRPC server: the reconciler,
// the sweeper, the webhook endpoint, health's store pings and the admin
// socket. Stop ends its taking new work; Wait waits for what runs.
type Background struct {
	reconciler *service.Reconciler
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	stops      []func()
}

// StartBackground starts recovery and upkeep: the reconciler makes its first
// pass at once (startup recovery), the sweeper enforces retention, webhooks
// settle records, health follows the store, and the admin socket serves
// `billingd ops` while the database is locked by this process.
func (s *Server) StartBackground(cfg BackgroundConfig, db BackgroundStore) (*Background, error) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &Background{cancel: cancel}
	if cfg.AdminPath != "" {
		stopAdmin, err := ServeAdmin(AdminSocketPath(cfg.AdminPath), db, s.log)
		if err != nil {
			cancel()
			return nil, err
		}
		b.stops = append(b.stops, stopAdmin)
	}
	b.reconciler = service.NewReconciler(s.svc, db, service.WithReconcilerConfig(cfg.Reconciler), service.WithLogger(s.log))
	b.run(ctx, b.reconciler.Run)
	b.run(ctx, service.NewSweeper(db, nil, cfg.Sweeper, s.log).Run)
	if cfg.Webhooks != nil {
		b.serveHTTP(ctx, cfg.Webhooks, NewWebhookHandler(cfg.WebhookSecret, service.NewWebhooks(s.svc, db), s.log))
		s.log.Info("webhooks listening", "addr", cfg.Webhooks.Addr().String(), "path", WebhookPath)
	}
	// Health follows the store: NOT_SERVING while records cannot be written.
	b.run(ctx, func(ctx context.Context) { s.FollowStore(ctx, db, cfg.StoreProbeInterval) })
	return b, nil
}

// serveHTTP serves h on lis until ctx ends, then gives the requests under
// way 5 s to finish.
func (b *Background) serveHTTP(ctx context.Context, lis net.Listener, h http.Handler) {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
	}
	go func() { _ = hs.Serve(lis) }()
	b.run(ctx, func(ctx context.Context) {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	})
}

// Reconciler is the reconciler the background runs, for its Stats.
func (b *Background) Reconciler() *service.Reconciler { return b.reconciler }

// Stop ends the background's taking new work: no new reconciler drives,
// sweeps or webhooks. Safe to call more than once.
func (b *Background) Stop() { b.cancel() }

// Wait waits, after Stop, for the background work to end, then closes the
// admin socket.
func (b *Background) Wait() {
	b.wg.Wait()
	for _, stop := range b.stops {
		stop()
	}
}

func (b *Background) run(ctx context.Context, fn func(context.Context)) {
	b.wg.Add(1)
	go func() { defer b.wg.Done(); fn(ctx) }()
}
