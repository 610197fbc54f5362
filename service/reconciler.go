package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// OpenRecords is what the reconciler needs from the record store beyond
// Records: the open records, oldest first, and counts by state for its
// startup report.
type OpenRecords interface {
	ListOpen(ctx context.Context, limit int) ([]Record, error)
	// CountByState counts every state; on PostgreSQL it counts the table.
	CountByState(ctx context.Context) (map[State]int, error)
	// CountOpen counts the open (not final) states only, every one present
	// in the map: an index of open records, cheap at any size.
	CountOpen(ctx context.Context) (map[State]int, error)
}

// ReconcilerConfig tunes the reconciler; DefaultReconcilerConfig returns the defaults.
type ReconcilerConfig struct {
	// Interval is the time between passes over the open records.
	Interval time.Duration
	// Backoff is the wait before a record is tried again after its first
	// attempt; it doubles with every attempt up to MaxBackoff, so a record
	// stuck on, say, STRIPE_AUTH does not hammer Stripe.
	Backoff    time.Duration
	MaxBackoff time.Duration
	// Workers bounds the drives one pass runs at once.
	Workers int
	// ScanLimit bounds the open records one pass looks at (oldest first).
	ScanLimit int
}

// DefaultReconcilerConfig returns the production defaults.
func DefaultReconcilerConfig() ReconcilerConfig {
	return ReconcilerConfig{
		Interval:   30 * time.Second,
		Backoff:    30 * time.Second,
		MaxBackoff: 30 * time.Minute,
		Workers:    4,
		ScanLimit:  10000,
	}
}

// ReconcilerStats counts what the reconciler did since it was made, for
// metrics.
type ReconcilerStats struct {
	Passes   uint64 // passes completed
	Scanned  uint64 // open records looked at
	Redriven uint64 // PENDING records re-sent with their Stripe key
	// Succeeded and Failed count records a reconciler drive settled;
	// NotCreated is the part of Failed settled NOT_CREATED.
	Succeeded  uint64
	Failed     uint64
	NotCreated uint64
	Searches   uint64 // Stripe searches made
	Follows    uint64 // followed objects retrieved from Stripe
	Errors     uint64 // passes or drives that ended on a storage or Stripe error
}

// counters are ReconcilerStats as they are kept.
type counters struct {
	passes, scanned, redriven, succeeded, failed, notCreated, searches, follows, errors atomic.Uint64
}

// Reconciler resolves records nobody is driving (docs/design.md, rule 8): PENDING
// records left by a crash or by callers who never retried, and INDETERMINATE
// ones. Its drives go through the same in-flight map as callers' requests: a
// caller retry joins a reconciler drive and the reverse, never two drives of
// one record. With several replicas on one database, a drive also takes the
// record's lease first: a record another replica is driving is skipped, and
// one whose replica died is taken over once its lease expires.
type Reconciler struct {
	svc   *Service
	store OpenRecords
	cfg   ReconcilerConfig
	log   *slog.Logger
	stats counters

	// searched remembers, per record, how often a lookup (a search, or a
	// followed object's retrieve) learnt nothing final and when the next one
	// is due (lookups do not always change the record).
	mu       sync.Mutex
	searched map[string]retryState
}

type retryState struct {
	tries int
	next  time.Time
}

// ReconcilerOption sets an optional knob of NewReconciler.
type ReconcilerOption func(*Reconciler)

// WithReconcilerConfig replaces DefaultReconcilerConfig.
func WithReconcilerConfig(c ReconcilerConfig) ReconcilerOption {
	return func(r *Reconciler) { r.cfg = c }
}

// WithLogger sets where the reconciler reports; the default discards.
func WithLogger(l *slog.Logger) ReconcilerOption { return func(r *Reconciler) { r.log = l } }

// NewReconciler returns a reconciler for svc's records, listed from store
// (the same database svc writes).
func NewReconciler(svc *Service, store OpenRecords, opts ...ReconcilerOption) *Reconciler {
	r := &Reconciler{
		svc:      svc,
		store:    store,
		cfg:      DefaultReconcilerConfig(),
		log:      slog.New(slog.DiscardHandler),
		searched: map[string]retryState{},
	}
	for _, o := range opts {
		o(r)
	}
	r.cfg.Workers = max(r.cfg.Workers, 1)
	return r
}

// Stats returns the counters.
func (r *Reconciler) Stats() ReconcilerStats {
	c := &r.stats
	return ReconcilerStats{
		Passes: c.passes.Load(), Scanned: c.scanned.Load(), Redriven: c.redriven.Load(),
		Succeeded: c.succeeded.Load(), Failed: c.failed.Load(), NotCreated: c.notCreated.Load(),
		Searches: c.searches.Load(), Follows: c.follows.Load(), Errors: c.errors.Load(),
	}
}

// Run reports the open records, makes a first pass at once (after a restart
// every open record is ownerless, so it ignores backoff), and then one pass
// per Interval until ctx is done. It returns when its drives have finished;
// stop it before closing the Service.
func (r *Reconciler) Run(ctx context.Context) {
	if counts, err := r.store.CountOpen(ctx); err != nil {
		r.log.Error("reconciler: cannot count records", "err", err)
	} else {
		r.log.Info("open records at startup",
			"pending", counts[StatePending], "indeterminate", counts[StateIndeterminate],
			"requires_action", counts[StateRequiresAction], "processing", counts[StateProcessing],
			"authorized", counts[StateAuthorized])
	}
	r.pass(ctx, true)
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.pass(ctx, false)
		}
	}
}

// Pass makes one pass over the open records, honouring backoff, and returns
// when its drives are done. Run calls it; tests call it to step.
func (r *Reconciler) Pass(ctx context.Context) { r.pass(ctx, false) }

func (r *Reconciler) pass(ctx context.Context, startup bool) {
	recs, err := r.store.ListOpen(ctx, r.cfg.ScanLimit)
	if err != nil {
		if ctx.Err() == nil {
			r.stats.errors.Add(1)
			r.log.Error("reconciler: cannot list open records", "err", err)
		}
		return
	}
	r.stats.scanned.Add(uint64(len(recs)))
	now := r.svc.clock.Now()
	sem := make(chan struct{}, r.cfg.Workers)
	var wg sync.WaitGroup
	seen := make(map[string]bool, len(recs))
	for _, rec := range recs {
		key := inflightKey(rec.Caller, rec.RequestID)
		seen[key] = true
		// A lookup (search, or retrieve of a followed record's object)
		// does not change the record when it learns nothing new, so its
		// backoff is kept here; a re-send's follows the record's attempts.
		search := rec.State == StateIndeterminate || (rec.State == StatePending && r.svc.pastKeyWindow(rec))
		lookup := search || rec.State.Followed()
		if !startup && !r.due(key, rec, lookup, now) {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		c, owner := r.svc.own(key, rec.Fingerprint)
		if !owner { // a caller, a webhook or an earlier pass is on it
			<-sem
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r.svc.run(r.svc.base, key, c, func(ctx context.Context) (Result, bool, error) {
				return r.redrive(ctx, rec.Caller, rec.RequestID, lookup)
			})
			r.account(key, lookup, c, now)
		}()
	}
	wg.Wait()
	r.forget(seen)
	r.stats.passes.Add(1)
}

// redrive re-reads the record inside the owned slot (a drive may have
// settled it since the listing), takes its lease and advances it. A record
// gone meanwhile (swept) is left alone: it is never recreated from the
// listing. One another replica is driving is left to it. Either way the
// drive ends with errNotDriven: nothing to count, and nothing a caller that
// joined it could take for an answer.
func (r *Reconciler) redrive(ctx context.Context, caller, requestID string, lookup bool) (Result, bool, error) {
	s := r.svc
	rec, found, err := s.records.Get(ctx, caller, requestID)
	if err != nil {
		return Result{}, false, s.storageError(err)
	}
	if !found {
		return Result{}, false, errNotDriven
	}
	if rec.State.Final() {
		return s.advance(ctx, rec, &r.stats)
	}
	rec, leased, err := s.records.Acquire(ctx, rec)
	switch {
	case err != nil:
		return Result{}, false, s.storageError(err)
	case rec.State == StateUnspecified || !leased:
		return Result{}, false, errNotDriven
	case rec.State.Final():
		return s.advance(ctx, rec, &r.stats)
	}
	if !lookup {
		r.stats.redriven.Add(1)
	}
	return s.underLease(ctx, rec, func() (Result, bool, error) { return s.advance(ctx, rec, &r.stats) })
}

// due reports whether rec's backoff has passed.
func (r *Reconciler) due(key string, rec Record, search bool, now time.Time) bool {
	if search {
		r.mu.Lock()
		st, ok := r.searched[key]
		r.mu.Unlock()
		return !ok || !now.Before(st.next)
	}
	return now.Sub(rec.Updated) >= r.backoff(rec.Attempts)
}

// backoff is Backoff doubled per attempt after the first, capped.
func (r *Reconciler) backoff(attempts int) time.Duration {
	d := r.cfg.Backoff
	for i := 1; i < attempts && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, r.cfg.MaxBackoff)
}

// account counts a finished drive and schedules the next lookup of a record
// that is still open.
func (r *Reconciler) account(key string, lookup bool, c *call, now time.Time) {
	switch reason := ReasonOf(c.err); {
	case errors.Is(c.err, errNotDriven):
		return // the replica holding it accounts for it; forget drops a gone one
	case c.err == nil:
		if c.result.State == StateSucceeded {
			r.stats.succeeded.Add(1)
		}
	case reason == ReasonAuthenticationRequired:
		// The charge waits for the customer: followed, nothing to count.
	case reason.final():
		r.stats.failed.Add(1)
		if reason == ReasonNotCreated {
			r.stats.notCreated.Add(1)
		}
	case reason == ReasonOutcomePending:
		// Nothing found yet: the expected answer while search lags.
	default:
		r.stats.errors.Add(1)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !lookup || endsFinal(c.result, c.err) {
		delete(r.searched, key)
		return
	}
	st := r.searched[key]
	st.tries++
	st.next = now.Add(r.backoff(st.tries))
	r.searched[key] = st
}

// forget drops the lookup state of records no longer open.
func (r *Reconciler) forget(seen map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.searched {
		if !seen[k] {
			delete(r.searched, k)
		}
	}
}
