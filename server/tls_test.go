package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/testpki"
	"github.com/billingd/billingd/server"
)

// tlsSetup is a server certificate from its own CA, written where LoadTLS
// reads it, and a client CA for mutual TLS.
type tlsSetup struct {
	serverCA, clientCA           *testpki.CA
	certFile, keyFile, clientCAs string
}

func newTLSSetup(t *testing.T) tlsSetup {
	t.Helper()
	dir := t.TempDir()
	s := tlsSetup{serverCA: testpki.NewCA(t, "billingd test server CA"), clientCA: testpki.NewCA(t, "billingd test client CA")}
	cert, key := s.serverCA.Issue("billingd", true)
	s.certFile = testpki.WriteFile(t, dir, "server.pem", cert)
	s.keyFile = testpki.WriteFile(t, dir, "server-key.pem", key)
	s.clientCAs = testpki.WriteFile(t, dir, "client-ca.pem", s.clientCA.PEM)
	return s
}

// dialTLS connects to addr trusting the server CA, presenting client (if set).
func dialTLS(t *testing.T, addr string, s tlsSetup, client *tls.Certificate, tweak func(*tls.Config)) billingv1.BillingServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(s.serverCA.Cert)
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	if tweak != nil {
		tweak(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return billingv1.NewBillingServiceClient(conn)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t)
	cfg := authConfig(t)
	var err error
	if cfg.TLS, err = server.LoadTLS(s.certFile, s.keyFile, ""); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := h.ctx()

	resp, err := dialTLS(t, h.addr, s, nil, nil).Charge(as(ctx, tokenA), visa("tls-1"))
	if err != nil || resp.GetStatus() != "succeeded" {
		t.Fatalf("Charge over TLS = %v, %v", resp, err)
	}
	if _, found := h.record("caller_a", "tls-1"); !found {
		t.Error("no record under caller_a")
	}

	// TLS does not replace the token.
	_, err = dialTLS(t, h.addr, s, nil, nil).Charge(ctx, visa("tls-2"))
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("TLS without a token: %v, want UNAUTHENTICATED", err)
	}
	// Plaintext to a TLS port, and TLS 1.1, do not connect.
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := billingv1.NewBillingServiceClient(conn).Charge(as(ctx, tokenA), visa("tls-3")); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext to TLS: %v, want UNAVAILABLE", err)
	}
	old := dialTLS(t, h.addr, s, nil, func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 })
	if _, err := old.Charge(as(ctx, tokenA), visa("tls-4")); status.Code(err) != codes.Unavailable {
		t.Errorf("TLS 1.1: %v, want UNAVAILABLE", err)
	}
	if n := h.recordCount(); n != 1 {
		t.Errorf("%d records, want only tls-1's", n)
	}
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t)
	cfg := server.DefaultConfig() // no tokens: the client certificate is the credential
	cfg.Tokens = testTokens(t, "caller_c", "tok_c_0a9b8c7d", "caller_a", tokenA)
	var err error
	if cfg.TLS, err = server.LoadTLS(s.certFile, s.keyFile, s.clientCAs); err != nil {
		t.Fatal(err)
	}
	if cfg.Open() {
		t.Fatal("mutual TLS config reports Open")
	}
	h := newHarness(t, harnessOpts{srvCfg: &cfg})
	ctx := h.ctx()
	good := s.clientCA.ClientCert("caller_c")

	t.Run("certificate CommonName is the caller", func(t *testing.T) {
		resp, err := dialTLS(t, h.addr, s, good, nil).Charge(ctx, visa("mtls-1"))
		if err != nil || resp.GetStatus() != "succeeded" {
			t.Fatalf("Charge = %v, %v", resp, err)
		}
		rec, found := h.record("caller_c", "mtls-1")
		if !found || rec.Result.ObjectID != resp.GetPaymentIntentId() {
			t.Errorf("record under caller_c = %+v, %v", rec, found)
		}
		if got := h.intentsFor("caller_c", "mtls-1"); len(got) != 1 || got[0].Metadata["billingd_caller"] != "caller_c" {
			t.Errorf("PaymentIntents for caller_c = %+v", got)
		}
	})
	t.Run("matching token is fine", func(t *testing.T) {
		if _, err := dialTLS(t, h.addr, s, good, nil).Charge(as(ctx, "tok_c_0a9b8c7d"), visa("mtls-2")); err != nil {
			t.Errorf("cert caller_c + token caller_c: %v", err)
		}
	})
	t.Run("token of another caller is refused", func(t *testing.T) {
		_, err := dialTLS(t, h.addr, s, good, nil).Charge(as(ctx, tokenA), visa("mtls-3"))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("cert caller_c + token caller_a: %v, want UNAUTHENTICATED", err)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		_, err := dialTLS(t, h.addr, s, nil, nil).Charge(as(ctx, tokenA), visa("mtls-4"))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("no client cert: %v, want UNAVAILABLE (handshake refused)", err)
		}
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		stranger := testpki.NewCA(t, "some other CA").ClientCert("caller_c")
		_, err := dialTLS(t, h.addr, s, stranger, nil).Charge(as(ctx, tokenA), visa("mtls-5"))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("foreign client cert: %v, want UNAVAILABLE (handshake refused)", err)
		}
	})
	t.Run("CommonName that is no caller name", func(t *testing.T) {
		odd := s.clientCA.ClientCert("caller c/with spaces")
		_, err := dialTLS(t, h.addr, s, odd, nil).Charge(ctx, visa("mtls-6"))
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("invalid CN: %v, want UNAUTHENTICATED", err)
		}
	})
	for _, id := range []string{"mtls-3", "mtls-4", "mtls-5", "mtls-6"} {
		for _, c := range []string{"caller_a", "caller_c", "anonymous"} {
			if _, found := h.record(c, id); found {
				t.Errorf("refused call %s wrote a record under %s", id, c)
			}
		}
	}
}

func TestLoadTLSErrors(t *testing.T) {
	t.Parallel()
	s := newTLSSetup(t)
	dir := t.TempDir()
	notPEM := testpki.WriteFile(t, dir, "not.pem", []byte("not a certificate"))
	tests := []struct {
		name                 string
		cert, key, clientCAs string
	}{
		{"no key", s.certFile, "", ""},
		{"missing cert", filepath.Join(dir, "nope.pem"), s.keyFile, ""},
		{"key is not PEM", s.certFile, notPEM, ""},
		{"client CA is not PEM", s.certFile, s.keyFile, notPEM},
		{"client CA missing", s.certFile, s.keyFile, filepath.Join(dir, "nope.pem")},
	}
	for _, tt := range tests {
		if _, err := server.LoadTLS(tt.cert, tt.key, tt.clientCAs); err == nil {
			t.Errorf("%s: LoadTLS succeeded", tt.name)
		}
	}
	cfg, err := server.LoadTLS(s.certFile, s.keyFile, s.clientCAs)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("MinVersion %x, ClientAuth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}
