package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// flakyStore is a Pinger whose answer the test sets.
type flakyStore struct{ down atomic.Bool }

func (f *flakyStore) Ping(context.Context) error {
	if f.down.Load() {
		return errors.New("store down")
	}
	return nil
}

// waitHealth waits up to within for both health services to say want.
func waitHealth(t *testing.T, h *harness, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) {
	t.Helper()
	hc := healthpb.NewHealthClient(h.conn)
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, svc := range []string{"", "billing.v1.BillingService"} {
			resp, err := hc.Check(h.ctx(), &healthpb.HealthCheckRequest{Service: svc})
			if err != nil {
				t.Fatalf("health %q: %v", svc, err)
			}
			ok = ok && resp.GetStatus() == want
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health not %v within %v", want, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHealthFollowsStorePings(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	store := &flakyStore{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.srv.FollowStore(ctx, store, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })

	waitHealth(t, h, healthpb.HealthCheckResponse_SERVING, time.Second)
	store.down.Store(true)
	waitHealth(t, h, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	if h.srv.StoreUp() {
		t.Error("StoreUp after a failed ping")
	}
	store.down.Store(false)
	waitHealth(t, h, healthpb.HealthCheckResponse_SERVING, time.Second)
	if !h.srv.StoreUp() {
		t.Error("StoreUp false after the store came back")
	}
}

// A call answered STORAGE_UNAVAILABLE turns health NOT_SERVING at once,
// before any ping; a ping that succeeds brings it back.
func TestHealthNotServingOnStorageUnavailable(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	if err := h.db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Charge(h.ctx(), visa("no-disk"))
	if _, ei := errInfo(t, err, codes.Unavailable); ei.GetReason() != "STORAGE_UNAVAILABLE" {
		t.Fatalf("charge without the store: %v", err)
	}
	waitHealth(t, h, healthpb.HealthCheckResponse_NOT_SERVING, 0)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.srv.FollowStore(ctx, &flakyStore{}, 20*time.Millisecond) }()
	t.Cleanup(func() { cancel(); <-done })
	waitHealth(t, h, healthpb.HealthCheckResponse_SERVING, time.Second)
}
