// Command example is a billingd client in Go: it charges, replays, triggers a
// decline and reads the error details, the way a calling service should. It
// exits 1 when billingd does not behave as documented, so CI runs it as a test
// (make examples-test).
//
//	go run ./examples/go [-addr 127.0.0.1:50051] [-scenario basic|outage [-sim http://127.0.0.1:12111]]
//
// With BILLINGD_TOKEN set it sends "authorization: Bearer <token>". With -sim
// (the --stripe-sim-listen address of billingd's simulator) the outage
// scenario also counts, at the simulator, the PaymentIntents each request
// made: one.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// serviceConfig is the recommended client configuration (README, "Client
// configuration"). gRPC retries UNAVAILABLE by itself, up to 5 attempts with
// exponential backoff, resending the same request message, so the same
// request_id: billingd answers a retry from its record or finishes the
// pending operation, and never charges twice. No other code is retried:
// everything else is final for that request_id, or (DEADLINE_EXCEEDED) a
// decision for the caller. retryThrottling stops retries when most calls
// fail, so a long outage is not multiplied by 5.
const serviceConfig = `{
  "methodConfig": [{
    "name": [{"service": "billing.v1.BillingService"}],
    "timeout": "15s",
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.2s",
      "maxBackoff": "3s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", envOr("BILLINGD_ADDR", "127.0.0.1:50051"), "billingd address (env BILLINGD_ADDR)")
	scenario := flag.String("scenario", "basic", "basic: charge, replay, decline, 3-D Secure; outage: charges against a billingd whose Stripe keeps failing (--stripe-sim-faults) must each succeed once")
	charges := flag.Int("charges", 20, "outage scenario: how many charges")
	sim := flag.String("sim", "", "outage scenario: the simulator's URL, http://127.0.0.1:PORT (loopback only), to count PaymentIntents there")
	useTLS := flag.Bool("tls", false, "connect with TLS (system roots unless -ca)")
	caFile := flag.String("ca", "", "PEM CA bundle that signed billingd's certificate (implies -tls)")
	flag.Parse()

	token := os.Getenv("BILLINGD_TOKEN")
	secure := *useTLS || *caFile != ""
	if token != "" && !secure && !loopback(*addr) {
		return fmt.Errorf("refusing to send BILLINGD_TOKEN in plaintext to %s: use -tls", *addr)
	}

	var attempts attemptCounter
	opts := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithStatsHandler(&attempts),
	}
	switch {
	case *caFile != "":
		creds, err := credentials.NewClientTLSFromFile(*caFile, "")
		if err != nil {
			return err
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	case *useTLS:
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewClientTLSFromCert(nil, "")))
	default:
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: token, secure: secure}))
	}
	conn, err := grpc.NewClient(*addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()

	if *sim != "" {
		u, err := url.Parse(*sim)
		if err != nil || u.Scheme != "http" || !loopback(u.Host) {
			return fmt.Errorf("-sim %q: want http://<loopback>:PORT", *sim)
		}
	}

	c := &client{billing: billingv1.NewBillingServiceClient(conn), attempts: &attempts, prefix: "go-" + rand.Text()[:10], sim: strings.TrimSuffix(*sim, "/")}
	switch *scenario {
	case "basic":
		c.basic()
	case "outage":
		c.outage(*charges)
	default:
		return fmt.Errorf("unknown -scenario %q", *scenario)
	}
	if len(c.failed) > 0 {
		return fmt.Errorf("%d expectation(s) failed:\n  %s", len(c.failed), strings.Join(c.failed, "\n  "))
	}
	fmt.Printf("ok: %s scenario against %s\n", *scenario, *addr)
	return nil
}

type client struct {
	billing  billingv1.BillingServiceClient
	attempts *attemptCounter
	prefix   string // makes this run's request_ids unique
	sim      string // the simulator's URL, for the outage scenario's count
	quiet    bool   // print only calls that failed or were retried
	failed   []string
}

// expect records a failed expectation without stopping the run.
func (c *client) expect(ok bool, format string, args ...any) {
	if !ok {
		msg := fmt.Sprintf(format, args...)
		c.failed = append(c.failed, msg)
		fmt.Println("  FAIL:", msg)
	}
}

// basic charges, repeats the charge, has a card declined (twice) and starts
// a charge that needs 3-D Secure.
func (c *client) basic() {
	req := &billingv1.ChargeRequest{
		RequestId: c.prefix + "-order-1", Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_visa",
	}
	first, _, err := c.charge(req)
	if err != nil {
		c.expect(false, "charge %s: %v", req.RequestId, describe(err))
		return
	}
	c.expect(strings.HasPrefix(first.GetPaymentIntentId(), "pi_"), "charge: payment_intent_id %q, want pi_…", first.GetPaymentIntentId())
	c.expect(first.GetStatus() == "succeeded", "charge: status %q, want succeeded", first.GetStatus())
	c.expect(!first.GetReplayed(), "charge: replayed = true on the first call")

	again, header, err := c.charge(req)
	if err != nil {
		c.expect(false, "replay %s: %v", req.RequestId, describe(err))
		return
	}
	c.expect(again.GetPaymentIntentId() == first.GetPaymentIntentId(),
		"replay: payment_intent_id %q, want the first call's %q", again.GetPaymentIntentId(), first.GetPaymentIntentId())
	c.expect(again.GetReplayed(), "replay: replayed = false, want true")
	c.expect(strings.Join(header.Get("idempotent-replayed"), ",") == "true",
		"replay: header idempotent-replayed = %q, want \"true\"", header.Get("idempotent-replayed"))

	c.operation(req.RequestId, billingv1.Operation_STATE_SUCCEEDED, first.GetPaymentIntentId())

	decline := &billingv1.ChargeRequest{
		RequestId: c.prefix + "-order-2", Amount: 2000, Currency: "usd", PaymentMethodId: "pm_card_chargeDeclined",
	}
	var declineErrs [2]error
	for i := range declineErrs {
		_, _, err := c.charge(decline)
		declineErrs[i] = err
		if err == nil {
			c.expect(false, "decline: charge with pm_card_chargeDeclined succeeded")
			return
		}
		info, _ := details(err)
		c.expect(status.Code(err) == codes.FailedPrecondition, "decline: code %s, want FailedPrecondition", status.Code(err))
		c.expect(info.GetDomain() == "billingd" && info.GetReason() == "CARD_DECLINED",
			"decline: ErrorInfo %s/%s, want billingd/CARD_DECLINED", info.GetDomain(), info.GetReason())
		c.expect(info.GetMetadata()["decline_code"] != "", "decline: ErrorInfo metadata has no decline_code: %v", info.GetMetadata())
	}
	// A final error is replayed as the identical status, details included.
	c.expect(proto.Equal(status.Convert(declineErrs[0]).Proto(), status.Convert(declineErrs[1]).Proto()),
		"decline: the repeated request got another status:\n    %v\n    %v", describe(declineErrs[0]), describe(declineErrs[1]))
	c.operation(decline.RequestId, billingv1.Operation_STATE_FAILED, "")

	// A card that needs 3-D Secure, customer present: OK, requires_action,
	// and the client_secret for Stripe.js. The secret is not printed.
	tds := &billingv1.ChargeRequest{
		RequestId: c.prefix + "-order-3", Amount: 2500, Currency: "eur", PaymentMethodId: "pm_card_threeDSecure2Required",
	}
	resp, _, err := c.charge(tds)
	if err != nil {
		c.expect(false, "3-D Secure %s: %v", tds.RequestId, describe(err))
		return
	}
	c.expect(resp.GetStatus() == "requires_action" && resp.GetPaymentStatus() == billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_ACTION,
		"3-D Secure: status %q %s, want requires_action", resp.GetStatus(), resp.GetPaymentStatus())
	c.expect(strings.HasPrefix(resp.GetClientSecret(), resp.GetPaymentIntentId()+"_secret_"),
		"3-D Secure: client_secret is not the PaymentIntent's secret")
	c.operation(tds.RequestId, billingv1.Operation_STATE_REQUIRES_ACTION, resp.GetPaymentIntentId())
}

// outage sends n charges to a billingd whose Stripe fails often: each must
// succeed exactly once, some only thanks to the retries, and each repeat
// must return the same PaymentIntent.
func (c *client) outage(n int) {
	before := c.attempts.n.Load()
	seen := map[string]string{} // payment_intent_id → request_id
	var reqs []*billingv1.ChargeRequest
	var pis []string
	for i := range n {
		req := &billingv1.ChargeRequest{
			RequestId: fmt.Sprintf("%s-outage-%d", c.prefix, i), Amount: int64(1000 + i), Currency: "eur", PaymentMethodId: "pm_card_visa",
			Metadata: map[string]string{"example_run": c.prefix, "n": strconv.Itoa(i)},
		}
		// Every fifth caller gives up after 5 ms, then sends the same request again.
		var first time.Duration
		if i%5 == 0 {
			first = 5 * time.Millisecond
		}
		resp, _, err := c.chargeImpatient(req, first)
		if err != nil {
			c.expect(false, "charge %s: %v", req.RequestId, describe(err))
			continue
		}
		pi := resp.GetPaymentIntentId()
		if prev, dup := seen[pi]; dup {
			c.expect(false, "%s and %s got the same PaymentIntent %s", prev, req.RequestId, pi)
		}
		seen[pi] = req.RequestId
		reqs, pis = append(reqs, req), append(pis, pi)
	}
	sent := c.attempts.n.Load() - before
	// billingd absorbs most Stripe faults itself: how many reach the client
	// varies (make examples-test checks at billingd that faults happened).
	fmt.Printf("outage: %d charges took %d attempts\n", n, sent)

	c.quiet = true
	defer func() { c.quiet = false }()
	failedBefore := len(c.failed)
	for i, req := range reqs {
		again, _, err := c.charge(req)
		if err != nil {
			c.expect(false, "replay %s: %v", req.RequestId, describe(err))
			continue
		}
		c.expect(again.GetPaymentIntentId() == pis[i] && again.GetReplayed(),
			"replay %s: %s replayed=%v, want %s replayed=true", req.RequestId, again.GetPaymentIntentId(), again.GetReplayed(), pis[i])
		c.operation(req.RequestId, billingv1.Operation_STATE_SUCCEEDED, pis[i])
	}
	if len(c.failed) == failedBefore {
		fmt.Printf("outage: %d repeats returned the same PaymentIntents, replayed; GetOperation agrees\n", len(reqs))
	}
	if c.sim != "" {
		c.countAtSimulator(n, reqs, pis)
	}
}

// countAtSimulator asks the simulator, by Stripe's search API, for this
// run's PaymentIntents (tagged with metadata example_run and n): there must
// be exactly one per request, the one billingd answered.
func (c *client) countAtSimulator(n int, reqs []*billingv1.ChargeRequest, pis []string) {
	failedBefore := len(c.failed)
	found, err := searchPaymentIntents(c.sim, c.prefix, n)
	if err != nil {
		c.expect(false, "simulator search: %v", err)
		return
	}
	byN := map[string][]string{}
	for _, pi := range found {
		byN[pi.Metadata["n"]] = append(byN[pi.Metadata["n"]], pi.ID)
	}
	answered := map[string]string{}
	for i, req := range reqs {
		answered[req.GetMetadata()["n"]] = pis[i]
	}
	for i := range n {
		k := strconv.Itoa(i)
		ids := byN[k]
		delete(byN, k)
		c.expect(len(ids) == 1, "simulator: %d PaymentIntents for n=%d: %v", len(ids), i, ids)
		if want, ok := answered[k]; ok && len(ids) == 1 {
			c.expect(ids[0] == want, "simulator: n=%d is %s, billingd answered %s", i, ids[0], want)
		}
	}
	c.expect(len(byN) == 0, "simulator: PaymentIntents for no request: %v", byN)
	if len(c.failed) == failedBefore {
		fmt.Printf("outage: the simulator holds %d PaymentIntents for run %s, one per request\n", len(found), c.prefix)
	}
}

// simPaymentIntent is the part of a PaymentIntent the count reads.
type simPaymentIntent struct {
	ID       string            `json:"id"`
	Metadata map[string]string `json:"metadata"`
}

// searchPaymentIntents returns every PaymentIntent whose metadata
// example_run is run, all pages. Search may lag creation: it is repeated
// until it finds want objects or 30 s pass.
func searchPaymentIntents(sim, run string, want int) ([]simPaymentIntent, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		var found []simPaymentIntent
		page := ""
		for range 100 {
			q := url.Values{"query": {fmt.Sprintf("metadata['example_run']:'%s'", run)}, "limit": {"100"}}
			if page != "" {
				q.Set("page", page)
			}
			var body struct {
				Data     []simPaymentIntent `json:"data"`
				HasMore  bool               `json:"has_more"`
				NextPage string             `json:"next_page"`
			}
			if err := getJSON(ctx, sim+"/v1/payment_intents/search?"+q.Encode(), &body); err != nil {
				return nil, err
			}
			found = append(found, body.Data...)
			if page = body.NextPage; !body.HasMore || page == "" {
				break
			}
		}
		if len(found) >= want {
			return found, nil
		}
		select {
		case <-ctx.Done():
			return found, nil
		case <-time.After(time.Second):
		}
	}
}

func getJSON(ctx context.Context, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// The simulator's API key (README, "The simulator").
	req.Header.Set("Authorization", "Bearer sk_test_billingd_simulator")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// charge sends req until it has a definitive answer (see retrying).
func (c *client) charge(req *billingv1.ChargeRequest) (*billingv1.ChargeResponse, metadata.MD, error) {
	return c.chargeImpatient(req, 0)
}

// chargeImpatient is charge whose first call, if first > 0, gives up after
// first: a caller that timed out, whose charge may or may not have happened.
func (c *client) chargeImpatient(req *billingv1.ChargeRequest, first time.Duration) (*billingv1.ChargeResponse, metadata.MD, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before := c.attempts.n.Load()
	var header metadata.MD
	resp, err := retrying(ctx, func(ctx context.Context) (*billingv1.ChargeResponse, error) {
		if first > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, first)
			defer cancel()
			first = 0
		}
		return c.billing.Charge(ctx, req, grpc.Header(&header))
	})
	line := fmt.Sprintf("Charge %-28s %-22s", req.RequestId, req.PaymentMethodId)
	if err != nil {
		line += " → " + describe(err)
	} else {
		line += fmt.Sprintf(" → %s %s replayed=%v", resp.GetPaymentIntentId(), resp.GetStatus(), resp.GetReplayed())
	}
	n := c.attempts.n.Load() - before
	if n > 1 {
		line += fmt.Sprintf(" (%d attempts)", n)
	}
	if !c.quiet || err != nil || n > 1 {
		fmt.Println(line)
	}
	return resp, header, err
}

// operation checks billingd's record of requestID.
func (c *client) operation(requestID string, state billingv1.Operation_State, objectID string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op, err := retrying(ctx, func(ctx context.Context) (*billingv1.Operation, error) {
		return c.billing.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: requestID})
	})
	if err != nil {
		c.expect(false, "GetOperation %s: %v", requestID, describe(err))
		return
	}
	c.expect(op.GetState() == state, "GetOperation %s: state %s, want %s", requestID, op.GetState(), state)
	c.expect(op.GetStripeObjectId() == objectID || objectID == "",
		"GetOperation %s: stripe_object_id %q, want %q", requestID, op.GetStripeObjectId(), objectID)
}

// retrying calls f until it has a definitive answer or ctx ends. The
// service config's retryPolicy has already retried UNAVAILABLE a few times
// within one call; this outer loop rides out longer outages: it waits as long
// as RetryInfo asks (else an exponential backoff) and sends the same request
// again. DEADLINE_EXCEEDED of one call (the service config's 15 s) is retried
// the same way: the outcome is unknown, and only the same request_id can
// learn it without risking a second charge. It gives up after maxTries
// calls, or when ctx ends.
func retrying[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	const maxTries = 20
	backoff := 250 * time.Millisecond
	for try := 1; ; try++ {
		v, err := f(ctx)
		code := status.Code(err)
		if code != codes.Unavailable && code != codes.DeadlineExceeded {
			return v, err
		}
		wait := backoff
		if _, ri := details(err); ri != nil {
			wait = ri.GetRetryDelay().AsDuration()
		}
		backoff = min(2*backoff, 5*time.Second)
		if dl, ok := ctx.Deadline(); try >= maxTries || ok && time.Until(dl) < wait {
			return v, err
		}
		fmt.Printf("  retrying in %v after %s\n", wait.Round(time.Millisecond), describe(err))
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(wait):
		}
	}
}

// details returns the ErrorInfo and RetryInfo of an error status, if any.
func details(err error) (*errdetails.ErrorInfo, *errdetails.RetryInfo) {
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	return info, retry
}

// describe prints an error status as a program should read it: the code and
// the ErrorInfo reason and metadata, not the message.
func describe(err error) string {
	st := status.Convert(err)
	s := st.Code().String()
	info, retry := details(err)
	if info != nil {
		s += " " + info.GetReason()
		for _, k := range []string{"code", "decline_code", "param", "stripe_request_id"} {
			if v, ok := info.GetMetadata()[k]; ok {
				s += fmt.Sprintf(" %s=%s", k, v)
			}
		}
	} else {
		s += ": " + st.Message()
	}
	if retry != nil {
		s += fmt.Sprintf(" retry_delay=%v", retry.GetRetryDelay().AsDuration())
	}
	return s
}

// attemptCounter counts RPC attempts: gRPC reports a stats.Begin per
// attempt, so retries made by the retryPolicy show up here.
type attemptCounter struct{ n atomic.Int64 }

func (a *attemptCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (a *attemptCounter) HandleRPC(_ context.Context, s stats.RPCStats) {
	if b, ok := s.(*stats.Begin); ok && b.IsClient() && !b.IsTransparentRetryAttempt {
		a.n.Add(1)
	}
}
func (a *attemptCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (a *attemptCounter) HandleConn(context.Context, stats.ConnStats) {}

// bearer sends the caller's token with every call.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false only for plaintext to loopback (checked
// in run), where nothing can read the token on the way.
func (b bearer) RequireTransportSecurity() bool { return b.secure }

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
