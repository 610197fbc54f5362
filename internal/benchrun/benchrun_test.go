package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"text/template"
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
	for _, tg := range checkTargets(sum) {
		names = append(names, tg.Name)
		if strings.HasPrefix(tg.Name, "replay RPS") && tg.Pass {
			t.Errorf("target %q passes at 0.5", tg.Name)
		}
	}
	if len(names) != 3 { // RPS ratio, p99 ratio, RSS at c=64
		t.Errorf("targets %v", names)
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
