package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/closedloop"
	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// benchServer is billingd wired as `billingd serve --stripe-sim` wires it:
// the simulator over real loopback HTTP, stripeapi with its default
// transport and retries, a real bbolt file, the service and the production
// gRPC server and interceptor chain with JSON logging (to io.Discard: the
// formatting is measured, the sink is not) on a loopback listener.
type benchServer struct {
	sim    *stripesim.Sim
	db     *storage.DB
	conn   *grpc.ClientConn
	client billingv1.BillingServiceClient
	health healthpb.HealthClient
}

func newBenchServer(b *testing.B) *benchServer {
	b.Helper()
	bs := &benchServer{sim: stripesim.New(stripesim.Config{Seed: 1})}
	simLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: bs.sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(simLis) }()
	b.Cleanup(func() { _ = hs.Close() })

	bs.db, err = storage.Open(filepath.Join(b.TempDir(), "billingd.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bs.db.Close() })
	payments, err := stripeapi.New(stripeapi.Config{Key: "sk_test_billingd_bench", URL: "http://" + simLis.Addr().String()})
	if err != nil {
		b.Fatal(err)
	}
	svc := service.New(bs.db, payments)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Close(ctx)
	})
	srv, err := server.New(server.DefaultConfig(), svc, slog.New(slog.NewJSONHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	bs.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bs.conn.Close() })
	bs.client = billingv1.NewBillingServiceClient(bs.conn)
	bs.health = healthpb.NewHealthClient(bs.conn)
	return bs
}

// benchCharge is the charge every case sends, only request_id varying.
func benchCharge(id string) *billingv1.ChargeRequest {
	return &billingv1.ChargeRequest{RequestId: id, Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_visa"}
}

// BenchmarkServer drives the whole server in-process over loopback (one
// HTTP/2 connection, like ghz's default) at closed-loop concurrency c:
// health (the ceiling), replay of 100 charged request_ids, new charges, and
// a mix where every tenth call repeats the id of the call just before it,
// which is still in flight. ns/op is wall time per call at that concurrency
// (1/throughput); allocs/op and B/op count client and server together, so
// compare them with health's. With -cpuprofile, the server side is what
// sits under grpc.(*Server).handleStream and the simulator under
// stripesim.(*Sim).ServeHTTP.
func BenchmarkServer(b *testing.B) {
	for _, c := range []int{1, 64} {
		b.Run(fmt.Sprintf("health/c=%d", c), func(b *testing.B) {
			bs := newBenchServer(b)
			req := &healthpb.HealthCheckRequest{Service: billingv1.BillingService_ServiceDesc.ServiceName}
			closedloop.Run(b, c, func(ctx context.Context, _ int) error {
				_, err := bs.health.Check(ctx, req)
				return err
			})
		})
		b.Run(fmt.Sprintf("replay/c=%d", c), func(b *testing.B) {
			bs := newBenchServer(b)
			const ids = 100
			for i := range ids {
				if _, err := bs.client.Charge(context.Background(), benchCharge("replay-"+strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			closedloop.Run(b, c, func(ctx context.Context, i int) error {
				resp, err := bs.client.Charge(ctx, benchCharge("replay-"+strconv.Itoa(i%ids)))
				if err == nil && !resp.GetReplayed() {
					return fmt.Errorf("call %d was not a replay", i)
				}
				return err
			})
			if got := len(bs.sim.PaymentIntents()); got != ids {
				b.Errorf("%d PaymentIntents at the simulator, want %d", got, ids)
			}
		})
		b.Run(fmt.Sprintf("new/c=%d", c), func(b *testing.B) {
			bs := newBenchServer(b)
			closedloop.Run(b, c, func(ctx context.Context, i int) error {
				resp, err := bs.client.Charge(ctx, benchCharge("new-"+strconv.Itoa(i)))
				if err == nil && resp.GetReplayed() {
					return fmt.Errorf("new charge %d answered as a replay", i)
				}
				return err
			})
			if got := len(bs.sim.PaymentIntents()); got != b.N {
				b.Errorf("%d PaymentIntents at the simulator, want %d", got, b.N)
			}
		})
		if c == 1 {
			continue // nothing is in flight alongside a lone caller
		}
		b.Run(fmt.Sprintf("mix/c=%d", c), func(b *testing.B) {
			bs := newBenchServer(b)
			var replayed atomic.Int64
			closedloop.Run(b, c, func(ctx context.Context, i int) error {
				if i%10 == 1 {
					i-- // the same id as the call just before
				}
				resp, err := bs.client.Charge(ctx, benchCharge("mix-"+strconv.Itoa(i)))
				if resp.GetReplayed() {
					replayed.Add(1)
				}
				return err
			})
			b.ReportMetric(float64(replayed.Load())/float64(b.N), "replayed/op")
			if got, want := len(bs.sim.PaymentIntents()), b.N-(b.N+8)/10; got != want {
				b.Errorf("%d PaymentIntents at the simulator, want %d", got, want)
			}
		})
	}
}
