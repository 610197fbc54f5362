package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/redact"
)

// Pinger says whether the record store can be written now; storage.DB and
// postgres.Store both do. Ping must be cheap: it runs every probe interval.
type Pinger interface {
	Ping(ctx context.Context) error
}

// storeHealth is what health knows of the record store. billingd answers
// nothing useful without it (rule 10: no record, no Stripe call), so while
// it is down both health services say NOT_SERVING and load balancers send
// the calls to replicas that can record them.
type storeHealth struct {
	up       atomic.Bool
	failedAt atomic.Int64 // unix ns of the last failure seen, by a call or a ping
	mu       sync.Mutex   // serialises up's transitions with the health status
}

// StoreUp reports whether the record store was writable as last seen: false
// from a call answered STORAGE_UNAVAILABLE or a failed ping until a ping
// succeeds a whole probe interval after the last failure.
func (s *Server) StoreUp() bool { return s.store.up.Load() }

// StoreFailed turns health NOT_SERVING at once: a call could not be
// recorded, or a ping failed. Safe and cheap for every failing call.
func (s *Server) StoreFailed(err error) {
	s.store.failedAt.Store(time.Now().UnixNano())
	if !s.store.up.Load() {
		return
	}
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	if !s.store.up.Load() {
		return
	}
	s.store.up.Store(false)
	s.setServing(healthpb.HealthCheckResponse_NOT_SERVING)
	s.log.Warn("record store unavailable: health NOT_SERVING; calls answer STORAGE_UNAVAILABLE until it is back",
		"err", redact.Scrub(err.Error()))
}

// FollowStore pings the store every interval until ctx ends and keeps
// health in step: NOT_SERVING on a failure, SERVING again once a ping
// succeeds and no call has failed for an interval, so a store that fails
// every other write does not flap. Each ping is bounded by the interval.
func (s *Server) FollowStore(ctx context.Context, store Pinger, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, interval)
		err := store.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.StoreFailed(err)
			continue
		}
		if s.store.up.Load() || time.Since(time.Unix(0, s.store.failedAt.Load())) < interval {
			continue
		}
		s.store.mu.Lock()
		if !s.store.up.Load() {
			s.store.up.Store(true)
			s.setServing(healthpb.HealthCheckResponse_SERVING)
			s.log.Info("record store writable again: health SERVING")
		}
		s.store.mu.Unlock()
	}
}

// setServing sets both health services, the server's ("") and
// BillingService's. After Shutdown the health server ignores it: a
// draining server stays NOT_SERVING.
func (s *Server) setServing(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(billingv1.BillingService_ServiceDesc.ServiceName, st)
}
