package server_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/server"
)

// testCA issues certificates for one test.
type testCA struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// issue returns a leaf certificate and key, PEM-encoded: a server
// certificate for 127.0.0.1, or a client certificate with CommonName cn.
func (ca *testCA) issue(cn string, server bool) (certPEM, keyPEM []byte) {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsSetup is a server certificate from its own CA, written where LoadTLS
// reads it, and a client CA for mutual TLS.
type tlsSetup struct {
	serverCA, clientCA           *testCA
	certFile, keyFile, clientCAs string
}

func newTLSSetup(t *testing.T) tlsSetup {
	t.Helper()
	dir := t.TempDir()
	s := tlsSetup{serverCA: newCA(t, "billingd test server CA"), clientCA: newCA(t, "billingd test client CA")}
	cert, key := s.serverCA.issue("billingd", true)
	s.certFile = writeFile(t, dir, "server.pem", cert)
	s.keyFile = writeFile(t, dir, "server-key.pem", key)
	s.clientCAs = writeFile(t, dir, "client-ca.pem", s.clientCA.pem)
	return s
}

// dialTLS connects to addr trusting the server CA, presenting client (if set).
func dialTLS(t *testing.T, addr string, s tlsSetup, client *tls.Certificate, tweak func(*tls.Config)) billingv1.BillingServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(s.serverCA.cert)
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

func clientCert(t *testing.T, ca *testCA, cn string) *tls.Certificate {
	t.Helper()
	c, k := ca.issue(cn, false)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return &pair
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
	good := clientCert(t, s.clientCA, "caller_c")

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
		stranger := clientCert(t, newCA(t, "some other CA"), "caller_c")
		_, err := dialTLS(t, h.addr, s, stranger, nil).Charge(as(ctx, tokenA), visa("mtls-5"))
		if status.Code(err) != codes.Unavailable {
			t.Errorf("foreign client cert: %v, want UNAVAILABLE (handshake refused)", err)
		}
	})
	t.Run("CommonName that is no caller name", func(t *testing.T) {
		odd := clientCert(t, s.clientCA, "caller c/with spaces")
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
	notPEM := writeFile(t, dir, "not.pem", []byte("not a certificate"))
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
