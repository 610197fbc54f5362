package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	healthMethod = "grpc.health.v1.Health/Check"
	chargeMethod = "billing.v1.BillingService/Charge"
	healthData   = `{"service":"billing.v1.BillingService"}`
)

// scenarioSpec is one ghz invocation, minus concurrency and duration.
type scenarioSpec struct {
	name string
	call string
	data string
	// noTemplates turns ghz's call-data templates off, for scenarios whose
	// data is fixed.
	noTemplates bool
	slice       int // which of -slices: names the report and data files
}

// ghzReport is the part of ghz's -O json report benchrun reads. Durations are
// nanoseconds.
type ghzReport struct {
	Count   uint64  `json:"count"`
	Total   int64   `json:"total"`
	Average int64   `json:"average"`
	Fastest int64   `json:"fastest"`
	Slowest int64   `json:"slowest"`
	Rps     float64 `json:"rps"`

	ErrorDist      map[string]int `json:"errorDistribution"`
	StatusCodeDist map[string]int `json:"statusCodeDistribution"`

	LatencyDistribution []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`

	// Details has one entry per call: the latencies of several ghz runs
	// (the slices of one scenario) give exact percentiles of them all.
	Details []struct {
		Latency int64  `json:"latency"`
		Error   string `json:"error"`
	} `json:"details"`
}

func parseReport(b []byte) (*ghzReport, error) {
	var r ghzReport
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("ghz report: %w", err)
	}
	return &r, nil
}

// percentile returns the latency at p % (ghz reports 10, 25, 50, 75, 90, 95, 99).
func (r *ghzReport) percentile(p int) time.Duration {
	for _, l := range r.LatencyDistribution {
		if l.Percentage == p {
			return time.Duration(l.Latency)
		}
	}
	return 0
}

// nonOK returns the number of calls that did not answer OK, by status code.
// ghz exits 0 whatever the calls answered, so this is the pass/fail gate.
func (r *ghzReport) nonOK() map[string]int {
	out := map[string]int{}
	for code, n := range r.StatusCodeDist {
		if code != "OK" && n > 0 {
			out[code] += n
		}
	}
	return out
}

// ghzRun is one finished ghz invocation.
type ghzRun struct {
	report *ghzReport
	cpu    time.Duration // ghz's own user+system time
	wall   time.Duration
}

// runGHZ runs ghz once against srv and parses its report. It fails if ghz
// fails, or reports no calls.
func runGHZ(ctx context.Context, cfg config, srv *server, spec scenarioSpec, c int, d time.Duration, dir string) (*ghzRun, error) {
	out := filepath.Join(dir, fmt.Sprintf("ghz-%s-c%d-s%d.json", spec.name, c, spec.slice))
	args := []string{
		"--insecure",
		"--call", spec.call,
		"-c", strconv.Itoa(c),
		"-z", d.String(),
		// Let calls in flight at the end finish: "close" would fail them.
		"--duration-stop", "wait",
		"-t", cfg.CallTimeout.String(),
		"--connections", strconv.Itoa(cfg.Connections),
		"--name", spec.name,
		"-O", "json", "-o", out,
	}
	dataFile := filepath.Join(dir, fmt.Sprintf("data-%s-c%d-s%d.json", spec.name, c, spec.slice))
	if err := os.WriteFile(dataFile, []byte(spec.data), 0o644); err != nil {
		return nil, err
	}
	args = append(args, "-D", dataFile)
	if cfg.Token != "" {
		md, _ := json.Marshal(map[string]string{"authorization": "Bearer " + cfg.Token})
		args = append(args, "-m", string(md))
	}
	if cfg.LeanGHZ { // else ghz's defaults, templates and functions on
		args = append(args, "--disable-template-functions")
		if spec.noTemplates {
			args = append(args, "--disable-template-data")
		}
	}
	args = append(args, srv.addr)

	// Bounded: the run, the calls still in flight, and ghz's start-up.
	ctx, cancel := context.WithTimeout(ctx, d+cfg.CallTimeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.GHZ, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 { // ghz repeats a template error once per call
			msg = msg[:2000] + " …"
		}
		return nil, fmt.Errorf("ghz: %w: %s", err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	if cfg.Keep == "" { // reports hold one entry per call: tens of MB
		_ = os.Remove(out)
	}
	rep, err := parseReport(b)
	if err != nil {
		return nil, err
	}
	if rep.Count == 0 {
		return nil, errors.New("ghz made no calls")
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return &ghzRun{report: rep, cpu: cpu, wall: wall}, nil
}

// slice is one ghz run of a scenario: all of it, or one of its -slices.
type slice struct {
	scenarioResult
	latencies []int64 // every call's without an error, in ns (merge sorts them)
}

// measure runs one scenario (or a slice of it) for d and samples the server
// while it runs.
func measure(ctx context.Context, cfg config, srv *server, spec scenarioSpec, c int, d time.Duration, dir string) (slice, error) {
	srv.truncateLog()
	cpu0, _ := procCPU(srv.pid())
	busy0, _ := machineBusy()
	rss := startRSS(srv.pid(), 50*time.Millisecond)
	g, err := runGHZ(ctx, cfg, srv, spec, c, d, dir)
	rs := rss.stop()
	cpu1, _ := procCPU(srv.pid())
	busy1, _ := machineBusy()
	if err != nil {
		return slice{}, err
	}
	rep := g.report
	lats := make([]int64, 0, len(rep.Details))
	for _, dt := range rep.Details {
		if dt.Error == "" { // ghz ranks the calls without an error
			lats = append(lats, dt.Latency)
		}
	}
	sr := scenarioResult{
		Scenario:    spec.name,
		Concurrency: c,
		Count:       rep.Count,
		Seconds:     time.Duration(rep.Total).Seconds(),
		RPS:         rep.Rps,
		P50:         ms(rep.percentile(50)),
		P95:         ms(rep.percentile(95)),
		P99:         ms(rep.percentile(99)),
		Avg:         ms(time.Duration(rep.Average)),
		Max:         ms(time.Duration(rep.Slowest)),
		StatusCodes: rep.StatusCodeDist,
		Errors:      rep.nonOK(),
		PeakRSS:     rs.peak.Total,
		PeakRSSFile: rs.peak.File,
		PeakAnon:    rs.peakAnon,
		RSSSamples:  rs.samples,
		RSSPerSec:   mibs(rs.perSecond),
		AnonPerSec:  mibs(rs.anonPerSecond),
		ServerCPU:   (cpu1 - cpu0).Seconds(),
		GHZCPU:      g.cpu.Seconds(),
		MachineBusy: (busy1 - busy0).Seconds(),
		Wall:        g.wall.Seconds(),
	}
	if len(rep.ErrorDist) > 0 {
		sr.ErrorMessages = topErrors(rep.ErrorDist, 5)
	}
	return slice{scenarioResult: sr, latencies: lats}, nil
}

// merge makes one result of the slices of one scenario at one concurrency:
// counts, seconds and CPU add up, RPS is calls over seconds, percentiles
// are those of every call's latency (ranked as ghz ranks them), peaks are
// the highest, and the per-second RSS lists follow each other. One slice is
// returned as ghz reported it.
func merge(parts []slice) scenarioResult {
	if len(parts) == 1 {
		return parts[0].scenarioResult
	}
	m := scenarioResult{Scenario: parts[0].Scenario, Concurrency: parts[0].Concurrency,
		StatusCodes: map[string]int{}, Errors: map[string]int{}}
	var lats []int64
	var sumAvg float64
	for _, p := range parts {
		m.Count += p.Count
		m.Seconds += p.Seconds
		sumAvg += p.Avg * float64(p.Count)
		m.Max = max(m.Max, p.Max)
		for k, v := range p.StatusCodes {
			m.StatusCodes[k] += v
		}
		for k, v := range p.Errors {
			m.Errors[k] += v
		}
		for k, v := range p.ErrorMessages {
			if m.ErrorMessages == nil {
				m.ErrorMessages = map[string]int{}
			}
			m.ErrorMessages[k] += v
		}
		if p.PeakRSS > m.PeakRSS {
			m.PeakRSS, m.PeakRSSFile = p.PeakRSS, p.PeakRSSFile
		}
		m.PeakAnon = max(m.PeakAnon, p.PeakAnon)
		m.RSSSamples += p.RSSSamples
		m.RSSPerSec = append(m.RSSPerSec, p.RSSPerSec...)
		m.AnonPerSec = append(m.AnonPerSec, p.AnonPerSec...)
		m.ServerCPU += p.ServerCPU
		m.GHZCPU += p.GHZCPU
		m.MachineBusy += p.MachineBusy
		m.Wall += p.Wall
		lats = append(lats, p.latencies...)
	}
	if m.Seconds > 0 {
		m.RPS = float64(m.Count) / m.Seconds
	}
	if m.Count > 0 {
		m.Avg = sumAvg / float64(m.Count)
	}
	slices.Sort(lats)
	m.P50 = ms(time.Duration(rank(lats, 50)))
	m.P95 = ms(time.Duration(rank(lats, 95)))
	m.P99 = ms(time.Duration(rank(lats, 99)))
	return m
}

// rank is the p-th percentile of sorted as ghz computes its own: the value at
// 0-based index p % of the length, one lower when that is a whole number.
func rank(sorted []int64, p int) int64 {
	if len(sorted) == 0 {
		return 0
	}
	ip := float64(p) / 100 * float64(len(sorted))
	i := int(ip)
	if ip == float64(i) {
		i--
	}
	return sorted[max(i, 0)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// mibs converts bytes to MiB rounded to 0.1.
func mibs(b []int64) []float64 {
	out := make([]float64, len(b))
	for i, v := range b {
		out[i] = math.Round(float64(v)/mib*10) / 10
	}
	return out
}

// topErrors keeps the n most frequent ghz error messages.
func topErrors(dist map[string]int, n int) map[string]int {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range dist {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || (all[i].v == all[j].v && all[i].k < all[j].k) })
	out := map[string]int{}
	for _, e := range all[:min(n, len(all))] {
		out[e.k] = e.v
	}
	return out
}
