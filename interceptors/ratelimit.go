package interceptors

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
)

// rateLimitedMessage is the status message, and the QuotaFailure
// description, of a call refused by the per-caller rate limit.
const rateLimitedMessage = "rate limit exceeded for this caller"

// Budget is a token bucket: Rate requests per second on average, bursts of
// up to Burst. A zero Rate means unlimited.
type Budget struct {
	Rate  float64
	Burst int
}

func (b Budget) enabled() bool { return b.Rate > 0 }

func (b Budget) limiter() *rate.Limiter {
	return rate.NewLimiter(rate.Limit(b.Rate), max(b.Burst, 1))
}

// ReplayFunc reports whether req from caller will be answered from billingd's
// records alone, without a Stripe call (a repeat of a request whose record is
// final, or a read). It runs only for calls over the main budget, and must be
// cheap and side-effect free.
type ReplayFunc func(ctx context.Context, caller string, req any) bool

// RateLimitOption configures RateLimit.
type RateLimitOption func(*rateLimitConfig)

type rateLimitConfig struct {
	replay   Budget
	isReplay ReplayFunc
	now      func() time.Time
}

// WithReplayBudget gives calls that isReplay recognises a second, separate
// budget, used once the caller's main budget is spent: replays cost billingd
// a record read, not a Stripe call, so a caller that retries (as it should)
// still learns its outcomes while its new requests are held back.
func WithReplayBudget(b Budget, isReplay ReplayFunc) RateLimitOption {
	return func(c *rateLimitConfig) { c.replay, c.isReplay = b, isReplay }
}

// WithRateClock replaces time.Now, for tests.
func WithRateClock(now func() time.Time) RateLimitOption {
	return func(c *rateLimitConfig) { c.now = now }
}

// RateLimit limits each caller (CallerFrom, "anonymous" without one) to its
// own budget; it belongs after authentication. A call over budget is refused
// before validation and before anything is recorded, with RESOURCE_EXHAUSTED,
// ErrorInfo reason RATE_LIMITED, QuotaFailure and RetryInfo (when the next
// token is due). The status is built here, so the interceptor may sit outside
// ErrorStatus.
//
// go-grpc-middleware's ratelimit interceptor is not used: its Limiter sees
// only the context, not the request (so it cannot tell a replay), and it
// flattens the Limiter's error into a message, dropping the details.
//
// Callers get a bucket on first use and keep it: the set of callers is the
// configured tokens (or the certificates the client CA issues), so it is bounded.
func RateLimit(b Budget, opts ...RateLimitOption) grpc.UnaryServerInterceptor {
	cfg := rateLimitConfig{now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	l := &limiters{cfg: cfg, main: b, callers: map[string]*callerLimits{}}
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		caller, ok := CallerFrom(ctx)
		if !ok {
			caller = "anonymous"
		}
		if err := l.allow(ctx, caller, req); err != nil {
			return nil, StatusOf(err).Err()
		}
		return handler(ctx, req)
	}
}

type callerLimits struct {
	main, replay *rate.Limiter
}

type limiters struct {
	cfg  rateLimitConfig
	main Budget

	mu      sync.Mutex
	callers map[string]*callerLimits
}

func (l *limiters) get(caller string) *callerLimits {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.callers[caller]
	if !ok {
		c = &callerLimits{}
		if l.main.enabled() {
			c.main = l.main.limiter()
		}
		if l.cfg.replay.enabled() {
			c.replay = l.cfg.replay.limiter()
		}
		l.callers[caller] = c
	}
	return c
}

func (l *limiters) allow(ctx context.Context, caller string, req any) error {
	if !l.main.enabled() {
		return nil
	}
	c := l.get(caller)
	now := l.cfg.now()
	if c.main.AllowN(now, 1) {
		return nil
	}
	if l.cfg.isReplay != nil && l.cfg.isReplay(ctx, caller, req) {
		if c.replay == nil || c.replay.AllowN(now, 1) {
			return nil
		}
	}
	return &RateLimitedError{After: nextToken(c.main, now)}
}

// nextToken returns how long until lim has a whole token again.
func nextToken(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	if missing <= 0 || lim.Limit() <= 0 {
		return 0
	}
	secs := missing / float64(lim.Limit())
	// Round up to a millisecond so a caller that waits exactly that long finds a token.
	return time.Duration(math.Ceil(secs*1000)) * time.Millisecond
}

// RateLimitedError is a call refused by the per-caller rate limit. It is a
// ReasonError (reason RATE_LIMITED → RESOURCE_EXHAUSTED with QuotaFailure)
// and a RetryDelayError (RetryInfo).
type RateLimitedError struct {
	// After is how long until the caller's next request would be admitted.
	After time.Duration
}

var (
	_ ReasonError     = (*RateLimitedError)(nil)
	_ RetryDelayError = (*RateLimitedError)(nil)
)

func (e *RateLimitedError) Error() string { return "interceptors: " + rateLimitedMessage }

// ErrorReason implements ReasonError.
func (e *RateLimitedError) ErrorReason() string { return "RATE_LIMITED" }

// ErrorCode answers RESOURCE_EXHAUSTED.
func (e *RateLimitedError) ErrorCode() string { return "RESOURCE_EXHAUSTED" }

// PublicMessage implements ReasonError.
func (e *RateLimitedError) PublicMessage() string { return rateLimitedMessage }

// ErrorMetadata implements ReasonError.
func (e *RateLimitedError) ErrorMetadata() map[string]string { return nil }

// RetryDelay implements RetryDelayError.
func (e *RateLimitedError) RetryDelay() time.Duration { return e.After }
