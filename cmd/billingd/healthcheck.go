package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
)

// defaultListen is where `billingd serve` listens unless told otherwise.
const defaultListen = "127.0.0.1:50051"

// unhealthyError is the answer of a probe that did not get SERVING. Its exit
// code is 1 because container runtimes read 1 as "unhealthy" (Docker reserves 2).
type unhealthyError struct{ msg string }

func (e *unhealthyError) Error() string { return e.msg }

// ExitCode is the process exit status for a failed probe.
func (e *unhealthyError) ExitCode() int { return 1 }

// healthcheck asks a billingd's grpc.health.v1 service whether it serves, so
// container runtimes and supervisors can probe it with the binary they
// already have (distroless images have no grpc_health_probe or shell). It
// prints one line and returns nil only for SERVING.
//
// With --tls-cert (by default serve's own BILLINGD_TLS_CERT) it speaks TLS
// and accepts only a server presenting that very certificate: the probe runs
// next to the server and reads the same file, so it needs no CA and no
// server name, and a 127.0.0.1 address works whatever names the certificate
// holds. A server with --tls-client-ca (mutual TLS) also wants a client
// certificate from that CA: --client-cert and --client-key.
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("billingd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", healthAddr(getenv("BILLINGD_LISTEN")),
		"address to probe (default: BILLINGD_LISTEN with a wildcard host replaced by 127.0.0.1, else "+defaultListen+")")
	service := fs.String("service", billingv1.BillingService_ServiceDesc.ServiceName,
		`health service name to ask about; "" asks about the server as a whole`)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	tlsCert := fs.String("tls-cert", getenv("BILLINGD_TLS_CERT"),
		"the PEM certificate the server serves (its --tls-cert): speak TLS and accept only a server presenting it (default: BILLINGD_TLS_CERT)")
	clientCert := fs.String("client-cert", getenv("BILLINGD_HEALTHCHECK_CLIENT_CERT"),
		"PEM client certificate for a server with --tls-client-ca, issued by that CA (default: BILLINGD_HEALTHCHECK_CLIENT_CERT)")
	clientKey := fs.String("client-key", getenv("BILLINGD_HEALTHCHECK_CLIENT_KEY"),
		"PEM private key of --client-cert (default: BILLINGD_HEALTHCHECK_CLIENT_KEY)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: billingd healthcheck [flags]\n\nExits 0 when the gRPC health service says SERVING, 1 otherwise.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if *timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, not %s", *timeout)
	}

	creds, err := probeCredentials(*tlsCert, *clientCert, *clientKey, getenv("BILLINGD_TLS_CLIENT_CA") != "")
	if err != nil {
		return err
	}

	name := *service
	if name == "" {
		name = "server"
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", *addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	// Not WaitForReady: a refused connection fails at once instead of
	// waiting out the timeout.
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		st := status.Convert(err)
		return &unhealthyError{msg: fmt.Sprintf("healthcheck %s at %s: %s: %s", name, *addr, st.Code(), st.Message())}
	}
	if got := resp.GetStatus(); got != healthpb.HealthCheckResponse_SERVING {
		return &unhealthyError{msg: fmt.Sprintf("healthcheck %s at %s: %s", name, *addr, got)}
	}
	fmt.Fprintf(stdout, "%s at %s: SERVING\n", name, *addr)
	return nil
}

// probeCredentials is plaintext without serverCert, else TLS pinned to the
// first certificate in serverCert, presenting the client pair if given.
// mutual says the server (by the environment the probe shares with it)
// requires client certificates, so that a missing pair is a clear usage
// error rather than a handshake failure.
func probeCredentials(serverCert, clientCert, clientKey string, mutual bool) (credentials.TransportCredentials, error) {
	if (clientCert == "") != (clientKey == "") {
		return nil, errors.New("--client-cert and --client-key go together")
	}
	if serverCert == "" {
		if clientCert != "" {
			return nil, errors.New("--client-cert needs --tls-cert: mutual TLS is TLS")
		}
		return insecure.NewCredentials(), nil
	}
	if mutual && clientCert == "" {
		return nil, errors.New("the server requires client certificates (BILLINGD_TLS_CLIENT_CA is set): give --client-cert and --client-key, issued by that CA")
	}
	pin, err := leafDER(serverCert)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is the pin below, not a CA and a name: the probe
		// trusts exactly the certificate the server was configured with.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, pin) {
				return fmt.Errorf("the server does not present the certificate in %s", serverCert)
			}
			return nil
		},
	}
	if clientCert != "" {
		pair, err := tls.LoadX509KeyPair(clientCert, clientKey)
		if err != nil {
			return nil, fmt.Errorf("load client certificate %s and key %s: %w", clientCert, clientKey, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}

// leafDER is the first certificate of a PEM file: the leaf, as serve sends it.
func leafDER(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read --tls-cert: %w", err)
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("--tls-cert %s: no PEM certificate found", file)
		}
		if block.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(block.Bytes); err != nil {
				return nil, fmt.Errorf("--tls-cert %s: %w", file, err)
			}
			return block.Bytes, nil
		}
	}
}

// healthAddr is the address to probe for a serve listen address: a wildcard
// or empty host (0.0.0.0:50051 in a container) becomes 127.0.0.1.
func healthAddr(listen string) string {
	if listen == "" {
		return defaultListen
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
