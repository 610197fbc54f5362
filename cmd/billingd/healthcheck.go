package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
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
// It speaks plaintext gRPC: once serve takes TLS flags, this needs matching
// ones (CA, server name, client certificate for mutual TLS).
func healthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("billingd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", healthAddr(getenv("BILLINGD_LISTEN")),
		"address to probe (default: BILLINGD_LISTEN with a wildcard host replaced by 127.0.0.1, else "+defaultListen+")")
	service := fs.String("service", billingv1.BillingService_ServiceDesc.ServiceName,
		`health service name to ask about; "" asks about the server as a whole`)
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
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

	name := *service
	if name == "" {
		name = "server"
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
