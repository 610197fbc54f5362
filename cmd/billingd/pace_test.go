package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// paceServer runs `billingd serve --stripe-sim` with metrics and extra
// flags, and returns a client and a scraper of its /metrics.
func paceServer(t *testing.T, args ...string) (billingv1.BillingServiceClient, func() string) {
	t.Helper()
	addr, metricsAddr := freeAddr(t), freeAddr(t)
	db := filepath.Join(t.TempDir(), "billingd.db")
	ctx, stop := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--stripe-sim", "--listen", addr, "--db", db, "--metrics-listen", metricsAddr}, args...),
			envMap(nil), &logs, &logs)
	}()
	t.Cleanup(func() { stop(); <-done })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	waitServing(t, conn, &logs, done)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	return billingv1.NewBillingServiceClient(conn), scrape
}

// stripe429s is how many of billingd's Stripe attempts were answered 429:
// those retried plus those answered 429 after the last retry.
func stripe429s(t *testing.T, metrics string) int {
	t.Helper()
	n := 0
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^billingd_stripe_retries_total\{reason="rate_limited"\} (\d+)$`),
		regexp.MustCompile(`(?m)^billingd_stripe_requests_total\{[^}]*outcome="rate_limited"[^}]*\} (\d+)$`),
	} {
		for _, m := range re.FindAllStringSubmatch(metrics, -1) {
			v, err := strconv.Atoi(m[1])
			if err != nil {
				t.Fatal(err)
			}
			n += v
		}
	}
	return n
}

// charges sends n charges at once and returns how many succeeded.
func charges(t *testing.T, client billingv1.BillingServiceClient, prefix string, n int) int {
	t.Helper()
	var (
		wg sync.WaitGroup
		mu sync.Mutex
		ok int
	)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := client.Charge(ctx, &billingv1.ChargeRequest{RequestId: fmt.Sprintf("%s-%d", prefix, i), Amount: 500, Currency: "usd", PaymentMethodId: "pm_card_visa"})
			if err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ok
}

// TestPaceUnderSimulatorRate: with --stripe-rate under the simulator's 429
// threshold, a burst of charges meets no 429 at all (the pace releases at
// most burst + rate·t requests by any time t, and the simulator admits
// more); without pacing, the same simulator answers 429s.
func TestPaceUnderSimulatorRate(t *testing.T) {
	t.Parallel()
	t.Run("paced", func(t *testing.T) {
		t.Parallel()
		client, scrape := paceServer(t, "--stripe-sim-faults", "rate=40", "--stripe-rate", "20")
		const n = 30
		if got := charges(t, client, "paced", n); got != n {
			t.Errorf("%d of %d charges succeeded", got, n)
		}
		m := scrape()
		if got := stripe429s(t, m); got != 0 {
			t.Errorf("billingd met %d 429s under a pace of 20/s against a limit of 40/s, want 0", got)
		}
		for _, want := range []string{"billingd_stripe_rate 20\n", "billingd_stripe_rate_limit 20\n", "billingd_stripe_rate_cuts_total 0\n"} {
			if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want)).MatchString(m) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
	t.Run("unpaced", func(t *testing.T) {
		t.Parallel()
		client, scrape := paceServer(t, "--stripe-sim-faults", "rate=2,rate_burst=1", "--stripe-rate", "off")
		charges(t, client, "unpaced", 10)
		if got := stripe429s(t, scrape()); got == 0 {
			t.Error("10 charges at once against a limit of 2/s met no 429 without pacing")
		}
	})
}

// TestPaceAnswersBeforeDeadline: a charge whose deadline comes before the
// next token is answered at once UNAVAILABLE UPSTREAM_RATE_LIMITED with
// RetryInfo, not DEADLINE_EXCEEDED, and nothing is sent; its record stays
// PENDING for its retry.
func TestPaceAnswersBeforeDeadline(t *testing.T) {
	t.Parallel()
	client, scrape := paceServer(t, "--stripe-rate", "0.05") // one token every 20 s
	req := &billingv1.ChargeRequest{RequestId: "first", Amount: 500, Currency: "usd", PaymentMethodId: "pm_card_visa"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Charge(ctx, req); err != nil {
		t.Fatalf("first charge (the burst token): %v", err)
	}
	req.RequestId = "second"
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	_, err := client.Charge(ctx2, req)
	if ctx2.Err() != nil {
		t.Fatalf("the answer came after the caller's deadline: %v", err)
	}
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("code = %v (%v), want Unavailable", st.Code(), err)
	}
	var reason string
	var retry time.Duration
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration()
		}
	}
	if reason != "UPSTREAM_RATE_LIMITED" || retry < time.Second {
		t.Errorf("reason %q, RetryInfo %v; want UPSTREAM_RATE_LIMITED with a delay", reason, retry)
	}
	m := scrape()
	for _, want := range []string{
		`billingd_stripe_requests_total{code="",endpoint="payment_intents.create",error_type="",outcome="ok"} 1`,
		`billingd_stripe_requests_total{code="",endpoint="payment_intents.create",error_type="",outcome="throttled"} 1`,
		`billingd_stripe_refused_total 1`,
		`billingd_records{state="PENDING"} 1`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `$`).MatchString(m) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
