package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripehttp"
	"github.com/billingd/billingd/internal/telemetry"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// observability is one serve run's metrics registry and tracer provider.
// Metrics are always collected (cheap); --metrics-listen exposes them.
type observability struct {
	metrics  *telemetry.Metrics
	tracing  bool
	shutdown func(context.Context) error
}

func newObservability(ctx context.Context, cfg serveConfig, log *slog.Logger) (*observability, error) {
	o := &observability{metrics: telemetry.NewMetrics(), tracing: cfg.tracing}
	if o.tracing {
		shutdown, err := telemetry.SetupTracing(ctx, versionString())
		if err != nil {
			return nil, err
		}
		o.shutdown = shutdown
		log.Info("tracing enabled (OTEL_* environment)")
	}
	return o, nil
}

func (o *observability) close() {
	if o.shutdown != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = o.shutdown(ctx)
	}
}

func (o *observability) storageOptions() []storage.Option {
	return []storage.Option{storage.WithCommitObserver(o.metrics.Commit)}
}

// stripe adds metrics (and, with tracing, one client span per HTTP attempt
// tagged with Stripe's Request-Id) to a Stripe client configuration.
func (o *observability) stripe(c stripeapi.Config) stripeapi.Config {
	c.Observe = func(ob stripeapi.Observation) {
		o.metrics.StripeCall(ob.Endpoint, ob.Outcome, ob.ErrorType, ob.Code, ob.Duration)
	}
	c.RetryOptions = append(c.RetryOptions, stripehttp.WithRetryObserver(o.metrics.StripeRetry))
	if o.tracing {
		c.Instrument = func(rt http.RoundTripper) http.RoundTripper {
			return otelhttp.NewTransport(telemetry.StripeRequestID(rt),
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "stripe " + r.Method + " " + r.URL.Path }))
		}
	}
	return c
}

// watchStripe exports the Stripe client's call slots (--stripe-max-inflight):
// calls waiting for a slot mean the bound, not Stripe, is holding them; and
// its pace (--stripe-rate): a rate under the limit means Stripe answered 429.
func (o *observability) watchStripe(c *stripeapi.Client) {
	o.metrics.Register(
		telemetry.Gauge("billingd_stripe_calls_in_flight", "Stripe calls under way now.", func() float64 {
			n, _, _ := c.Slots()
			return float64(n)
		}),
		telemetry.Gauge("billingd_stripe_max_in_flight", "The bound on Stripe calls under way at once (--stripe-max-inflight).", func() float64 {
			_, limit, _ := c.Slots()
			return float64(limit)
		}),
		telemetry.Counter("billingd_stripe_slot_waits_total", "Stripe calls that found every slot taken and waited for one.", func() float64 {
			_, _, waited := c.Slots()
			return float64(waited)
		}),
		telemetry.Gauge("billingd_stripe_rate", "Stripe requests a second billingd paces itself to now: --stripe-rate, lower after 429s (0: no pacing).", func() float64 {
			return c.Pace().Rate
		}),
		telemetry.Gauge("billingd_stripe_rate_limit", "The configured pace of Stripe requests a second (--stripe-rate; 0: no pacing).", func() float64 {
			return c.Pace().Limit
		}),
		telemetry.Counter("billingd_stripe_rate_cuts_total", "Times a Stripe 429 lowered the pace.", func() float64 {
			return float64(c.Pace().Cuts)
		}),
		telemetry.Counter("billingd_stripe_refused_total", "Stripe calls not sent because the wait for a slot or a pacing token would outlast the caller's deadline (answered UPSTREAM_RATE_LIMITED).", func() float64 {
			return float64(c.Pace().Refused)
		}),
	)
}

func (o *observability) serviceOptions() []service.Option {
	return []service.Option{service.WithObserver(o.metrics)}
}

// recordCounts is billingd_records at one scrape: the open states always
// (the alerts watch them, and both stores count them from an index), every
// state when the store counts them all within ctx. PostgreSQL counts the
// table for that; past ctx the final states are left out of the scrape
// rather than the open ones with them.
func recordCounts(ctx context.Context, db service.OpenRecords) map[string]float64 {
	out := map[string]float64{}
	counts, err := db.CountOpen(ctx)
	if err != nil {
		return out
	}
	if all, err := db.CountByState(ctx); err == nil {
		counts = all
	}
	for st, n := range counts {
		out[st.String()] = float64(n)
	}
	return out
}

// watch exports state kept elsewhere, read at scrape time: records by state
// (a per-state count bucket, no scan) and the reconciler's tallies.
func (o *observability) watch(db service.OpenRecords, rec *service.Reconciler) {
	o.metrics.Register(telemetry.GaugeFunc("billingd_records", "Records by state.", "state", func() map[string]float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return recordCounts(ctx, db)
	}))
	if rec == nil {
		return
	}
	o.metrics.Register(telemetry.CounterFunc("billingd_reconciler_total",
		"Reconciler work by kind: passes, scanned, redriven, succeeded, failed, not_created, searches, follows, errors.", "kind",
		func() map[string]float64 {
			s := rec.Stats()
			return map[string]float64{
				"passes": float64(s.Passes), "scanned": float64(s.Scanned), "redriven": float64(s.Redriven),
				"succeeded": float64(s.Succeeded), "failed": float64(s.Failed), "not_created": float64(s.NotCreated),
				"searches": float64(s.Searches), "follows": float64(s.Follows), "errors": float64(s.Errors),
			}
		}))
}

// watchServer exports whether health says the record store is writable.
func (o *observability) watchServer(srv *server.Server) {
	o.metrics.Register(telemetry.Gauge("billingd_store_up",
		"1 while the record store can be written, 0 while it cannot (health NOT_SERVING, calls answer STORAGE_UNAVAILABLE).",
		func() float64 {
			if srv.StoreUp() {
				return 1
			}
			return 0
		}))
}

// serveMetrics exposes /metrics on addr until stop is called.
func (o *observability) serveMetrics(addr string, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", o.metrics.Handler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err.Error())
		}
	}()
	log.Info("metrics listening", "addr", lis.Addr().String(), "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}
