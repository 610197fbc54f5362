package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseServeCallersTLSAndLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tokensFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokensFile, []byte("# billingd callers\n\ncheckout:tok_file_1\n  invoices : tok_file:2  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badLine := filepath.Join(dir, "bad")
	if err := os.WriteFile(badLine, []byte("checkout:tok_ok\ntok_secret_no_caller\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	emptyFile := filepath.Join(dir, "empty")
	if err := os.WriteFile(emptyFile, []byte("# nothing yet\n"), 0o600); err != nil {
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
			name: "defaults: open, no TLS, no limit",
			check: func(t *testing.T, c serveConfig) {
				if c.tokens.Len() != 0 || c.TLSCert != "" || c.RateLimit != 0 || c.AuthReflection {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "tokens from BILLING_AUTH_TOKENS",
			env:  map[string]string{"BILLING_AUTH_TOKENS": "caller_a:tok_a, caller_b:tok_b"},
			check: func(t *testing.T, c serveConfig) {
				if c.tokens.Len() != 2 {
					t.Fatalf("%d tokens", c.tokens.Len())
				}
				if got, ok := c.tokens.Lookup("tok_b"); !ok || got != "caller_b" {
					t.Errorf("tok_b → %q, %v", got, ok)
				}
			},
		},
		{
			name: "tokens from file, env names the file",
			env:  map[string]string{"BILLINGD_AUTH_TOKENS_FILE": tokensFile},
			check: func(t *testing.T, c serveConfig) {
				if got, ok := c.tokens.Lookup("tok_file:2"); !ok || got != "invoices" {
					t.Errorf("tok_file:2 → %q, %v", got, ok)
				}
			},
		},
		{
			name: "TLS and limits from the environment",
			env: map[string]string{
				"BILLINGD_TLS_CERT": "/c.pem", "BILLINGD_TLS_KEY": "/k.pem", "BILLINGD_TLS_CLIENT_CA": "/ca.pem",
				"BILLINGD_RATE_LIMIT": "2.5", "BILLINGD_RATE_BURST": "5", "BILLINGD_AUTH_REFLECTION": "true",
			},
			check: func(t *testing.T, c serveConfig) {
				if c.TLSCert != "/c.pem" || c.TLSKey != "/k.pem" || c.TLSClientCA != "/ca.pem" || c.RateLimit != 2.5 || c.RateBurst != 5 || !c.AuthReflection {
					t.Errorf("got %+v", c)
				}
			},
		},
		{name: "both token sources", args: []string{"--auth-tokens-file", tokensFile}, env: map[string]string{"BILLING_AUTH_TOKENS": "a:b"}, wantErr: "not both"},
		{name: "bad caller name", env: map[string]string{"BILLING_AUTH_TOKENS": "caller_a:tok_a,bad caller:tok_secret"}, wantErr: "entry 2"},
		{name: "entry without caller", env: map[string]string{"BILLING_AUTH_TOKENS": "tok_secret"}, wantErr: "entry 1: not caller:token"},
		{name: "duplicate token", env: map[string]string{"BILLING_AUTH_TOKENS": "a:tok_secret,b:tok_secret"}, wantErr: "duplicate token"},
		{name: "empty token", env: map[string]string{"BILLING_AUTH_TOKENS": "a:"}, wantErr: "empty token"},
		{name: "bad file line", args: []string{"--auth-tokens-file", badLine}, wantErr: "line 2"},
		{name: "file without tokens", args: []string{"--auth-tokens-file", emptyFile}, wantErr: "no caller:token"},
		{name: "missing file", args: []string{"--auth-tokens-file", filepath.Join(dir, "nope")}, wantErr: "read --auth-tokens-file"},
		{name: "cert without key", args: []string{"--tls-cert", "/c.pem"}, wantErr: "go together"},
		{name: "client CA without TLS", args: []string{"--tls-client-ca", "/ca.pem"}, wantErr: "needs --tls-cert"},
		{name: "negative rate", args: []string{"--rate-limit", "-1"}, wantErr: "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			for k, v := range tt.env {
				env[k] = v
			}
			var stderr bytes.Buffer
			c, err := parseServe(append([]string{"--stripe-sim"}, tt.args...), envMap(env), &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "tok_") {
					t.Errorf("error %q shows a token", err)
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

func TestServerConfigFromFlags(t *testing.T) {
	t.Parallel()
	c, err := serverConfig(serveConfig{RateLimit: 2.5})
	if err != nil {
		t.Fatal(err)
	}
	if c.RateLimit.Rate != 2.5 || c.RateLimit.Burst != 3 {
		t.Errorf("rate %v, want 2.5/s with burst 3 (the rate rounded up)", c.RateLimit)
	}
	if !c.Open() || c.TLS != nil {
		t.Errorf("no tokens, no TLS: Open %v, TLS %v", c.Open(), c.TLS)
	}
	if _, err := serverConfig(serveConfig{TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"}); err == nil {
		t.Error("missing certificate files accepted")
	}
}

// TestRunRefusesOpenOnNetworkAddress: without tokens billingd serves only on
// loopback; elsewhere it refuses at once, in one line, before touching the
// database.
func TestRunRefusesOpenOnNetworkAddress(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "b.db")
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		var out bytes.Buffer
		err := run(context.Background(), []string{"serve", "--stripe-sim", "--listen", addr, "--db", db}, envMap(nil), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "without caller authentication") {
			t.Fatalf("listen %s: run = %v, want refusal", addr, err)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("refusal is not one line: %q", err)
		}
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused start created the database: %v", err)
	}
}
