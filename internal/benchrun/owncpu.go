package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
)

// The own-cpu scenario: health checks, replays and new charges at c=64, as in
// the matrix, but with the simulator answering at once from benchrun's
// process instead of inside billingd, so that billingd's CPU per call (from
// its /proc counters) is billingd's alone: what the matrix's new-charge
// ratio splits into once Stripe's share is taken out. Then the parts of a
// new charge, each alone (parts.go): the floor under that CPU.

// ownCPUConcurrency is the concurrency own-cpu measures at.
const ownCPUConcurrency = 64

// runOwnCPU runs health, replay and new charges in turns against an external
// instant simulator and a fresh server.
func runOwnCPU(ctx context.Context, cfg config, runNo int, work string, stdout io.Writer) (runResult, error) {
	_, url, stop, err := serveSim(stripesim.Config{})
	if err != nil {
		return runResult{}, err
	}
	defer stop()

	ocfg := cfg
	ocfg.stripeURL = url
	ocfg.Scenarios = []string{scenHealth, scenReplay, scenNew}
	ocfg.Concurrency = []int{ownCPUConcurrency}
	ocfg.ServerArgs = append(append([]string(nil), cfg.ServerArgs...), "--stripe-rate", "off")
	fmt.Fprintf(stdout, "\nown-cpu, run %d: the simulator in benchrun's process at %s\n", runNo, ocfg.stripeURL)
	r, err := runMatrix(ctx, ocfg, runNo, work+"/own-cpu", stdout)
	if err != nil {
		return r, err
	}
	r.Parts, err = runParts(ctx, url, work+"/own-cpu", stdout)
	return r, err
}

// serveSim runs a simulator on a free loopback port in benchrun's process,
// until stop.
func serveSim(c stripesim.Config) (sim *stripesim.Sim, url string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	sim = stripesim.New(c)
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(l) }()
	return sim, "http://" + l.Addr().String(), func() { _ = hs.Close(); sim.Close() }, nil
}

// ownCPURatio is billingd's CPU per new charge over its CPU per health check
// in one run (0 if either is missing).
func ownCPURatio(rs []scenarioResult) (health, replay, charge, ratio float64) {
	var first float64
	for _, r := range rs {
		switch r.Scenario {
		case scenHealth:
			first = r.perCall(r.ServerCPU)
		case scenHealth2:
			health = r.perCall(r.ServerCPU) // the ceiling new charges took turns with
		case scenReplay:
			replay = r.perCall(r.ServerCPU)
		case scenNew:
			charge = r.perCall(r.ServerCPU)
		}
	}
	if health == 0 {
		health = first
	}
	if health > 0 {
		ratio = charge / health
	}
	return health, replay, charge, ratio
}
