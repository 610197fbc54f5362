package service

// The idempotency events an Observer is told about.
const (
	// EventReplay: a call answered without causing a Stripe request (from
	// the record, or by joining an identical call in flight).
	EventReplay = "replay"
	// EventFingerprintConflict: a request_id reused with other parameters.
	EventFingerprintConflict = "fingerprint_conflict"
	// EventCoalescedWait: a call waited on an identical one in flight.
	EventCoalescedWait = "coalesced_wait"
)

// Observer is told about idempotency events, for metrics. Methods must be
// cheap and safe for concurrent use.
type Observer interface {
	Event(method, event string)
}

// WithObserver reports idempotency events to o.
func WithObserver(o Observer) Option { return func(s *Service) { s.observer = o } }

func (s *Service) observe(m Method, event string) {
	if s.observer != nil {
		s.observer.Event(string(m), event)
	}
}
