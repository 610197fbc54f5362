package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/billingd/billingd/internal/testpki"
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

	tests := []probeCase{
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
			checkProbe(t, tt, nil)
		})
	}
}

// probeCase is one healthcheck invocation and what it must answer.
type probeCase struct {
	name      string
	args      []string
	wantOut   string // stdout, on success
	wantErr   string // substring of the one-line error, on failure
	unhealthy bool   // the error must carry exit code 1
}

// checkProbe runs `billingd healthcheck` with tt.args in env.
func checkProbe(t *testing.T, tt probeCase, env map[string]string) {
	t.Helper()
	var stdout, stderr strings.Builder
	start := time.Now()
	err := run(context.Background(), append([]string{"healthcheck"}, tt.args...), envMap(env), &stdout, &stderr)
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

// serveTLS runs serve with the simulator and extra TLS flags until the test
// ends, and returns its address once it answers SERVING over TLS.
func serveTLS(t *testing.T, serverCA *testpki.CA, client *tls.Certificate, args ...string) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, stop := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--stripe-sim", "--listen", addr,
			"--db", filepath.Join(t.TempDir(), "billingd.db"), "--log-format", "text"}, args...), envMap(nil), &logs, &logs)
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	pool := x509.NewCertPool()
	pool.AddCert(serverCA.Cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	waitServing(t, conn, &logs, done)
	return addr
}

// TestHealthcheckTLS probes a real serve with TLS, then with mutual TLS: the
// probe reads serve's own BILLINGD_TLS_CERT and accepts only that
// certificate, and presents a client certificate where the server wants one.
func TestHealthcheckTLS(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	serverCA, clientCA, otherCA := testpki.NewCA(t, "server CA"), testpki.NewCA(t, "client CA"), testpki.NewCA(t, "other CA")
	cert, key := serverCA.Issue("billingd", true)
	certFile, keyFile := testpki.WriteFile(t, dir, "server.pem", cert), testpki.WriteFile(t, dir, "server-key.pem", key)
	clientCAFile := testpki.WriteFile(t, dir, "client-ca.pem", clientCA.PEM)
	// Another certificate for 127.0.0.1: the pin, not the name, tells them apart.
	impostor, _ := serverCA.Issue("billingd", true)
	impostorFile := testpki.WriteFile(t, dir, "impostor.pem", impostor)
	c, k := clientCA.Issue("healthcheck", false)
	clientFile, clientKeyFile := testpki.WriteFile(t, dir, "client.pem", c), testpki.WriteFile(t, dir, "client-key.pem", k)
	c, k = otherCA.Issue("healthcheck", false)
	strangerFile, strangerKeyFile := testpki.WriteFile(t, dir, "stranger.pem", c), testpki.WriteFile(t, dir, "stranger-key.pem", k)

	t.Run("TLS", func(t *testing.T) {
		t.Parallel()
		addr := serveTLS(t, serverCA, nil, "--tls-cert", certFile, "--tls-key", keyFile)
		serving := "billing.v1.BillingService at " + addr + ": SERVING\n"
		env := map[string]string{"BILLINGD_TLS_CERT": certFile}
		for _, tt := range []struct {
			probeCase
			env map[string]string
		}{
			{probeCase{name: "serve's certificate from the environment", args: []string{"--addr", addr}, wantOut: serving}, env},
			{probeCase{name: "certificate flag", args: []string{"--addr", addr, "--tls-cert", certFile}, wantOut: serving}, nil},
			{probeCase{name: "plaintext", args: []string{"--addr", addr}, wantErr: "Unavailable", unhealthy: true}, nil},
			{probeCase{name: "another certificate", args: []string{"--addr", addr, "--tls-cert", impostorFile},
				wantErr: "does not present the certificate in " + impostorFile, unhealthy: true}, nil},
			{probeCase{name: "not a certificate", args: []string{"--addr", addr, "--tls-cert", keyFile},
				wantErr: "no PEM certificate found"}, nil},
			{probeCase{name: "client certificate without key", args: []string{"--addr", addr, "--client-cert", clientFile},
				wantErr: "--client-cert and --client-key go together"}, env},
			{probeCase{name: "client certificate without TLS", args: []string{"--addr", addr, "--client-cert", clientFile, "--client-key", clientKeyFile},
				wantErr: "--client-cert needs --tls-cert"}, nil},
		} {
			t.Run(tt.name, func(t *testing.T) { checkProbe(t, tt.probeCase, tt.env) })
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		t.Parallel()
		addr := serveTLS(t, serverCA, clientCA.ClientCert("waiter"),
			"--tls-cert", certFile, "--tls-key", keyFile, "--tls-client-ca", clientCAFile)
		serving := "billing.v1.BillingService at " + addr + ": SERVING\n"
		env := map[string]string{"BILLINGD_TLS_CERT": certFile, "BILLINGD_TLS_CLIENT_CA": clientCAFile}
		withClient := map[string]string{"BILLINGD_TLS_CERT": certFile, "BILLINGD_TLS_CLIENT_CA": clientCAFile,
			"BILLINGD_HEALTHCHECK_CLIENT_CERT": clientFile, "BILLINGD_HEALTHCHECK_CLIENT_KEY": clientKeyFile}
		for _, tt := range []struct {
			probeCase
			env map[string]string
		}{
			{probeCase{name: "client certificate from the environment", args: []string{"--addr", addr}, wantOut: serving}, withClient},
			{probeCase{name: "client certificate flags", args: []string{"--addr", addr,
				"--client-cert", clientFile, "--client-key", clientKeyFile}, wantOut: serving}, env},
			{probeCase{name: "no client certificate", args: []string{"--addr", addr},
				wantErr: "the server requires client certificates"}, env},
			{probeCase{name: "client certificate from another CA", args: []string{"--addr", addr,
				"--client-cert", strangerFile, "--client-key", strangerKeyFile}, wantErr: "Unavailable", unhealthy: true}, env},
		} {
			t.Run(tt.name, func(t *testing.T) { checkProbe(t, tt.probeCase, tt.env) })
		}
	})
}
