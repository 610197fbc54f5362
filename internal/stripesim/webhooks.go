package stripesim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Webhook delivery defaults.
const (
	// DefaultWebhookQueue bounds the events waiting for delivery; past it new
	// events are dropped and counted, never blocking an API request.
	DefaultWebhookQueue = 1024
	// webhookAttempts is how often one event is posted before it is given up
	// (Stripe retries for days; a test needs a few).
	webhookAttempts = 4
)

// webhookEvent is one event on its way to the endpoint.
type webhookEvent struct {
	payload []byte
}

// webhooks delivers signed events to one endpoint from one worker.
type webhooks struct {
	url, secret string
	client      *http.Client
	queue       chan webhookEvent
	rng         *rand.Rand // event ids; guarded by Sim.mu
	ctx         context.Context
	cancel      context.CancelFunc
	done        chan struct{}
	once        sync.Once
}

func newWebhooks(cfg Config, seed, nonce uint64) *webhooks {
	if cfg.WebhookURL == "" {
		return nil
	}
	n := cfg.WebhookQueue
	if n <= 0 {
		n = DefaultWebhookQueue
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &webhooks{
		url: cfg.WebhookURL, secret: cfg.WebhookSecret,
		client: &http.Client{Timeout: 5 * time.Second},
		queue:  make(chan webhookEvent, n),
		rng:    rand.New(rand.NewPCG(seed, 0xd6e8feb86659fd93^nonce)),
		ctx:    ctx, cancel: cancel, done: make(chan struct{}),
	}
	return w
}

// Close stops webhook delivery; events not yet delivered are dropped. It is
// safe to call on a Sim without webhooks, and more than once.
func (s *Sim) Close() {
	w := s.hooks
	if w == nil {
		return
	}
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
}

// pendingEvent is an event a create decided and encoded outside the lock.
type pendingEvent struct {
	typ    string
	object []byte
}

// emitLocked queues the events of objects a request created, in order.
// It never blocks: with the queue full the event is dropped and counted.
func (s *Sim) emitLocked(c created, now time.Time) {
	for _, ev := range c.events {
		s.eventLocked(ev.typ, ev.object, now)
	}
}

// eventLocked queues one event whose data.object is object, the object's
// JSON at that moment.
func (s *Sim) eventLocked(typ string, object []byte, now time.Time) {
	if s.hooks != nil {
		s.queueLocked(typ, object, now)
	}
}

func (s *Sim) queueLocked(typ string, object []byte, now time.Time) {
	ev := struct {
		ID         string `json:"id"`
		Object     string `json:"object"`
		APIVersion string `json:"api_version"`
		Created    int64  `json:"created"`
		Type       string `json:"type"`
		Livemode   bool   `json:"livemode"`
		Data       struct {
			Object json.RawMessage `json:"object"`
		} `json:"data"`
		PendingWebhooks int `json:"pending_webhooks"`
	}{
		ID: randomID(s.hooks.rng, "evt_", longID), Object: "event", APIVersion: APIVersion,
		Created: now.Unix(), Type: typ, PendingWebhooks: 1,
	}
	ev.Data.Object = object
	select {
	case s.hooks.queue <- webhookEvent{payload: mustJSON(ev)}:
		s.stats.WebhooksQueued++
	default:
		s.stats.WebhooksDropped++
	}
}

// deliver is the worker: it posts each event, retrying a few times on a
// non-2xx answer or a network error.
func (s *Sim) deliver() {
	w := s.hooks
	defer close(w.done)
	for {
		select {
		case <-w.ctx.Done():
			return
		case ev := <-w.queue:
			ok := false
			for i := range webhookAttempts {
				if i > 0 {
					sleep(w.ctx, time.Duration(25<<i)*time.Millisecond)
				}
				if w.ctx.Err() != nil {
					return
				}
				if w.post(ev.payload) {
					ok = true
					break
				}
			}
			s.mu.Lock()
			if ok {
				s.stats.WebhooksDelivered++
			} else {
				s.stats.WebhooksFailed++
			}
			s.mu.Unlock()
		}
	}
}

func (w *webhooks) post(payload []byte) bool {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.url, bytes.NewReader(payload))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	req.Header.Set("Stripe-Signature", SignWebhook(payload, w.secret, time.Now()))
	resp, err := w.client.Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

// SignWebhook returns the Stripe-Signature header for payload signed at t:
// t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>. Stripe signs with
// the wall clock, and receivers check it against theirs, so deliveries use
// real time even when the simulator runs on a ManualClock.
func SignWebhook(payload []byte, secret string, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(payload)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
