package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// simKey is the API key billingd uses with its built-in simulator.
const simKey = "sk_test_billingd_simulator"

// serve wires the concrete types together and runs until ctx is cancelled.
func serve(ctx context.Context, cfg serveConfig, logw io.Writer) error {
	log := newLogger(cfg.LogFormat, logw)

	// Listen first: a port in use fails fast, before the database is touched.
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer lis.Close()

	db, err := storage.Open(cfg.DB)
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	defer db.Close()

	stripeURL, key := cfg.StripeURL, cfg.stripeKey
	mode := "stripe"
	if cfg.StripeSim {
		url, stop, err := startSim(cfg)
		if err != nil {
			return err
		}
		defer stop()
		stripeURL, key, mode = url, simKey, "simulator"
	} else if stripeURL != "" {
		mode = stripeURL
	}
	payments, err := stripeapi.New(stripeapi.Config{Key: key, URL: stripeURL})
	if err != nil {
		return fmt.Errorf("stripe client: %w", err)
	}

	svc := service.New(db, payments)
	srv, err := server.New(server.DefaultConfig(), svc, log)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	log.Info("billingd serving", "listen", lis.Addr().String(), "db", cfg.DB, "stripe", mode)

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	}
	log.Info("shutting down", "grace", cfg.ShutdownGrace.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	srv.Shutdown(sctx)
	// Drives whose callers left keep running on server-owned contexts: give
	// them the rest of the grace period, then close the database.
	if err := svc.Close(sctx); err != nil {
		log.Warn("in-flight Stripe calls cut off at shutdown; their records stay PENDING and are re-driven later")
	}
	return nil
}

func newLogger(format string, w io.Writer) *slog.Logger {
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, nil))
	}
	return slog.New(slog.NewJSONHandler(w, nil))
}

// startSim serves the built-in Stripe simulator on a loopback port.
func startSim(cfg serveConfig) (url string, stop func(), err error) {
	faults, err := parseFaults(cfg.SimFaults)
	if err != nil {
		return "", nil, err
	}
	sim := stripesim.New(stripesim.Config{Seed: cfg.SimSeed, Faults: faults})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("simulator listen: %w", err)
	}
	hs := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(lis) }()
	return "http://" + lis.Addr().String(), func() { _ = hs.Close() }, nil
}

// parseFaults reads "name=value,…" into simulator fault rates.
func parseFaults(s string) (stripesim.Faults, error) {
	var f stripesim.Faults
	if s == "" {
		return f, nil
	}
	for _, kv := range strings.Split(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return f, fmt.Errorf("--stripe-sim-faults: %q is not name=value", kv)
		}
		if name == "latency" {
			d, err := time.ParseDuration(val)
			if err != nil {
				return f, fmt.Errorf("--stripe-sim-faults: latency: %w", err)
			}
			f.Latency = d
			continue
		}
		p, err := strconv.ParseFloat(val, 64)
		if err != nil || p < 0 || p > 1 {
			return f, fmt.Errorf("--stripe-sim-faults: %s must be a rate from 0 to 1", name)
		}
		switch name {
		case "rate_limit":
			f.RateLimit = p
		case "unavailable":
			f.Unavailable = p
		case "drop_before":
			f.DropBeforeProcessing = p
		case "drop_after":
			f.DropAfterProcessing = p
		case "server_error":
			f.ServerErrorAfterProcessing = p
		default:
			return f, errors.New("--stripe-sim-faults: unknown fault " + strconv.Quote(name))
		}
	}
	return f, nil
}
