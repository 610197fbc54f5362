package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// The slow-stripe scenario: billingd against a Stripe that answers as the
// real one does, in hundreds of milliseconds with a long tail, the
// simulator in a process of its own (benchrun's) so that billingd's
// figures are billingd's alone. Callers are benchrun's own closed loop
// rather than ghz, because the added latency is computed call by call: the
// caller's latency minus the Stripe time billingd's log line gives for the
// same request_id (stripe_ms).

// slowCase is one load of the scenario.
type slowCase struct {
	Concurrency int `json:"concurrency"`
	// DupEvery: one call in DupEvery repeats the request_id of a call still
	// in flight (0: none), as a double click or a client retry does.
	DupEvery int `json:"dup_every"`
	// MaxInFlight is billingd's --stripe-max-inflight (0: its default).
	MaxInFlight int `json:"max_inflight"`
}

func (c slowCase) name() string {
	s := fmt.Sprintf("c=%d", c.Concurrency)
	if c.DupEvery > 0 {
		s += fmt.Sprintf(" +%d%% dup", 100/c.DupEvery)
	}
	if c.MaxInFlight > 0 {
		s += fmt.Sprintf(" slots=%d", c.MaxInFlight)
	} else {
		s += " slots=default"
	}
	return s
}

// slowStripe is how the simulator answers in the scenario.
type slowStripe struct {
	Latency     time.Duration `json:"latency_ns"`      // every answer takes Latency + [0, Jitter) …
	Jitter      time.Duration `json:"jitter_ns"`       //
	SlowShare   float64       `json:"slow_share"`      // … except this share,
	SlowLatency time.Duration `json:"slow_latency_ns"` // which takes this long
}

// defaultSlowStripe has its median at 300 ms and 2 % of answers at 2 s.
var defaultSlowStripe = slowStripe{Latency: 250 * time.Millisecond, Jitter: 100 * time.Millisecond, SlowShare: 0.02, SlowLatency: 2 * time.Second}

// slowResult is one case of one run. Latencies are in milliseconds.
type slowResult struct {
	Case    slowCase `json:"case"`
	Name    string   `json:"name"`
	Runs    int      `json:"runs,omitempty"` // summary rows: how many runs the median is over
	Seconds float64  `json:"seconds"`
	// Calls is every answer; OK those that were OK; RPS is OK answers a
	// second, of calls that ended within the measured window.
	Calls int     `json:"calls"`
	OK    int     `json:"ok"`
	RPS   float64 `json:"ok_per_second"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	// Added is billingd's added latency, call by call: the caller's latency
	// minus the time billingd's Stripe calls of that request took on the
	// wire (its log line's stripe_ms), over the calls that made the Stripe
	// call themselves (AddedCalls); Stripe* is that wire time.
	AddedCalls int     `json:"added_calls"`
	AddedP50   float64 `json:"added_p50_ms"`
	AddedP99   float64 `json:"added_p99_ms"`
	AddedMax   float64 `json:"added_max_ms"`
	StripeP50  float64 `json:"stripe_p50_ms"`
	StripeP99  float64 `json:"stripe_p99_ms"`
	// Codes counts answers by gRPC code (with the ErrorInfo reason when
	// there is one); PastDeadline counts answers that came after the
	// caller's deadline (DEADLINE_EXCEEDED included).
	Codes        map[string]int `json:"codes"`
	PastDeadline int            `json:"past_deadline"`
	// Billingd's own: peak VmRSS and RssAnon (/proc every 50 ms), peak Go
	// heap in use and goroutines (its /metrics every 250 ms), CPU seconds.
	PeakRSS        int64   `json:"peak_rss_bytes"`
	PeakAnon       int64   `json:"peak_rss_anon_bytes"`
	PeakHeap       int64   `json:"peak_heap_inuse_bytes"`
	PeakGoroutines int     `json:"peak_goroutines"`
	ServerCPU      float64 `json:"server_cpu_s"`
	// The result check, after billingd stopped: RequestIDs sent; Charged
	// those with a PaymentIntent at the simulator; Duplicates request_ids
	// with more than one; Lost an OK answer without its PaymentIntent, or a
	// PaymentIntent whose record is missing or says otherwise; Unknown
	// PaymentIntents of no request_id sent.
	RequestIDs int `json:"request_ids"`
	Charged    int `json:"charged"`
	Duplicates int `json:"duplicates"`
	Lost       int `json:"lost"`
	Unknown    int `json:"unknown"`
}

// slowCases are the loads of the scenario: at c=256 with a slot for every
// caller (added latency with enough slots), at c=2000 with billingd's
// default slots (a crowd waiting for them); each alone and with 10 %
// in-flight duplicates. -slow-inflight adds c=2000 at other slot counts.
func slowCases(concs []int, extraSlots []int) []slowCase {
	var out []slowCase
	for _, c := range concs {
		slots := 0
		if c <= 256 {
			slots = c
		}
		for _, dup := range []int{0, 10} {
			out = append(out, slowCase{Concurrency: c, DupEvery: dup, MaxInFlight: slots})
		}
		if c > 256 {
			for _, s := range extraSlots {
				out = append(out, slowCase{Concurrency: c, MaxInFlight: s})
			}
		}
	}
	return out
}

// runSlowStripe runs every case once on a fresh simulator and server.
func runSlowStripe(ctx context.Context, cfg config, runNo int, work string, stdout io.Writer) ([]slowResult, error) {
	var out []slowResult
	for i, sc := range slowCases(cfg.SlowConcurrency, cfg.SlowInFlight) {
		dir := fmt.Sprintf("%s/run%d/slow%d", work, runNo, i)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return out, err
		}
		r, err := runSlowCase(ctx, cfg, sc, dir)
		if err != nil {
			return out, fmt.Errorf("slow-stripe %s: %w", sc.name(), err)
		}
		fmt.Fprintln(stdout, slowProgress(r))
		out = append(out, r)
	}
	return out, nil
}

func runSlowCase(ctx context.Context, cfg config, sc slowCase, dir string) (slowResult, error) {
	res := slowResult{Case: sc, Name: sc.name(), Codes: map[string]int{}}
	sim, simURL, stop, err := serveSim(stripesim.Config{Faults: stripesim.Faults{
		Latency: cfg.SlowStripe.Latency, LatencyJitter: cfg.SlowStripe.Jitter,
		SlowShare: cfg.SlowStripe.SlowShare, SlowLatency: cfg.SlowStripe.SlowLatency,
	}})
	if err != nil {
		return res, err
	}
	defer stop()

	metricsAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	scfg := cfg
	scfg.stripeURL = simURL
	scfg.ServerArgs = append(slices.Clone(cfg.ServerArgs), "--stripe-rate", "off", "--metrics-listen", metricsAddr)
	if sc.MaxInFlight > 0 {
		scfg.ServerArgs = append(scfg.ServerArgs, "--stripe-max-inflight", strconv.Itoa(sc.MaxInFlight))
	}
	scfg.ServerLog = "file"
	scfg.LogFormat = "json"
	srv, err := startServer(ctx, scfg, dir)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	srv.truncateLog()

	rss := startRSS(srv.pid(), 50*time.Millisecond)
	gauges := startGauges(ctx, "http://"+metricsAddr+"/metrics", 250*time.Millisecond)
	cpu0, _ := procCPU(srv.pid())
	calls, window, err := crowd(ctx, cfg, srv.addr, sc)
	cpu1, _ := procCPU(srv.pid())
	st := rss.stop()
	res.PeakHeap, res.PeakGoroutines = gauges.stop()
	if err != nil {
		return res, err
	}
	res.Seconds = window.Seconds()
	res.PeakRSS, res.PeakAnon, res.ServerCPU = st.peak.Total, st.peakAnon, (cpu1 - cpu0).Seconds()
	if !srv.alive() {
		return res, fmt.Errorf("billingd exited; log tail:\n%s", srv.logTail())
	}
	// Drives outlive their callers: a graceful stop lets them finish, so
	// the records are final when they are checked.
	if err := srv.stop(); err != nil {
		return res, err
	}
	wire, err := stripeTimes(srv.logPath)
	if err != nil {
		return res, err
	}
	summarizeCalls(&res, calls, window, wire)
	return res, checkSlow(ctx, &res, calls, sim, srv.db)
}

// callRecord is one answer a caller got.
type callRecord struct {
	id       string
	start    time.Duration // since the load began
	latency  time.Duration
	code     codes.Code
	reason   string
	deadline time.Duration // the caller's deadline, from start
	dup      bool
	object   string        // the PaymentIntent of an OK answer
	retry    time.Duration // RetryInfo's delay, if the answer had one
}

// crowd runs sc.Concurrency callers for cfg.SlowDuration, each sending its
// next charge as soon as the last is answered. A caller told to retry
// (UNAVAILABLE, ABORTED, RESOURCE_EXHAUSTED) waits what RetryInfo says
// (at least 50 ms) and sends the same request_id again, as a client should;
// when the window ends it stops, whatever it was doing, and waits for no
// more answers than those already asked for.
func crowd(ctx context.Context, cfg config, addr string, sc slowCase) ([]callRecord, time.Duration, error) {
	nconn := (sc.Concurrency + 499) / 500 // billingd allows 1024 streams a connection
	clients := make([]billingv1.BillingServiceClient, nconn)
	for i := range clients {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, 0, err
		}
		defer conn.Close()
		clients[i] = billingv1.NewBillingServiceClient(conn)
	}
	nonce := strconv.FormatInt(time.Now().UnixNano(), 36)
	var (
		seq      atomic.Int64
		inflight sync.Map // request_id → struct{}: ids a duplicate may repeat
		mu       sync.Mutex
		all      []callRecord
		wg       sync.WaitGroup
	)
	begin := time.Now()
	end := begin.Add(cfg.SlowDuration)
	lctx, cancel := context.WithDeadline(ctx, end.Add(cfg.CallTimeout+5*time.Second))
	defer cancel()
	for w := range sc.Concurrency {
		client := clients[w%nconn]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []callRecord
			defer func() { mu.Lock(); all = append(all, mine...); mu.Unlock() }()
			for time.Now().Before(end) && lctx.Err() == nil {
				n := seq.Add(1)
				id, dup := fmt.Sprintf("slow-%s-%d", nonce, n), false
				if sc.DupEvery > 0 && n%int64(sc.DupEvery) == 0 {
					inflight.Range(func(k, _ any) bool { id, dup = k.(string), true; return false })
				}
				if !dup {
					inflight.Store(id, struct{}{})
				}
				for time.Now().Before(end) {
					rec := oneCall(lctx, client, cfg, id, begin)
					rec.dup = dup
					mine = append(mine, rec)
					wait, again := retryWait(rec)
					if !again {
						break
					}
					select {
					case <-time.After(wait):
					case <-lctx.Done():
					}
				}
				if !dup {
					inflight.Delete(id)
				}
			}
		}()
	}
	wg.Wait()
	return all, cfg.SlowDuration, ctx.Err()
}

func oneCall(ctx context.Context, client billingv1.BillingServiceClient, cfg config, id string, begin time.Time) callRecord {
	cctx, cancel := context.WithTimeout(withToken(ctx, cfg.Token), cfg.CallTimeout)
	defer cancel()
	t0 := time.Now()
	resp, err := client.Charge(cctx, chargeRequest(id))
	rec := callRecord{id: id, start: t0.Sub(begin), latency: time.Since(t0), deadline: cfg.CallTimeout}
	if err == nil {
		rec.code, rec.object = codes.OK, resp.GetPaymentIntentId()
		return rec
	}
	st := status.Convert(err)
	rec.code = st.Code()
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			rec.reason = d.GetReason()
		case *errdetails.RetryInfo:
			rec.retry = d.GetRetryDelay().AsDuration()
		}
	}
	return rec
}

// retryWait says whether the answer asks for the same request again, and
// after how long: RetryInfo's delay, at least 50 ms, at most 5 s.
func retryWait(rec callRecord) (time.Duration, bool) {
	switch rec.code {
	case codes.Unavailable, codes.Aborted, codes.ResourceExhausted:
	default:
		return 0, false
	}
	return min(max(rec.retry, 50*time.Millisecond), 5*time.Second), true
}

// stripeTimes reads billingd's JSON log: request_id → stripe_ms of the call
// that made the Stripe request.
func stripeTimes(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), `"stripe_ms"`) {
			continue
		}
		var l struct {
			RequestID string  `json:"request_id"`
			StripeMS  float64 `json:"stripe_ms"`
		}
		if err := json.Unmarshal(line, &l); err != nil || l.RequestID == "" {
			continue
		}
		out[l.RequestID] = l.StripeMS
	}
	return out, sc.Err()
}

// slowWarmup is the start of a case whose calls count in the answers and
// the check but not in latencies: billingd's first calls open its
// connections to Stripe.
func slowWarmup(window time.Duration) time.Duration { return min(2*time.Second, window/5) }

func summarizeCalls(res *slowResult, calls []callRecord, window time.Duration, wire map[string]float64) {
	var lat, added, stripe []float64
	warm := slowWarmup(window)
	for _, c := range calls {
		res.Calls++
		key := c.code.String()
		if c.reason != "" {
			key += "/" + c.reason
		}
		res.Codes[key]++
		if c.code == codes.DeadlineExceeded || c.latency > c.deadline {
			res.PastDeadline++
		}
		if c.code == codes.OK {
			res.OK++
			if c.start+c.latency <= window {
				res.RPS++
			}
		}
		if c.start < warm {
			continue
		}
		ms := float64(c.latency) / float64(time.Millisecond)
		lat = append(lat, ms)
		if w, ok := wire[c.id]; ok && !c.dup && c.code == codes.OK {
			added = append(added, ms-w)
			stripe = append(stripe, w)
		}
	}
	res.RPS /= window.Seconds()
	res.P50, res.P99 = pct(lat, 50), pct(lat, 99)
	res.AddedCalls = len(added)
	res.AddedP50, res.AddedP99, res.AddedMax = pct(added, 50), pct(added, 99), pct(added, 100)
	res.StripeP50, res.StripeP99 = pct(stripe, 50), pct(stripe, 99)
}

// pct is the p-th percentile of v (nearest rank); v is sorted in place.
func pct(v []float64, p int) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	i := int(math.Ceil(float64(p)/100*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// checkSlow is the exactly-once check of a case: at most one PaymentIntent
// per request_id; every OK answer's PaymentIntent at the simulator; every
// PaymentIntent known to billingd's record, which says SUCCEEDED with it.
func checkSlow(ctx context.Context, res *slowResult, calls []callRecord, sim *stripesim.Sim, dbPath string) error {
	byKey := map[string]string{} // billingd_request_key → request_id
	okObject := map[string]string{}
	for _, c := range calls {
		byKey[service.RequestKey("anonymous", c.id)] = c.id
		if c.code == codes.OK {
			okObject[c.id] = c.object
		}
	}
	res.RequestIDs = len(byKey)
	pis := map[string][]string{} // request_id → PaymentIntents
	for _, pi := range sim.PaymentIntents() {
		id, ok := byKey[pi.Metadata[service.MetadataRequestKey]]
		if !ok {
			res.Unknown++
			continue
		}
		pis[id] = append(pis[id], pi.ID)
	}
	res.Charged = len(pis)
	db, err := storage.OpenReadOnly(dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	for id, objs := range pis {
		if len(objs) > 1 {
			res.Duplicates++
		}
		rec, found, err := db.Get(ctx, "anonymous", id)
		if err != nil {
			return err
		}
		if !found || rec.State != service.StateSucceeded || rec.Result.ObjectID != objs[0] {
			res.Lost++
		}
	}
	for id, obj := range okObject {
		if objs := pis[id]; len(objs) == 0 || objs[0] != obj {
			res.Lost++
		}
	}
	if res.Duplicates+res.Lost+res.Unknown > 0 {
		return fmt.Errorf("exactly once broken: %d request_ids charged twice, %d lost, %d unknown PaymentIntents", res.Duplicates, res.Lost, res.Unknown)
	}
	return nil
}

// gauges scrapes billingd's /metrics for the peak heap in use and
// goroutines.
type gauges struct {
	stopc chan struct{}
	done  chan struct{}
	heap  int64
	gor   int
}

func startGauges(ctx context.Context, url string, every time.Duration) *gauges {
	g := &gauges{stopc: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 2 * time.Second}
	go func() {
		defer close(g.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			g.scrape(ctx, client, url)
			select {
			case <-g.stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return g
}

func (g *gauges) scrape(ctx context.Context, client *http.Client, url string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return
	}
	resp, err := client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			g.heap = max(g.heap, int64(v))
		case "go_goroutines":
			g.gor = max(g.gor, int(v))
		}
	}
}

func (g *gauges) stop() (heap int64, goroutines int) {
	close(g.stopc)
	<-g.done
	return g.heap, g.gor
}

func slowProgress(r slowResult) string {
	return fmt.Sprintf("  slow-stripe %-28s %6.0f ok/s  p50 %6.1f  p99 %7.1f ms  added p50 %5.2f p99 %6.2f ms  rss %5.1f MiB  %d past deadline  %s",
		r.Name, r.RPS, r.P50, r.P99, r.AddedP50, r.AddedP99, float64(r.PeakRSS)/mib, r.PastDeadline, formatCodes(r.Codes))
}

func printSlowTable(w io.Writer, rows []slowResult) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nslow-stripe (simulator in benchrun's process; figures of billingd alone):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tOK/s\tp50 ms\tp99 ms\tadded p50\tadded p99\tadded max\tStripe p50\tStripe p99\tpeak RSS MiB\t(anon)\theap MiB\tgoroutines\tpast deadline\tdup\tlost\tanswers\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%.1f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%d\t%d\t%d\t%s\t\n",
			r.Name, r.RPS, r.P50, r.P99, r.AddedP50, r.AddedP99, r.AddedMax, r.StripeP50, r.StripeP99,
			float64(r.PeakRSS)/mib, float64(r.PeakAnon)/mib, float64(r.PeakHeap)/mib, r.PeakGoroutines,
			r.PastDeadline, r.Duplicates, r.Lost, formatCodes(r.Codes))
	}
	_ = tw.Flush()
}

// summarizeSlow is the median over runs of each case's figures (answers and
// the check's counts summed).
func summarizeSlow(runs [][]slowResult) []slowResult {
	var order []string
	groups := map[string][]slowResult{}
	for _, rs := range runs {
		for _, r := range rs {
			if _, ok := groups[r.Name]; !ok {
				order = append(order, r.Name)
			}
			groups[r.Name] = append(groups[r.Name], r)
		}
	}
	var out []slowResult
	for _, name := range order {
		g := groups[name]
		pick := func(f func(slowResult) float64) float64 { return medianOf(g, f) }
		m := slowResult{Case: g[0].Case, Name: name, Runs: len(g), Codes: map[string]int{}}
		m.Seconds = pick(func(r slowResult) float64 { return r.Seconds })
		m.RPS = pick(func(r slowResult) float64 { return r.RPS })
		m.P50 = pick(func(r slowResult) float64 { return r.P50 })
		m.P99 = pick(func(r slowResult) float64 { return r.P99 })
		m.AddedP50 = pick(func(r slowResult) float64 { return r.AddedP50 })
		m.AddedP99 = pick(func(r slowResult) float64 { return r.AddedP99 })
		m.AddedMax = pick(func(r slowResult) float64 { return r.AddedMax })
		m.StripeP50 = pick(func(r slowResult) float64 { return r.StripeP50 })
		m.StripeP99 = pick(func(r slowResult) float64 { return r.StripeP99 })
		m.PeakRSS = int64(pick(func(r slowResult) float64 { return float64(r.PeakRSS) }))
		m.PeakAnon = int64(pick(func(r slowResult) float64 { return float64(r.PeakAnon) }))
		m.PeakHeap = int64(pick(func(r slowResult) float64 { return float64(r.PeakHeap) }))
		m.PeakGoroutines = int(pick(func(r slowResult) float64 { return float64(r.PeakGoroutines) }))
		m.ServerCPU = pick(func(r slowResult) float64 { return r.ServerCPU })
		for _, r := range g {
			m.Calls += r.Calls
			m.OK += r.OK
			m.AddedCalls += r.AddedCalls
			m.PastDeadline += r.PastDeadline
			m.RequestIDs += r.RequestIDs
			m.Charged += r.Charged
			m.Duplicates += r.Duplicates
			m.Lost += r.Lost
			m.Unknown += r.Unknown
			for k, n := range r.Codes {
				m.Codes[k] += n
			}
		}
		out = append(out, m)
	}
	return out
}
