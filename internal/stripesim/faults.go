package stripesim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Fault is one scripted or random failure the simulator can inject. Each
// mirrors a way a real Stripe call fails, and they differ in the one thing
// billingd cares about: whether the charge happened.
type Fault int

// The faults. "Nothing processed" faults leave no object and no idempotency
// entry behind, so a retry with the same key executes for the first time.
// "After processing" faults leave the object and the cached result behind.
const (
	FaultNone Fault = iota
	// FaultRateLimit answers 429 rate_limit before the idempotency layer; nothing processed.
	FaultRateLimit
	// FaultUnavailable answers 503 with Stripe-Should-Retry: true; nothing processed, nothing cached.
	FaultUnavailable
	// FaultDropBefore closes the connection without answering; nothing processed.
	FaultDropBefore
	// FaultDropAfter processes the request fully (object created, result cached
	// under the idempotency key), then closes the connection without answering.
	FaultDropAfter
	// FaultServerError processes the request fully, then answers 500 api_error;
	// that 500 is what is cached under the idempotency key.
	FaultServerError
	// FaultShouldRetryFalse answers 503 with Stripe-Should-Retry: false;
	// nothing processed, nothing cached. It tests that a client honours the header.
	FaultShouldRetryFalse
	// FaultLockTimeout answers 429 lock_timeout with Stripe-Should-Retry: true;
	// nothing processed, nothing cached.
	FaultLockTimeout
)

func (f Fault) String() string {
	switch f {
	case FaultNone:
		return "none"
	case FaultRateLimit:
		return "rate_limit"
	case FaultUnavailable:
		return "unavailable"
	case FaultDropBefore:
		return "drop_before"
	case FaultDropAfter:
		return "drop_after"
	case FaultServerError:
		return "server_error"
	case FaultShouldRetryFalse:
		return "should_retry_false"
	case FaultLockTimeout:
		return "lock_timeout"
	}
	return "fault(" + itoa(int64(f)) + ")"
}

// beforeProcessing reports whether f answers before the request reaches the
// idempotency layer, so that nothing is processed or cached.
func (f Fault) beforeProcessing() bool {
	switch f {
	case FaultRateLimit, FaultUnavailable, FaultDropBefore, FaultShouldRetryFalse, FaultLockTimeout:
		return true
	}
	return false
}

// Faults are random failures, each a probability in [0, 1] applied to every
// authenticated POST. One uniform number is drawn per POST from an RNG seeded
// by Config.Seed, so the same sequence of POSTs meets the same faults. If the
// probabilities sum past 1 the later ones are cut short.
type Faults struct {
	RateLimit                  float64
	Unavailable                float64
	DropBeforeProcessing       float64
	DropAfterProcessing        float64
	ServerErrorAfterProcessing float64
	// Latency is added to every request. For a POST that executes, it is spent
	// while the idempotency key is held, which is what makes 409
	// idempotency_key_in_use observable.
	Latency time.Duration
	// LatencyJitter adds a uniform random [0, LatencyJitter) to Latency.
	LatencyJitter time.Duration
	// SlowShare of requests, drawn at random, take SlowLatency instead of
	// Latency and its jitter: the long tail of Stripe's answer times (a
	// brownout, a slow bank), e.g. 0.02 at 2s.
	SlowShare   float64
	SlowLatency time.Duration
	// Rate, when positive, is Stripe's rate limiter: authenticated requests
	// of any method beyond Rate a second (by Config.Clock), with bursts of
	// RateBurst (0: one second's worth, as Stripe counts operations per
	// second), are answered 429 rate_limit before processing, like
	// FaultRateLimit. Counted in Stats.Faults[FaultRateLimit].
	Rate      float64
	RateBurst int
}

// ParseFaults reads a fault spec, "name=value,…", the form billingd's
// --stripe-sim-faults takes. The names are the fields of Faults:
// rate_limit, unavailable, drop_before, drop_after and server_error are
// probabilities from 0 to 1, latency a duration, rate requests a second and
// rate_burst a whole number. An empty spec is no faults.
func ParseFaults(spec string) (Faults, error) {
	var f Faults
	if spec == "" {
		return f, nil
	}
	for _, kv := range strings.Split(spec, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return f, fmt.Errorf("%q is not name=value", kv)
		}
		if err := f.set(name, val); err != nil {
			return f, err
		}
	}
	return f, nil
}

// set parses the value of one fault spec entry into the field it names.
func (f *Faults) set(name, val string) error {
	switch name {
	case "rate":
		r, err := strconv.ParseFloat(val, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return errors.New("rate must be requests a second, 0 or more")
		}
		f.Rate = r
		return nil
	case "rate_burst":
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 {
			return errors.New("rate_burst must be a whole number, 0 or more")
		}
		f.RateBurst = n
		return nil
	case "latency":
		d, err := time.ParseDuration(val)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		f.Latency = d
		return nil
	}
	p, err := strconv.ParseFloat(val, 64)
	if err != nil || p < 0 || p > 1 {
		return fmt.Errorf("%s must be a rate from 0 to 1", name)
	}
	switch name {
	case "rate_limit":
		f.RateLimit = p
	case "unavailable":
		f.Unavailable = p
	case "drop_before":
		f.DropBeforeProcessing = p
	case "drop_after":
		f.DropAfterProcessing = p
	case "server_error":
		f.ServerErrorAfterProcessing = p
	default:
		return errors.New("unknown fault " + strconv.Quote(name))
	}
	return nil
}

// limiter is the token bucket of f.Rate, nil without one.
func (f Faults) limiter() *rate.Limiter {
	if f.Rate <= 0 {
		return nil
	}
	burst := f.RateBurst
	if burst <= 0 {
		burst = max(1, int(math.Ceil(f.Rate)))
	}
	return rate.NewLimiter(rate.Limit(f.Rate), burst)
}

type scriptedFault struct {
	fault Fault
	left  int
}

// SetFaults replaces the random fault configuration; requests already
// admitted keep the fault they drew.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Rate != s.faults.Rate || f.RateBurst != s.faults.RateBurst {
		s.limit = f.limiter()
	}
	s.faults = f
}

// FailNext makes the next n requests to path get fault f, ahead of any random
// fault, so a test can script an exact failure sequence. path is a URL path
// such as "/v1/payment_intents", meaning POSTs to it, or "METHOD /path" such
// as "GET /v1/payment_intents/search" to script other methods. Calls queue up:
// FailNext(p, FaultRateLimit, 2) then FailNext(p, FaultDropAfter, 1) fails
// the next three requests in that order. n <= 0 does nothing.
func (s *Sim) FailNext(path string, f Fault, n int) {
	if n <= 0 || f == FaultNone {
		return
	}
	key := path
	if !strings.Contains(path, " ") {
		key = "POST " + path
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripted[key] = append(s.scripted[key], scriptedFault{fault: f, left: n})
}

// nextFaultLocked picks the fault for one request. Random faults apply to
// POSTs only and consume one draw per POST whether or not a scripted fault
// wins, which keeps the random sequence independent of the script.
func (s *Sim) nextFaultLocked(method, path string) Fault {
	post := method == "POST"
	var u float64
	if post {
		u = s.faultRNG.Float64()
	}
	if len(s.scripted) > 0 {
		key := method + " " + path
		if q := s.scripted[key]; len(q) > 0 {
			f := q[0].fault
			if q[0].left--; q[0].left == 0 {
				q = q[1:]
			}
			if len(q) == 0 {
				delete(s.scripted, key)
			} else {
				s.scripted[key] = q
			}
			return f
		}
	}
	if !post {
		return FaultNone
	}
	fs := &s.faults
	for _, c := range [...]struct {
		p float64
		f Fault
	}{
		{fs.RateLimit, FaultRateLimit},
		{fs.Unavailable, FaultUnavailable},
		{fs.DropBeforeProcessing, FaultDropBefore},
		{fs.DropAfterProcessing, FaultDropAfter},
		{fs.ServerErrorAfterProcessing, FaultServerError},
	} {
		if c.p <= 0 {
			continue
		}
		if u < c.p {
			return c.f
		}
		u -= c.p
	}
	return FaultNone
}

// delayLocked draws the latency for one request.
func (s *Sim) delayLocked() time.Duration {
	if p := s.faults.SlowShare; p > 0 && s.jitterRNG.Float64() < p {
		return s.faults.SlowLatency
	}
	d := s.faults.Latency
	if j := s.faults.LatencyJitter; j > 0 {
		d += time.Duration(s.jitterRNG.Int64N(int64(j)))
	}
	return d
}

// sleep waits d or until ctx is done. A request whose client has gone away
// still executes afterwards, as it would at Stripe, which cannot tell; it
// merely executes sooner.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// faultFailure is the answer of a fault that answers at all.
func faultFailure(f Fault) *failure {
	switch f {
	case FaultRateLimit:
		return rateLimited()
	case FaultUnavailable:
		return unavailable("true")
	case FaultShouldRetryFalse:
		return unavailable("false")
	case FaultLockTimeout:
		return lockTimeout()
	case FaultServerError:
		return serverError()
	}
	return nil
}
