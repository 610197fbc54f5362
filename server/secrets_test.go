package server_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
)

// lockedBuffer is a log sink the server's goroutines may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPanicLeaksNoSecret panics in a handler with the Stripe key and the
// caller's token in the panic value, through the production interceptor
// chain and logger: neither the logs nor the status show them.
func TestPanicLeaksNoSecret(t *testing.T) {
	t.Parallel()
	const stripeKey = "sk_test_panic_5e1c7f3a9b2d"
	var logs lockedBuffer
	cfg := authConfig(t)
	cfg.ExtraInterceptors = []grpc.UnaryServerInterceptor{
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			panic(fmt.Sprintf("boom: key=%s token=%s", stripeKey, tokenA))
		},
	}
	h := newHarness(t, harnessOpts{srvCfg: &cfg, stripeKey: stripeKey, log: &logs})
	_, err := h.client.Charge(as(h.ctx(), tokenA), visa("panic-1"))
	st := status.Convert(err)
	if st.Code() != codes.Internal {
		t.Fatalf("panic answered %v, want INTERNAL", err)
	}
	out := logs.String() + "\n" + prototext.Format(st.Proto())
	if !strings.Contains(out, "panic in handler recovered") {
		t.Errorf("the panic was not logged:\n%s", out)
	}
	for _, secret := range []string{stripeKey, tokenA, "boom"} {
		if strings.Contains(out, secret) {
			t.Errorf("%q leaked:\n%s", secret, out)
		}
	}
}

// An error billingd does not recognise answers INTERNAL "internal error",
// and its cause goes on the call's log line, with Stripe secrets scrubbed:
// a bug must leave a trace, never a key or a client_secret.
func TestInternalErrorLogsItsCauseScrubbed(t *testing.T) {
	t.Parallel()
	const (
		stripeKey    = "sk_test_cause_0b7d41e2c9"
		clientSecret = "pi_3Q0abc_secret_Zx81kq"
	)
	var logs lockedBuffer
	cfg := authConfig(t)
	cfg.ExtraInterceptors = []grpc.UnaryServerInterceptor{
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return nil, fmt.Errorf("unrecognised: key=%s secret=%s", stripeKey, clientSecret)
		},
	}
	h := newHarness(t, harnessOpts{srvCfg: &cfg, stripeKey: stripeKey, log: &logs})
	_, err := h.client.Charge(as(h.ctx(), tokenA), visa("cause-1"))
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Fatalf("answered %v, want INTERNAL \"internal error\"", err)
	}
	out := logs.String()
	if !strings.Contains(out, `"cause":"unrecognised: key=[redacted] secret=[redacted]"`) {
		t.Errorf("the cause is not on the log line, scrubbed:\n%s", out)
	}
	for _, secret := range []string{stripeKey, clientSecret} {
		if strings.Contains(out, secret) {
			t.Errorf("%q leaked:\n%s", secret, out)
		}
	}
}
