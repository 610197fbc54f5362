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
