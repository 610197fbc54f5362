package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc/codes"
)

// TestMixData renders the mix array as ghz does (element n % 10 for request
// n, text/template over a RequestNumber) and checks that exactly the
// requests with n % 10 == 1 repeat the id of request n-1: with ghz's
// template functions (sprig's div, and sprig's slice, which refuses
// strings) and without them (-lean-ghz, Go's own functions only).
func TestMixData(t *testing.T) {
	t.Parallel()
	sprigLike := template.FuncMap{
		"div": func(a, b int64) int64 { return a / b },
		"slice": func(list any, _ ...any) (any, error) {
			if _, ok := list.([]any); !ok {
				return nil, fmt.Errorf("list should be type of slice or array but %T", list)
			}
			return list, nil
		},
	}
	for _, tc := range []struct {
		name  string
		lean  bool
		funcs template.FuncMap
	}{{"ghz as shipped", false, sprigLike}, {"lean ghz", true, nil}} {
		t.Run(tc.name, func(t *testing.T) { checkMixData(t, mixData("mix-x-", tc.lean), tc.funcs) })
	}
}

func checkMixData(t *testing.T, data string, funcs template.FuncMap) {
	var elems []map[string]any
	if err := json.Unmarshal([]byte(data), &elems); err != nil {
		t.Fatal(err)
	}
	if len(elems) != mixEvery {
		t.Fatalf("%d elements, want %d", len(elems), mixEvery)
	}
	render := func(n int64) string {
		// ghz re-marshals each element before it executes it as a template.
		b, err := json.Marshal(elems[n%int64(len(elems))])
		if err != nil {
			t.Fatal(err)
		}
		tmpl, err := template.New("").Funcs(funcs).Parse(string(b))
		if err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		if err := tmpl.Execute(&out, struct{ RequestNumber int64 }{n}); err != nil {
			t.Fatal(err)
		}
		var req struct{ RequestID string }
		if err := json.Unmarshal([]byte(out.String()), &req); err != nil {
			t.Fatalf("request %d: %v: %s", n, err, out.String())
		}
		return req.RequestID
	}
	seen := map[string]int64{}
	const calls = 1234
	for n := range int64(calls) {
		id := render(n)
		if strings.Contains(id, "{") {
			t.Fatalf("request %d: template not executed: %q", n, id)
		}
		prev, dup := seen[id]
		if want := n%10 == 1; dup != want {
			t.Errorf("request %d: id %q duplicate = %v, want %v", n, id, dup, want)
		}
		if dup && prev != n-1 {
			t.Errorf("request %d repeats request %d, want %d", n, prev, n-1)
		}
		seen[id] = n
	}
	if got, want := calls-len(seen), duplicates(calls, mixEvery); got != want {
		t.Errorf("%d duplicates, duplicates() says %d", got, want)
	}
}

func TestDuplicates(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ count, want int }{{0, 0}, {1, 0}, {2, 1}, {11, 1}, {12, 2}, {100, 10}, {101, 10}, {102, 11}} {
		brute := 0
		for n := range tt.count {
			if n%10 == 1 {
				brute++
			}
		}
		if got := duplicates(tt.count, 10); got != tt.want || got != brute {
			t.Errorf("duplicates(%d, 10) = %d, want %d (brute force %d)", tt.count, got, tt.want, brute)
		}
	}
}

func TestParseReportGatesOnStatusCodes(t *testing.T) {
	t.Parallel()
	// The shape of ghz -O json, trimmed; durations are nanoseconds.
	const report = `{"count":10,"total":2000000000,"average":1500000,"fastest":100000,"slowest":9000000,"rps":5,
		"errorDistribution":{"rpc error: code = Unavailable desc = x":2},
		"statusCodeDistribution":{"OK":8,"Unavailable":2},
		"latencyDistribution":[{"percentage":50,"latency":1000000},{"percentage":95,"latency":2000000},{"percentage":99,"latency":3000000}],
		"details":[{"latency":1000000,"status":"OK"}]}`
	r, err := parseReport([]byte(report))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.nonOK(); len(got) != 1 || got["Unavailable"] != 2 {
		t.Errorf("nonOK = %v, want Unavailable:2", got)
	}
	if got := ms(r.percentile(99)); got != 3 {
		t.Errorf("p99 = %v ms, want 3", got)
	}
	ok, err := parseReport([]byte(`{"count":3,"statusCodeDistribution":{"OK":3}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := ok.nonOK(); len(got) != 0 {
		t.Errorf("nonOK of an all-OK report = %v", got)
	}
}

func TestSummaryIsMedianOfRuns(t *testing.T) {
	t.Parallel()
	run := func(i int, health, replay float64) runResult {
		rs := []scenarioResult{
			{Scenario: scenHealth, Concurrency: 64, RPS: health, P99: 2},
			{Scenario: scenReplay, Concurrency: 64, RPS: replay, P99: 3, StatusCodes: map[string]int{"OK": 5}},
		}
		fillRatios(rs)
		return runResult{Run: i, Results: rs}
	}
	sum := summarize([]runResult{run(1, 100, 90), run(2, 200, 100), run(3, 100, 50)})
	if len(sum) != 2 {
		t.Fatalf("%d summary rows", len(sum))
	}
	r := sum[1]
	// Per-run ratios 0.9, 0.5, 0.5: the median ratio is 0.5, not 90/100.
	if r.Scenario != scenReplay || r.RPS != 90 || r.RPSRatio != 0.5 || r.P99Ratio != 1.5 || r.StatusCodes["OK"] != 15 || r.Runs != 3 {
		t.Errorf("summary %+v", r)
	}
	var names []string
	for _, tg := range checkTargets(&results{Summary: sum}) {
		names = append(names, tg.Name)
		if strings.HasPrefix(tg.Name, "replay RPS") && tg.Pass {
			t.Errorf("target %q passes at 0.5", tg.Name)
		}
	}
	if len(names) != 3 { // RPS ratio, p99 ratio, RSS at c=64
		t.Errorf("targets %v", names)
	}
}

// Each ratio is to the health ceiling that took turns with it: health for
// replay, health-2 for new and mix (health when there is no health-2).
func TestRatiosToTheirOwnCeiling(t *testing.T) {
	t.Parallel()
	rs := []scenarioResult{
		{Scenario: scenHealth, Concurrency: 64, RPS: 1000, P99: 2},
		{Scenario: scenReplay, Concurrency: 64, RPS: 900, P99: 3},
		{Scenario: scenHealth2, Concurrency: 64, RPS: 2000, P99: 4},
		{Scenario: scenNew, Concurrency: 64, RPS: 500, P99: 8},
		{Scenario: scenMix, Concurrency: 64, RPS: 600, P99: 8},
		{Scenario: scenHealth, Concurrency: 256, RPS: 1000, P99: 2},
		{Scenario: scenNew, Concurrency: 256, RPS: 300, P99: 8},
	}
	fillRatios(rs)
	want := []float64{1, 0.9, 1, 0.25, 0.3, 1, 0.3}
	for i, r := range rs {
		if r.RPSRatio != want[i] {
			t.Errorf("%s c=%d: ratio %v, want %v", r.Scenario, r.Concurrency, r.RPSRatio, want[i])
		}
	}
	if rs[3].P99Ratio != 2 {
		t.Errorf("new p99 ratio %v, want 8/4", rs[3].P99Ratio)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	env := map[string]string{"BENCH_DURATION": "3s", "BENCH_SCENARIOS": "mix,health"}
	c, err := parseFlags([]string{"-concurrency", "16, 64"}, func(k string) string { return env[k] }, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Duration.String() != "3s" || len(c.Concurrency) != 2 || c.Concurrency[1] != 64 ||
		strings.Join(c.Scenarios, ",") != "health,mix" || c.Runs != 3 || c.StoreKind != "bbolt" {
		t.Errorf("config %+v", c)
	}
	const dsn = "postgres://bench:secret@127.0.0.1:55432/bench"
	c, err = parseFlags([]string{"-store", dsn}, func(string) string { return "" }, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Store != dsn || c.StoreKind != "postgres" {
		t.Errorf("-store: config %+v", c)
	}
	if b, err := json.Marshal(c); err != nil || strings.Contains(string(b), "secret") || !strings.Contains(string(b), `"store":"postgres"`) {
		t.Errorf("config as results.json writes it: %s (%v)", b, err)
	}
	for _, bad := range [][]string{
		{"-scenarios", "nope"}, {"-concurrency", "0"}, {"-runs", "0"}, {"-server-log", "pipe"},
		{"-server-args", "--listen=0.0.0.0:1"}, {"extra"},
		{"-server-args", "--store=" + dsn}, {"-server-args", "--store " + dsn}, {"-store", "mysql://127.0.0.1/bench"},
	} {
		if _, err := parseFlags(bad, func(string) string { return "" }, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

// rank ranks as ghz's latencies() does (runner/reporter.go, v0.120.0).
func TestRank(t *testing.T) {
	t.Parallel()
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1)
	}
	for _, tt := range []struct {
		sorted []int64
		p      int
		want   int64
	}{
		{hundred, 99, 99}, // 0.99*100 is whole: index 98
		{hundred, 50, 50},
		{hundred[:10], 95, 10}, // 9.5: index 9
		{hundred[:1], 99, 1},
		{nil, 99, 0},
	} {
		if got := rank(tt.sorted, tt.p); got != tt.want {
			t.Errorf("rank(%d values, p%d) = %d, want %d", len(tt.sorted), tt.p, got, tt.want)
		}
	}
}

// merge adds slices up: RPS is all calls over all seconds (not a mean of
// the slices' RPS), and p99 is that of every call.
func TestMergeSlices(t *testing.T) {
	t.Parallel()
	fast := make([]int64, 90) // 90 calls of 1 ms in 1 s
	for i := range fast {
		fast[i] = int64(time.Millisecond)
	}
	slow := make([]int64, 10) // 10 calls of 50 ms in 1 s
	for i := range slow {
		slow[i] = int64(50 * time.Millisecond)
	}
	a := slice{scenarioResult: scenarioResult{Scenario: "replay", Concurrency: 64, Count: 90, Seconds: 1, RPS: 90,
		Avg: 1, Max: 1, P99: 1, StatusCodes: map[string]int{"OK": 90}, Errors: map[string]int{},
		PeakRSS: 40 << 20, PeakRSSFile: 10 << 20, PeakAnon: 30 << 20, RSSPerSec: []float64{40}, ServerCPU: 1}, latencies: fast}
	b := slice{scenarioResult: scenarioResult{Scenario: "replay", Concurrency: 64, Count: 10, Seconds: 1, RPS: 10,
		Avg: 50, Max: 50, P99: 50, StatusCodes: map[string]int{"OK": 10}, Errors: map[string]int{},
		PeakRSS: 42 << 20, PeakRSSFile: 11 << 20, PeakAnon: 29 << 20, RSSPerSec: []float64{42}, ServerCPU: 0.5}, latencies: slow}
	m := merge([]slice{a, b})
	if m.Count != 100 || m.Seconds != 2 || m.RPS != 50 {
		t.Errorf("count %d, seconds %v, RPS %v; want 100, 2, 50", m.Count, m.Seconds, m.RPS)
	}
	if m.P50 != 1 || m.P95 != 50 || m.P99 != 50 || m.Max != 50 || m.Avg != 5.9 {
		t.Errorf("p50 %v, p95 %v, p99 %v, max %v, avg %v; want 1, 50, 50, 50, 5.9", m.P50, m.P95, m.P99, m.Max, m.Avg)
	}
	if m.StatusCodes["OK"] != 100 || m.PeakRSS != 42<<20 || m.PeakRSSFile != 11<<20 || m.PeakAnon != 30<<20 || m.ServerCPU != 1.5 {
		t.Errorf("merged %+v", m)
	}
	if len(m.RSSPerSec) != 2 {
		t.Errorf("RSS per second %v, want both slices'", m.RSSPerSec)
	}
	if one := merge([]slice{a}); one.RPS != 90 || one.P99 != 1 {
		t.Errorf("one slice: %+v, want it as ghz reported it", one)
	}
}

// Added latency is computed call by call against the Stripe time billingd
// logged for the same request_id, over the calls that made their own
// Stripe call after the warm-up; every answer counts in the codes, and one
// past the caller's deadline is counted as such.
func TestSlowStripeAddedLatency(t *testing.T) {
	t.Parallel()
	const window = 15 * time.Second // warm-up: the first 2 s
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	deadline := 10 * time.Second
	calls := []callRecord{
		{id: "a", start: 3 * time.Second, latency: ms(310), code: codes.OK, object: "pi_a", deadline: deadline},
		{id: "b", start: 3 * time.Second, latency: ms(305), code: codes.OK, object: "pi_b", deadline: deadline},
		{id: "a", start: 3100 * time.Millisecond, latency: ms(200), code: codes.OK, object: "pi_a", dup: true, deadline: deadline},
		{id: "d", start: 500 * time.Millisecond, latency: ms(900), code: codes.OK, object: "pi_d", deadline: deadline},
		{id: "e", start: 4 * time.Second, latency: ms(1), code: codes.Unavailable, reason: "UPSTREAM_RATE_LIMITED", deadline: deadline},
		{id: "f", start: 5 * time.Second, latency: deadline + ms(1), code: codes.DeadlineExceeded, deadline: deadline},
		{id: "g", start: 14900 * time.Millisecond, latency: ms(300), code: codes.OK, object: "pi_g", deadline: deadline}, // ends after the window
	}
	wire := map[string]float64{"a": 300, "b": 300, "d": 300, "g": 290}
	res := slowResult{Codes: map[string]int{}}
	summarizeCalls(&res, calls, window, wire)
	if res.AddedCalls != 3 || res.AddedP50 != 10 || res.AddedMax != 10 || res.StripeP50 != 300 {
		t.Errorf("added: %d calls, p50 %v, max %v, Stripe p50 %v; want 3 calls (a, b, g), p50 10, max 10, Stripe 300",
			res.AddedCalls, res.AddedP50, res.AddedMax, res.StripeP50)
	}
	if res.Calls != 7 || res.OK != 5 || res.Codes["OK"] != 5 || res.Codes["Unavailable/UPSTREAM_RATE_LIMITED"] != 1 || res.PastDeadline != 1 {
		t.Errorf("answers %+v", res)
	}
	if want := 4 / window.Seconds(); res.RPS != want { // a, b, the duplicate and d ended within the window
		t.Errorf("RPS %v, want %v", res.RPS, want)
	}
}

// The slow-stripe targets apply where they say: added latency only to a
// crowd with a slot per caller and no duplicates, memory only to the large
// crowd, the exactly-once count to every case.
func TestSlowStripeTargets(t *testing.T) {
	t.Parallel()
	r := &results{SlowStripe: slowStripeResults{Summary: []slowResult{
		{Case: slowCase{Concurrency: 256, MaxInFlight: 256}, Name: "c=256", AddedP50: 0.5, AddedP99: 7, PeakRSS: 80 * mib},
		{Case: slowCase{Concurrency: 256, MaxInFlight: 256, DupEvery: 10}, Name: "c=256 dup", AddedP50: 9, AddedP99: 9},
		{Case: slowCase{Concurrency: 2000}, Name: "c=2000", AddedP50: 7000, PeakRSS: 170 * mib, PastDeadline: 1, Lost: 1},
	}}}
	got := map[string]bool{}
	for _, tg := range checkTargets(r) {
		got[tg.Name] = tg.Pass
	}
	want := map[string]bool{
		"added latency p50, ms at slow-stripe c=256 ≤":                          true,
		"added latency p99, ms at slow-stripe c=256 ≤":                          false,
		"peak RSS under a crowd waiting on Stripe, MiB at slow-stripe c=2000 ≤": false,
		"answers past the caller's deadline at slow-stripe c=256 ≤":             true,
		"answers past the caller's deadline at slow-stripe c=256 dup ≤":         true,
		"answers past the caller's deadline at slow-stripe c=2000 ≤":            false,
		"request_ids charged twice, or lost at slow-stripe c=256 ≤":             true,
		"request_ids charged twice, or lost at slow-stripe c=256 dup ≤":         true,
		"request_ids charged twice, or lost at slow-stripe c=2000 ≤":            false,
	}
	if len(got) != len(want) {
		t.Errorf("targets %v, want %v", got, want)
	}
	for name, pass := range want {
		if p, ok := got[name]; !ok || p != pass {
			t.Errorf("%q: pass %v (present %v), want %v", name, p, ok, pass)
		}
	}
}

// TestOwnCPUFloor checks the floor own-cpu reports: health plus the median
// Stripe client and store parts over the runs that measured them.
func TestOwnCPUFloor(t *testing.T) {
	t.Parallel()
	o := ownCPUResults{
		Summary: []scenarioResult{
			{Scenario: scenHealth, Count: 1000, ServerCPU: 0.06},  // 60 µs
			{Scenario: scenHealth2, Count: 1000, ServerCPU: 0.05}, // 50 µs: the ceiling new charges took turns with
			{Scenario: scenNew, Count: 1000, ServerCPU: 0.3},      // 300 µs
			{Scenario: scenReplay, Count: 1000, ServerCPU: 0.07},  // 70 µs
		},
		Runs: []runResult{
			{Parts: &partsResult{StripeClientUS: 80, HTTPPostUS: 40, StoreUS: 60}},
			{}, // a run that stopped before its parts
			{Parts: &partsResult{StripeClientUS: 100, HTTPPostUS: 30, StoreUS: 70}},
			{Parts: &partsResult{StripeClientUS: 90, HTTPPostUS: 35, StoreUS: 50}},
		},
	}
	o.fillCPU()
	if o.HealthUS != 50 || o.ChargeUS != 300 || o.ChargeRatio != 6 {
		t.Errorf("health %v, charge %v, ratio %v; want 50, 300, 6", o.HealthUS, o.ChargeUS, o.ChargeRatio)
	}
	if o.StripeClientUS != 90 || o.HTTPPostUS != 35 || o.StoreUS != 60 {
		t.Errorf("parts %v / %v / %v, want the medians 90 / 35 / 60", o.StripeClientUS, o.HTTPPostUS, o.StoreUS)
	}
	if o.FloorUS != 200 || o.FloorRatio != 4 {
		t.Errorf("floor %v µs = %v × health, want 50+90+60 = 200 = 4", o.FloorUS, o.FloorRatio)
	}
	var none ownCPUResults
	none.Summary = o.Summary
	none.fillCPU()
	if none.FloorUS != 0 || none.FloorRatio != 0 {
		t.Errorf("no parts measured: floor %v, ratio %v; want none", none.FloorUS, none.FloorRatio)
	}
}

func TestPartRefusesUnknownName(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	if err := partMain([]string{"gc", "http://127.0.0.1:1", t.TempDir()}, &out); err == nil || !strings.Contains(err.Error(), "unknown part") {
		t.Errorf("part gc: %v, want unknown part", err)
	}
	if err := partMain([]string{"store"}, &out); err == nil {
		t.Error("part with one argument succeeded")
	}
	if out.Len() != 0 {
		t.Errorf("printed %q", out.String())
	}
}

// TestStorePartWritesEachChargeOnce runs the store part's operation on a
// real file: each call claims a new record and settles it, and a repeated
// id is refused, so every operation measured is a claim that created.
func TestStorePartWritesEachChargeOnce(t *testing.T) {
	t.Parallel()
	op, closeFn, err := partOp(partStore, "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer closeFn()
	for _, i := range []int{1, 2} {
		if err := op(i); err != nil {
			t.Fatalf("op(%d): %v", i, err)
		}
	}
	if err := op(1); err == nil || !strings.Contains(err.Error(), "created false") {
		t.Errorf("op(1) again: %v, want a claim that did not create", err)
	}
}
