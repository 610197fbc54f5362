// Package service is billingd's idempotency state machine: it turns Charge and
// Subscribe calls into at most one Stripe object per (caller, request_id).
package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Clock tells the time; tests move it to cross the 23 h and retention windows.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config holds the service's tunables; DefaultConfig returns the defaults.
type Config struct {
	// CallBudget bounds one drive of a record (Stripe call plus retries). It runs
	// on a server-owned context, so a caller that hangs up does not abandon it.
	CallBudget time.Duration
	// KeyWindow is how long after the first attempt the Stripe key is trusted.
	// Stripe keeps keys 24 h; past this window billingd searches before sending.
	KeyWindow time.Duration
	// SearchLag is how long Stripe search may lag: an INDETERMINATE record with
	// nothing found is settled NOT_CREATED only after this long.
	SearchLag time.Duration
	// CoalesceWait caps how long a duplicate waits for the in-flight original
	// before it answers REQUEST_IN_PROGRESS (its own deadline caps it too).
	CoalesceWait time.Duration
	// SearchRate limits Stripe search calls (Stripe allows about 20 reads/s).
	SearchRate rate.Limit
	// RetryAfter is the RetryInfo delay suggested with UNAVAILABLE answers.
	RetryAfter time.Duration
	// ReplayCache is how many final outcomes are kept in memory to answer
	// repeats without a store read (0: none). About 0.25 KB each.
	ReplayCache int
	// Retention is the sweeper's: how long a final record is kept after its
	// last update. A cached outcome answers no longer than its record may
	// live, so a repeat past it gets the store's answer (the record, or its
	// tombstone's REQUEST_ID_EXPIRED), the same from every process. 0: no limit.
	Retention time.Duration
	// MaxWatches bounds one caller's open WatchOperation streams.
	MaxWatches int
	// AllowForeignObjects lets Refund, CapturePayment, CancelPayment and
	// CancelSubscription act on objects made outside billingd (no billingd
	// metadata). Another caller's objects stay NOT_FOUND.
	AllowForeignObjects bool
}

// DefaultConfig returns the production defaults.
func DefaultConfig() Config {
	return Config{
		CallBudget:   60 * time.Second,
		KeyWindow:    23 * time.Hour,
		SearchLag:    time.Hour,
		CoalesceWait: 20 * time.Second,
		SearchRate:   10,
		RetryAfter:   time.Second,
		ReplayCache:  16384,
		MaxWatches:   32,
		Retention:    DefaultSweeperConfig().Retention,
	}
}

// Option sets an optional knob of New.
type Option func(*Service)

// WithConfig replaces DefaultConfig.
func WithConfig(c Config) Option { return func(s *Service) { s.cfg = c } }

// WithClock injects the clock.
func WithClock(c Clock) Option { return func(s *Service) { s.clock = c } }

// Service runs Charge and Subscribe exactly once per (caller, request_id).
type Service struct {
	records  Store
	payments Payments
	cfg      Config
	clock    Clock
	search   *rate.Limiter
	observer Observer
	finals   *finals // final outcomes for replays; nil when ReplayCache is 0
	watches  *watchers

	// base is the server-owned parent of every drive; Close cancels it.
	base   context.Context
	cancel context.CancelFunc
	drives sync.WaitGroup
	work   *workers // the goroutines drives run on

	mu       sync.Mutex
	inflight map[string]*call
}

// call is one drive of a record, shared by every identical request that
// arrives while it runs (docs/design.md, rule 7).
type call struct {
	fingerprint []byte
	done        chan struct{}
	// Set before done is closed.
	result Result
	err    error
	sent   bool // the outcome came from a Stripe call made by this drive
}

// errNotDriven ends a background drive (the reconciler's, a webhook's) that
// left its record alone: another replica holds the lease, or the record is
// gone. It is not an answer: a caller that joined such a drive is told
// REQUEST_IN_PROGRESS, and its retry reaches whoever settles the record.
var errNotDriven = errors.New("service: record not driven here")

// New returns a Service on the given record store and Stripe client.
func New(records Store, payments Payments, opts ...Option) *Service {
	s := &Service{
		records:  records,
		payments: payments,
		cfg:      DefaultConfig(),
		clock:    systemClock{},
		inflight: make(map[string]*call),
		watches:  newWatchers(),
	}
	for _, o := range opts {
		o(s)
	}
	s.search = rate.NewLimiter(s.cfg.SearchRate, 1)
	s.finals = newFinals(s.cfg.ReplayCache)
	s.base, s.cancel = context.WithCancel(context.Background())
	s.work = newWorkers(workerIdle, s.base.Done())
	return s
}

// Close waits for in-flight drives to finish, at most until ctx is done, and
// then cancels them. Records of cancelled drives stay PENDING and are re-driven
// later with the same Stripe key.
// The error is a *CutError when drives were cut.
func (s *Service) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.drives.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		n := len(s.inflight)
		s.mu.Unlock()
		s.cancel()
		<-done
		return &CutError{Drives: n, err: ctx.Err()}
	}
}

// CutError is Close's answer when its context ended before every drive did:
// Drives were cancelled, and their records stay open (PENDING) to be driven
// again with the same Stripe keys.
type CutError struct {
	Drives int
	err    error
}

func (e *CutError) Error() string {
	return fmt.Sprintf("service: %d drives cut off at close: %v", e.Drives, e.err)
}

func (e *CutError) Unwrap() error { return e.err }

// Outcome is a call's answer. Replayed is true when this call did not itself
// cause the Stripe request: the answer came from the record or from a
// concurrent identical call. With an error, Replayed marks a final failure
// answered from the record.
type Outcome struct {
	Result   Result
	Replayed bool
}

// Charge creates and confirms a PaymentIntent, once per (caller, request_id).
func (s *Service) Charge(ctx context.Context, caller string, req ChargeRequest) (Outcome, error) {
	req.canonical()
	if err := checkRequest(req.RequestID, req.Metadata, checkAmount(req.Amount, req.Currency)...); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodCharge, req.encode())
}

// Subscribe creates a Subscription, once per (caller, request_id).
func (s *Service) Subscribe(ctx context.Context, caller string, req SubscribeRequest) (Outcome, error) {
	if err := checkRequest(req.RequestID, req.Metadata); err != nil {
		return Outcome{}, err
	}
	return s.do(ctx, caller, req.RequestID, MethodSubscribe, req.encode())
}

// GetOperation returns the caller's record of requestID.
func (s *Service) GetOperation(ctx context.Context, caller, requestID string) (Record, error) {
	rec, found, err := s.records.Get(ctx, caller, requestID)
	if err != nil {
		return Record{}, s.storageError(err)
	}
	if !found {
		msg := "no operation with this request_id"
		// Best effort: the answer is NOT_FOUND either way.
		if t, swept, terr := s.records.GetTombstone(ctx, caller, requestID); terr == nil && swept {
			msg = "no operation with this request_id: its record expired (the operation ended " + t.State.String() + ")"
		}
		return Record{}, &Error{Reason: ReasonNotFound, Message: msg}
	}
	return rec, nil
}

func checkRequest(requestID string, metadata map[string]string, more ...FieldViolation) error {
	var v []FieldViolation
	if requestID == "" {
		v = append(v, FieldViolation{Field: "request_id", Description: "value is required"})
	}
	v = append(v, checkMetadata(metadata)...)
	v = append(v, more...)
	if len(v) > 0 {
		return &Error{Reason: ReasonInvalidArgument, Message: "invalid request", Violations: v}
	}
	return nil
}

// do joins the in-flight drive of (caller, requestID) or starts one, then
// waits for its outcome within the caller's own context.
func (s *Service) do(ctx context.Context, caller, requestID string, method Method, params []byte) (Outcome, error) {
	fp := Fingerprint(params)
	out, ok, recorded, err := s.replayFinal(ctx, caller, requestID, method, fp)
	if ok {
		return out, err
	}
	key := inflightKey(caller, requestID)

	c, owner := s.own(key, fp)
	joined := !owner
	answerBy, bounded := s.answerBy(ctx, joined)
	if joined && !bytes.Equal(c.fingerprint, fp) {
		s.observe(method, EventFingerprintConflict)
		return Outcome{}, reusedError()
	}
	if owner {
		if err := s.startDrive(ctx, key, c, recorded, caller, requestID, method, params, fp); err != nil {
			return Outcome{}, err
		}
	} else {
		s.observe(method, EventCoalescedWait)
	}

	// A caller with a deadline is answered before it: if the drive has not
	// finished just before then (Stripe is slow), REQUEST_IN_PROGRESS, whose
	// UNAVAILABLE tells it to retry the same id; the drive goes on. A
	// duplicate gives up a little earlier, at most after CoalesceWait. (An
	// original whose record another replica is driving gets the same answer
	// from its drive, which waits only as long.)
	var giveUp <-chan time.Time
	if bounded {
		timer := time.NewTimer(time.Until(answerBy))
		defer timer.Stop()
		giveUp = timer.C
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	case <-giveUp:
		if joined {
			return Outcome{}, s.inProgress()
		}
		return Outcome{}, &Error{Reason: ReasonRequestInProgress, RetryAfter: s.cfg.RetryAfter,
			Message: "not finished before the call's deadline (Stripe is slow to answer); it goes on: retry with the same request_id"}
	}
	if errors.Is(c.err, errNotDriven) {
		return Outcome{}, s.inProgress()
	}
	replayed := joined || !c.sent
	if c.err != nil {
		// A final failure answered from the record is a replay too.
		out := Outcome{Replayed: replayed && ReasonOf(c.err).answered()}
		switch {
		case out.Replayed:
			s.observe(method, EventReplay)
		case ReasonOf(c.err) == ReasonRequestIDReused:
			s.observe(method, EventFingerprintConflict)
		}
		return out, c.err
	}
	if replayed {
		s.observe(method, EventReplay)
	}
	return Outcome{Result: c.result, Replayed: replayed}, nil
}

// coalesceWait is how long a duplicate waits for the drive in flight:
// CoalesceWait, cut to just before the caller's deadline.
func (s *Service) coalesceWait(ctx context.Context) time.Duration {
	wait := s.cfg.CoalesceWait
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)*9/10)
	}
	return wait
}

// startDrive admits the owner of c (see admit) and starts the drive of its
// new record on a worker. A function of its own, like loadFinal, to keep
// the Record off do's frame.
//
//go:noinline
func (s *Service) startDrive(ctx context.Context, key string, c *call, recorded bool, caller, requestID string, method Method, params, fp []byte) error {
	dctx, release, err := s.admit(ctx, recorded)
	if err != nil {
		s.disown(key, c, err)
		return err
	}
	rec := s.newRecord(caller, requestID, method, params, fp)
	wait := s.coalesceWait(ctx)
	s.work.start(func() {
		defer release()
		s.run(dctx, key, c, func(ctx context.Context) (Result, bool, error) { return s.resolve(ctx, rec, wait) })
	})
	return nil
}

// answerBy is when a call, arriving now, stops waiting for its drive and
// answers REQUEST_IN_PROGRESS: a duplicate after coalesceWait; the original
// just before its deadline (a twentieth of the time it has, 5 ms to 1 s,
// for the answer to reach it, whatever it spends waiting for admission),
// or never without one.
func (s *Service) answerBy(ctx context.Context, joined bool) (time.Time, bool) {
	now := time.Now()
	if joined {
		return now.Add(s.coalesceWait(ctx)), true
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return time.Time{}, false
	}
	return dl.Add(-min(max(dl.Sub(now)/20, 5*time.Millisecond), time.Second)), true
}

// admit waits, on the caller's goroutine and before anything is written, for
// room to call Stripe when the Payments limits its calls in flight (Gate):
// a caller waiting for room then costs one parked goroutine, and one whose
// wait would outlast its deadline is refused at once, nothing claimed or
// sent. The drive's context carries the room to its first Stripe call;
// release gives it back if the drive made none. When there is no room now
// and the request is recorded already (open: PENDING, INDETERMINATE or
// followed, as replayFinal found it), its drive starts without: it may be
// answered from the record with no Stripe call at all, and a call it does
// make waits for its slot then, as a background drive's does.
func (s *Service) admit(ctx context.Context, recorded bool) (context.Context, func(), error) {
	g, ok := s.payments.(Gate)
	if !ok {
		return ctx, func() {}, nil
	}
	if dctx, release, ok := g.TryAdmit(ctx); ok {
		return dctx, release, nil
	}
	if recorded {
		return ctx, func() {}, nil
	}
	dctx, release, err := g.Admit(ctx)
	if err != nil {
		var up *UpstreamError
		if errors.As(err, &up) {
			_, e := s.translate(err, nil)
			return nil, nil, e
		}
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		return nil, nil, err
	}
	return dctx, release, nil
}

// disown ends an owned call that never started its drive: everyone joined
// to it gets err.
func (s *Service) disown(key string, c *call, err error) {
	c.err = err
	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	s.drives.Done()
	close(c.done)
}

func (s *Service) inProgress() *Error {
	return &Error{Reason: ReasonRequestInProgress,
		Message: "an identical request is in progress; retry with the same request_id", RetryAfter: s.cfg.RetryAfter}
}

// replayFinal answers a repeat of a request whose record is final with one
// read-only transaction: no writer lock, no drive, no Stripe call. Retries are
// mostly such repeats, so this is billingd's hottest path. ok=false means the
// record is missing, open or unreadable: the drive decides (and a read error
// is found again there, failing closed).
//
// recorded reports, with ok=false, that the store holds an open record of
// the request.
func (s *Service) replayFinal(ctx context.Context, caller, requestID string, method Method, fp []byte) (out Outcome, ok, recorded bool, err error) {
	key := inflightKey(caller, requestID)
	f, cached := s.finals.get(key)
	if cached && s.cfg.Retention > 0 && s.clock.Now().Sub(f.updated) >= s.cfg.Retention {
		cached = false // its record may be swept by now: ask the store
	}
	if !cached {
		if f, recorded = s.loadFinal(ctx, key, caller, requestID); f == nil {
			return Outcome{}, false, recorded, nil
		}
	}
	if !bytes.Equal(f.fingerprint, fp) {
		s.observe(method, EventFingerprintConflict)
		return Outcome{}, true, true, reusedError()
	}
	s.observe(method, EventReplay)
	if f.state == StateFailed {
		return Outcome{Replayed: true}, true, true, f.err
	}
	out = Outcome{Result: f.result, Replayed: true}
	out.Result.Attempts = f.attempts
	return out, true, true, nil
}

// loadFinal reads the record of key from the store and caches it if it is
// final; nil when it is missing, open or unreadable, with found telling an
// open record from the others. It is a function of its
// own so that replayFinal's frame stays small: the Record it reads is large,
// and a larger frame would grow the stack of every replaying goroutine.
//
//go:noinline
func (s *Service) loadFinal(ctx context.Context, key, caller, requestID string) (f *final, found bool) {
	stored, found, err := s.records.Get(ctx, caller, requestID)
	if err != nil || !found || !stored.State.Final() {
		return nil, err == nil && found
	}
	f = finalOf(&stored)
	s.finals.put(key, f)
	return f, true
}

func (s *Service) newRecord(caller, requestID string, method Method, params, fp []byte) Record {
	now := s.clock.Now()
	return Record{
		Caller:      caller,
		RequestID:   requestID,
		Method:      method,
		Fingerprint: fp,
		StripeKey:   StripeKey(caller, requestID, stepOf(method)),
		RequestKey:  RequestKey(caller, requestID),
		Params:      params,
		State:       StatePending,
		// The claim is written just before the first send: counting that
		// attempt now saves a second fsync on the hot path.
		Attempts:     1,
		Created:      now,
		FirstAttempt: now,
		Updated:      now,
	}
}

// stepOf names the one Stripe call of an operation, for its Stripe key.
func stepOf(m Method) string {
	switch m {
	case MethodSubscribe:
		return "create_subscription"
	case MethodRefund:
		return "create_refund"
	case MethodCapture:
		return "capture_payment_intent"
	case MethodCancelPayment:
		return "cancel_payment_intent"
	case MethodCancelSubscription:
		return "cancel_subscription"
	}
	return "create_payment_intent"
}

// inflightKey names a record in the in-flight map.
func inflightKey(caller, requestID string) string { return caller + "\x00" + requestID }

// own registers a drive of key in the in-flight map and returns it with
// owner=true, or returns the drive already in flight with owner=false. Every
// drive of a record (caller, reconciler, webhook) goes through here, so one
// record is never driven twice at once. An owner must call run.
func (s *Service) own(key string, fp []byte) (c *call, owner bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.inflight[key]; ok {
		return c, false
	}
	c = &call{fingerprint: fp, done: make(chan struct{})}
	s.inflight[key] = c
	s.drives.Add(1)
	return c, true
}

// run does an owned drive's work on a server-owned context and publishes
// the outcome to everyone waiting on c.
//
// The drive outlives its caller (docs/design.md, rule 6): its context keeps
// parent's values, such as the trace span, so Stripe calls show up under the
// RPC that caused them, but not parent's cancellation. Close cancels it.
func (s *Service) run(parent context.Context, key string, c *call, work func(context.Context) (Result, bool, error)) {
	defer s.drives.Done()
	ctx := context.WithoutCancel(parent)
	if dl, ok := parent.Deadline(); ok {
		ctx = WithCallerDeadline(ctx, dl)
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallBudget)
	defer cancel()
	stop := context.AfterFunc(s.base, cancel)
	defer stop()

	c.result, c.sent, c.err = work(ctx)

	s.mu.Lock()
	delete(s.inflight, key)
	s.mu.Unlock()
	close(c.done)
}

type callerDeadlineKey struct{}

// WithCallerDeadline returns ctx carrying dl as its caller's deadline (see
// CallerDeadline). run sets it for every drive a caller with a deadline
// starts: context.WithoutCancel drops the deadline itself.
func WithCallerDeadline(ctx context.Context, dl time.Time) context.Context {
	return context.WithValue(ctx, callerDeadlineKey{}, dl)
}

// CallerDeadline reports the deadline of the RPC whose drive ctx belongs to.
// A drive outlives its caller (docs/design.md, rule 6) and its context has
// its own budget, but a wait bound to outlast the caller (for a Stripe
// rate-limit token, say) is better answered at once with
// UPSTREAM_RATE_LIMITED: nothing sent, safe to retry. Background drives (the
// reconciler's, a webhook's) have none.
func CallerDeadline(ctx context.Context) (time.Time, bool) {
	dl, ok := ctx.Value(callerDeadlineKey{}).(time.Time)
	return dl, ok
}

// resolve claims the record (or finds it) and moves it as far toward a final
// state as it can. sent reports whether it called Stripe to create. An open
// record another replica is driving is waited for, at most wait.
func (s *Service) resolve(ctx context.Context, fresh Record, wait time.Duration) (Result, bool, error) {
	rec, created, err := s.records.Claim(ctx, fresh)
	var expired *ExpiredError
	if errors.As(err, &expired) { // swept: the tombstone answers, nothing is sent
		return Result{}, false, expiredError(expired.Tombstone, fresh.Fingerprint)
	}
	if err != nil {
		return Result{}, false, s.storageError(err)
	}
	if created { // the claim holds the lease
		return s.underLease(ctx, rec, func() (Result, bool, error) { return s.send(ctx, rec) })
	}
	if !bytes.Equal(rec.Fingerprint, fresh.Fingerprint) {
		return Result{}, false, reusedError()
	}
	if rec.State.Final() || rec.State.Followed() {
		return s.advance(ctx, rec, nil)
	}
	rec, err = s.acquire(ctx, rec, wait)
	if err != nil {
		return Result{}, false, err
	}
	if rec.State.Final() { // another replica settled it while we waited
		return s.advance(ctx, rec, nil)
	}
	return s.underLease(ctx, rec, func() (Result, bool, error) { return s.advance(ctx, rec, nil) })
}

// Polling steps while another replica holds a record's lease.
const (
	firstPoll = 25 * time.Millisecond
	maxPoll   = 100 * time.Millisecond
)

// acquire takes the lease of the open record rec. While another replica
// holds it, acquire polls until that replica settles the record (the final
// record is returned, leased or not), gives the lease up or dies (its lease
// expires), or until wait is up: then REQUEST_IN_PROGRESS, never a second
// drive. Wait is measured on the real clock: leases expire in real time.
func (s *Service) acquire(ctx context.Context, rec Record, wait time.Duration) (Record, error) {
	deadline := time.Now().Add(wait)
	step := firstPoll
	for waited := false; ; waited = true {
		got, leased, err := s.records.Acquire(ctx, rec)
		if err != nil {
			return Record{}, s.storageError(err)
		}
		if leased || got.State.Final() {
			return got, nil
		}
		if got.State == StateUnspecified { // gone (swept) meanwhile: let the caller's retry claim anew
			return Record{}, s.inProgress()
		}
		if !waited {
			s.observe(rec.Method, EventCoalescedWait)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return Record{}, s.inProgress()
		}
		t := time.NewTimer(min(step, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return Record{}, s.inProgress()
		case <-t.C:
		}
		step = min(2*step, maxPoll)
	}
}

// endsFinal reports whether a drive's answer leaves its record final.
func endsFinal(res Result, err error) bool {
	if err != nil {
		return ReasonOf(err).final()
	}
	return res.State.Final()
}

// releaseTimeout bounds Release at the end of a drive whose own context may
// be spent.
const releaseTimeout = 5 * time.Second

// underLease runs drive, which moves rec (whose lease this process holds),
// and gives the lease up if the record may still be open afterwards: another
// replica can then take it over at once. A final write gives the lease up by
// itself, so the common outcomes cost nothing more.
func (s *Service) underLease(ctx context.Context, rec Record, drive func() (Result, bool, error)) (Result, bool, error) {
	res, sent, err := drive()
	if !endsFinal(res, err) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		// On failure the lease runs out by itself; nothing else to do.
		_ = s.records.Release(rctx, rec.Caller, rec.RequestID)
		cancel()
	}
	return res, sent, err
}

// advance moves a stored record toward a final state. bg is nil for a
// caller's drive and set for the reconciler's, which differs in two ways: it
// waits for the search limiter instead of giving up, and past the key window
// it never sends again (nothing found after SearchLag settles NOT_CREATED).
func (s *Service) advance(ctx context.Context, rec Record, bg *counters) (Result, bool, error) {
	switch rec.State {
	case StateSucceeded, StateFailed:
		res, err := s.answer(&rec)
		return res, false, err
	case StateRequiresAction, StateProcessing, StateAuthorized:
		if bg == nil { // a caller's repeat: what billingd knows now
			res, err := s.answer(&rec)
			return res, false, err
		}
		res, err := s.follow(ctx, rec, bg)
		return res, false, err
	case StateIndeterminate:
		res, err := s.reconcile(ctx, rec, bg)
		return res, false, err
	}
	// PENDING: re-drive with the same key, but past the key window Stripe may
	// have forgotten the key, so look for the object first.
	if s.pastKeyWindow(rec) {
		if bg != nil {
			res, err := s.reconcile(ctx, rec, bg)
			return res, false, err
		}
		res, found, err := s.find(ctx, rec, nil)
		if err != nil {
			return Result{}, false, err
		}
		if found {
			res, err := s.settleSeen(ctx, &rec, res)
			return res, false, err
		}
	}
	rec.Attempts++
	if rec.FirstAttempt.IsZero() {
		rec.FirstAttempt = s.clock.Now()
	}
	rec.Updated = s.clock.Now()
	if err := s.records.Put(ctx, rec); err != nil {
		return Result{}, false, s.storageError(err)
	}
	return s.send(ctx, rec)
}

func (s *Service) pastKeyWindow(rec Record) bool {
	return !rec.FirstAttempt.IsZero() && s.clock.Now().Sub(rec.FirstAttempt) >= s.cfg.KeyWindow
}

// send makes the Stripe call for a durably recorded attempt and records what
// it learned before answering.
func (s *Service) send(ctx context.Context, rec Record) (Result, bool, error) {
	p, err := decodeParams(rec.Params)
	if err != nil {
		return Result{}, false, err
	}
	var res Result
	switch p := p.(type) {
	case *ChargeRequest:
		res, err = s.payments.CreatePaymentIntent(ctx, rec.StripeKey, ChargeParams{
			Amount: p.Amount, Currency: p.Currency, CustomerID: p.CustomerID,
			PaymentMethodID: p.PaymentMethodID, Description: p.Description,
			Metadata:   stripeMetadata(rec.Caller, rec.RequestKey, p.Metadata),
			OffSession: p.offSession(), CaptureMethod: p.CaptureMethod,
		})
	case *SubscribeRequest:
		res, err = s.payments.CreateSubscription(ctx, rec.StripeKey, SubscribeParams{
			CustomerID: p.CustomerID, PriceID: p.PriceID, Quantity: p.Quantity,
			Metadata: stripeMetadata(rec.Caller, rec.RequestKey, p.Metadata),
		})
	default:
		var denied *Error
		if denied, err = s.checkOwner(ctx, rec, p); err == nil && denied != nil {
			if serr := s.settle(ctx, &rec, StateFailed, Result{}, denied); serr != nil {
				return Result{}, true, serr
			}
			return Result{}, true, denied
		}
		if err == nil {
			res, err = s.act(ctx, rec, p)
		}
	}
	if err == nil {
		res, err := s.settleSeen(ctx, &rec, res)
		return res, true, err
	}
	state, e := s.translate(err, p)
	if state == StateUnspecified { // the record is unchanged (our own bug)
		return Result{}, true, e
	}
	var partial Result
	var up *UpstreamError
	if errors.As(err, &up) && up.ObjectID != "" {
		partial.ObjectID = up.ObjectID
	}
	if state == StateRequiresAction {
		// An off-session charge the bank wants authenticated: the 402
		// names the PaymentIntent, whose client_secret the owning caller
		// needs to bring the customer back on session. Best effort: if the
		// lookup fails, following the record fills it in.
		if got, gerr := s.payments.GetPaymentIntent(ctx, partial.ObjectID); gerr == nil {
			partial = got
			partial.Failure, partial.StripeRequestID = nil, ""
		}
	}
	if serr := s.settle(ctx, &rec, state, partial, e); serr != nil {
		return Result{}, true, serr
	}
	return Result{}, true, e
}

// settle writes the outcome durably; the RPC answers only after it.
func (s *Service) settle(ctx context.Context, rec *Record, state State, res Result, e *Error) error {
	rec.State = state
	rec.Result = res
	rec.Err = e
	rec.Updated = s.clock.Now()
	if err := s.records.Put(ctx, *rec); err != nil {
		return s.storageError(err)
	}
	key := inflightKey(rec.Caller, rec.RequestID)
	if state.Final() {
		s.finals.put(key, finalOf(rec))
	}
	s.watches.notify(key)
	return nil
}

// settleSeen records what billingd has seen of the record's Stripe object
// (a create's answer, a search or retrieve, a webhook) and answers as the
// status table says: the object, or the error its status means. A
// declined PaymentIntent exists at Stripe, but the charge did not happen.
func (s *Service) settleSeen(ctx context.Context, rec *Record, res Result) (Result, error) {
	o := s.outcomeOf(rec.Method, res)
	stored := res
	stored.Failure, stored.Owner, stored.StripeRequestID, stored.Attempts, stored.State, stored.StripeTime = nil, "", "", 0, 0, 0
	if stored.ClientSecret == "" && stored.ObjectID == rec.Result.ObjectID {
		// Events and some lookups omit it; the object's secret never changes.
		stored.ClientSecret = rec.Result.ClientSecret
	}
	if o.state != StateRequiresAction {
		// The secret and the next action are for a customer who must act;
		// once nothing is left for them to do, billingd forgets them.
		stored.ClientSecret, stored.NextActionType, stored.RedirectURL = "", "", ""
	}
	if o.state != rec.State || stored != rec.Result || !sameError(o.err, rec.Err) {
		if err := s.settle(ctx, rec, o.state, stored, o.err); err != nil {
			return Result{}, err
		}
	} // else nothing new: no write
	ans, err := s.answer(rec)
	ans.StripeRequestID, ans.StripeTime = res.StripeRequestID, res.StripeTime
	return ans, err
}

// answer is the reply a record gives: its error, or its object with the
// record's state.
func (s *Service) answer(rec *Record) (Result, error) {
	if rec.Err != nil && (rec.State == StateFailed || rec.Err.Reason.answered()) {
		return Result{}, rec.Err
	}
	res := rec.Result
	res.Attempts = rec.Attempts
	res.State = rec.State
	return res, nil
}

func sameError(a, b *Error) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Reason == b.Reason && a.Message == b.Message && maps.Equal(a.Metadata, b.Metadata)
}

// follow looks at the object of a followed record (REQUIRES_ACTION,
// PROCESSING, AUTHORIZED) and records where it now stands. It never sends
// the create again.
func (s *Service) follow(ctx context.Context, rec Record, bg *counters) (Result, error) {
	if bg != nil {
		bg.follows.Add(1)
	}
	var (
		res Result
		err error
	)
	switch rec.Method {
	case MethodSubscribe, MethodCancelSubscription:
		res, err = s.payments.GetSubscription(ctx, rec.Result.ObjectID)
	case MethodRefund:
		res, err = s.payments.GetRefund(ctx, rec.Result.ObjectID)
	default:
		res, err = s.payments.GetPaymentIntent(ctx, rec.Result.ObjectID)
	}
	if err != nil {
		if bg != nil {
			bg.errors.Add(1)
		}
		_, e := s.translate(err, nil)
		if ReasonOf(e).final() {
			// The object vanished or cannot be read (resource_missing):
			// that says nothing about the payment. Keep following.
			e = &Error{Reason: ReasonUpstreamUnavailable, Message: "Stripe could not be asked about the payment; it is followed again later",
				RetryAfter: s.cfg.RetryAfter}
		}
		return Result{}, e
	}
	return s.settleSeen(ctx, &rec, res)
}

// reconcile resolves an INDETERMINATE record (or, for the reconciler, a
// PENDING one past the key window) from what Stripe holds, never by sending
// the create again. A caller's drive searches only if the limiter allows it
// now; the reconciler (bg set) waits its turn.
func (s *Service) reconcile(ctx context.Context, rec Record, bg *counters) (Result, error) {
	pending := &Error{Reason: ReasonOutcomePending,
		Message:    "Stripe's answer was inconclusive; the outcome is being reconciled, retry with the same request_id",
		RetryAfter: 5 * s.cfg.RetryAfter}
	if bg == nil {
		if !s.search.Allow() {
			return Result{}, pending
		}
	} else if err := s.search.Wait(ctx); err != nil {
		return Result{}, pending
	}
	res, found, err := s.find(ctx, rec, bg)
	if err != nil {
		return Result{}, pending
	}
	if found {
		return s.settleSeen(ctx, &rec, res)
	}
	// Search lags behind creation: only when the last send is older than the
	// lag can "nothing found" mean "nothing created". Updated is at or after
	// the last send of an open record.
	if s.clock.Now().Sub(rec.Updated) < s.lookupLag(rec.Method) {
		return Result{}, pending
	}
	notCreated := &Error{Reason: ReasonNotCreated,
		Message: "Stripe never created this operation's object; use a new request_id to try again"}
	if err := s.settle(ctx, &rec, StateFailed, Result{}, notCreated); err != nil {
		return Result{}, err
	}
	return Result{}, notCreated
}

func (s *Service) find(ctx context.Context, rec Record, bg *counters) (Result, bool, error) {
	var (
		res   Result
		found bool
		err   error
	)
	if bg != nil {
		bg.searches.Add(1)
	}
	switch rec.Method {
	case MethodCharge:
		res, found, err = s.payments.FindPaymentIntent(ctx, rec.RequestKey)
	case MethodSubscribe:
		res, found, err = s.payments.FindSubscription(ctx, rec.RequestKey)
	default:
		var p any
		if p, err = decodeParams(rec.Params); err == nil {
			res, found, err = s.findActed(ctx, rec, p)
		}
	}
	if err != nil {
		if bg != nil {
			bg.errors.Add(1)
		}
		_, e := s.translate(err, nil)
		return Result{}, false, e
	}
	return res, found, nil
}

func reusedError() *Error {
	return &Error{Reason: ReasonRequestIDReused,
		Message: "request_id was already used with a different method or parameters"}
}

// storageError fails closed: the record could not be read or written, so
// nothing more is sent to Stripe. The cause stays out of the caller's message.
// A write refused because another replica took the record over answers
// REQUEST_IN_PROGRESS: that replica finishes the operation.
func (s *Service) storageError(err error) *Error {
	if errors.Is(err, ErrLeaseLost) {
		return s.inProgress()
	}
	return &Error{Reason: ReasonStorageUnavailable,
		Message: "billingd cannot record the request; retry with the same request_id", RetryAfter: s.cfg.RetryAfter}
}
