package service

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// The state machine on its own: an in-memory Store and a scripted Payments,
// no network, no database, no gRPC. Each test drives the service and
// asserts the record, the answer and the Stripe calls made.

// memStore is a Store in memory that grants every lease, as bbolt does.
type memStore struct {
	mu      sync.Mutex
	recs    map[string]Record
	events  map[string]bool
	failPut error // when set, every write fails with it
}

func newMemStore() *memStore {
	return &memStore{recs: map[string]Record{}, events: map[string]bool{}}
}

func (m *memStore) Claim(_ context.Context, rec Record) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut != nil {
		return Record{}, false, m.failPut
	}
	k := inflightKey(rec.Caller, rec.RequestID)
	if got, ok := m.recs[k]; ok {
		return got, false, nil
	}
	m.recs[k] = rec
	return rec, true, nil
}

func (m *memStore) Get(_ context.Context, caller, requestID string) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.recs[inflightKey(caller, requestID)]
	return rec, ok, nil
}

func (m *memStore) Put(_ context.Context, rec Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut != nil {
		return m.failPut
	}
	m.recs[inflightKey(rec.Caller, rec.RequestID)] = rec
	return nil
}

func (m *memStore) Acquire(_ context.Context, rec Record) (Record, bool, error) {
	got, ok, _ := m.Get(context.Background(), rec.Caller, rec.RequestID)
	if !ok {
		return Record{}, false, nil
	}
	return got, !got.State.Final(), nil
}

func (m *memStore) Release(context.Context, string, string) error { return nil }

func (m *memStore) ListOpen(context.Context, int) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Record
	for _, r := range m.recs {
		if !r.State.Final() {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return a.Created.Compare(b.Created) })
	return out, nil
}

func (m *memStore) CountByState(context.Context) (map[State]int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[State]int{}
	for _, r := range m.recs {
		out[r.State]++
	}
	return out, nil
}

func (m *memStore) CountOpen(ctx context.Context) (map[State]int, error) { return m.CountByState(ctx) }

func (m *memStore) Sweep(context.Context, time.Time, time.Time, int) (int, error) { return 0, nil }
func (m *memStore) SweepEvents(context.Context, time.Time, int) (int, error)      { return 0, nil }
func (m *memStore) SweepTombstones(context.Context, time.Time, int) (int, error)  { return 0, nil }
func (m *memStore) GetTombstone(context.Context, string, string) (Tombstone, bool, error) {
	return Tombstone{}, false, nil
}

func (m *memStore) GetByRequestKey(_ context.Context, requestKey string) (Record, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.recs {
		if r.RequestKey == requestKey {
			return r, true, nil
		}
	}
	return Record{}, false, nil
}

func (m *memStore) ClaimEvent(_ context.Context, id string, _ time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.events[id] {
		return false, nil
	}
	m.events[id] = true
	return true, nil
}

func (m *memStore) ForgetEvent(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.events, id)
	return nil
}

func (m *memStore) record(t *testing.T, caller, id string) Record {
	t.Helper()
	rec, ok, _ := m.Get(context.Background(), caller, id)
	if !ok {
		t.Fatalf("no record %s/%s", caller, id)
	}
	return rec
}

// stripeCall is one call a scripted Payments saw.
type stripeCall struct {
	op, key, id string
}

// scripted is a Payments that answers from queues, per operation, and
// records every call. An empty queue answers errUnscripted.
type scripted struct {
	mu      sync.Mutex
	answers map[string][]answer
	calls   []stripeCall
}

type answer struct {
	res   Result
	found bool
	err   error
}

var errUnscripted = errors.New("unscripted Stripe call")

func newScripted() *scripted { return &scripted{answers: map[string][]answer{}} }

func (p *scripted) on(op string, a ...answer) *scripted {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.answers[op] = append(p.answers[op], a...)
	return p
}

func (p *scripted) next(op, key, id string) answer {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, stripeCall{op, key, id})
	q := p.answers[op]
	if len(q) == 0 {
		return answer{err: errUnscripted}
	}
	p.answers[op] = q[1:]
	return q[0]
}

func (p *scripted) ops() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.calls))
	for i, c := range p.calls {
		out[i] = c.op
	}
	return out
}

func (p *scripted) keys(op string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, c := range p.calls {
		if c.op == op {
			out = append(out, c.key)
		}
	}
	return out
}

func (p *scripted) CreatePaymentIntent(_ context.Context, key string, _ ChargeParams) (Result, error) {
	a := p.next("create_pi", key, "")
	return a.res, a.err
}

func (p *scripted) CreateSubscription(_ context.Context, key string, _ SubscribeParams) (Result, error) {
	a := p.next("create_sub", key, "")
	return a.res, a.err
}

func (p *scripted) FindPaymentIntent(_ context.Context, rk string) (Result, bool, error) {
	a := p.next("find_pi", "", rk)
	return a.res, a.found, a.err
}

func (p *scripted) FindSubscription(_ context.Context, rk string) (Result, bool, error) {
	a := p.next("find_sub", "", rk)
	return a.res, a.found, a.err
}

func (p *scripted) GetPaymentIntent(_ context.Context, id string) (Result, error) {
	a := p.next("get_pi", "", id)
	return a.res, a.err
}

func (p *scripted) GetSubscription(_ context.Context, id string) (Result, error) {
	a := p.next("get_sub", "", id)
	return a.res, a.err
}

func (p *scripted) CreateRefund(_ context.Context, key string, rp RefundParams) (Result, error) {
	a := p.next("create_refund", key, rp.PaymentIntentID)
	return a.res, a.err
}

func (p *scripted) GetRefund(_ context.Context, id string) (Result, error) {
	a := p.next("get_refund", "", id)
	return a.res, a.err
}

func (p *scripted) FindRefund(_ context.Context, pi, _ string) (Result, bool, error) {
	a := p.next("find_refund", "", pi)
	return a.res, a.found, a.err
}

func (p *scripted) CapturePaymentIntent(_ context.Context, key, id string, _ int64) (Result, error) {
	a := p.next("capture", key, id)
	return a.res, a.err
}

func (p *scripted) CancelPaymentIntent(_ context.Context, key, id, _ string) (Result, error) {
	a := p.next("cancel_pi", key, id)
	return a.res, a.err
}

func (p *scripted) CancelSubscription(_ context.Context, key, id string, _ bool) (Result, error) {
	a := p.next("cancel_sub", key, id)
	return a.res, a.err
}

var _ Payments = (*scripted)(nil)
var _ Store = (*memStore)(nil)

// manualClock is a Clock tests move.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newMachine(t *testing.T, p *scripted) (*Service, *memStore, *manualClock) {
	t.Helper()
	store := newMemStore()
	clock := &manualClock{now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	cfg := DefaultConfig()
	cfg.RetryAfter = time.Millisecond
	cfg.SearchRate = 1e9
	svc := New(store, p, WithConfig(cfg), WithClock(clock))
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc, store, clock
}

func charge(id string) ChargeRequest {
	return ChargeRequest{RequestID: id, Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa"}
}

func reason(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestMachineTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	paid := Result{ObjectID: "pi_1", Status: PaymentSucceeded, Amount: 2000, Currency: "usd"}
	declined := &UpstreamError{Kind: UpstreamDeclined, Type: "card_error", Code: "card_declined", DeclineCode: "generic_decline", ObjectID: "pi_d"}
	tests := []struct {
		name      string
		script    func(p *scripted)
		drive     func(t *testing.T, svc *Service, store *memStore, clock *manualClock) (Outcome, error)
		wantState State
		wantErr   Reason
		wantOps   []string
	}{
		{
			name:   "a new charge: claimed, sent once, SUCCEEDED, replayed after",
			script: func(p *scripted) { p.on("create_pi", answer{res: paid}) },
			drive: func(t *testing.T, svc *Service, _ *memStore, _ *manualClock) (Outcome, error) {
				if _, err := svc.Charge(ctx, "shop", charge("a")); err != nil {
					t.Fatal(err)
				}
				out, err := svc.Charge(ctx, "shop", charge("a"))
				if !out.Replayed || out.Result.ObjectID != "pi_1" {
					t.Errorf("replay = %+v", out)
				}
				return out, err
			},
			wantState: StateSucceeded,
			wantOps:   []string{"create_pi"},
		},
		{
			name:   "a decline is final and replayed identically",
			script: func(p *scripted) { p.on("create_pi", answer{err: declined}) },
			drive: func(t *testing.T, svc *Service, _ *memStore, _ *manualClock) (Outcome, error) {
				_, first := svc.Charge(ctx, "shop", charge("a"))
				out, err := svc.Charge(ctx, "shop", charge("a"))
				var a, b *Error
				if !errors.As(first, &a) || !errors.As(err, &b) || !sameError(a, b) || !out.Replayed {
					t.Errorf("first %v, replay %v (replayed %v)", first, err, out.Replayed)
				}
				return out, err
			},
			wantState: StateFailed,
			wantErr:   ReasonCardDeclined,
			wantOps:   []string{"create_pi"},
		},
		{
			name: "a network failure leaves PENDING; the retry sends the same key",
			script: func(p *scripted) {
				p.on("create_pi", answer{err: &UpstreamError{Kind: UpstreamUnavailable}}, answer{res: paid})
			},
			drive: func(t *testing.T, svc *Service, _ *memStore, _ *manualClock) (Outcome, error) {
				if _, err := svc.Charge(ctx, "shop", charge("a")); reason(err) != ReasonUpstreamUnavailable {
					t.Errorf("first = %v", err)
				}
				return svc.Charge(ctx, "shop", charge("a"))
			},
			wantState: StateSucceeded,
			wantOps:   []string{"create_pi", "create_pi"},
		},
		{
			name: "a POST 500 is INDETERMINATE: found by search, never sent again",
			script: func(p *scripted) {
				p.on("create_pi", answer{err: &UpstreamError{Kind: UpstreamServerError, HTTPStatus: 500}})
				p.on("find_pi", answer{res: paid, found: true})
			},
			drive: func(t *testing.T, svc *Service, store *memStore, _ *manualClock) (Outcome, error) {
				if _, err := svc.Charge(ctx, "shop", charge("a")); reason(err) != ReasonOutcomePending {
					t.Errorf("first = %v", err)
				}
				if st := store.record(t, "shop", "a").State; st != StateIndeterminate {
					t.Errorf("after the 500: %v", st)
				}
				return svc.Charge(ctx, "shop", charge("a"))
			},
			wantState: StateSucceeded,
			wantOps:   []string{"create_pi", "find_pi"},
		},
		{
			name: "3-D Secure: REQUIRES_ACTION, followed by the reconciler to SUCCEEDED",
			script: func(p *scripted) {
				p.on("create_pi", answer{res: Result{ObjectID: "pi_3", Status: PaymentRequiresAction, ClientSecret: "pi_3_secret_x", NextActionType: "use_stripe_sdk"}})
				p.on("get_pi", answer{res: Result{ObjectID: "pi_3", Status: PaymentSucceeded}})
			},
			drive: func(t *testing.T, svc *Service, store *memStore, _ *manualClock) (Outcome, error) {
				out, err := svc.Charge(ctx, "shop", charge("a"))
				if err != nil || out.Result.State != StateRequiresAction || out.Result.ClientSecret != "pi_3_secret_x" {
					t.Fatalf("first = %+v, %v", out, err)
				}
				NewReconciler(svc, store).Pass(ctx)
				return svc.Charge(ctx, "shop", charge("a"))
			},
			wantState: StateSucceeded,
			wantOps:   []string{"create_pi", "get_pi"},
		},
		{
			name: "off session: AUTHENTICATION_REQUIRED, the record REQUIRES_ACTION with the secret",
			script: func(p *scripted) {
				p.on("create_pi", answer{err: &UpstreamError{Kind: UpstreamDeclined, Code: "authentication_required",
					DeclineCode: "authentication_required", ObjectID: "pi_o"}})
				p.on("get_pi", answer{res: Result{ObjectID: "pi_o", Status: PaymentRequiresPaymentMethod, ClientSecret: "pi_o_secret_y"}})
			},
			drive: func(t *testing.T, svc *Service, store *memStore, _ *manualClock) (Outcome, error) {
				_, err := svc.Charge(ctx, "shop", charge("a"))
				if rec := store.record(t, "shop", "a"); rec.Result.ClientSecret != "pi_o_secret_y" {
					t.Errorf("record result = %+v", rec.Result)
				}
				return Outcome{}, err
			},
			wantState: StateRequiresAction,
			wantErr:   ReasonAuthenticationRequired,
			wantOps:   []string{"create_pi", "get_pi"},
		},
		{
			name:   "the same request_id with other parameters: REQUEST_ID_REUSED, nothing sent",
			script: func(p *scripted) { p.on("create_pi", answer{res: paid}) },
			drive: func(t *testing.T, svc *Service, _ *memStore, _ *manualClock) (Outcome, error) {
				if _, err := svc.Charge(ctx, "shop", charge("a")); err != nil {
					t.Fatal(err)
				}
				other := charge("a")
				other.Amount = 2500
				return svc.Charge(ctx, "shop", other)
			},
			wantState: StateSucceeded,
			wantErr:   ReasonRequestIDReused,
			wantOps:   []string{"create_pi"},
		},
		{
			name: "PENDING past the key window: searched first, found, not sent again",
			script: func(p *scripted) {
				p.on("create_pi", answer{err: &UpstreamError{Kind: UpstreamUnavailable}})
				p.on("find_pi", answer{res: paid, found: true})
			},
			drive: func(t *testing.T, svc *Service, _ *memStore, clock *manualClock) (Outcome, error) {
				_, _ = svc.Charge(ctx, "shop", charge("a"))
				clock.advance(24 * time.Hour)
				return svc.Charge(ctx, "shop", charge("a"))
			},
			wantState: StateSucceeded,
			wantOps:   []string{"create_pi", "find_pi"},
		},
		{
			name: "a refund of another caller's PaymentIntent: NOT_FOUND, nothing refunded",
			script: func(p *scripted) {
				p.on("get_pi", answer{res: Result{ObjectID: "pi_9", Status: PaymentSucceeded, Owner: "someone-else"}})
			},
			drive: func(t *testing.T, svc *Service, _ *memStore, _ *manualClock) (Outcome, error) {
				return svc.Refund(ctx, "shop", RefundRequest{RequestID: "r", PaymentIntentID: "pi_9"})
			},
			wantState: StateFailed,
			wantErr:   ReasonResourceMissing,
			wantOps:   []string{"get_pi"},
		},
		{
			name: "a pending refund is PROCESSING, then followed to SUCCEEDED",
			script: func(p *scripted) {
				p.on("get_pi", answer{res: Result{ObjectID: "pi_9", Status: PaymentSucceeded, Owner: "shop"}})
				p.on("create_refund", answer{res: Result{ObjectID: "re_1", Status: RefundPending, Amount: 500, ParentID: "pi_9"}})
				p.on("get_refund", answer{res: Result{ObjectID: "re_1", Status: RefundSucceeded, Amount: 500, ParentID: "pi_9"}})
			},
			drive: func(t *testing.T, svc *Service, store *memStore, _ *manualClock) (Outcome, error) {
				out, err := svc.Refund(ctx, "shop", RefundRequest{RequestID: "r", PaymentIntentID: "pi_9", Amount: 500})
				if err != nil || out.Result.State != StateProcessing {
					t.Fatalf("first = %+v, %v", out, err)
				}
				NewReconciler(svc, store).Pass(ctx)
				return svc.Refund(ctx, "shop", RefundRequest{RequestID: "r", PaymentIntentID: "pi_9", Amount: 500})
			},
			wantState: StateSucceeded,
			wantOps:   []string{"get_pi", "create_refund", "get_refund"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := newScripted()
			tt.script(p)
			svc, store, clock := newMachine(t, p)
			_, err := tt.drive(t, svc, store, clock)
			if got := reason(err); got != tt.wantErr {
				t.Errorf("answer reason = %q (%v), want %q", got, err, tt.wantErr)
			}
			var id string
			for _, r := range store.recs {
				id = r.RequestID
			}
			if rec := store.record(t, "shop", id); rec.State != tt.wantState {
				t.Errorf("record state = %v, want %v", rec.State, tt.wantState)
			}
			if got := p.ops(); !slices.Equal(got, tt.wantOps) {
				t.Errorf("Stripe calls = %v, want %v", got, tt.wantOps)
			}
			if keys := p.keys("create_pi"); len(keys) > 1 && keys[0] != keys[1] {
				t.Errorf("the retry changed the Stripe key: %v", keys)
			}
		})
	}
}

// A record that cannot be written fails closed: STORAGE_UNAVAILABLE with
// RetryInfo, and nothing is sent to Stripe.
func TestMachineFailsClosed(t *testing.T) {
	t.Parallel()
	p := newScripted().on("create_pi", answer{res: Result{ObjectID: "pi_1", Status: PaymentSucceeded}})
	svc, store, _ := newMachine(t, p)
	store.failPut = errors.New("disk full")
	_, err := svc.Charge(context.Background(), "shop", charge("a"))
	var e *Error
	if !errors.As(err, &e) || e.Reason != ReasonStorageUnavailable || e.RetryAfter <= 0 {
		t.Fatalf("answer = %v", err)
	}
	if ops := p.ops(); len(ops) != 0 {
		t.Errorf("Stripe calls without a record: %v", ops)
	}
}
