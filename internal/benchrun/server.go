package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// ensureBinary builds bin if it is missing (make bench builds it first).
func ensureBinary(ctx context.Context, bin string, stderr io.Writer) error {
	if _, err := os.Stat(bin); err == nil {
		return nil
	}
	fmt.Fprintf(stderr, "building %s\n", bin)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, "./cmd/billingd")
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build %s: %w", bin, err)
	}
	return nil
}

// pinnedGHZ returns the path of the ghz that tools/go.mod pins, building it
// into the Go build cache if needed. Running the binary directly keeps the go
// command out of the measurements.
func pinnedGHZ(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute) // a cold build of the tools takes a minute or two
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "-modfile=tools/go.mod", "-n", "ghz").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("go tool -modfile=tools/go.mod -n ghz: %w\n%s", err, ee.Stderr)
		}
		return "", fmt.Errorf("go tool -modfile=tools/go.mod -n ghz: %w", err)
	}
	path := strings.TrimSpace(string(out))
	if path == "" {
		return "", errors.New("go tool -n ghz printed nothing")
	}
	return path, nil
}

// server is one billingd serve process.
type server struct {
	cmd     *exec.Cmd
	addr    string
	db      string
	logPath string // "" when the log is discarded
	logFile *os.File
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// startServer starts billingd on a free loopback port with a fresh database
// in dir and waits until health says SERVING.
func startServer(ctx context.Context, cfg config, dir string) (*server, error) {
	var lastErr error
	for attempt := range 3 { // another process may take the free port first
		s, err := startOnce(ctx, cfg, dir, attempt)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, cfg config, dir string, attempt int) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s := &server{addr: addr, db: filepath.Join(dir, fmt.Sprintf("billingd-%d.db", attempt)), exited: make(chan struct{})}
	_ = os.Remove(s.db)
	var sink *os.File
	if cfg.ServerLog == "file" {
		s.logPath = filepath.Join(dir, "server.log")
		sink, err = os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	} else {
		sink, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	}
	if err != nil {
		return nil, err
	}
	s.logFile = sink
	stripe := []string{"--stripe-sim"}
	if cfg.stripeURL != "" {
		stripe = []string{"--stripe-url", cfg.stripeURL}
	}
	args := append(append([]string{"serve", "--listen", addr, "--db", s.db,
		"--log-format", cfg.LogFormat, "--shutdown-grace", "5s"}, stripe...), cfg.ServerArgs...)
	if cfg.Store != "" {
		args = append(args, "--store", cfg.Store)
	}
	// Not CommandContext: the server is stopped by its PID with SIGTERM, and
	// only by stop, so that it can close its database cleanly.
	s.cmd = exec.Command(cfg.Bin, args...)
	s.cmd.Env = serverEnv()
	if cfg.stripeURL != "" {
		s.cmd.Env = append(s.cmd.Env, "STRIPE_SECRET_KEY="+benchStripeKey)
	}
	s.cmd.Stdout, s.cmd.Stderr = sink, sink
	// Its own process group: a Ctrl-C at the terminal reaches benchrun, which
	// then stops the server itself; should benchrun die, the kernel sends the
	// server SIGTERM.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		sink.Close()
		return nil, fmt.Errorf("start %s: %w", cfg.Bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitServing(ctx, cfg, 30*time.Second); err != nil {
		tail := s.logTail()
		_ = s.stop()
		return nil, fmt.Errorf("billingd did not become SERVING: %w\n%s", err, tail)
	}
	return s, nil
}

// benchStripeKey is the key billingd is given for a simulator in
// benchrun's process: a test key, as the simulator accepts any.
const benchStripeKey = "sk_test_benchrun"

// serverEnv is benchrun's environment without billingd's own settings
// (BILLINGD_*, BILLING_AUTH_TOKENS, STRIPE_* secrets) and OpenTelemetry's
// (OTEL_*), so that nothing (faults, tokens, a real key, a trace exporter)
// leaks into the measured server: it runs as flags and -server-args say.
// Go's own variables (GOGC, GOMEMLIMIT, GODEBUG) do pass through.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "BILLINGD_") || strings.HasPrefix(kv, "BILLING_") ||
			strings.HasPrefix(kv, "STRIPE_") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

func (s *server) waitServing(ctx context.Context, cfg config, limit time.Duration) error {
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(limit)
	for {
		cctx, cancel := context.WithTimeout(withToken(ctx, cfg.Token), time.Second)
		resp, err := client.Check(cctx, &healthpb.HealthCheckRequest{Service: billingv1.BillingService_ServiceDesc.ServiceName})
		cancel()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("billingd exited: %v", s.waitErr)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not SERVING after %v: %v", limit, err)
		}
	}
}

// stop sends SIGTERM to the server's PID, waits for a clean exit (bounded),
// then kills it. It is safe to call more than once.
func (s *server) stop() error {
	var err error
	s.once.Do(func() {
		defer s.logFile.Close()
		if !s.alive() {
			return
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(15 * time.Second):
			_ = s.cmd.Process.Kill()
			<-s.exited
			err = fmt.Errorf("billingd (pid %d) ignored SIGTERM for 15s and was killed", s.pid())
		}
	})
	return err
}

// truncateLog empties the log file between scenarios, so a long run does not
// fill the disk with one JSON line per call. The server appends (O_APPEND),
// so it keeps writing at the new end.
func (s *server) truncateLog() {
	if s.logPath != "" {
		_ = os.Truncate(s.logPath, 0)
	}
}

// logTail returns the end of the server's log, for error messages.
func (s *server) logTail() string {
	if s.logPath == "" {
		return "(server log discarded: rerun with -server-log file)"
	}
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	if i := bytes.IndexByte(b, '\n'); i >= 0 && len(b) == max {
		b = b[i+1:]
	}
	return string(b)
}

func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// precharge charges cfg.ReplayIDs request_ids once, checks that repeating
// one is a replay, and returns the ghz data array that replays them all.
func precharge(ctx context.Context, addr string, cfg config, runNo int) (string, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	client := billingv1.NewBillingServiceClient(conn)
	ctx, cancel := context.WithTimeout(withToken(ctx, cfg.Token), time.Minute)
	defer cancel()

	prefix := fmt.Sprintf("replay-%d-%d-", runNo, time.Now().UnixNano())
	ids := make([]string, cfg.ReplayIDs)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	errs := make(chan error, len(ids))
	sem := make(chan struct{}, 16)
	for _, id := range ids {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			_, err := client.Charge(ctx, chargeRequest(id))
			if err != nil {
				err = fmt.Errorf("charge %s: %w", id, err)
			}
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			return "", err
		}
	}
	resp, err := client.Charge(ctx, chargeRequest(ids[0]))
	if err != nil {
		return "", fmt.Errorf("replay %s: %w", ids[0], err)
	}
	if !resp.GetReplayed() {
		return "", fmt.Errorf("repeating %s was not answered as a replay", ids[0])
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(chargeJSON(id))
	}
	b.WriteByte(']')
	return b.String(), nil
}

// The one charge every scenario sends, with only the request_id varying.
const (
	chargeAmount   = 2000
	chargeCurrency = "usd"
	chargeCard     = "pm_card_visa"
)

func chargeRequest(id string) *billingv1.ChargeRequest {
	return &billingv1.ChargeRequest{RequestId: id, Amount: chargeAmount, Currency: chargeCurrency, PaymentMethodId: chargeCard}
}

// chargeJSON is the ghz data of one charge; id may be a template action.
func chargeJSON(id string) string {
	return fmt.Sprintf(`{"requestId":"%s","amount":%d,"currency":"%s","paymentMethodId":"%s"}`, id, chargeAmount, chargeCurrency, chargeCard)
}

// mixEvery makes the mix one in-flight duplicate in ten calls.
const mixEvery = 10

// mixData is the ghz data of the mix scenario: an array of ten charges, of
// which ghz sends element n % 10 as request n (ghz numbers requests from 0 in
// the order it hands them to its workers). Every element's request_id is the
// prefix, n / 10 (the zero-padded decimal n without its last digit: text/
// template has no arithmetic without ghz's template functions, which cost
// ghz ~65 µs of CPU per call), and the element's index — except element 1,
// which takes element 0's index and so repeats the id of the request sent
// just before it. In a closed loop of c workers the gap between two
// consecutive requests is about latency/c, far less than the latency, so
// that request is still in flight: a concurrent identical request billingd
// must coalesce. Nine calls in ten are new charges, one is a duplicate.
func mixData(prefix string, lean bool) string {
	// The request number without its last digit names the group of ten.
	// ghz's template functions include sprig's, whose slice takes lists
	// only, and Go's own template has no division: one spelling each.
	group := "{{div .RequestNumber 10}}"
	if lean {
		group = "{{slice (printf `%012d` .RequestNumber) 0 11}}"
	}
	var b strings.Builder
	b.WriteByte('[')
	for j := range mixEvery {
		if j > 0 {
			b.WriteByte(',')
		}
		suffix := j
		if j == 1 {
			suffix = 0
		}
		b.WriteString(chargeJSON(fmt.Sprintf("%s%s-%d", prefix, group, suffix)))
	}
	b.WriteByte(']')
	return b.String()
}
