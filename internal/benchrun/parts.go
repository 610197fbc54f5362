package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// The parts of a new charge, each measured alone in a process of its own
// (benchrun started again as `benchrun part NAME URL DIR`), at own-cpu's
// concurrency: what billingd's CPU per new charge is made of at the least.
//
//	stripe-client  stripeapi's CreatePaymentIntent (stripe-go, billingd's
//	               transport and retries) against the simulator, which runs
//	               in benchrun's process
//	http-post      the same POST with net/http alone, body read, not decoded:
//	               what any Go client pays for the call
//	store          a claim and its settling write on a fresh bbolt file, with
//	               the group commit, as a charge writes them
//
// A new charge is a gRPC call (the health check's cost) plus the Stripe call
// plus the two writes, so health + stripe-client + store is a floor under
// billingd's CPU per new charge, however lean the service around them.
const (
	partStripeClient = "stripe-client"
	partHTTPPost     = "http-post"
	partStore        = "store"
	partDuration     = 4 * time.Second
)

var allParts = []string{partStripeClient, partHTTPPost, partStore}

// partsResult is the CPU per operation of each part in one run, in µs.
type partsResult struct {
	StripeClientUS float64 `json:"stripe_client_cpu_us_per_op"`
	HTTPPostUS     float64 `json:"http_post_cpu_us_per_op"`
	StoreUS        float64 `json:"store_claim_and_settle_cpu_us_per_op"`
}

// partOutput is what a part's process prints.
type partOutput struct {
	Ops      int64   `json:"ops"`
	CPUUSPer float64 `json:"cpu_us_per_op"`
}

// runParts measures every part against the simulator at url, one process
// each, in turn.
func runParts(ctx context.Context, url, work string, stdout io.Writer) (*partsResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var r partsResult
	for _, p := range allParts {
		dir := filepath.Join(work, "part-"+p)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		pctx, cancel := context.WithTimeout(ctx, partDuration+time.Minute)
		out, err := exec.CommandContext(pctx, self, "part", p, url, dir).Output()
		cancel()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return nil, fmt.Errorf("part %s: %w: %s", p, err, strings.TrimSpace(string(ee.Stderr)))
			}
			return nil, fmt.Errorf("part %s: %w", p, err)
		}
		var po partOutput
		if err := json.Unmarshal(out, &po); err != nil || po.Ops == 0 {
			return nil, fmt.Errorf("part %s: bad output %q: %v", p, out, err)
		}
		fmt.Fprintf(stdout, "  part %-14s c=%d  %7d ops  %6.1f µs CPU per op\n", p, ownCPUConcurrency, po.Ops, po.CPUUSPer)
		switch p {
		case partStripeClient:
			r.StripeClientUS = po.CPUUSPer
		case partHTTPPost:
			r.HTTPPostUS = po.CPUUSPer
		case partStore:
			r.StoreUS = po.CPUUSPer
		}
	}
	return &r, nil
}

// partMain is `benchrun part NAME URL DIR`: it runs one part for
// partDuration and prints a partOutput.
func partMain(args []string, stdout io.Writer) error {
	if len(args) != 3 {
		return errors.New("usage: benchrun part NAME URL DIR")
	}
	name, url, dir := args[0], args[1], args[2]
	op, closeFn, err := partOp(name, url, dir)
	if err != nil {
		return err
	}
	defer closeFn()
	// One untimed call per caller first: connections open, files grow.
	if err := each(ownCPUConcurrency, func(w int) error { return op(-1 - w) }); err != nil {
		return err
	}
	ops, used, err := closedLoop(ownCPUConcurrency, partDuration, op)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(partOutput{Ops: ops, CPUUSPer: float64(used.Microseconds()) / float64(ops)})
}

// closedLoop calls op from c goroutines, each again as soon as it returns,
// until d is up, and returns the calls made and the process's CPU meanwhile.
func closedLoop(c int, d time.Duration, op func(i int) error) (int64, time.Duration, error) {
	var n, next atomic.Int64
	cpu0, start := processCPU(), time.Now()
	err := each(c, func(int) error {
		for time.Since(start) < d {
			if err := op(int(next.Add(1))); err != nil {
				return err
			}
			n.Add(1)
		}
		return nil
	})
	return n.Load(), processCPU() - cpu0, err
}

// each runs f(0) to f(c-1) on goroutines of their own and returns one of
// their errors, if any.
func each(c int, f func(w int) error) error {
	var (
		mu     sync.Mutex
		failed error
		wg     sync.WaitGroup
	)
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(w); err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return failed
}

// processCPU is this process's user and system CPU so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// partCharge is the charge every part sends or stores, as the matrix's new
// charges are: 20.00 USD on pm_card_visa, billingd's metadata added.
var partCharge = service.ChargeParams{Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa"}

// partOp returns the operation of part name, and what to close after.
func partOp(name, url, dir string) (func(i int) error, func(), error) {
	// Ids unique across runs and processes: the simulator keeps them all.
	run := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	switch name {
	case partStripeClient:
		c, err := stripeapi.New(stripeapi.Config{Key: "sk_test_billingd_bench", URL: url, MaxInFlight: 4 * ownCPUConcurrency})
		if err != nil {
			return nil, nil, err
		}
		return func(i int) error {
			id := run + strconv.Itoa(i)
			p := partCharge
			p.Metadata = map[string]string{"billingd_caller": "bench", "billingd_request_key": service.RequestKey("bench", id)}
			_, err := c.CreatePaymentIntent(context.Background(), service.StripeKey("bench", id, "create_payment_intent"), p)
			return err
		}, func() {}, nil
	case partHTTPPost:
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 4 * ownCPUConcurrency
		hc := &http.Client{Transport: t}
		return func(i int) error {
			id := run + strconv.Itoa(i)
			body := "amount=2000&confirm=true&currency=usd&metadata[billingd_caller]=bench&metadata[billingd_request_key]=" +
				service.RequestKey("bench", id) + "&payment_method=pm_card_visa&payment_method_types[0]=card"
			req, err := http.NewRequest(http.MethodPost, url+"/v1/payment_intents", strings.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Authorization", "Bearer sk_test_billingd_bench")
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Idempotency-Key", service.StripeKey("bench", id, "create_payment_intent"))
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("POST /v1/payment_intents: %s", resp.Status)
			}
			return nil
		}, t.CloseIdleConnections, nil
	case partStore:
		db, err := storage.Open(filepath.Join(dir, "parts.db"))
		if err != nil {
			return nil, nil, err
		}
		params := []byte("\x10\xd0\x0f\x1a\x03usd*\x0cpm_card_visa") // a ChargeRequest's size
		return func(i int) error {
			id := run + strconv.Itoa(i)
			now := time.Now()
			rec := service.Record{Caller: "bench", RequestID: id, Method: service.MethodCharge,
				Fingerprint: service.Fingerprint(params), StripeKey: service.StripeKey("bench", id, "create_payment_intent"),
				RequestKey: service.RequestKey("bench", id), Params: params, State: service.StatePending,
				Attempts: 1, Created: now, FirstAttempt: now, Updated: now}
			got, created, err := db.Claim(context.Background(), rec)
			if err != nil || !created {
				return fmt.Errorf("claim %s: created %v, %v", id, created, err)
			}
			got.State, got.Updated = service.StateSucceeded, time.Now()
			got.Result = service.Result{ObjectID: "pi_3QbenchbenchbenchbenchAB", Status: "succeeded", Amount: 2000, Currency: "usd"}
			return db.Put(context.Background(), got)
		}, func() { _ = db.Close() }, nil
	}
	return nil, nil, fmt.Errorf("unknown part %q (want one of %s)", name, strings.Join(allParts, ", "))
}
