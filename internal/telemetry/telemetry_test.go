package telemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/billingd/billingd/internal/telemetry"
)

func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

func TestMetricsExposition(t *testing.T) {
	t.Parallel()
	m := telemetry.NewMetrics()
	m.StripeCall("payment_intents.create", "unavailable", "api_connection_error", "", 20*time.Millisecond)
	m.StripeRetry("network")
	m.Event("Charge", "replay")
	m.Commit(time.Millisecond, 8)
	m.Register(telemetry.GaugeFunc("billingd_records", "Records by state.", "state",
		func() map[string]float64 { return map[string]float64{"PENDING": 3, "INDETERMINATE": 1} }))
	m.Register(telemetry.Gauge("billingd_stripe_max_in_flight", "Bound.", func() float64 { return 64 }),
		telemetry.Counter("billingd_stripe_slot_waits_total", "Waits.", func() float64 { return 7 }))
	out := scrape(t, m)
	for _, want := range []string{
		`billingd_stripe_requests_total{code="",endpoint="payment_intents.create",error_type="api_connection_error",outcome="unavailable"} 1`,
		`billingd_stripe_retries_total{reason="network"} 1`,
		`billingd_idempotency_events_total{event="replay",method="Charge"} 1`,
		`billingd_bbolt_commit_batch_size_sum 8`,
		`billingd_records{state="PENDING"} 3`,
		`billingd_records{state="INDETERMINATE"} 1`,
		`billingd_stripe_max_in_flight 64`,
		`billingd_stripe_slot_waits_total 7`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}

func TestTracingEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false},
	}
	for _, tt := range tests {
		if got := telemetry.TracingEnabled(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("TracingEnabled(%v) = %v, want %v", tt.env, got, tt.want)
		}
	}
}

func TestStripeRequestIDOnClientSpan(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Request-Id", "req_trace123")
		_, _ = io.WriteString(w, "{}")
	}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	client := &http.Client{Transport: otelhttp.NewTransport(telemetry.StripeRequestID(http.DefaultTransport), otelhttp.WithTracerProvider(tp))}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/v1/payment_intents", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("spans = %d", len(spans))
	}
	found := false
	for _, a := range spans[0].Attributes() {
		if a.Key == "stripe.request_id" && a.Value.AsString() == "req_trace123" {
			found = true
		}
	}
	if !found {
		t.Errorf("span attributes %v lack stripe.request_id", spans[0].Attributes())
	}
}
