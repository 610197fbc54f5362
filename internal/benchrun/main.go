// Command benchrun is `make bench`: it starts `billingd serve --stripe-sim` on
// a loopback port, drives it with the pinned ghz through the health-check
// ceiling, replays, new charges and a mix with in-flight duplicates at several
// concurrencies, prints a table and writes bench/results.json. It exits
// non-zero if any call answered anything but OK (ghz itself exits 0).
//
//	go run ./internal/benchrun -duration 5s -concurrency 16 -scenarios health,replay
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/billingd/billingd/internal/flagenv"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "part" { // own-cpu's parts (parts.go)
		if err := partMain(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "benchrun part:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

// config is everything benchrun is told.
type config struct {
	Duration    time.Duration `json:"duration_ns"`
	Warmup      time.Duration `json:"warmup_ns"`
	Concurrency []int         `json:"concurrency"`
	Scenarios   []string      `json:"scenarios"`
	Runs        int           `json:"runs"`
	Slices      int           `json:"slices"`
	Connections int           `json:"connections"`
	CallTimeout time.Duration `json:"call_timeout_ns"`
	ReplayIDs   int           `json:"replay_ids"`
	ServerLog   string        `json:"server_log"`
	LogFormat   string        `json:"log_format"`
	ServerArgs  []string      `json:"server_args,omitempty"`
	// Store is billingd serve's --store (a postgres:// URL with a password:
	// never printed or written); empty, a fresh bbolt file each run.
	Store        string `json:"-"`
	StoreKind    string `json:"store"` // "bbolt" or "postgres"
	Token        string `json:"-"`
	Bin          string `json:"bin"`
	GHZ          string `json:"ghz"`
	Out          string `json:"-"`
	Keep         string `json:"-"`
	CheckTargets bool   `json:"check_targets"`
	// LeanGHZ runs ghz with --disable-template-functions in every scenario,
	// and --disable-template-data too in those with fixed data: ghz then
	// skips building a template with ~200 functions (its own and sprig's)
	// for every call, ~50 µs of its CPU per call on a 2-core machine, taken
	// from the CPU billingd is measured on. Off (the default), ghz runs as
	// shipped, the client the performance targets were calibrated with (a
	// no-op unary RPC at ~25k RPS, c=64, on a 2-core machine); the lean client
	// raises the health-check ceiling to ~35k and is the stricter measure of
	// billingd's own cost.
	LeanGHZ bool `json:"lean_ghz"`
	// The slow-stripe scenario (slowstripe.go): the concurrencies, the
	// extra slot counts tried at those above 256, how long each case runs,
	// and how the simulator answers.
	SlowConcurrency []int         `json:"slow_concurrency"`
	SlowInFlight    []int         `json:"slow_inflight,omitempty"`
	SlowDuration    time.Duration `json:"slow_duration_ns"`
	SlowStripe      slowStripe    `json:"slow_stripe"`
	// stripeURL, when set, is a simulator in benchrun's process that
	// billingd is pointed at (--stripe-url) instead of its built-in one.
	stripeURL string
}

// The scenarios, in the order a run measures them.
const (
	scenHealth = "health" // grpc.health.v1.Health/Check: the ceiling
	// scenHealth2 is the ceiling again, taking turns with new and mix (with
	// -slices above 1): their ratios are to it. Not a -scenarios choice: it
	// runs when health and new or mix do.
	scenHealth2 = "health-2"
	scenReplay  = "replay" // Charge with one of -replay-ids pre-charged request_ids, round-robin
	scenNew     = "new"    // Charge with a fresh UUID request_id ({{newUUID}}; {{.UUID}} with -lean-ghz)
	scenMix     = "mix"    // new charges, one call in ten repeating the previous call's id while it is in flight
	// scenOwnCPU is health, replay and new against a simulator outside
	// billingd (owncpu.go); scenSlowStripe new charges against a slow one,
	// from crowds of callers (slowstripe.go). Each runs on servers of its own.
	scenOwnCPU     = "own-cpu"
	scenSlowStripe = "slow-stripe"
)

var allScenarios = []string{scenHealth, scenReplay, scenNew, scenMix, scenOwnCPU, scenSlowStripe}

// matrixScenarios are those runMatrix runs on the built-in simulator.
var matrixScenarios = []string{scenHealth, scenReplay, scenNew, scenMix}

// envFor names the environment variable of each flag; a flag on the command
// line wins. BENCHFLAGS in the Makefile is the other way in.
var envFor = map[string]string{
	"duration":    "BENCH_DURATION",
	"concurrency": "BENCH_CONCURRENCY",
	"scenarios":   "BENCH_SCENARIOS",
	"runs":        "BENCH_RUNS",
	"slices":      "BENCH_SLICES",
	"out":         "BENCH_OUT",
	"token":       "BENCH_TOKEN",
	"store":       "BENCH_STORE",
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	c := config{}
	var err0 error
	var conc, scens, serverArgs, slowConc, slowSlots string
	fs := flag.NewFlagSet("benchrun", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&c.Duration, "duration", 6*time.Second, "how long each scenario runs at each concurrency")
	fs.DurationVar(&c.Warmup, "warmup", time.Second, "unmeasured health-check load after the server starts (0: none)")
	fs.StringVar(&conc, "concurrency", "16,64,256", "comma-separated ghz concurrencies")
	fs.StringVar(&scens, "scenarios", strings.Join(allScenarios, ","), "comma-separated subset of "+strings.Join(allScenarios, ","))
	fs.IntVar(&c.Runs, "runs", 3, "repeat the whole matrix this many times, each on a fresh server and database; the summary is the median")
	fs.IntVar(&c.Slices, "slices", 3, "split -duration into this many slices and run the scenarios compared side by side in turns, slice by slice (health and replay; health-2, new and mix), so that a ratio compares the same stretch of a noisy machine; 1: one block each, no health-2")
	fs.IntVar(&c.Connections, "connections", 1, "ghz connections (concurrency is spread over them)")
	fs.DurationVar(&c.CallTimeout, "call-timeout", 10*time.Second, "ghz per-call timeout")
	fs.IntVar(&c.ReplayIDs, "replay-ids", 100, "request_ids charged once and then replayed round-robin")
	fs.StringVar(&c.ServerLog, "server-log", "file", "server log sink: file (truncated before each scenario, kept with -keep) or discard (/dev/null)")
	fs.StringVar(&c.LogFormat, "log-format", "json", "server --log-format: json (production) or text")
	fs.StringVar(&serverArgs, "server-args", "", "extra space-separated flags for billingd serve")
	fs.StringVar(&c.Store, "store", "", "billingd serve --store: a postgres:// URL to run on PostgreSQL instead of a fresh bbolt file; the records a run adds are counted there")
	fs.StringVar(&c.Token, "token", "", "bearer token sent as authorization metadata (when billingd requires one)")
	fs.StringVar(&c.Bin, "bin", "bin/billingd", "billingd binary (built with go build if missing)")
	fs.StringVar(&c.GHZ, "ghz", "", "ghz binary (default: the one pinned in tools/go.mod, via go tool -n)")
	fs.StringVar(&c.Out, "out", "bench/results.json", "results file (\"\": none)")
	fs.StringVar(&c.Keep, "keep", "", "keep the databases, raw ghz reports and server logs (last scenario's) in this directory")
	fs.BoolVar(&c.CheckTargets, "check-targets", false, "also exit non-zero when a performance target (replay and new-charge ratios to health, p99, peak RSS) is missed")
	fs.BoolVar(&c.LeanGHZ, "lean-ghz", false, "run ghz with its template functions off (new charges use {{.UUID}}): a cheaper client, a higher health ceiling, a stricter ratio")
	fs.StringVar(&slowConc, "slow-concurrency", "256,2000", "slow-stripe: comma-separated caller counts (at 256 and below billingd gets a Stripe slot per caller; above, its default)")
	fs.StringVar(&slowSlots, "slow-inflight", "", "slow-stripe: comma-separated --stripe-max-inflight values also tried at the caller counts above 256, to size it")
	fs.DurationVar(&c.SlowDuration, "slow-duration", 15*time.Second, "slow-stripe: how long each case's callers keep calling")
	c.SlowStripe = defaultSlowStripe
	fs.DurationVar(&c.SlowStripe.Latency, "slow-latency", c.SlowStripe.Latency, "slow-stripe: the simulator's least answer time")
	fs.DurationVar(&c.SlowStripe.Jitter, "slow-jitter", c.SlowStripe.Jitter, "slow-stripe: a uniform random extra of up to this")
	fs.Float64Var(&c.SlowStripe.SlowShare, "slow-tail", c.SlowStripe.SlowShare, "slow-stripe: the share of answers that take -slow-tail-latency instead")
	fs.DurationVar(&c.SlowStripe.SlowLatency, "slow-tail-latency", c.SlowStripe.SlowLatency, "slow-stripe: the answer time of the tail")
	if err := flagenv.Parse(fs, args, envFor, getenv); err != nil {
		return c, err
	}
	if c.SlowConcurrency, err0 = parseInts(slowConc); err0 != nil {
		return c, fmt.Errorf("-slow-concurrency: %w", err0)
	}
	if slowSlots != "" {
		if c.SlowInFlight, err0 = parseInts(slowSlots); err0 != nil {
			return c, fmt.Errorf("-slow-inflight: %w", err0)
		}
	}
	var err error
	if c.Concurrency, err = parseInts(conc); err != nil {
		return c, fmt.Errorf("-concurrency: %w", err)
	}
	if c.Scenarios, err = parseScenarios(scens); err != nil {
		return c, fmt.Errorf("-scenarios: %w", err)
	}
	c.ServerArgs = strings.Fields(serverArgs)
	for _, a := range c.ServerArgs {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch name {
		case "listen", "db", "stripe-sim", "stripe-url":
			return c, fmt.Errorf("-server-args: benchrun sets --%s itself (a loopback port, a fresh database, the simulator)", name)
		case "store":
			return c, errors.New("-server-args: give the store as -store, so that benchrun counts the records there")
		}
	}
	c.StoreKind = "bbolt"
	if c.Store != "" {
		if !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
			return c, errors.New("-store must be a postgres:// URL")
		}
		c.StoreKind = "postgres"
	}
	switch {
	case c.Duration <= 0:
		return c, errors.New("-duration must be positive")
	case c.Runs < 1 || c.Runs > 20:
		return c, errors.New("-runs must be 1 to 20")
	case c.Slices < 1 || c.Slices > 20:
		return c, errors.New("-slices must be 1 to 20")
	case c.Duration/time.Duration(c.Slices) < time.Second:
		return c, errors.New("-duration must give every slice at least 1s")
	case c.Connections < 1:
		return c, errors.New("-connections must be positive")
	case c.ReplayIDs < 1 || c.ReplayIDs > 100_000:
		return c, errors.New("-replay-ids must be 1 to 100000")
	case c.ServerLog != "file" && c.ServerLog != "discard":
		return c, errors.New("-server-log must be file or discard")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return c, errors.New("-log-format must be json or text")
	}
	return c, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 10_000 {
			return nil, fmt.Errorf("%q is not a concurrency from 1 to 10000", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseScenarios(s string) ([]string, error) {
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		known := false
		for _, a := range allScenarios {
			known = known || a == f
		}
		if !known {
			return nil, fmt.Errorf("unknown scenario %q (have %s)", f, strings.Join(allScenarios, ", "))
		}
		want[f] = true
	}
	var out []string
	for _, a := range allScenarios { // canonical order
		if want[a] {
			out = append(out, a)
		}
	}
	return out, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	if _, err := os.Stat("cmd/billingd"); err != nil {
		return errors.New("run from the repository root (where cmd/billingd is)")
	}
	if err := ensureBinary(ctx, cfg.Bin, stderr); err != nil {
		return err
	}
	if cfg.GHZ == "" {
		if cfg.GHZ, err = pinnedGHZ(ctx); err != nil {
			return err
		}
	}
	work := cfg.Keep
	if work == "" {
		if work, err = os.MkdirTemp("", "billingd-bench-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}

	res := &results{Schema: 1, Started: time.Now().UTC(), Config: cfg, Machine: machineFacts(ctx, cfg)}
	commit := res.Machine.Commit
	if commit == "" {
		commit = "unknown"
	} else if commit = commit[:min(12, len(commit))]; res.Machine.Dirty {
		commit += " (modified)"
	}
	fmt.Fprintf(stdout, "billingd bench: commit %s, %d CPUs, %s, ghz %s; %d run(s) × %d scenario(s) × %d concurrencies × %v\n",
		commit, res.Machine.NumCPU, res.Machine.GoVersion, res.Machine.GHZVersion,
		cfg.Runs, len(cfg.Scenarios), len(cfg.Concurrency), cfg.Duration)

	var runErr error
	inMatrix := false
	for _, s := range matrixScenarios {
		inMatrix = inMatrix || has(cfg.Scenarios, s)
	}
	for i := 1; i <= cfg.Runs && runErr == nil; i++ {
		if inMatrix {
			r, err := runMatrix(ctx, cfg, i, work, stdout)
			res.Runs = append(res.Runs, r)
			if runErr = err; err != nil {
				break
			}
		}
		if has(cfg.Scenarios, scenOwnCPU) {
			r, err := runOwnCPU(ctx, cfg, i, work, stdout)
			res.OwnCPU.Runs = append(res.OwnCPU.Runs, r)
			if runErr = err; err != nil {
				break
			}
		}
		if has(cfg.Scenarios, scenSlowStripe) {
			rs, err := runSlowStripe(ctx, cfg, i, work, stdout)
			res.SlowStripe.Runs = append(res.SlowStripe.Runs, rs)
			runErr = err
		}
	}
	res.Finished = time.Now().UTC()
	for _, r := range res.Runs {
		fillRatios(r.Results)
	}
	res.Summary = summarize(res.Runs)
	for _, r := range res.OwnCPU.Runs {
		fillRatios(r.Results)
	}
	res.OwnCPU.Summary = summarize(res.OwnCPU.Runs)
	res.OwnCPU.fillCPU()
	res.SlowStripe.Summary = summarizeSlow(res.SlowStripe.Runs)
	res.Targets = checkTargets(res)
	res.Failures = failures(append(append([]runResult(nil), res.Runs...), res.OwnCPU.Runs...))
	if runErr != nil {
		res.Failures = append(res.Failures, runErr.Error())
	}
	res.OK = len(res.Failures) == 0

	fmt.Fprintln(stdout)
	if cfg.Runs > 1 {
		fmt.Fprintf(stdout, "Median of %d runs:\n", len(res.Runs))
	}
	printTable(stdout, res.Summary)
	if len(res.OwnCPU.Summary) > 0 {
		o := res.OwnCPU
		fmt.Fprintf(stdout, "\nown-cpu (simulator in benchrun's process): billingd µs of CPU per call: health %.0f, replay %.0f, new charge %.0f = %.2f × health\n",
			o.HealthUS, o.ReplayUS, o.ChargeUS, o.ChargeRatio)
		if o.FloorUS > 0 {
			fmt.Fprintf(stdout, "  its parts alone, µs of CPU per op: Stripe client %.0f (net/http alone %.0f), claim + settle %.0f; floor = health + client + writes = %.0f = %.2f × health\n",
				o.StripeClientUS, o.HTTPPostUS, o.StoreUS, o.FloorUS, o.FloorRatio)
		}
		printTable(stdout, res.OwnCPU.Summary)
	}
	printSlowTable(stdout, res.SlowStripe.Summary)
	printTargets(stdout, res.Targets)
	if cfg.Out != "" {
		if err := writeJSON(cfg.Out, res); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s (%s)\n", cfg.Out, res.Finished.Sub(res.Started).Round(time.Second))
	}
	if !res.OK {
		for _, f := range res.Failures {
			fmt.Fprintln(stderr, "FAIL:", f)
		}
		return errors.New("non-OK responses or a failed run: see above")
	}
	if cfg.CheckTargets {
		for _, t := range res.Targets {
			if !t.Pass {
				return errors.New("performance targets missed (-check-targets)")
			}
		}
	}
	return nil
}

// runMatrix runs every scenario at every concurrency against one fresh
// server. Health and replay go first, for every concurrency, so that replay's
// peak RSS is that of a server which has only ever served replays; replay
// takes turns with the health ceiling it is compared with (-slices).
func runMatrix(ctx context.Context, cfg config, runNo int, work string, stdout io.Writer) (runResult, error) {
	rr := runResult{Run: runNo, Started: time.Now().UTC()}
	dir := fmt.Sprintf("%s/run%d", work, runNo)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return rr, err
	}
	before := 0 // a PostgreSQL store is not fresh: count what the run adds
	if cfg.Store != "" {
		n, err := countRecords(ctx, cfg, "")
		if err != nil {
			return rr, err
		}
		before = n
	}
	srv, err := startServer(ctx, cfg, dir)
	if err != nil {
		return rr, err
	}
	defer func() {
		if err := srv.stop(); err != nil {
			fmt.Fprintln(stdout, "warning: stop server:", err)
		}
	}()
	where := "db " + srv.db
	if cfg.Store != "" {
		where = fmt.Sprintf("store postgres (%d records before the run)", before)
	}
	fmt.Fprintf(stdout, "\nrun %d/%d: billingd pid %d on %s, %s\n", runNo, cfg.Runs, srv.pid(), srv.addr, where)

	if cfg.Warmup > 0 {
		if _, err := runGHZ(ctx, cfg, srv, scenarioSpec{name: "warmup", call: healthMethod, data: healthData, noTemplates: true}, 16, cfg.Warmup, dir); err != nil {
			return rr, fmt.Errorf("warm-up: %w", err)
		}
	}
	var replayData string
	if has(cfg.Scenarios, scenReplay) {
		if replayData, err = precharge(ctx, srv.addr, cfg, runNo); err != nil {
			return rr, fmt.Errorf("pre-charge replay ids: %w", err)
		}
	}
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	specs := func(name string, c, slice int) scenarioSpec {
		var s scenarioSpec
		switch name {
		case scenHealth, scenHealth2:
			s = scenarioSpec{call: healthMethod, data: healthData, noTemplates: true}
		case scenReplay:
			s = scenarioSpec{call: chargeMethod, data: replayData, noTemplates: true}
		case scenNew:
			s = scenarioSpec{call: chargeMethod, data: chargeJSON("{{newUUID}}")}
			if cfg.LeanGHZ {
				// .UUID is a fresh UUIDv4 per call, as {{newUUID}} is, without
				// ghz's template functions (see config.LeanGHZ).
				s.data = chargeJSON("{{.UUID}}")
			}
		case scenMix:
			s = scenarioSpec{call: chargeMethod, data: mixData(fmt.Sprintf("mix-%s-c%d-s%d-", nonce, c, slice), cfg.LeanGHZ)}
		default:
			panic("unknown scenario " + name)
		}
		s.name, s.slice = name, slice
		return s
	}
	// The scenarios of a group take turns, one slice each, at each
	// concurrency: a ratio then compares figures from the same stretch of
	// time, whatever else the machine was doing.
	groups := [][]string{{scenHealth, scenReplay}, {scenHealth2, scenNew, scenMix}}
	var parts []scenarioResult // every slice, for the count of records
	for _, group := range groups {
		var names []string
		for _, name := range group {
			if has(cfg.Scenarios, name) {
				names = append(names, name)
			}
		}
		if group[0] == scenHealth2 && len(names) > 0 && cfg.Slices > 1 && has(cfg.Scenarios, scenHealth) {
			names = append([]string{scenHealth2}, names...)
		}
		n := cfg.Slices
		if len(names) < 2 {
			n = 1 // nothing to take turns with
		}
		for _, c := range cfg.Concurrency {
			sliced := map[string][]slice{}
			for i := range n {
				for _, name := range names {
					if err := ctx.Err(); err != nil {
						return rr, err
					}
					sl, err := measure(ctx, cfg, srv, specs(name, c, i), c, cfg.Duration/time.Duration(n), dir)
					if err != nil {
						return rr, fmt.Errorf("%s c=%d: %w", name, c, err)
					}
					sliced[name] = append(sliced[name], sl)
					parts = append(parts, sl.scenarioResult)
					if !srv.alive() {
						return rr, fmt.Errorf("billingd exited during %s c=%d; log tail:\n%s", name, c, srv.logTail())
					}
				}
			}
			for _, name := range names {
				sr := merge(sliced[name])
				rr.Results = append(rr.Results, sr)
				fmt.Fprintln(stdout, progressLine(sr))
			}
		}
	}
	rr.Finished = time.Now().UTC()
	if err := srv.stop(); err != nil {
		return rr, err
	}
	// The bench measured what it claims only if the database holds exactly
	// one record per distinct request_id it sent.
	rr.Records = expectedRecords(cfg, parts)
	got, err := countRecords(ctx, cfg, srv.db)
	if err != nil {
		return rr, err
	}
	if got -= before; got != rr.Records {
		return rr, fmt.Errorf("the database holds %d records, the scenarios should have created %d", got, rr.Records)
	}
	return rr, nil
}

// expectedRecords is how many records a run creates: the replay ids, one per
// new charge, and one per mix request that is not a duplicate. rs are the
// slices: each ghz run of mix numbers its requests from 0.
func expectedRecords(cfg config, rs []scenarioResult) int {
	n := 0
	if has(cfg.Scenarios, scenReplay) {
		n = cfg.ReplayIDs
	}
	for _, r := range rs {
		switch r.Scenario {
		case scenNew:
			n += int(r.Count)
		case scenMix:
			n += int(r.Count) - duplicates(int(r.Count), mixEvery)
		}
	}
	return n
}

// duplicates counts the request numbers n in [0, count) with n % every == 1.
func duplicates(count, every int) int {
	if count < 2 {
		return 0
	}
	return (count-2)/every + 1
}

// countRecords counts the records in the stopped server's store: the bbolt
// file at path, opened read-only, or cfg.Store.
func countRecords(ctx context.Context, cfg config, path string) (int, error) {
	var db interface {
		CountByState(context.Context) (map[service.State]int, error)
		Close() error
	}
	var err error
	if cfg.Store != "" {
		db, err = postgres.Open(ctx, cfg.Store)
	} else {
		db, err = storage.OpenReadOnly(path)
	}
	if err != nil {
		return 0, fmt.Errorf("count records: %w", err)
	}
	defer db.Close()
	counts, err := db.CountByState(ctx)
	if err != nil {
		return 0, fmt.Errorf("count records: %w", err)
	}
	n := 0
	for state, c := range counts {
		if state != service.StateSucceeded && c > 0 {
			return 0, fmt.Errorf("the database holds %d %v records: every charge should have succeeded", c, state)
		}
		n += c
	}
	return n, nil
}

func has(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
