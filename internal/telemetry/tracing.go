package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// TracingEnabled reports whether the standard OTEL_* variables ask for
// traces. Tracing is off unless OTEL_TRACES_EXPORTER names an exporter (otlp,
// console) or an OTLP endpoint is set; OTEL_SDK_DISABLED=true wins.
func TracingEnabled(getenv func(string) string) bool {
	if getenv("OTEL_SDK_DISABLED") == "true" {
		return false
	}
	switch exp := getenv("OTEL_TRACES_EXPORTER"); exp {
	case "none":
		return false
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return true
	}
}

// SetupTracing installs a global tracer provider exporting as the OTEL_*
// variables say (exporter, endpoint, protocol, headers, sampler, resource),
// and W3C trace-context propagation. shutdown flushes it.
func SetupTracing(ctx context.Context, version string) (shutdown func(context.Context) error, err error) {
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(serviceName()), semconv.ServiceVersion(version)))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp.Shutdown, nil
}

func serviceName() string {
	if n := os.Getenv("OTEL_SERVICE_NAME"); n != "" {
		return n
	}
	return "billingd"
}

// StripeRequestID tags the current HTTP client span with Stripe's Request-Id,
// so a trace leads straight to Stripe's dashboard log for the call. Put it
// inside otelhttp's transport so the span is the attempt's own.
func StripeRequestID(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if resp != nil {
			if id := resp.Header.Get("Request-Id"); id != "" {
				trace.SpanFromContext(req.Context()).SetAttributes(attribute.String("stripe.request_id", id))
			}
		}
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
