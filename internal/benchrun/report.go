package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// results is bench/results.json.
type results struct {
	Schema   int              `json:"schema"`
	OK       bool             `json:"ok"`
	Failures []string         `json:"failures,omitempty"`
	Started  time.Time        `json:"started"`
	Finished time.Time        `json:"finished"`
	Machine  machine          `json:"machine"`
	Config   config           `json:"config"`
	Summary  []scenarioResult `json:"summary"` // per scenario and concurrency: the median over runs
	Targets  []target         `json:"targets"`
	Runs     []runResult      `json:"runs"`
	// OwnCPU and SlowStripe are the scenarios run on servers of their own.
	OwnCPU     ownCPUResults     `json:"own_cpu"`
	SlowStripe slowStripeResults `json:"slow_stripe"`
}

// ownCPUResults is the own-cpu scenario: its runs, their median, and
// billingd's CPU per call from that median.
type ownCPUResults struct {
	Summary     []scenarioResult `json:"summary,omitempty"`
	HealthUS    float64          `json:"health_cpu_us_per_call,omitempty"`
	ReplayUS    float64          `json:"replay_cpu_us_per_call,omitempty"`
	ChargeUS    float64          `json:"new_charge_cpu_us_per_call,omitempty"`
	ChargeRatio float64          `json:"new_charge_cpu_ratio_to_health,omitempty"`
	// The parts of a new charge, each alone (medians over the runs), and
	// the floor they make: health + Stripe client + claim and settle.
	StripeClientUS float64     `json:"stripe_client_cpu_us_per_op,omitempty"`
	HTTPPostUS     float64     `json:"http_post_cpu_us_per_op,omitempty"`
	StoreUS        float64     `json:"store_claim_and_settle_cpu_us_per_op,omitempty"`
	FloorUS        float64     `json:"new_charge_floor_cpu_us,omitempty"`
	FloorRatio     float64     `json:"new_charge_floor_ratio_to_health,omitempty"`
	Runs           []runResult `json:"runs,omitempty"`
}

func (o *ownCPUResults) fillCPU() {
	o.HealthUS, o.ReplayUS, o.ChargeUS, o.ChargeRatio = ownCPURatio(o.Summary)
	var parts []partsResult
	for _, r := range o.Runs {
		if r.Parts != nil {
			parts = append(parts, *r.Parts)
		}
	}
	if len(parts) == 0 || o.HealthUS == 0 {
		return
	}
	o.StripeClientUS = medianOf(parts, func(p partsResult) float64 { return p.StripeClientUS })
	o.HTTPPostUS = medianOf(parts, func(p partsResult) float64 { return p.HTTPPostUS })
	o.StoreUS = medianOf(parts, func(p partsResult) float64 { return p.StoreUS })
	o.FloorUS = o.HealthUS + o.StripeClientUS + o.StoreUS
	o.FloorRatio = o.FloorUS / o.HealthUS
}

// slowStripeResults is the slow-stripe scenario: the median of each case
// over the runs, and every run's cases.
type slowStripeResults struct {
	Summary []slowResult   `json:"summary,omitempty"`
	Runs    [][]slowResult `json:"runs,omitempty"`
}

type machine struct {
	NumCPU     int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model"`
	MemTotal   int64  `json:"mem_total_bytes"`
	Kernel     string `json:"kernel"`
	OSArch     string `json:"os_arch"`
	GoVersion  string `json:"go_version"`
	Commit     string `json:"commit"`
	Dirty      bool   `json:"dirty"` // tracked files differ from the commit
	Billingd   string `json:"billingd_version"`
	GHZVersion string `json:"ghz_version"`
	LoadAvg    string `json:"loadavg_at_start"`
}

type runResult struct {
	Run      int              `json:"run"`
	Started  time.Time        `json:"started"`
	Finished time.Time        `json:"finished"`
	Results  []scenarioResult `json:"results"`
	// Records is how many records the run created, checked against the
	// database after the server stopped.
	Records int `json:"records"`
	// Parts is own-cpu's parts of a new charge, each alone (parts.go).
	Parts *partsResult `json:"parts,omitempty"`
}

// scenarioResult is one scenario at one concurrency. Latencies are in
// milliseconds, CPU times in seconds.
type scenarioResult struct {
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	Runs        int     `json:"runs,omitempty"` // summary rows: how many runs the median is over
	Count       uint64  `json:"count"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"rps"`
	P50         float64 `json:"p50_ms"`
	P95         float64 `json:"p95_ms"`
	P99         float64 `json:"p99_ms"`
	Avg         float64 `json:"avg_ms"`
	Max         float64 `json:"max_ms"`
	// RPSRatio and P99Ratio compare with health at the same concurrency in
	// the same run (0 when health was not run).
	RPSRatio      float64        `json:"rps_ratio_to_health"`
	P99Ratio      float64        `json:"p99_ratio_to_health"`
	StatusCodes   map[string]int `json:"status_codes"`
	Errors        map[string]int `json:"errors"` // non-OK status codes
	ErrorMessages map[string]int `json:"error_messages,omitempty"`
	// PeakRSS is the highest VmRSS sampled (every 50 ms) while the scenario
	// ran; PeakRSSFile is the file-backed part of that sample (bbolt's mmap,
	// the binary), PeakAnon the highest RssAnon (heap, stacks).
	PeakRSS     int64 `json:"peak_rss_bytes"`
	PeakRSSFile int64 `json:"peak_rss_file_bytes"`
	PeakAnon    int64 `json:"peak_rss_anon_bytes"`
	RSSSamples  int   `json:"rss_samples"`
	// RSSPerSec is the highest VmRSS of each second of the scenario, in
	// MiB: flat means no growth (run with a long -duration for a soak).
	RSSPerSec []float64 `json:"rss_mib_per_second,omitempty"`
	// AnonPerSec is the same for RssAnon (heap and stacks), the leak signal.
	AnonPerSec []float64 `json:"rss_anon_mib_per_second,omitempty"`
	// ServerCPU and GHZCPU are the CPU seconds billingd and ghz used during
	// the scenario; MachineBusy is every CPU's busy time, so MachineBusy -
	// ServerCPU - GHZCPU is what else ran (other people's work, noise).
	ServerCPU   float64 `json:"server_cpu_s"`
	GHZCPU      float64 `json:"ghz_cpu_s"`
	MachineBusy float64 `json:"machine_busy_cpu_s"`
	Wall        float64 `json:"wall_s"`
}

// perCall returns CPU microseconds per call.
func (r scenarioResult) perCall(cpu float64) float64 {
	if r.Count == 0 {
		return 0
	}
	return cpu / float64(r.Count) * 1e6
}

// otherCPU is the share of the machine's CPUs used by neither billingd nor
// ghz while the scenario ran.
func (r scenarioResult) otherCPU(ncpu int) float64 {
	if r.Wall == 0 || ncpu == 0 {
		return 0
	}
	return max(0, r.MachineBusy-r.ServerCPU-r.GHZCPU) / (r.Wall * float64(ncpu))
}

// fillRatios sets each result's ratios to the health result of its
// concurrency in the same run: health-2, the one that took turns with it,
// for new and mix when there is one.
func fillRatios(rs []scenarioResult) {
	type key struct {
		scenario    string
		concurrency int
	}
	ceilings := map[key]scenarioResult{}
	for _, r := range rs {
		if r.Scenario == scenHealth || r.Scenario == scenHealth2 {
			ceilings[key{r.Scenario, r.Concurrency}] = r
		}
	}
	for i, r := range rs {
		h, ok := ceilings[key{scenHealth, r.Concurrency}]
		if r.Scenario == scenNew || r.Scenario == scenMix || r.Scenario == scenHealth2 {
			if h2, ok2 := ceilings[key{scenHealth2, r.Concurrency}]; ok2 {
				h, ok = h2, true
			}
		}
		if !ok {
			continue
		}
		if h.RPS > 0 {
			rs[i].RPSRatio = r.RPS / h.RPS
		}
		if h.P99 > 0 {
			rs[i].P99Ratio = r.P99 / h.P99
		}
	}
}

// summarize returns, per scenario and concurrency, the median over runs of
// every figure (ratios are medians of the per-run ratios, not ratios of
// medians), and the status codes summed.
func summarize(runs []runResult) []scenarioResult {
	type key struct {
		s string
		c int
	}
	var order []key
	groups := map[key][]scenarioResult{}
	for _, r := range runs {
		for _, s := range r.Results {
			k := key{s.Scenario, s.Concurrency}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], s)
		}
	}
	var out []scenarioResult
	for _, k := range order {
		g := groups[k]
		m := scenarioResult{Scenario: k.s, Concurrency: k.c, Runs: len(g),
			StatusCodes: map[string]int{}, Errors: map[string]int{}}
		pick := func(f func(scenarioResult) float64) float64 { return medianOf(g, f) }
		m.Count = uint64(pick(func(s scenarioResult) float64 { return float64(s.Count) }))
		m.Seconds = pick(func(s scenarioResult) float64 { return s.Seconds })
		m.RPS = pick(func(s scenarioResult) float64 { return s.RPS })
		m.P50 = pick(func(s scenarioResult) float64 { return s.P50 })
		m.P95 = pick(func(s scenarioResult) float64 { return s.P95 })
		m.P99 = pick(func(s scenarioResult) float64 { return s.P99 })
		m.Avg = pick(func(s scenarioResult) float64 { return s.Avg })
		m.Max = pick(func(s scenarioResult) float64 { return s.Max })
		m.RPSRatio = pick(func(s scenarioResult) float64 { return s.RPSRatio })
		m.P99Ratio = pick(func(s scenarioResult) float64 { return s.P99Ratio })
		m.PeakRSS = int64(pick(func(s scenarioResult) float64 { return float64(s.PeakRSS) }))
		m.PeakRSSFile = int64(pick(func(s scenarioResult) float64 { return float64(s.PeakRSSFile) }))
		m.PeakAnon = int64(pick(func(s scenarioResult) float64 { return float64(s.PeakAnon) }))
		m.RSSSamples = int(pick(func(s scenarioResult) float64 { return float64(s.RSSSamples) }))
		m.ServerCPU = pick(func(s scenarioResult) float64 { return s.ServerCPU })
		m.GHZCPU = pick(func(s scenarioResult) float64 { return s.GHZCPU })
		m.MachineBusy = pick(func(s scenarioResult) float64 { return s.MachineBusy })
		m.Wall = pick(func(s scenarioResult) float64 { return s.Wall })
		for _, s := range g {
			for c, n := range s.StatusCodes {
				m.StatusCodes[c] += n
			}
			for c, n := range s.Errors {
				m.Errors[c] += n
			}
		}
		out = append(out, m)
	}
	return out
}

// medianOf is the median of f over rows.
func medianOf[T any](rows []T, f func(T) float64) float64 {
	v := make([]float64, len(rows))
	for i, r := range rows {
		v[i] = f(r)
	}
	return median(v)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// target is one of billingd's performance targets (bench/README.md), checked on the summary.
type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Limit float64 `json:"limit"`
	Pass  bool    `json:"pass"`
	// Guards says what the target keeps true.
	Guards string `json:"guards"`
}

const mib = 1 << 20

// figure is one value a target applies to, and where it was measured.
type figure struct {
	at    string
	value float64
}

// targets are billingd's performance targets (bench/README.md): each a
// figure of the results (every concurrency or case it applies to), compared
// with its limit. The guard says what the target keeps true.
var targets = []struct {
	what   string
	limit  float64
	atMost bool // the figure must be ≤ limit; else ≥
	guard  string
	of     func(*results) []figure
}{
	{"replay RPS / health RPS", 0.85, false, "an answer from the record costs little more than a no-op RPC",
		matrixFigure(scenReplay, []int{64, 256}, true, func(s scenarioResult) float64 { return s.RPSRatio })},
	{"replay p99 / health p99", 1.5, true, "replays add no tail latency",
		matrixFigure(scenReplay, []int{64, 256}, true, func(s scenarioResult) float64 { return s.P99Ratio })},
	{"replay peak RSS, MiB", 48, true, "a server answering replays stays small",
		matrixFigure(scenReplay, nil, false, func(s scenarioResult) float64 { return float64(s.PeakRSS) / mib })},
	{"new-charge RPS / health RPS", 0.25, false, "a new charge (two durable writes and a Stripe call) costs at most 4 no-op RPCs",
		matrixFigure(scenNew, []int{64, 256}, true, func(s scenarioResult) float64 { return s.RPSRatio })},
	{"new-charge peak RSS, MiB", 128, true, "memory stays bounded under a burst of new charges",
		matrixFigure(scenNew, []int{256}, false, func(s scenarioResult) float64 { return float64(s.PeakRSS) / mib })},
	{"billingd CPU per new charge / per health check", 3, true, "billingd's own work per charge, the simulator's taken out (own-cpu)",
		func(r *results) []figure {
			if r.OwnCPU.ChargeRatio == 0 {
				return nil
			}
			return []figure{{fmt.Sprintf("c=%d", ownCPUConcurrency), r.OwnCPU.ChargeRatio}}
		}},
	{"added latency p50, ms", 1, true, "billingd adds little to a slow Stripe's latency",
		slowFigure(func(c slowCase) bool { return c.MaxInFlight >= c.Concurrency && c.DupEvery == 0 }, func(s slowResult) float64 { return s.AddedP50 })},
	{"added latency p99, ms", 5, true, "nor to its tail",
		slowFigure(func(c slowCase) bool { return c.MaxInFlight >= c.Concurrency && c.DupEvery == 0 }, func(s slowResult) float64 { return s.AddedP99 })},
	{"peak RSS under a crowd waiting on Stripe, MiB", 160, true, "waiting callers cost little memory",
		slowFigure(func(c slowCase) bool { return c.Concurrency >= 2000 }, func(s slowResult) float64 { return float64(s.PeakRSS) / mib })},
	{"answers past the caller's deadline", 0, true, "a caller who cannot be served in time is told so in time",
		slowFigure(func(slowCase) bool { return true }, func(s slowResult) float64 { return float64(s.PastDeadline) })},
	{"request_ids charged twice, or lost", 0, true, "exactly once under a slow Stripe",
		slowFigure(func(slowCase) bool { return true }, func(s slowResult) float64 { return float64(s.Duplicates + s.Lost + s.Unknown) })},
}

// matrixFigure picks a figure of one matrix scenario's summary rows at the
// given concurrencies (nil: all). A ratio (ratio=true) needs a ceiling:
// rows without one are skipped.
func matrixFigure(scenario string, at []int, ratio bool, f func(scenarioResult) float64) func(*results) []figure {
	return func(r *results) []figure {
		var out []figure
		for _, s := range r.Summary {
			if s.Scenario != scenario || (at != nil && !slices.Contains(at, s.Concurrency)) || (ratio && s.RPSRatio == 0) {
				continue
			}
			out = append(out, figure{fmt.Sprintf("c=%d", s.Concurrency), f(s)})
		}
		return out
	}
}

// slowFigure picks a figure of the slow-stripe cases that match.
func slowFigure(match func(slowCase) bool, f func(slowResult) float64) func(*results) []figure {
	return func(r *results) []figure {
		var out []figure
		for _, s := range r.SlowStripe.Summary {
			if match(s.Case) {
				out = append(out, figure{"slow-stripe " + s.Name, f(s)})
			}
		}
		return out
	}
}

// checkTargets evaluates every target on whatever the results hold.
func checkTargets(r *results) []target {
	var out []target
	for _, t := range targets {
		for _, f := range t.of(r) {
			pass := f.value >= t.limit
			op := "≥"
			if t.atMost {
				pass, op = f.value <= t.limit, "≤"
			}
			out = append(out, target{Name: fmt.Sprintf("%s at %s %s", t.what, f.at, op), Value: f.value, Limit: t.limit, Pass: pass, Guards: t.guard})
		}
	}
	return out
}

// failures lists every scenario that had a non-OK answer.
func failures(runs []runResult) []string {
	var out []string
	for _, r := range runs {
		for _, s := range r.Results {
			if len(s.Errors) > 0 {
				msg := fmt.Sprintf("run %d %s c=%d: non-OK answers %s", r.Run, s.Scenario, s.Concurrency, formatCodes(s.Errors))
				if len(s.ErrorMessages) > 0 {
					msg += fmt.Sprintf("; e.g. %s", formatCodes(s.ErrorMessages))
				}
				out = append(out, msg)
			}
		}
	}
	return out
}

func formatCodes(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s:%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func progressLine(s scenarioResult) string {
	errs := "0 errors"
	if len(s.Errors) > 0 {
		errs = "ERRORS " + formatCodes(s.Errors)
	}
	return fmt.Sprintf("  %-11s c=%-4d %8.0f rps  p50 %6.2f  p95 %6.2f  p99 %6.2f ms  rss %5.1f MiB  %s",
		s.Scenario, s.Concurrency, s.RPS, s.P50, s.P95, s.P99, float64(s.PeakRSS)/mib, errs)
}

func printTable(w io.Writer, rows []scenarioResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tc\tRPS\t×health\tp50 ms\tp95 ms\tp99 ms\tp99×h\terrors\tpeak RSS MiB\t(anon)\tsrv µs/call\tghz µs/call\tother CPU\t")
	ncpu := runtime.NumCPU()
	for _, s := range rows {
		ratio, p99r := "-", "-"
		if s.RPSRatio > 0 {
			ratio = fmt.Sprintf("%.2f", s.RPSRatio)
			p99r = fmt.Sprintf("%.2f", s.P99Ratio)
		}
		errs := "0"
		if len(s.Errors) > 0 {
			errs = formatCodes(s.Errors)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f%%\t\n",
			s.Scenario, s.Concurrency, s.RPS, ratio, s.P50, s.P95, s.P99, p99r, errs,
			float64(s.PeakRSS)/mib, float64(s.PeakAnon)/mib, s.perCall(s.ServerCPU), s.perCall(s.GHZCPU), 100*s.otherCPU(ncpu))
	}
	_ = tw.Flush()
}

func printTargets(w io.Writer, ts []target) {
	if len(ts) == 0 {
		return
	}
	fmt.Fprintln(w, "\nTargets:")
	for _, t := range ts {
		mark := "MISS"
		if t.Pass {
			mark = "pass"
		}
		fmt.Fprintf(w, "  %-4s %-64s %8.2f (target %g)\n", mark, t.Name, t.Value, t.Limit)
	}
}

// writeJSON writes v to path atomically, creating its directory.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// machineFacts describes where and what was measured. Every probe is
// best-effort: a missing fact is left empty, not an error.
func machineFacts(ctx context.Context, cfg config) machine {
	m := machine{
		NumCPU:     runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion:  runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		m.MemTotal, _ = statusField(b, "MemTotal")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	out := func(name string, args ...string) string {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		b, err := exec.CommandContext(cctx, name, args...).Output()
		if err != nil {
			return ""
		}
		return string(bytes.TrimSpace(b))
	}
	if v := out("go", "env", "GOVERSION"); v != "" {
		m.GoVersion = v
	}
	m.Commit = out("git", "rev-parse", "HEAD")
	m.Dirty = out("git", "status", "--porcelain", "--untracked-files=no") != ""
	m.Billingd = out(cfg.Bin, "version")
	m.GHZVersion = out("go", "list", "-modfile=tools/go.mod", "-m", "-f", "{{.Version}}", "github.com/bojand/ghz")
	return m
}
