// Command ratebench measures billingd's pacing of Stripe calls: it starts
// `billingd serve --stripe-sim` with the simulator answering 429 above a
// fixed rate, drives new charges closed-loop at a fixed concurrency with each
// --stripe-rate in turn, and prints, per setting, the charges answered OK a
// second, the other answers, and the 429s billingd met (from its /metrics).
//
//	make build && go run ./internal/ratebench -bin bin/billingd -sim-rate 50 -rates off,25,45,50,75 -duration 10s
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ratebench:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("bin", "bin/billingd", "billingd binary")
	simRate := flag.Float64("sim-rate", 50, "the simulator answers 429 above this many requests a second")
	rates := flag.String("rates", "off,25,45,50,75", "--stripe-rate settings to measure, in turn")
	conc := flag.Int("concurrency", 32, "charges in flight at once")
	dur := flag.Duration("duration", 10*time.Second, "measured time per setting")
	timeout := flag.Duration("timeout", 5*time.Second, "each charge's deadline")
	flag.Parse()

	fmt.Printf("simulator rate=%g (burst one second's worth), concurrency %d, %s per setting, deadline %s\n\n", *simRate, *conc, *dur, *timeout)
	fmt.Printf("%-12s %9s %8s %10s %8s %10s %s\n", "--stripe-rate", "OK/s", "OK", "429s", "cuts", "refused", "other answers")
	for _, r := range strings.Split(*rates, ",") {
		res, err := measure(*bin, *simRate, r, *conc, *dur, *timeout)
		if err != nil {
			return fmt.Errorf("--stripe-rate %s: %w", r, err)
		}
		fmt.Printf("%-12s %9.1f %8d %10d %8d %10d %v\n", r, float64(res.ok)/dur.Seconds(), res.ok, res.r429, res.cuts, res.refused, res.other)
	}
	return nil
}

type result struct {
	ok                  int64
	r429, cuts, refused int
	other               map[string]int
}

func measure(bin string, simRate float64, stripeRate string, conc int, dur, timeout time.Duration) (result, error) {
	dir, err := os.MkdirTemp("", "ratebench")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	addr, maddr := freeAddr(), freeAddr()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cmd := exec.CommandContext(ctx, bin, "serve", "--stripe-sim", "--listen", addr, "--db", filepath.Join(dir, "b.db"),
		"--metrics-listen", maddr, "--stripe-sim-faults", "rate="+strconv.FormatFloat(simRate, 'g', -1, 64),
		"--stripe-rate", stripeRate, "--log-format", "text")
	cmd.Env = append(os.Environ(), "BILLINGD_STORE=")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return result{}, err
	}
	defer conn.Close()
	client := billingv1.NewBillingServiceClient(conn)
	if err := waitUp(maddr); err != nil {
		return result{}, err
	}

	var (
		ok    atomic.Int64
		seq   atomic.Int64
		mu    sync.Mutex
		other = map[string]int{}
		wg    sync.WaitGroup
	)
	end := time.Now().Add(dur)
	for range conc {
		wg.Go(func() {
			for time.Now().Before(end) {
				cctx, cancel := context.WithTimeout(context.Background(), timeout)
				_, err := client.Charge(cctx, &billingv1.ChargeRequest{RequestId: fmt.Sprintf("rb-%d", seq.Add(1)),
					Amount: 500, Currency: "usd", PaymentMethodId: "pm_card_visa"})
				cancel()
				if err == nil {
					ok.Add(1)
					continue
				}
				st := status.Convert(err)
				key := st.Code().String()
				for _, d := range st.Details() {
					if info, isInfo := d.(*errdetails.ErrorInfo); isInfo {
						key += " " + info.GetReason()
					}
				}
				mu.Lock()
				other[key]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	m, err := scrape(maddr)
	if err != nil {
		return result{}, err
	}
	return result{ok: ok.Load(), other: other,
		r429:    sum(m, `billingd_stripe_retries_total\{reason="rate_limited"\}`) + sum(m, `billingd_stripe_requests_total\{[^}]*outcome="rate_limited"[^}]*\}`),
		cuts:    sum(m, `billingd_stripe_rate_cuts_total`),
		refused: sum(m, `billingd_stripe_refused_total`)}, nil
}

func sum(metrics, series string) int {
	n := 0
	for _, m := range regexp.MustCompile(`(?m)^`+series+` (\d+)$`).FindAllStringSubmatch(metrics, -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

func scrape(addr string) (string, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func waitUp(maddr string) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := scrape(maddr); err == nil {
			return nil
		}
	}
	return errors.New("billingd did not start")
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}
