package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// collector is a minimal OTLP/HTTP trace receiver.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err == nil {
		c.mu.Lock()
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				c.spans = append(c.spans, ss.GetSpans()...)
			}
		}
		c.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

func (c *collector) snapshot() []*tracepb.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*tracepb.Span(nil), c.spans...)
}

// TestObservability runs billingd with metrics and OTLP tracing on, charges
// and replays, and checks what an operator would look at: the metrics, the
// log line, and a trace in which the Stripe call is a child of the RPC.
// Not parallel: the OTEL_* variables are process environment.
func TestObservability(t *testing.T) {
	col := &collector{}
	otlp := httptest.NewServer(col)
	defer otlp.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.URL)
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")

	addr, metricsAddr := freeAddr(t), freeAddr(t)
	db := filepath.Join(t.TempDir(), "billingd.db")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--stripe-sim", "--listen", addr, "--db", db, "--metrics-listen", metricsAddr, "--stripe-max-inflight", "5"},
			os.Getenv, &logs, &logs)
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, &logs, done)

	client := billingv1.NewBillingServiceClient(conn)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req := &billingv1.ChargeRequest{RequestId: "obs-1", Amount: 700, Currency: "usd", PaymentMethodId: "pm_card_visa"}
	for range 2 { // a charge, then its replay
		if _, err := client.Charge(cctx, req); err != nil {
			t.Fatal(err)
		}
	}
	// Stripe's refusals, counted by error type and code.
	for _, pm := range []string{"pm_card_chargeDeclined", "pm_card_chargeDeclinedExpiredCard", "pm_card_unknown"} {
		if _, err := client.Charge(cctx, &billingv1.ChargeRequest{RequestId: "obs-" + pm, Amount: 700, Currency: "usd", PaymentMethodId: pm}); err == nil {
			t.Fatalf("%s: charge succeeded", pm)
		}
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metrics := string(body)
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Charge",grpc_service="billing.v1.BillingService",grpc_type="unary"} 2`,
		`billingd_stripe_requests_total{code="",endpoint="payment_intents.create",error_type="",outcome="ok"} 1`,
		`billingd_idempotency_events_total{event="replay",method="Charge"} 1`,
		`billingd_stripe_requests_total{code="card_declined",endpoint="payment_intents.create",error_type="card_error",outcome="declined"} 1`,
		`billingd_stripe_requests_total{code="expired_card",endpoint="payment_intents.create",error_type="card_error",outcome="declined"} 1`,
		`billingd_stripe_requests_total{code="resource_missing",endpoint="payment_intents.create",error_type="invalid_request_error",outcome="missing"} 1`,
		`grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="Charge",grpc_service="billing.v1.BillingService",grpc_type="unary"} 2`,
		`grpc_server_handled_total{grpc_code="NotFound",grpc_method="Charge",grpc_service="billing.v1.BillingService",grpc_type="unary"} 1`,
		`billingd_records{state="FAILED"} 3`,
		`billingd_records{state="SUCCEEDED"} 1`,
		`billingd_records{state="PENDING"} 0`,
		`billingd_stripe_max_in_flight 5`,
		`billingd_stripe_calls_in_flight 0`,
		`billingd_stripe_slot_waits_total 0`,
		`billingd_reconciler_total{kind="passes"}`,
		`billingd_bbolt_commit_seconds_count`,
		`grpc_server_handling_seconds_bucket`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// The log line of the first Charge names the caller, request, outcome and Stripe's request id.
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, `"grpc.method":"Charge"`) && strings.Contains(l, `"replayed":false`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if line == nil {
		t.Fatalf("no finish line for the first Charge in:\n%s", logs.String())
	}
	for k, want := range map[string]any{"caller": "anonymous", "request_id": "obs-1", "replayed": false, "attempts": float64(1), "grpc.code": "OK"} {
		if line[k] != want {
			t.Errorf("log %s = %v, want %v (line %v)", k, line[k], want, line)
		}
	}
	if id, _ := line["stripe_request_id"].(string); !strings.HasPrefix(id, "req_") {
		t.Errorf("log stripe_request_id = %v", line["stripe_request_id"])
	}

	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Shutdown flushed the spans: the Stripe POST that the log line names (by
	// Stripe's request id) is in the same trace as a Charge server span.
	spans := col.snapshot()
	var stripe *tracepb.Span
	for _, sp := range spans {
		for _, a := range sp.GetAttributes() {
			if a.GetKey() == "stripe.request_id" && a.GetValue().GetStringValue() == line["stripe_request_id"] {
				stripe = sp
			}
		}
	}
	if stripe == nil || stripe.GetName() != "stripe POST /v1/payment_intents" {
		t.Fatalf("no Stripe span tagged stripe.request_id=%v among %d spans (got %v)", line["stripe_request_id"], len(spans), stripe)
	}
	var rpc *tracepb.Span
	for _, sp := range spans {
		if sp.GetName() == "billing.v1.BillingService/Charge" && sp.GetKind() == tracepb.Span_SPAN_KIND_SERVER &&
			bytes.Equal(sp.GetTraceId(), stripe.GetTraceId()) {
			rpc = sp
		}
	}
	if rpc == nil {
		t.Errorf("Stripe span's trace %s has no Charge server span", hex.EncodeToString(stripe.GetTraceId()))
	}
}

// slowCount is a store whose full count does not answer within the scrape's
// budget, as on a PostgreSQL table too big to count in a second.
type slowCount struct{ *storage.DB }

func (slowCount) CountByState(ctx context.Context) (map[service.State]int, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestRecordCounts: billingd_records has every state when the store counts
// them in time, and still the open states (which the alerts watch) when the
// full count runs out of time.
func TestRecordCounts(t *testing.T) {
	t.Parallel()
	db, err := storage.Open(filepath.Join(t.TempDir(), "billingd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	now := time.Now()
	for i, st := range []service.State{service.StatePending, service.StateSucceeded, service.StateSucceeded} {
		id := fmt.Sprintf("r%d", i)
		rec, created, err := db.Claim(ctx, service.Record{Caller: "acme", RequestID: id, Method: service.MethodCharge,
			Fingerprint: []byte(id), StripeKey: "bd1_" + id, State: service.StatePending, Attempts: 1,
			Created: now, FirstAttempt: now, Updated: now})
		if err != nil || !created {
			t.Fatalf("Claim %s: created %v, %v", id, created, err)
		}
		if st != service.StatePending {
			rec.State, rec.Result = st, service.Result{ObjectID: "pi_" + id, Status: "succeeded"}
			if err := db.Put(ctx, rec); err != nil {
				t.Fatalf("Put %s: %v", id, err)
			}
		}
	}

	all := map[string]float64{"PENDING": 1, "SUCCEEDED": 2, "FAILED": 0, "INDETERMINATE": 0,
		"REQUIRES_ACTION": 0, "PROCESSING": 0, "AUTHORIZED": 0}
	if got := recordCounts(ctx, db); !reflect.DeepEqual(got, all) {
		t.Errorf("recordCounts = %v, want %v", got, all)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	open := map[string]float64{"PENDING": 1, "INDETERMINATE": 0, "REQUIRES_ACTION": 0, "PROCESSING": 0, "AUTHORIZED": 0}
	if got := recordCounts(short, slowCount{db}); !reflect.DeepEqual(got, open) {
		t.Errorf("recordCounts with a full count past its budget = %v, want the open states %v", got, open)
	}
}
