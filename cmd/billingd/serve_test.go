package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/storage"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitServing polls health until BillingService is SERVING, for at most
// 20 s; it fails with billingd's output if not, or if billingd exits first.
func waitServing(t *testing.T, conn *grpc.ClientConn, out fmt.Stringer, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "billing.v1.BillingService"})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("billingd exited: %v; output:\n%s", err, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not SERVING within 20s: %v; output:\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestServeWithSimulator runs the real binary's entry point as `make run`
// does, charges through it, and stops it as SIGTERM would.
func TestServeWithSimulator(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	db := filepath.Join(t.TempDir(), "data", "billingd.db")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--stripe-sim", "--listen", addr, "--db", db, "--log-format", "text"},
			envMap(map[string]string{"STRIPE_SECRET_KEY": "sk_live_must_not_appear"}), &logs, &logs)
	}()

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, &logs, done)

	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := billingv1.NewBillingServiceClient(conn).Charge(cctx, &billingv1.ChargeRequest{
		RequestId: "cmd-1", Amount: 500, Currency: "eur", PaymentMethodId: "pm_card_visa"})
	if err != nil {
		t.Fatalf("Charge: %v", err)
	}
	if !strings.HasPrefix(resp.GetPaymentIntentId(), "pi_") || resp.GetStatus() != "succeeded" {
		t.Errorf("Charge = %v", resp)
	}

	stop() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s")
	}
	if strings.Contains(logs.String(), "sk_live_must_not_appear") {
		t.Error("logs contain the Stripe key")
	}
	// The database was closed: another process could open it now.
	reopened, err := storage.Open(db)
	if err != nil {
		t.Fatalf("reopen after shutdown: %v", err)
	}
	defer reopened.Close()
	if rec, found, err := reopened.Get(context.Background(), "anonymous", "cmd-1"); err != nil || !found || rec.Result.ObjectID != resp.GetPaymentIntentId() {
		t.Errorf("stored record = %+v, %v, %v", rec, found, err)
	}
}
