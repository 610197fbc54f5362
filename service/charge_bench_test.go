package service_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/closedloop"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// instantStripe answers every PaymentIntent create at once. Only
// CreatePaymentIntent is implemented: the benchmark calls nothing else, and
// the embedded interface keeps it compiling as Payments grows.
type instantStripe struct {
	service.Payments
	creates atomic.Int64
}

func (p *instantStripe) CreatePaymentIntent(_ context.Context, _ string, c service.ChargeParams) (service.Result, error) {
	n := p.creates.Add(1)
	return service.Result{ObjectID: "pi_" + strconv.FormatInt(n, 10), Status: "succeeded", Amount: c.Amount, Currency: c.Currency}, nil
}

func charge(id string) service.ChargeRequest {
	return service.ChargeRequest{RequestID: id, Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa"}
}

// BenchmarkServiceCharge is the state machine on a real bbolt file with an
// instant Stripe, at closed-loop concurrency c: a replay (the read of a
// final record) and a new charge (claim, the drive, the outcome write: two
// fsync'd commits, shared between concurrent calls by the group commit).
// What it adds to storage's own benchmarks is the service's cost: encoding,
// fingerprint, keys, the in-flight map, the drive goroutine.
func BenchmarkServiceCharge(b *testing.B) {
	for _, c := range []int{1, 64} {
		b.Run(fmt.Sprintf("replay/c=%d", c), func(b *testing.B) {
			svc, stripe := newBenchService(b)
			const ids = 100
			for i := range ids {
				if _, err := svc.Charge(context.Background(), "bench", charge("r"+strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			closedloop.Run(b, c, func(ctx context.Context, i int) error {
				out, err := svc.Charge(ctx, "bench", charge("r"+strconv.Itoa(i%ids)))
				if err == nil && !out.Replayed {
					return fmt.Errorf("call %d was not a replay", i)
				}
				return err
			})
			if got := stripe.creates.Load(); got != ids {
				b.Errorf("%d creates at Stripe, want %d", got, ids)
			}
		})
		b.Run(fmt.Sprintf("new/c=%d", c), func(b *testing.B) {
			svc, stripe := newBenchService(b)
			closedloop.Run(b, c, func(ctx context.Context, i int) error {
				out, err := svc.Charge(ctx, "bench", charge("n"+strconv.Itoa(i)))
				if err == nil && out.Replayed {
					return fmt.Errorf("new charge %d answered as a replay", i)
				}
				return err
			})
			if got := stripe.creates.Load(); got != int64(b.N) {
				b.Errorf("%d creates at Stripe, want %d", got, b.N)
			}
		})
	}
}

func newBenchService(b *testing.B) (*service.Service, *instantStripe) {
	b.Helper()
	db, err := storage.Open(filepath.Join(b.TempDir(), "billingd.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	stripe := &instantStripe{}
	svc := service.New(db, stripe)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Close(ctx)
	})
	return svc, stripe
}
