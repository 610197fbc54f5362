package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServer serves grpc.health.v1 on a loopback port with the given
// statuses, as billingd's server does, and returns its address.
func healthServer(t *testing.T, statuses map[string]healthpb.HealthCheckResponse_ServingStatus) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	for name, st := range statuses {
		hs.SetServingStatus(name, st)
	}
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func TestHealthcheck(t *testing.T) {
	t.Parallel()
	addr := healthServer(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"billing.v1.BillingService": healthpb.HealthCheckResponse_SERVING,
		"draining.v1.Service":       healthpb.HealthCheckResponse_NOT_SERVING,
	})
	closed := freeAddr(t) // nothing listens here

	tests := []struct {
		name      string
		args      []string
		wantOut   string // stdout, on success
		wantErr   string // substring of the one-line error, on failure
		unhealthy bool   // the error must carry exit code 1
	}{
		{name: "serving", args: []string{"--addr", addr},
			wantOut: "billing.v1.BillingService at " + addr + ": SERVING\n"},
		{name: "whole server", args: []string{"--addr", addr, "--service", ""},
			wantOut: "server at " + addr + ": SERVING\n"},
		{name: "not serving", args: []string{"--addr", addr, "--service", "draining.v1.Service"},
			wantErr: "draining.v1.Service at " + addr + ": NOT_SERVING", unhealthy: true},
		{name: "unknown service", args: []string{"--addr", addr, "--service", "nope.v1.Service"},
			wantErr: "NotFound", unhealthy: true},
		{name: "nothing listening", args: []string{"--addr", closed, "--timeout", "10s"},
			wantErr: "Unavailable", unhealthy: true},
		{name: "bad timeout", args: []string{"--addr", addr, "--timeout", "0s"},
			wantErr: "--timeout must be positive"},
		{name: "stray argument", args: []string{"--addr", addr, "extra"},
			wantErr: "unexpected arguments: extra"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr strings.Builder
			start := time.Now()
			err := run(context.Background(), append([]string{"healthcheck"}, tt.args...), envMap(nil), &stdout, &stderr)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("took %v: a probe must fail fast, not wait out its timeout", elapsed)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("healthcheck: %v", err)
				}
				if got := stdout.String(); got != tt.wantOut {
					t.Errorf("stdout = %q, want %q", got, tt.wantOut)
				}
				return
			}
			if err == nil {
				t.Fatalf("healthcheck succeeded (stdout %q), want error containing %q", stdout.String(), tt.wantErr)
			}
			if msg := err.Error(); !strings.Contains(msg, tt.wantErr) || strings.Contains(msg, "\n") {
				t.Errorf("error = %q, want one line containing %q", msg, tt.wantErr)
			}
			var ec interface{ ExitCode() int }
			if got := errors.As(err, &ec) && ec.ExitCode() == 1; got != tt.unhealthy {
				t.Errorf("error %q has exit code 1: %v, want %v", err, got, tt.unhealthy)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q on failure, want nothing", stdout.String())
			}
		})
	}
}

func TestHealthAddr(t *testing.T) {
	t.Parallel()
	tests := []struct{ listen, want string }{
		{"", "127.0.0.1:50051"},
		{"127.0.0.1:6000", "127.0.0.1:6000"},
		{"0.0.0.0:50051", "127.0.0.1:50051"},
		{"[::]:50051", "127.0.0.1:50051"},
		{":7000", "127.0.0.1:7000"},
		{"10.1.2.3:50051", "10.1.2.3:50051"},
		{"billingd.internal:50051", "billingd.internal:50051"},
	}
	for _, tt := range tests {
		if got := healthAddr(tt.listen); got != tt.want {
			t.Errorf("healthAddr(%q) = %q, want %q", tt.listen, got, tt.want)
		}
	}
}

// TestHealthcheckEnv: in a container BILLINGD_LISTEN is 0.0.0.0:port, and
// the probe must find the server on loopback without being told.
func TestHealthcheckEnv(t *testing.T) {
	t.Parallel()
	addr := healthServer(t, map[string]healthpb.HealthCheckResponse_ServingStatus{
		"billing.v1.BillingService": healthpb.HealthCheckResponse_SERVING,
	})
	_, port, _ := net.SplitHostPort(addr)
	var stdout, stderr strings.Builder
	err := run(context.Background(), []string{"healthcheck"},
		envMap(map[string]string{"BILLINGD_LISTEN": "0.0.0.0:" + port}), &stdout, &stderr)
	if err != nil {
		t.Fatalf("healthcheck: %v", err)
	}
	if got, want := stdout.String(), "billing.v1.BillingService at 127.0.0.1:"+port+": SERVING\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}
