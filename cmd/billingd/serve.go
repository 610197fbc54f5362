package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/postgres"
)

// simKey is the API key billingd uses with its built-in simulator.
const simKey = "sk_test_billingd_simulator"

// simMaxObjects bounds the built-in simulator's memory in long demos and
// benchmarks (about 2.3 KB per object with its idempotency entry): it keeps
// the newest 2,000 objects. billingd's own records are what replays use.
const simMaxObjects = 2000

// serve wires the concrete types together and runs until ctx is cancelled.
func serve(ctx context.Context, cfg serveConfig, logw io.Writer) error {
	log := newLogger(cfg.LogFormat, logw)

	srvCfg, err := serverConfig(cfg)
	if err != nil {
		return err
	}
	lis, err := listen(cfg.Listen, srvCfg)
	if err != nil {
		return err
	}
	defer lis.Close()

	obs, err := newObservability(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer obs.close()

	db, err := openStore(ctx, cfg, obs)
	if err != nil {
		return err
	}
	defer db.Close()

	// The webhook listener comes before the simulator, which posts to it.
	hooks, err := listenWebhooks(&cfg)
	if err != nil {
		return err
	}
	defer hooks.close()

	stripe, err := startStripe(cfg, hooks.url, log)
	if err != nil {
		return err
	}
	defer stripe.stop()
	payments, err := stripeapi.New(obs.stripe(stripeapi.Config{Key: stripe.key, URL: stripe.url, MaxInFlight: cfg.StripeInFlight, Rate: cfg.stripeRate}))
	if err != nil {
		return fmt.Errorf("stripe client: %w", err)
	}
	obs.watchStripe(payments)

	svc := service.New(db, payments, append(obs.serviceOptions(), service.WithConfig(serviceConfig(cfg)))...)
	srvCfg.Tracing = obs.tracing
	if cfg.MetricsListen != "" {
		// The per-RPC gRPC metrics cost about 3 % of a replay's CPU: only
		// when someone can scrape them.
		srvCfg.Metrics = obs.metrics
	}
	srv, err := server.New(srvCfg, svc, log)
	if err != nil {
		return err
	}
	bg, err := srv.StartBackground(backgroundConfig(cfg, db, hooks), db)
	if err != nil {
		return err
	}
	defer bg.Stop()
	obs.watch(db, bg.Reconciler())
	obs.watchServer(srv)
	stopMetrics, err := obs.serveMetrics(cfg.MetricsListen, log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.Info("billingd serving", "listen", lis.Addr().String(), "db", db.describe, "stripe", stripe.mode, "stripe_mode", stripeMode(stripe.key),
		"callers", cfg.tokens.Len(), "tls", tlsMode(srvCfg), "rate_limit", cfg.RateLimit)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	shutdown(cfg.ShutdownGrace, log, srv, svc, bg)
	return nil
}

// listen binds --listen. An open server on a network address is refused
// before it listens, and again by the address it got (a wildcard host).
func listen(addr string, srvCfg server.Config) (net.Listener, error) {
	if srvCfg.CheckListener(addr) != nil {
		return nil, openRefused(addr)
	}
	// Listen first: a port in use fails fast, before the database is touched.
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	if srvCfg.CheckListener(lis.Addr().String()) != nil {
		_ = lis.Close()
		return nil, openRefused(lis.Addr().String())
	}
	return lis, nil
}

// shutdown drains in order: no new background work; health NOT_SERVING,
// watches ended and gRPC stopped within the grace; then the drives whose
// callers left get the rest of it, and what they leave is logged.
func shutdown(grace time.Duration, log *slog.Logger, srv *server.Server, svc *service.Service, bg *server.Background) {
	log.Info("shutting down", "grace", grace.String())
	began := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	bg.Stop() // no new reconciler drives, sweeps or webhooks
	srv.Shutdown(sctx)
	// Drives whose callers left keep running on server-owned contexts: give
	// them the rest of the grace period, then close the database.
	left := 0
	var cut *service.CutError
	if err := svc.Close(sctx); errors.As(err, &cut) {
		left = cut.Drives
		log.Warn("in-flight Stripe calls cut off at shutdown; their records stay PENDING and are re-driven later", "drives", left)
	}
	bg.Wait()
	log.Info("stopped", "drained", left == 0, "left_pending", left, "took", time.Since(began).Round(time.Millisecond).String())
}

// store is the record store serve runs on, bbolt or PostgreSQL.
type store interface {
	server.BackgroundStore
	Close() error
}

// openedStore is the store with what serve says about it.
type openedStore struct {
	store
	describe  string // for the log: the file, or the URL without its password
	adminPath string // the admin socket's database path; "" without one (PostgreSQL is read directly)
}

// openStore opens --store (PostgreSQL, shared by replicas) or the bbolt file --db.
func openStore(ctx context.Context, cfg serveConfig, obs *observability) (*openedStore, error) {
	if cfg.Store == "" {
		db, err := storage.Open(cfg.DB, obs.storageOptions()...)
		if err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		return &openedStore{store: db, describe: cfg.DB, adminPath: cfg.DB}, nil
	}
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	pg, err := postgres.Open(octx, cfg.Store, postgres.WithLeaseTTL(cfg.LeaseTTL))
	if err != nil {
		// The error names the host at most, never the password.
		return nil, fmt.Errorf("open store %s: %w", redactedStore(cfg.Store), err)
	}
	return &openedStore{store: pg, describe: redactedStore(cfg.Store) + " (lease holder " + pg.Owner() + ")"}, nil
}

// serviceConfig is service.DefaultConfig with the recovery, retention and
// foreign-object flags.
func serviceConfig(cfg serveConfig) service.Config {
	c := service.DefaultConfig()
	c.SearchLag = cfg.SearchLag
	c.Retention = cfg.Retention
	c.AllowForeignObjects = cfg.AllowForeign
	return c
}

// serverConfig is server.DefaultConfig with the caller, TLS and rate-limit flags.
func serverConfig(cfg serveConfig) (server.Config, error) {
	c := server.DefaultConfig()
	c.Tokens = cfg.tokens
	c.AuthReflection = cfg.AuthReflection
	if cfg.TLSCert != "" {
		t, err := server.LoadTLS(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return c, err
		}
		c.TLS = t
	}
	if cfg.RateLimit > 0 {
		burst := cfg.RateBurst
		if burst == 0 {
			burst = int(math.Ceil(cfg.RateLimit))
		}
		c.RateLimit = interceptors.Budget{Rate: cfg.RateLimit, Burst: burst}
	}
	return c, nil
}

func openRefused(addr string) error {
	return fmt.Errorf("refusing to serve on %s without caller authentication: set %s or --auth-tokens-file (or --tls-client-ca), or listen on loopback", addr, tokensEnv)
}

func tlsMode(c server.Config) string {
	switch {
	case c.TLS == nil:
		return "off"
	case c.TLS.ClientCAs != nil:
		return "mutual"
	}
	return "on"
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// stripeTarget is the Stripe API serve calls: Stripe itself, --stripe-url
// or the built-in simulator.
type stripeTarget struct {
	url, key string
	mode     string // for the log: "stripe", the --stripe-url, or "simulator"
	stop     func()
}

// startStripe starts the built-in simulator with --stripe-sim, posting its
// webhooks to webhookURL if set; otherwise the target is --stripe-url or Stripe.
func startStripe(cfg serveConfig, webhookURL string, log *slog.Logger) (stripeTarget, error) {
	t := stripeTarget{url: cfg.StripeURL, key: cfg.stripeKey, mode: "stripe", stop: func() {}}
	switch {
	case cfg.StripeSim:
		url, stop, err := startSim(cfg, webhookURL)
		if err != nil {
			return t, err
		}
		t.url, t.key, t.mode, t.stop = url, simKey, "simulator", stop
		log.Info("stripe simulator", "url", url)
	case t.url != "":
		t.mode = t.url
	}
	return t, nil
}

// startSim serves the built-in Stripe simulator on a loopback port.
// With webhookURL set, it posts signed events there.
func startSim(cfg serveConfig, webhookURL string) (url string, stop func(), err error) {
	faults, err := simFaults(cfg.SimFaults)
	if err != nil {
		return "", nil, err
	}
	sim := stripesim.New(stripesim.Config{Seed: cfg.SimSeed, Faults: faults, MaxObjects: simMaxObjects,
		WebhookURL: webhookURL, WebhookSecret: cfg.webhookSecret})
	lis, err := net.Listen("tcp", cfg.SimListen)
	if err != nil {
		return "", nil, fmt.Errorf("simulator listen: %w", err)
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	return "http://" + lis.Addr().String(), func() { _ = hs.Close(); sim.Close() }, nil
}

// webhookListener is the --webhook-listen socket, bound before anything
// else starts so a port in use fails fast.
type webhookListener struct {
	lis net.Listener // nil when webhooks are off
	url string       // where the simulator posts
}

func (w *webhookListener) close() {
	if w.lis != nil {
		_ = w.lis.Close()
	}
}

// listenWebhooks binds --webhook-listen. With the simulator and no
// STRIPE_WEBHOOK_SECRET it generates the endpoint secret both sides share.
func listenWebhooks(cfg *serveConfig) (*webhookListener, error) {
	if cfg.WebhookListen == "" {
		return &webhookListener{}, nil
	}
	if cfg.webhookSecret == "" {
		cfg.webhookSecret = server.NewWebhookSecret()
	}
	lis, err := net.Listen("tcp", cfg.WebhookListen)
	if err != nil {
		return nil, fmt.Errorf("webhook listen: %w", err)
	}
	return &webhookListener{lis: lis, url: "http://" + lis.Addr().String() + server.WebhookPath}, nil
}

// backgroundConfig is server.DefaultBackgroundConfig with the recovery,
// retention and webhook flags, and the admin socket of a bbolt file.
func backgroundConfig(cfg serveConfig, db *openedStore, hooks *webhookListener) server.BackgroundConfig {
	c := server.DefaultBackgroundConfig()
	c.Reconciler.Interval = cfg.ReconcileInterval
	c.Sweeper.Retention = cfg.Retention
	c.Sweeper.TombstoneRetention = cfg.TombstoneRetention
	c.AdminPath = db.adminPath
	c.Webhooks, c.WebhookSecret = hooks.lis, cfg.webhookSecret // no listener: no webhooks
	return c
}
