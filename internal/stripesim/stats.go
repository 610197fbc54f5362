package stripesim

import "maps"

// RequestKey identifies a row of Stats.Requests. Path is the route pattern
// ("/v1/payment_intents/{id}"), Status 0 means the connection was dropped
// without an answer.
type RequestKey struct {
	Method string
	Path   string
	Status int
}

// Stats counts what the simulator did, so tests can assert on effects
// (how many charges really happened) rather than on what a client saw.
type Stats struct {
	Requests map[RequestKey]int
	// PaymentIntentsCreated counts POST /v1/payment_intents creates; the
	// PaymentIntents of subscriptions' invoices are not in it (they are one
	// per invoice: see InvoicesCreated).
	PaymentIntentsCreated int
	SubscriptionsCreated  int
	InvoicesCreated       int
	CustomersCreated      int
	// RefundsCreated counts refunds created (POST /v1/refunds that
	// executed and succeeded).
	RefundsCreated int
	// Replays counts answers served from the idempotency cache.
	Replays int
	// IdempotencyMismatches counts idempotency_error answers.
	IdempotencyMismatches int
	// KeysInUse counts 409 idempotency_key_in_use answers.
	KeysInUse int
	Faults    map[Fault]int
	// InFlight is the number of create requests currently executing (key
	// claimed, answer not yet cached): a test can wait for it to be sure a
	// duplicate will meet 409 idempotency_key_in_use.
	InFlight int
	// Webhook events queued, delivered (2xx), given up after retries, and
	// dropped because the queue was full.
	WebhooksQueued    int
	WebhooksDelivered int
	WebhooksFailed    int
	WebhooksDropped   int
}

// Stats returns a copy of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = maps.Clone(s.stats.Requests)
	st.Faults = maps.Clone(s.stats.Faults)
	return st
}

// Count returns how many requests to method and route pattern path got status.
func (st Stats) Count(method, path string, status int) int {
	return st.Requests[RequestKey{Method: method, Path: path, Status: status}]
}
