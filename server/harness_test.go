package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripehttp"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/postgres"
	"github.com/billingd/billingd/storage/storagetest"
)

// harness is a whole billingd: the Stripe simulator over real HTTP, a real
// bbolt file (or a PostgreSQL store), the service, and the production gRPC
// server and interceptor chain on a loopback listener.
type harness struct {
	t      testing.TB
	clock  *stripesim.ManualClock
	sim    *stripesim.Sim
	simURL string
	dbPath string
	db     *storage.DB // nil on PostgreSQL
	store  storagetest.Store
	svc    *service.Service
	srv    *server.Server
	addr   string
	conn   *grpc.ClientConn
	client billingv1.BillingServiceClient
}

type harnessOpts struct {
	sim     *stripesim.Sim // share one simulator between harnesses
	simURL  string
	clock   *stripesim.ManualClock
	simCfg  stripesim.Config
	svcCfg  *service.Config
	svcOpts []service.Option
	// records, when set, wraps the store the service is given.
	records   func(service.Store) service.Store
	srvCfg    *server.Config
	stripeKey string
	// stripeAttempts bounds the Stripe retry layer's attempts (0: 4).
	stripeAttempts int
	// stripeSlots is the Stripe client's MaxInFlight (0: its default).
	stripeSlots int
	log         io.Writer
	// postgres, when set, is the DSN of the database to keep records in
	// instead of a bbolt file: harnesses sharing one are replicas.
	postgres string
}

const testKey = "sk_test_billingd_tests"

// testLeaseTTL is the lease TTL of PostgreSQL harnesses: short, so a
// replica's death is noticed quickly.
const testLeaseTTL = 2 * time.Second

var epoch = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// testServiceConfig keeps the production rules but short waits.
func testServiceConfig() service.Config {
	c := service.DefaultConfig()
	c.CallBudget = 10 * time.Second
	c.SearchRate = rate.Inf // a burst of 1 at any finite rate refuses a second search within the same instant
	c.RetryAfter = 50 * time.Millisecond
	return c
}

func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, clock: o.clock}
	if h.clock == nil {
		h.clock = stripesim.NewManualClock(epoch)
	}
	h.sim, h.simURL = o.sim, o.simURL
	if h.sim == nil {
		cfg := o.simCfg
		cfg.Clock = h.clock
		if cfg.Seed == 0 {
			cfg.Seed = 1
		}
		h.sim = stripesim.New(cfg)
		hs := httptest.NewServer(h.sim)
		t.Cleanup(hs.Close)
		h.simURL = hs.URL
	}
	if o.postgres != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pg, err := postgres.Open(ctx, o.postgres, postgres.WithLeaseTTL(testLeaseTTL))
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		h.store = pg
		t.Cleanup(func() { _ = pg.Close() })
	} else {
		h.dbPath = filepath.Join(t.TempDir(), "billingd.db")
		db, err := storage.Open(h.dbPath)
		if err != nil {
			t.Fatalf("open db: %v", err)
		}
		h.db, h.store = db, db
		t.Cleanup(func() { _ = db.Close() })
	}

	key := o.stripeKey
	if key == "" {
		key = testKey
	}
	attempts := o.stripeAttempts
	if attempts == 0 {
		attempts = 4
	}
	payments, err := stripeapi.New(stripeapi.Config{
		Key: key, URL: h.simURL, Timeout: 5 * time.Second, MaxInFlight: o.stripeSlots,
		RetryOptions: []stripehttp.RetryOption{
			stripehttp.WithMaxAttempts(attempts),
			stripehttp.WithBackoff(time.Millisecond, 5*time.Millisecond),
		},
	})
	if err != nil {
		t.Fatalf("stripe client: %v", err)
	}
	svcCfg := testServiceConfig()
	if o.svcCfg != nil {
		svcCfg = *o.svcCfg
	}
	var records service.Store = h.store
	if o.records != nil {
		records = o.records(records)
	}
	h.svc = service.New(records, payments, append([]service.Option{service.WithConfig(svcCfg), service.WithClock(h.clock)}, o.svcOpts...)...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.svc.Close(ctx)
	})

	srvCfg := server.DefaultConfig()
	if o.srvCfg != nil {
		srvCfg = *o.srvCfg
	}
	logw := o.log
	if logw == nil {
		logw = io.Discard
	}
	h.srv, err = server.New(srvCfg, h.svc, slog.New(slog.NewJSONHandler(logw, nil)))
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	go func() { _ = h.srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
	})
	h.conn, err = grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.conn.Close() })
	h.client = billingv1.NewBillingServiceClient(h.conn)
	return h
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	h.t.Cleanup(cancel)
	return ctx
}

func visa(id string) *billingv1.ChargeRequest {
	return &billingv1.ChargeRequest{RequestId: id, Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_visa"}
}

// intentsFor returns the simulator's PaymentIntents tagged with the request key
// of (caller, requestID): what Stripe holds for that operation.
func (h *harness) intentsFor(caller, requestID string) []stripesim.PaymentIntent {
	h.t.Helper()
	want := service.RequestKey(caller, requestID)
	var out []stripesim.PaymentIntent
	for _, pi := range h.sim.PaymentIntents() {
		if pi.Metadata[service.MetadataRequestKey] == want {
			out = append(out, pi)
		}
	}
	return out
}

func (h *harness) subscriptionsFor(caller, requestID string) []stripesim.Subscription {
	h.t.Helper()
	want := service.RequestKey(caller, requestID)
	var out []stripesim.Subscription
	for _, s := range h.sim.Subscriptions() {
		if s.Metadata[service.MetadataRequestKey] == want {
			out = append(out, s)
		}
	}
	return out
}

func (h *harness) record(caller, requestID string) (service.Record, bool) {
	h.t.Helper()
	rec, found, err := h.store.Get(context.Background(), caller, requestID)
	if err != nil {
		h.t.Fatalf("get record: %v", err)
	}
	return rec, found
}

// errInfo returns the status of err and its ErrorInfo, failing the test if the
// code differs or the detail is missing.
func errInfo(t *testing.T, err error, want codes.Code) (*status.Status, *errdetails.ErrorInfo) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a status error: %v", err)
	}
	if st.Code() != want {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), want)
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			if ei.GetDomain() != "billingd" {
				t.Errorf("ErrorInfo domain = %q", ei.GetDomain())
			}
			return st, ei
		}
	}
	t.Fatalf("status %v has no ErrorInfo", st)
	return nil, nil
}

func retryInfo(st *status.Status) *errdetails.RetryInfo {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri
		}
	}
	return nil
}
