package service

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// SweepStore is what the sweeper needs: bounded deletes of final records
// and of webhook event ids past retention, oldest first (by claim or by
// update, as the store keeps them), and of tombstones past theirs. Open
// records are never swept. Sweep leaves a tombstone (TombstoneOf, stamped
// sweptAt) of every record it deletes, in the same transaction.
type SweepStore interface {
	Sweep(ctx context.Context, updatedBefore, sweptAt time.Time, limit int) (int, error)
	SweepEvents(ctx context.Context, seenBefore time.Time, limit int) (int, error)
	SweepTombstones(ctx context.Context, sweptBefore time.Time, limit int) (int, error)
}

// SweeperConfig tunes the sweeper; DefaultSweeperConfig returns the defaults.
type SweeperConfig struct {
	// Retention is how long a final record (and a webhook event id) is kept
	// after its last update: well past Stripe's 24 h key window, so a late
	// retry still replays.
	Retention time.Duration
	// TombstoneRetention is how long a swept record's tombstone is kept
	// after the sweep: a repeat within it is refused REQUEST_ID_EXPIRED;
	// after it the request_id is free again. 0 keeps them forever.
	TombstoneRetention time.Duration
	// Interval is the time between sweeps.
	Interval time.Duration
	// Batch bounds one delete transaction, so a sweep never holds the
	// writer lock for long.
	Batch int
}

// DefaultSweeperConfig returns the production defaults (docs/design.md, rule 9).
func DefaultSweeperConfig() SweeperConfig {
	return SweeperConfig{Retention: 7 * 24 * time.Hour, TombstoneRetention: 400 * 24 * time.Hour,
		Interval: 10 * time.Minute, Batch: 500}
}

// Sweeper deletes final records older than the retention window in bounded
// batches, so the database file stops growing under steady load: bbolt
// reuses the pages it frees.
type Sweeper struct {
	store SweepStore
	clock Clock
	cfg   SweeperConfig
	log   *slog.Logger
	swept atomic.Uint64
}

// NewSweeper returns a sweeper over store reading the time from clock (nil:
// the system clock).
func NewSweeper(store SweepStore, clock Clock, cfg SweeperConfig, log *slog.Logger) *Sweeper {
	if clock == nil {
		clock = systemClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Batch = max(cfg.Batch, 1)
	return &Sweeper{store: store, clock: clock, cfg: cfg, log: log}
}

// Swept returns how many records the sweeper deleted.
func (w *Sweeper) Swept() uint64 { return w.swept.Load() }

// Run sweeps once per Interval until ctx is done.
func (w *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := w.Sweep(ctx); err != nil && ctx.Err() == nil {
			w.log.Error("sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sweep deletes everything past retention, one batch per transaction, and
// returns how many records it deleted (each leaves a tombstone). Tombstones
// past their own horizon go too, in batches of the same size.
func (w *Sweeper) Sweep(ctx context.Context) (int, error) {
	now := w.clock.Now()
	cutoff := now.Add(-w.cfg.Retention)
	total := 0
	for {
		n, err := w.store.Sweep(ctx, cutoff, now, w.cfg.Batch)
		total += n
		w.swept.Add(uint64(n))
		if err != nil {
			return total, err
		}
		if n < w.cfg.Batch {
			break
		}
	}
	for {
		n, err := w.store.SweepEvents(ctx, cutoff, w.cfg.Batch)
		if err != nil {
			return total, err
		}
		if n < w.cfg.Batch {
			break
		}
	}
	if w.cfg.TombstoneRetention <= 0 {
		return total, nil
	}
	for {
		n, err := w.store.SweepTombstones(ctx, now.Add(-w.cfg.TombstoneRetention), w.cfg.Batch)
		if err != nil {
			return total, err
		}
		if n < w.cfg.Batch {
			return total, nil
		}
	}
}
