package stripesim

import (
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// APIVersion is the Stripe API version the simulator speaks, the one
// stripe-go v76 pins. Requests naming an older version get that version's
// default for automatic_payment_methods; everything else is the same.
const APIVersion = "2023-10-16"

// DefaultMaxSubscriptionsPerCustomer is the per-customer subscription cap
// used when Config.MaxSubscriptionsPerCustomer is zero.
const DefaultMaxSubscriptionsPerCustomer = 25

// maxBody bounds a request body; Stripe's own limit is far above anything
// billingd sends.
const maxBody = 1 << 20

// Config configures a Sim. The zero value is ready to use: real time,
// seed 0, no faults, search consistent immediately, any sk_test_ key.
type Config struct {
	// Seed makes random faults and latency jitter reproducible: the same
	// sequence of requests meets the same faults. Concurrent requests are
	// admitted in scheduling order, so only sequential runs repeat exactly.
	// Object, request and event ids also mix in a per-instance nonce from
	// crypto/rand, so a restarted simulator never hands out an id again
	// (unless ReproducibleIDs).
	Seed int64
	// ReproducibleIDs derives ids from Seed alone, so two simulators with one
	// Seed hand out the same ids. Off by default: clients that remember ids
	// across a restart (as billingd does) must not see one reused.
	ReproducibleIDs bool
	Faults          Faults
	// Clock drives created timestamps, the idempotency window and search lag;
	// nil means the system clock.
	Clock Clock
	// SearchLag is how long after creation an object becomes visible to
	// search (by Clock), since Stripe search is eventually consistent.
	// Retrieval by id is immediate, as at Stripe.
	SearchLag time.Duration
	// APIKeys are the accepted secret keys; empty accepts any key beginning
	// with sk_test_.
	APIKeys []string
	// ForbiddenKeys are recognised keys that get 403 on every request, like
	// a restricted key lacking permissions.
	ForbiddenKeys []string
	// MaxSubscriptionsPerCustomer caps subscriptions per customer;
	// zero means DefaultMaxSubscriptionsPerCustomer.
	MaxSubscriptionsPerCustomer int
	// WebhookURL, when set, receives a signed event (as Stripe sends them,
	// API version APIVersion) for every object created, delivered
	// asynchronously by one worker; call Close to stop it.
	WebhookURL string
	// WebhookSecret is the endpoint secret events are signed with.
	WebhookSecret string
	// WebhookQueue bounds undelivered events; zero means DefaultWebhookQueue.
	WebhookQueue int
	// MaxObjects, when positive, bounds memory for long-running demos and
	// benchmarks: past it, the oldest PaymentIntents and Subscriptions are
	// forgotten (retrieve and search no longer find them), and so are the
	// oldest finished idempotency keys beyond twice that many, before their
	// 24 h. Stripe forgets nothing that fast, so tests leave it 0 (unbounded).
	MaxObjects int
	// InUseErrorType is the error type of the 409 idempotency_key_in_use
	// answer. Stripe has been seen answering it both as
	// InUseInvalidRequest (the default, "") and as InUseIdempotency; a
	// client should accept either, and this lets a test check that it does.
	InUseErrorType string
	// RefundObjectEvents adds refund.created, refund.updated and
	// refund.failed to the events of card refunds. Stripe sends those for
	// refunds of charges only from API version 2024-10-28.acacia on; under
	// APIVersion a card refund is announced by charge.refunded and
	// charge.refund.updated alone, which is the default here.
	RefundObjectEvents bool
}

// The error types Stripe has been seen giving the 409
// idempotency_key_in_use answer, for Config.InUseErrorType.
const (
	InUseInvalidRequest = typeInvalidRequest
	InUseIdempotency    = typeIdempotency
)

// Sim is a stateful Stripe API simulator. It is an http.Handler: serve it
// with httptest.NewServer or any http.Server and point stripe-go at its URL.
//
// One mutex guards all state. Nothing slow happens under it: latency is
// spent outside it, and JSON is encoded outside it.
type Sim struct {
	clock      Clock
	searchLag  time.Duration
	keys       map[string]bool // read-only after New
	forbidden  map[string]bool // read-only after New
	maxSubs    int
	maxObjects int
	inUseType  string // read-only after New
	// refundObjectEvents is Config.RefundObjectEvents; read-only after New.
	refundObjectEvents bool

	mu        sync.Mutex
	ids       *rand.Rand // object and request ids
	faultRNG  *rand.Rand // one draw per POST
	jitterRNG *rand.Rand // one draw per request when jitter is on
	faults    Faults
	limit     *rate.Limiter // Faults.Rate; nil without
	scripted  map[string][]scriptedFault
	idem      map[idemKey]*idemEntry
	idemQueue []*idemEntry // insertion order, for pruning
	idemGone  int          // keys dropped from idem since it was last rebuilt
	pis       store[piState]
	subs      store[subState]
	invoices  store[Invoice]
	setUp     map[string]bool // customer and card set up for off-session use
	due       deadlines       // time-based transitions, soonest first
	customers store[Customer]
	prices    store[Price]
	subsOf    map[string]int // customer id -> subscriptions
	refunds   store[refundState]
	refundsOf map[string][]*record[refundState] // payment intent id -> its refunds, oldest first
	refundSeq int64
	stats     Stats
	hooks     *webhooks // nil without Config.WebhookURL
}

// New returns a simulator holding the fixtures described in the package
// documentation.
func New(cfg Config) *Sim {
	seed := uint64(cfg.Seed)
	var nonce uint64
	if !cfg.ReproducibleIDs {
		nonce = instanceNonce()
	}
	s := &Sim{
		clock:              cfg.Clock,
		searchLag:          cfg.SearchLag,
		keys:               setOf(cfg.APIKeys),
		forbidden:          setOf(cfg.ForbiddenKeys),
		maxSubs:            cfg.MaxSubscriptionsPerCustomer,
		maxObjects:         cfg.MaxObjects,
		inUseType:          cfg.InUseErrorType,
		refundObjectEvents: cfg.RefundObjectEvents,
		ids:                rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15^nonce)),
		faultRNG:           rand.New(rand.NewPCG(seed, 0xbf58476d1ce4e5b9)),
		jitterRNG:          rand.New(rand.NewPCG(seed, 0x94d049bb133111eb)),
		faults:             cfg.Faults,
		limit:              cfg.Faults.limiter(),
		scripted:           map[string][]scriptedFault{},
		idem:               map[idemKey]*idemEntry{},
		pis:                newStore[piState](),
		subs:               newStore[subState](),
		invoices:           newStore[Invoice](),
		setUp:              map[string]bool{},
		customers:          newStore[Customer](),
		prices:             newStore[Price](),
		subsOf:             map[string]int{},
		refunds:            newStore[refundState](),
		refundsOf:          map[string][]*record[refundState]{},
		stats:              Stats{Requests: map[RequestKey]int{}, Faults: map[Fault]int{}},
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.inUseType == "" {
		s.inUseType = InUseInvalidRequest
	}
	if s.maxSubs <= 0 {
		s.maxSubs = DefaultMaxSubscriptionsPerCustomer
	}
	s.addFixtures()
	if s.hooks = newWebhooks(cfg, seed, nonce); s.hooks != nil {
		go s.deliver()
	}
	return s
}

func setOf(keys []string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// exchange is one request on its way through the simulator.
type exchange struct {
	method, path string
	route        route
	pathID       string
	apiKey       string
	idemKey      string
	version      string
	form         url.Values
	fingerprint  [32]byte
	baseURL      string // scheme and host the client reached us at
	expand       int    // subscriptions: 1 latest_invoice, 2 with its payment_intent

	// Parsed parameters; invalid is a parameter validation failure of a
	// create, which the idempotency layer answers without caching.
	pi      *piParams
	sub     *subParams
	cus     *cusParams
	capture *captureParams
	cancel  string // cancellation_reason
	refund  *refundParams
	subEnd  *bool // cancel_at_period_end of a subscription update, nil if absent
	list    listRequest
	invalid *failure
	early   *failure // prepare's answer to a request that goes no further

	// Decided in the first critical section.
	reqID     string
	fault     Fault
	delay     time.Duration
	now       time.Time
	fail      *failure   // the answer, when no execution is needed (or it failed early)
	replay    *response  // a cached answer
	claim     *idemEntry // the key this request executes under
	executing bool
	piPlan    *piPlan
	subPlan   *subPlan
	cusPlan   *cusPlan
}

// response is an encoded answer, as cached under an idempotency key.
type response struct {
	status      int
	body        []byte
	shouldRetry string
	requestID   string // the request that produced it, for Original-Request on replay
}

// created holds the objects one request made, committed together, and
// the events announcing them, in order.
type created struct {
	pi     *record[piState]
	sub    *record[subState]
	inv    *record[Invoice]
	subPI  *record[piState] // the subscription's first invoice's
	cus    *record[Customer]
	events []pendingEvent
}

// ServeHTTP answers one Stripe API request. The order of layers is
// Stripe's: authentication, routing and parsing; then faults that strike
// before processing; then the idempotency layer; then latency (spent while
// the key is held) and execution; then faults that strike after processing.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, simPrefix) {
		s.serveSim(w, r)
		return
	}
	x := &exchange{
		method:  r.Method,
		path:    r.URL.Path,
		idemKey: strings.TrimSpace(r.Header.Get("Idempotency-Key")),
		version: r.Header.Get("Stripe-Version"),
		baseURL: baseURL(r),
	}
	if r.Method != http.MethodPost {
		x.idemKey = "" // Stripe ignores idempotency keys on GET
	}
	x.route, x.pathID = matchRoute(r.Method, r.URL.Path)
	x.early = s.prepare(w, x, r)
	s.decide(x)
	finished := false
	defer func() {
		if !finished && x.executing {
			s.abandon(x)
		}
	}()
	sleep(r.Context(), x.delay)
	out := s.assemble(x)
	s.finish(x, &out)
	finished = true
	s.send(w, x, out)
}

// decide is the first critical section: the request's id, latency and
// time; then, for a request prepare let through, its fault and, for a
// POST under the idempotency layer that no fault stops first, that layer
// and the plan of its execution.
func (s *Sim) decide(x *exchange) {
	s.mu.Lock()
	x.reqID = randomID(s.ids, "req_", shortID)
	x.delay = s.delayLocked()
	x.now = s.clock.Now()
	s.applyDueLocked(x.now)
	if x.early == nil {
		x.fault = s.drawFaultLocked(x)
		if !x.fault.beforeProcessing() && x.route.idempotent() {
			s.admitLocked(x, x.now)
			if x.fail == nil && x.replay == nil {
				x.executing = true
				s.stats.InFlight++
				x.fail = s.planLocked(x)
			}
		}
	}
	s.mu.Unlock()
}

// drawFaultLocked picks and counts the request's fault: Stripe's rate
// limiter comes first, over a scripted or random one (still drawn, which
// keeps the random sequence independent of the limiter).
func (s *Sim) drawFaultLocked(x *exchange) Fault {
	f := s.nextFaultLocked(x.method, x.path)
	if s.limit != nil && !s.limit.AllowN(x.now, 1) {
		f = FaultRateLimit
	}
	if f != FaultNone {
		s.stats.Faults[f]++
	}
	return f
}

// abandon undoes the admission of an executing request that never finished
// (a panic): it is no longer in flight and its key is released.
func (s *Sim) abandon(x *exchange) {
	s.mu.Lock()
	s.stats.InFlight--
	if x.claim != nil {
		s.releaseLocked(x.claim)
	}
	s.mu.Unlock()
}

// outcome is how a request ends.
type outcome struct {
	resp response
	made created // the objects an executed create made
	drop bool    // hang up instead of answering
	// A GET's answer when it failed or lists objects; their bodies are
	// encoded after the lock is released.
	getFail *failure
	lst     *listing
}

// assemble builds, without the lock, the answer decided so far: prepare's,
// a fault's, a replay, an executed failure, or a create's new objects.
func (s *Sim) assemble(x *exchange) outcome {
	out := outcome{drop: x.fault == FaultDropBefore || x.fault == FaultDropAfter}
	switch {
	case x.early != nil:
		out.resp, out.drop = x.early.response(), false
	case x.fault.beforeProcessing():
		if f := faultFailure(x.fault); f != nil {
			out.resp = f.response()
		}
	case x.replay != nil:
		out.resp = *x.replay
	case x.fail != nil:
		out.resp = x.fail.response()
	case x.executing:
		out.resp, out.made = s.build(x)
	}
	return out
}

// finish is the second critical section: reads and changes of existing
// objects, the commit of new ones and their events, a fault that strikes
// after processing, the answer cached under the key, and the request count.
func (s *Sim) finish(x *exchange, out *outcome) {
	var serverErr response
	if x.fault == FaultServerError {
		serverErr = serverError().response()
	}
	s.mu.Lock()
	s.applyDueLocked(s.clock.Now())
	if x.early == nil && !x.fault.beforeProcessing() && !x.route.idempotent() {
		out.resp, out.getFail, out.lst = s.readLocked(x)
	}
	if x.executing && x.fail == nil && x.route.mutates() {
		out.resp = s.mutateLocked(x)
	}
	s.commitLocked(out.made, x.now)
	s.emitLocked(out.made, x.now)
	if x.fault == FaultServerError {
		out.resp, out.getFail, out.lst = serverErr, nil, nil
	}
	if out.getFail != nil {
		out.resp.status = out.getFail.status
	}
	if x.executing {
		s.stats.InFlight--
		if x.claim != nil {
			out.resp.requestID = x.reqID
			s.completeLocked(x.claim, out.resp)
		}
	}
	status := out.resp.status
	if out.drop {
		status = 0
	}
	s.stats.Requests[RequestKey{Method: x.method, Path: x.route.pattern(), Status: status}]++
	s.mu.Unlock()
}

// send hangs up or writes the answer, encoding a GET's failure or listing.
func (s *Sim) send(w http.ResponseWriter, x *exchange, out outcome) {
	if out.drop {
		hangUp(w)
		return
	}
	resp := out.resp
	switch {
	case out.getFail != nil:
		resp = out.getFail.response()
	case out.lst != nil:
		resp.body = out.lst.encode()
	}
	s.write(w, x, resp)
}

// prepare authenticates, routes and parses a request, returning the answer
// if the request goes no further. None of it touches state.
func (s *Sim) prepare(w http.ResponseWriter, x *exchange, r *http.Request) *failure {
	key, f := s.authenticate(r.Header.Get("Authorization"))
	if f != nil {
		return f
	}
	x.apiKey = key
	if x.route == routeUnknown {
		return notFoundURL(r.Method, r.URL.Path)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		return invalidValue("", "Invalid request: could not parse the form-encoded body")
	}
	x.form = r.Form
	switch x.route {
	case routeCreatePaymentIntent:
		x.pi, x.invalid = parsePaymentIntent(x.form, x.version)
	case routeCreateCustomer:
		x.cus, x.invalid = parseCustomer(x.form)
	case routeCreateSubscription:
		x.sub, x.invalid = parseSubscription(x.form)
		x.expand = expandLevel(x.form, "")
	case routeCapturePaymentIntent:
		x.capture, x.invalid = parseCapture(x.form)
	case routeCancelPaymentIntent:
		x.cancel, x.invalid = parseCancel(x.form)
	case routeCreateRefund:
		x.refund, x.invalid = parseRefund(x.form)
	case routeUpdateSubscription:
		x.subEnd, x.invalid = parseSubscriptionUpdate(x.form)
		x.expand = expandLevel(x.form, "")
	case routeListRefunds:
		x.list, f = parseRefundList(x.form)
	case routeGetSubscription, routeCancelSubscription:
		x.expand = expandLevel(x.form, "")
	case routeSearchPaymentIntents:
		x.list, f = parseSearch(x.form, paymentIntentSearchField, "payment_intents")
	case routeSearchSubscriptions:
		x.list, f = parseSearch(x.form, subscriptionSearchField, "subscriptions")
		x.expand = expandLevel(x.form, "data.")
	case routeSearchCustomers:
		x.list, f = parseSearch(x.form, customerSearchField, "customers")
	case routeListCustomers:
		x.list.limit, f = parseLimit(x.form)
		x.list.startingAfter = x.form.Get("starting_after")
		x.list.email = x.form.Get("email")
	}
	if x.route.idempotent() {
		x.fingerprint = fingerprint(x.form)
	}
	return f
}

// planLocked does the part of execution that reads or reserves state. A
// failure it returns is an executed error: cached under the key.
func (s *Sim) planLocked(x *exchange) *failure {
	switch x.route {
	case routeCreatePaymentIntent:
		return s.planPaymentIntentLocked(x)
	case routeCreateCustomer:
		return s.planCustomerLocked(x)
	case routeCreateSubscription:
		return s.planSubscriptionLocked(x)
	}
	return nil
}

// build finishes execution without the lock: it assembles and encodes the
// new object and the answer.
func (s *Sim) build(x *exchange) (response, created) {
	switch x.route {
	case routeCreatePaymentIntent:
		resp, rec := buildPaymentIntent(x)
		c := created{pi: rec, events: []pendingEvent{{"payment_intent.created", rec.json}}}
		if ev := piStatusEvent(&rec.obj.PaymentIntent); ev != "" {
			c.events = append(c.events, pendingEvent{ev, rec.json})
		}
		return resp, c
	case routeCreateCustomer:
		resp, rec := buildCustomer(x)
		return resp, created{cus: rec, events: []pendingEvent{{"customer.created", rec.json}}}
	case routeCreateSubscription:
		return buildSubscription(x)
	}
	return response{}, created{}
}

// mutateLocked executes a change of an existing object. Its failures are
// executed errors, cached under the idempotency key like its answers.
func (s *Sim) mutateLocked(x *exchange) response {
	var (
		js []byte
		f  *failure
	)
	switch x.route {
	case routeCapturePaymentIntent:
		js, f = s.captureLocked(x.pathID, x.capture, x.now)
	case routeCancelPaymentIntent:
		js, f = s.cancelLocked(x.pathID, x.cancel, x.now)
	case routeCreateRefund:
		js, f = s.createRefundLocked(x)
	case routeUpdateSubscription:
		var r *record[subState]
		if r, f = s.updateSubscriptionLocked(x.pathID, x.subEnd, x.now); f == nil {
			js = s.expansionLocked(&r.obj, x.expand).apply(r.json)
		}
	}
	if f != nil {
		return f.response()
	}
	return response{status: 200, body: js}
}

// commitLocked stores new objects. It is the one place objects come into
// existence, so it is where webhook events will be emitted.
func (s *Sim) commitLocked(c created, now time.Time) {
	if c.pi != nil {
		s.pis.add(c.pi)
		s.pis.trim(s.maxObjects)
		s.stats.PaymentIntentsCreated++
		s.settledLocked(&c.pi.obj, now)
	}
	if c.sub != nil {
		s.subs.add(c.sub)
		s.subs.trim(s.maxObjects)
		s.stats.SubscriptionsCreated++
		if c.sub.obj.Status == "incomplete" {
			s.scheduleLocked(c.sub.created.Add(IncompleteWindow), deadlineIncomplete, c.sub.id)
		}
	}
	if c.inv != nil {
		s.invoices.add(c.inv)
		s.invoices.trim(s.maxObjects)
		s.stats.InvoicesCreated++
	}
	if c.subPI != nil {
		s.pis.add(c.subPI)
		s.pis.trim(s.maxObjects)
	}
	if c.cus != nil {
		s.customers.add(c.cus)
		s.stats.CustomersCreated++
	}
}

// readLocked answers a GET. It returns either a response, a failure, or a
// listing whose body is assembled after the lock is released.
func (s *Sim) readLocked(x *exchange) (response, *failure, *listing) {
	ok := func(b []byte) (response, *failure, *listing) { return response{status: 200, body: b}, nil, nil }
	missing := func(kind string) (response, *failure, *listing) {
		return response{}, resourceMissing(404, "id", kind, x.pathID), nil
	}
	listed := func(l listing) (response, *failure, *listing) { return response{status: 200}, nil, &l }
	switch x.route {
	case routeGetPaymentIntent:
		if r := s.pis.byID[x.pathID]; r != nil {
			return ok(r.json)
		}
		return missing("payment_intent")
	case routeGetSubscription:
		if r := s.subs.byID[x.pathID]; r != nil {
			return ok(s.expansionLocked(&r.obj, x.expand).apply(r.json))
		}
		return missing("subscription")
	case routeCancelSubscription:
		r, f := s.cancelSubscriptionLocked(x.pathID, x.now)
		if f != nil {
			return response{}, f, nil
		}
		return ok(s.expansionLocked(&r.obj, x.expand).apply(r.json))
	case routeGetRefund:
		if r := s.refunds.byID[x.pathID]; r != nil {
			return ok(r.json)
		}
		return missing("refund")
	case routeListRefunds:
		l, f := s.listRefundsLocked(x.list)
		if f != nil {
			return response{}, f, nil
		}
		return listed(l)
	case routeGetCustomer:
		if r := s.customers.byID[x.pathID]; r != nil {
			return ok(r.json)
		}
		return missing("customer")
	case routeSearchPaymentIntents:
		return listed(searchLocked(&s.pis, x.list, piStateField, s, "/v1/payment_intents/search"))
	case routeSearchSubscriptions:
		recs, l := searchRecordsLocked(&s.subs, x.list, subStateField, s, "/v1/subscriptions/search")
		if x.expand > 0 {
			l.expansions = make([]*expansion, len(recs))
			for i, r := range recs {
				l.expansions[i] = s.expansionLocked(&r.obj, x.expand)
			}
		}
		return listed(l)
	case routeSearchCustomers:
		return listed(searchLocked(&s.customers, x.list, customerField, s, "/v1/customers/search"))
	case routeListCustomers:
		l, f := s.listCustomersLocked(x.list)
		if f != nil {
			return response{}, f, nil
		}
		return listed(l)
	}
	return response{}, notFoundURL(x.method, x.path), nil
}

// write sends an answer with the headers Stripe sends.
func (s *Sim) write(w http.ResponseWriter, x *exchange, resp response) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(resp.body))}
	h["Request-Id"] = []string{x.reqID}
	v := x.version
	if v == "" {
		v = APIVersion
	}
	h["Stripe-Version"] = []string{v}
	if x.idemKey != "" {
		h["Idempotency-Key"] = []string{x.idemKey}
	}
	if x.replay != nil {
		h["Idempotent-Replayed"] = []string{"true"}
		h["Original-Request"] = []string{resp.requestID}
	}
	if resp.shouldRetry != "" {
		h["Stripe-Should-Retry"] = []string{resp.shouldRetry}
	}
	if resp.status == http.StatusUnauthorized {
		h["Www-Authenticate"] = []string{`Bearer realm="Stripe"`}
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body) // the client going away is its own business
}

// baseURL is the scheme and host a client reached the simulator at, for
// the URLs of its hosted test pages.
func baseURL(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// hangUp closes the connection without answering, the way a network
// failure looks to a client. Where hijacking is impossible (HTTP/2) the
// stream is aborted instead.
func hangUp(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}
