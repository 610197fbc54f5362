// Package telemetry provides billingd's Prometheus metrics and OpenTelemetry
// tracing: one registry, the standard gRPC server metrics, and billingd's own.
package telemetry

import (
	"net/http"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every metric billingd exports. The zero value is not usable;
// use NewMetrics. All methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry
	// GRPC is the standard server metrics (grpc_server_handled_total,
	// grpc_server_handling_seconds, …) as interceptors for the chain.
	GRPC *grpcprom.ServerMetrics

	stripeRequests *prometheus.CounterVec
	stripeDuration *prometheus.HistogramVec
	stripeRetries  *prometheus.CounterVec
	events         *prometheus.CounterVec
	commitSeconds  prometheus.Histogram
	commitBatch    prometheus.Histogram
}

// NewMetrics builds the registry with Go runtime and process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		GRPC: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
			grpcprom.WithHistogramBuckets([]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}))),
		stripeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billingd_stripe_requests_total",
			Help: "Stripe API calls after retries, by endpoint, outcome, Stripe error type and code. Alert on error_type=\"api_connection_error\" spikes.",
		}, []string{"endpoint", "outcome", "error_type", "code"}),
		stripeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "billingd_stripe_request_duration_seconds",
			Help:    "Stripe API call latency including retries.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		stripeRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billingd_stripe_retries_total",
			Help: "Stripe HTTP attempts retried by billingd's retry policy, by reason.",
		}, []string{"reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "billingd_idempotency_events_total",
			Help: "Idempotency events by method and kind: replay, fingerprint_conflict, coalesced_wait.",
		}, []string{"method", "event"}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "billingd_bbolt_commit_seconds",
			Help:    "Latency of one fsync'd bbolt group commit.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25},
		}),
		commitBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "billingd_bbolt_commit_batch_size",
			Help:    "Writes shared by one bbolt commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.GRPC, m.stripeRequests, m.stripeDuration, m.stripeRetries, m.events, m.commitSeconds, m.commitBatch,
	)
	return m
}

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Register adds more collectors, e.g. gauges read from the record store.
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// StripeCall counts one finished Stripe call.
func (m *Metrics) StripeCall(endpoint, outcome, errorType, code string, d time.Duration) {
	m.stripeRequests.WithLabelValues(endpoint, outcome, errorType, code).Inc()
	m.stripeDuration.WithLabelValues(endpoint).Observe(d.Seconds())
}

// StripeRetry counts one retried attempt.
func (m *Metrics) StripeRetry(reason string) { m.stripeRetries.WithLabelValues(reason).Inc() }

// Event counts an idempotency event of a method.
func (m *Metrics) Event(method, event string) { m.events.WithLabelValues(method, event).Inc() }

// Commit observes one storage commit of n writes.
func (m *Metrics) Commit(d time.Duration, n int) {
	m.commitSeconds.Observe(d.Seconds())
	m.commitBatch.Observe(float64(n))
}

// GaugeFunc returns a collector of one labelled gauge family whose values are
// read at scrape time from read (label value → value). Reading must be cheap.
func GaugeFunc(name, help, label string, read func() map[string]float64) prometheus.Collector {
	return &funcCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.GaugeValue, read: read}
}

// Gauge returns an unlabelled gauge read at scrape time.
func Gauge(name, help string, read func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, read)
}

// Counter returns an unlabelled counter kept elsewhere, read at scrape time.
func Counter(name, help string, read func() float64) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, read)
}

// CounterFunc is GaugeFunc for monotonically increasing values (counters kept
// elsewhere, e.g. the reconciler's own tallies).
func CounterFunc(name, help, label string, read func() map[string]float64) prometheus.Collector {
	return &funcCollector{desc: prometheus.NewDesc(name, help, []string{label}, nil), kind: prometheus.CounterValue, read: read}
}

type funcCollector struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	read func() map[string]float64
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for k, v := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, v, k)
	}
}
