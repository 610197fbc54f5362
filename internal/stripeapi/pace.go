package stripeapi

import (
	"context"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/billingd/billingd/service"
)

// Stripe's default rate limits, in operations a second: 100 in live mode, 25
// in test mode. DefaultRate stays under the live one, leaving room for the
// Dashboard and other integrations on the same account.
const (
	DefaultLiveRate rate.Limit = 90
	DefaultTestRate rate.Limit = 25
)

// DefaultRate returns Config.Rate's default for a secret or restricted key:
// DefaultLiveRate for sk_live_ and rk_live_ keys, DefaultTestRate for any
// other (test keys, and keys of fakes, which are test keys to stripe-go).
func DefaultRate(key string) rate.Limit {
	if strings.HasPrefix(key, "sk_live_") || strings.HasPrefix(key, "rk_live_") {
		return DefaultLiveRate
	}
	return DefaultTestRate
}

// DefaultBurst is Config.Burst's default for rate r: a fifth of a second's
// worth, at least 1. Stripe counts operations per second, so a burst below
// that second's allowance cannot by itself meet a 429.
func DefaultBurst(r rate.Limit) int {
	return max(1, int(math.Ceil(float64(r)/5)))
}

// How the pace reacts to Stripe's 429s (additive increase, multiplicative
// decrease): a 429 halves the rate, at most once per cutEvery (the 429s of
// one burst arrive together), never below a tenth of the configured rate (and
// 1/s); every recoverEvery without a 429 adds a twentieth of the configured
// rate, so a halved rate is whole again 10 s after the last 429.
const (
	cutEvery     = time.Second
	recoverEvery = time.Second
	recoverSteps = 20
	floorShare   = 10
)

// pacer is the token bucket every HTTP attempt to Stripe takes a token from
// (Config.Rate), adaptive on 429.
type pacer struct {
	lim   *rate.Limiter
	limit rate.Limit // configured
	floor rate.Limit
	step  rate.Limit
	now   func() time.Time

	mu      sync.Mutex
	cur     rate.Limit
	lastCut time.Time // when the rate was last cut
	last429 time.Time // when the last 429 arrived (recovery counts from it)
	rising  time.Time // when the last recovery step was due

	cuts atomic.Uint64
}

func newPacer(limit rate.Limit, burst int, now func() time.Time) *pacer {
	if now == nil {
		now = time.Now
	}
	return &pacer{
		lim:   rate.NewLimiter(limit, burst),
		limit: limit,
		floor: min(limit, max(limit/floorShare, 1)),
		step:  limit / recoverSteps,
		now:   now,
		cur:   limit,
	}
}

// recoverLocked adds one step per recoverEvery that passed without a 429
// since the rate was last lowered or raised.
func (p *pacer) recoverLocked(now time.Time) {
	if p.cur >= p.limit {
		return
	}
	from := p.rising
	if p.last429.After(from) {
		from = p.last429
	}
	n := now.Sub(from) / recoverEvery
	if n <= 0 {
		return
	}
	p.cur = min(p.limit, p.cur+rate.Limit(n)*p.step)
	p.rising = from.Add(n * recoverEvery)
	p.lim.SetLimitAt(now, p.cur)
}

// saw429 tells the pacer Stripe answered an attempt 429.
func (p *pacer) saw429() {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recoverLocked(now)
	p.last429 = now
	if !p.lastCut.IsZero() && now.Sub(p.lastCut) < cutEvery {
		return
	}
	p.lastCut = now
	if next := max(p.floor, p.cur/2); next < p.cur {
		p.cur = next
		p.lim.SetLimitAt(now, p.cur)
		p.cuts.Add(1)
	}
}

// rate reports the rate in force now.
func (p *pacer) rate() rate.Limit {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.recoverLocked(now)
	return p.cur
}

// reserve takes the next token and says how long to wait for it. When the
// wait would outlast patience it takes nothing and returns ok=false.
func (p *pacer) reserve(patience time.Duration, bounded bool) (r *rate.Reservation, delay time.Duration, ok bool) {
	now := p.now()
	p.mu.Lock()
	p.recoverLocked(now)
	r = p.lim.ReserveN(now, 1)
	p.mu.Unlock()
	delay = r.DelayFrom(now)
	if !r.OK() || (bounded && delay > 0 && delay > patience) {
		r.CancelAt(now)
		return nil, delay, false
	}
	return r, delay, true
}

// wait takes a token, waiting for it as long as ctx allows; a wait cut short
// gives the token back. Background drives and retries wait this way.
func (p *pacer) wait(ctx context.Context) error {
	r, delay, _ := p.reserve(0, false)
	return p.sleep(ctx, r, delay)
}

func (p *pacer) sleep(ctx context.Context, r *rate.Reservation, delay time.Duration) error {
	if delay <= 0 {
		return nil
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.CancelAt(p.now())
		return ctx.Err()
	}
}

// patience is how long a call may wait for a slot or a token and still be
// answered before its caller's deadline: the time left, less a tenth of it
// (at least minLeeway) for the call itself and the answer's way back.
func patience(dl, now time.Time) time.Duration {
	left := dl.Sub(now)
	return left - max(left/10, minLeeway)
}

const minLeeway = 50 * time.Millisecond

// tooLate is the answer to a caller that cannot be served before its
// deadline: Stripe's own 429 answer, except that nothing was sent.
func tooLate(wait time.Duration) *service.UpstreamError {
	return &service.UpstreamError{Kind: service.UpstreamRateLimited, RetryAfter: wait.Round(time.Second)}
}

// paced is the RoundTripper inside the retry layer: every attempt after a
// call's first takes a token too (the first took its token in begin), and
// every 429 cuts the pace.
type paced struct {
	next http.RoundTripper
	p    *pacer
}

func (t *paced) RoundTrip(req *http.Request) (*http.Response, error) {
	if rec, ok := req.Context().Value(callKey{}).(*call); ok && !rec.tokenUsed {
		rec.tokenUsed = true
	} else if err := t.p.wait(req.Context()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		t.p.saw429()
	}
	return resp, err
}
