package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseServe(t *testing.T) {
	t.Parallel()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("sk_test_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c serveConfig)
		wantErr string
	}{
		{
			name: "defaults with simulator",
			args: []string{"--stripe-sim"},
			check: func(t *testing.T, c serveConfig) {
				if c.Listen != "127.0.0.1:50051" || c.DB != "./data/billingd.db" || !c.StripeSim || c.stripeKey != "" {
					t.Errorf("got %+v", c)
				}
				if c.Store != "" || c.LeaseTTL != 15*time.Second {
					t.Errorf("Store, LeaseTTL = %q, %v; want bbolt by default", c.Store, c.LeaseTTL)
				}
				if c.ShutdownGrace != 20*time.Second {
					t.Errorf("ShutdownGrace = %v", c.ShutdownGrace)
				}
				if c.StripeInFlight != 64 {
					t.Errorf("StripeInFlight = %d, want 64", c.StripeInFlight)
				}
				if c.stripeRate != 0 {
					t.Errorf("stripeRate = %v, want 0: a simulator without rate= has no limit to stay under", c.stripeRate)
				}
			},
		},
		{
			name: "stripe rate follows a test key",
			env:  map[string]string{"STRIPE_SECRET_KEY": "sk_test_x"},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeRate != 25 {
					t.Errorf("stripeRate = %v, want 25", c.stripeRate)
				}
			},
		},
		{
			name: "stripe rate follows a live key",
			env:  map[string]string{"STRIPE_SECRET_KEY": "rk_live_x"},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeRate != 90 {
					t.Errorf("stripeRate = %v, want 90", c.stripeRate)
				}
			},
		},
		{
			name: "stripe rate under the simulator's",
			args: []string{"--stripe-sim", "--stripe-sim-faults", "rate=50"},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeRate != 45 {
					t.Errorf("stripeRate = %v, want 45", c.stripeRate)
				}
			},
		},
		{
			name: "stripe rate from environment",
			env:  map[string]string{"STRIPE_SECRET_KEY": "sk_live_x", "BILLINGD_STRIPE_RATE": "12.5"},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeRate != 12.5 {
					t.Errorf("stripeRate = %v, want 12.5", c.stripeRate)
				}
			},
		},
		{
			name: "stripe rate off",
			env:  map[string]string{"STRIPE_SECRET_KEY": "sk_live_x"},
			args: []string{"--stripe-rate", "off"},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeRate != 0 {
					t.Errorf("stripeRate = %v, want 0", c.stripeRate)
				}
			},
		},
		{name: "bad stripe rate", args: []string{"--stripe-sim", "--stripe-rate", "-3"}, wantErr: "--stripe-rate"},
		{
			name: "stripe in-flight bound from environment",
			env:  map[string]string{"BILLINGD_STRIPE_MAX_INFLIGHT": "8", "BILLINGD_STRIPE_SIM": "true"},
			check: func(t *testing.T, c serveConfig) {
				if c.StripeInFlight != 8 {
					t.Errorf("StripeInFlight = %d, want 8", c.StripeInFlight)
				}
			},
		},
		{
			name: "environment sets flags",
			env: map[string]string{
				"BILLINGD_LISTEN": "127.0.0.1:6000", "BILLINGD_DB": "/tmp/x.db",
				"BILLINGD_STRIPE_URL": "http://127.0.0.1:12111", "STRIPE_SECRET_KEY": "sk_test_env",
				"BILLINGD_SHUTDOWN_GRACE": "3s",
			},
			check: func(t *testing.T, c serveConfig) {
				if c.Listen != "127.0.0.1:6000" || c.DB != "/tmp/x.db" || c.StripeURL != "http://127.0.0.1:12111" {
					t.Errorf("got %+v", c)
				}
				if c.stripeKey != "sk_test_env" || c.ShutdownGrace != 3*time.Second {
					t.Errorf("key/grace not from env: %+v", c)
				}
			},
		},
		{
			name:    "a publishable key is refused, without echoing it",
			env:     map[string]string{"STRIPE_SECRET_KEY": "pk_test_publishable123"},
			wantErr: "publishable key (pk_…)",
		},
		{
			name:    "--stripe-sim-listen must be loopback",
			args:    []string{"--stripe-sim", "--stripe-sim-listen", "0.0.0.0:12111"},
			wantErr: "--stripe-sim-listen must be a loopback",
		},
		{
			name: "flag beats environment",
			args: []string{"--listen", "127.0.0.1:7000", "--stripe-sim"},
			env:  map[string]string{"BILLINGD_LISTEN": "127.0.0.1:6000", "BILLINGD_STRIPE_SIM": "false"},
			check: func(t *testing.T, c serveConfig) {
				if c.Listen != "127.0.0.1:7000" || !c.StripeSim {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "boolean from environment",
			env:  map[string]string{"BILLINGD_STRIPE_SIM": "true"},
			check: func(t *testing.T, c serveConfig) {
				if !c.StripeSim {
					t.Error("BILLINGD_STRIPE_SIM=true did not enable the simulator")
				}
			},
		},
		{
			name: "key file",
			args: []string{"--stripe-key-file", keyFile},
			check: func(t *testing.T, c serveConfig) {
				if c.stripeKey != "sk_test_fromfile" {
					t.Errorf("stripeKey = %q", c.stripeKey)
				}
			},
		},
		{
			name: "postgres store from environment",
			env: map[string]string{"BILLINGD_STORE": "postgres://billingd:pw@127.0.0.1:5432/billing", "BILLINGD_LEASE_TTL": "5s",
				"BILLINGD_STRIPE_SIM": "true"},
			check: func(t *testing.T, c serveConfig) {
				if c.Store != "postgres://billingd:pw@127.0.0.1:5432/billing" || c.LeaseTTL != 5*time.Second {
					t.Errorf("Store, LeaseTTL = %q, %v", c.Store, c.LeaseTTL)
				}
				if got := redactedStore(c.Store); strings.Contains(got, "pw") {
					t.Errorf("redactedStore = %q keeps the password", got)
				}
			},
		},
		{name: "store is not postgres", args: []string{"--stripe-sim", "--store", "mysql://u:s3cret@h/db"}, wantErr: "--store must be a postgres://"},
		{name: "lease shorter than a second", args: []string{"--stripe-sim", "--store", "postgres://h/db", "--lease-ttl", "100ms"}, wantErr: "--lease-ttl"},
		{name: "no key, no simulator", wantErr: "no Stripe key"},
		{name: "empty key file", args: []string{"--stripe-key-file", os.DevNull}, wantErr: "empty"},
		{name: "missing key file", args: []string{"--stripe-key-file", "/nonexistent/key"}, wantErr: "read --stripe-key-file"},
		{name: "sim and url", args: []string{"--stripe-sim", "--stripe-url", "http://x"}, wantErr: "exclusive"},
		{name: "bad fault spec", args: []string{"--stripe-sim", "--stripe-sim-faults", "bogus=0.1"}, wantErr: "--stripe-sim-faults: unknown fault \"bogus\""},
		{name: "faults without sim", args: []string{"--stripe-sim-faults", "unavailable=0.1"}, env: map[string]string{"STRIPE_SECRET_KEY": "sk_test_x"}, wantErr: "needs --stripe-sim"},
		{name: "bad env value", env: map[string]string{"BILLINGD_SHUTDOWN_GRACE": "soon"}, wantErr: "BILLINGD_SHUTDOWN_GRACE"},
		{name: "no stripe call allowed", args: []string{"--stripe-sim", "--stripe-max-inflight", "0"}, wantErr: "--stripe-max-inflight"},
		{name: "tombstones kept less than a day", args: []string{"--stripe-sim", "--tombstone-retention", "1h"}, wantErr: "--tombstone-retention"},
		{
			name: "both horizons, default and from environment",
			env:  map[string]string{"BILLINGD_STRIPE_SIM": "true", "BILLINGD_TOMBSTONE_RETENTION": "9000h"},
			check: func(t *testing.T, c serveConfig) {
				if c.Retention != 7*24*time.Hour || c.TombstoneRetention != 9000*time.Hour {
					t.Errorf("Retention, TombstoneRetention = %v, %v", c.Retention, c.TombstoneRetention)
				}
			},
		},
		{name: "bad log format", args: []string{"--stripe-sim", "--log-format", "xml"}, wantErr: "log-format"},
		{name: "stray argument", args: []string{"--stripe-sim", "extra"}, wantErr: "unexpected arguments"},
		{name: "key is not a flag", args: []string{"--stripe-key", "sk_test_x"}, wantErr: "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stderr bytes.Buffer
			c, err := parseServe(tt.args, envMap(tt.env), &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("err = %v: it repeats a password", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseServe: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestRunRefusesToStartWithoutKey(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	db := filepath.Join(t.TempDir(), "b.db")
	err := run(context.Background(), []string{"serve", "--listen", "127.0.0.1:0", "--db", db}, envMap(nil), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "no Stripe key") {
		t.Fatalf("run = %v, want refusal naming the missing key", err)
	}
	if strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("refusal is not one line: %q", err)
	}
	if _, statErr := os.Stat(db); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("refused start still created the database: %v", statErr)
	}
}

func TestHelpNeverShowsSecrets(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_supersecret"
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--help"}, envMap(map[string]string{"STRIPE_SECRET_KEY": secret}), &stdout, &stderr)
	if !errors.Is(err, errHelp) {
		t.Fatalf("run --help = %v", err)
	}
	out := stdout.String() + stderr.String()
	for _, want := range []string{"--listen", "BILLINGD_LISTEN", "--stripe-sim", "STRIPE_SECRET_KEY"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if strings.Contains(out, secret) {
		t.Error("help output contains the Stripe key")
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"version"}, envMap(nil), &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stdout.String(), "billingd ") || !strings.Contains(stdout.String(), "commit") {
		t.Errorf("version = %q", stdout.String())
	}
}

func TestStripeMode(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"sk_test_1": "test", "rk_test_1": "test", "sk_live_1": "live", "rk_live_1": "live", "whatever": "unknown",
	} {
		if got := stripeMode(key); got != want {
			t.Errorf("stripeMode(%q) = %q, want %q", key, got, want)
		}
	}
}
