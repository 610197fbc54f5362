package interceptors_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
)

func TestTokensAdd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		caller, token string
		want          error
	}{
		{"ok", "caller_a", "tok_a", nil},
		{"dots and dashes", "svc-checkout.prod", "tok_b", nil},
		{"64 chars", strings.Repeat("a", 64), "tok_c", nil},
		{"empty caller", "", "tok_d", interceptors.ErrBadCaller},
		{"65 chars", strings.Repeat("a", 65), "tok_e", interceptors.ErrBadCaller},
		{"NUL", "caller\x00a", "tok_f", interceptors.ErrBadCaller},
		{"space", "caller a", "tok_g", interceptors.ErrBadCaller},
		{"colon", "caller:a", "tok_h", interceptors.ErrBadCaller},
		{"non-ASCII", "callér", "tok_i", interceptors.ErrBadCaller},
		{"empty token", "caller_a", "", interceptors.ErrEmptyToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ts interceptors.Tokens
			err := ts.Add(tt.caller, tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Add = %v, want %v", err, tt.want)
			}
			if err != nil && tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Errorf("error %q contains the token", err)
			}
		})
	}
}

func TestTokensLookup(t *testing.T) {
	t.Parallel()
	var ts interceptors.Tokens
	for _, e := range [][2]string{{"caller_a", "tok_a"}, {"caller_b", "tok_b"}, {"caller_a", "tok_a_rotated"}} {
		if err := ts.Add(e[0], e[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := ts.Add("caller_c", "tok_a"); !errors.Is(err, interceptors.ErrDuplicateToken) {
		t.Errorf("duplicate token: Add = %v, want ErrDuplicateToken", err)
	}
	tests := []struct {
		token, want string
		ok          bool
	}{
		{"tok_a", "caller_a", true},
		{"tok_a_rotated", "caller_a", true},
		{"tok_b", "caller_b", true},
		{"tok_", "", false},
		{"tok_a ", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		if got, ok := ts.Lookup(tt.token); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tt.token, got, ok, tt.want, tt.ok)
		}
	}
	if got := ts.String(); strings.Contains(got, "tok_") || strings.Contains(got, "caller_") {
		t.Errorf("String() = %q reveals tokens or callers", got)
	}
	var none *interceptors.Tokens
	if _, ok := none.Lookup("tok_a"); ok || none.Len() != 0 {
		t.Error("nil Tokens admitted a token")
	}
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	var ts interceptors.Tokens
	if err := ts.Add("caller_a", "tok_a"); err != nil {
		t.Fatal(err)
	}
	authFn := interceptors.Authenticate(&ts)
	tests := []struct {
		name   string
		header []string // authorization values
		want   string   // caller; "" = UNAUTHENTICATED
	}{
		{"bearer", []string{"Bearer tok_a"}, "caller_a"},
		{"scheme is case-insensitive", []string{"bearer tok_a"}, "caller_a"},
		{"missing", nil, ""},
		{"wrong token", []string{"Bearer tok_b"}, ""},
		{"wrong scheme", []string{"Basic tok_a"}, ""},
		{"no scheme", []string{"tok_a"}, ""},
		{"empty bearer", []string{"Bearer "}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			if tt.header != nil {
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", tt.header[0]))
			}
			got, err := authFn(ctx)
			if tt.want == "" {
				st := status.Convert(err)
				if st.Code() != codes.Unauthenticated || st.Message() != "unauthenticated" || len(st.Details()) != 0 {
					t.Fatalf("got %v %q %v, want UNAUTHENTICATED \"unauthenticated\" without details", st.Code(), st.Message(), st.Details())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c, ok := interceptors.CallerFrom(got); !ok || c != tt.want {
				t.Errorf("caller = %q, want %q", c, tt.want)
			}
		})
	}
}

// TestAuthOverTheWire runs Authenticate behind go-grpc-middleware's auth
// interceptor: the handler sees the caller, strangers never reach it.
func TestAuthOverTheWire(t *testing.T) {
	t.Parallel()
	var ts interceptors.Tokens
	if err := ts.Add("caller_a", "tok_a"); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 10)
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		c, _ := interceptors.CallerFrom(ctx)
		seen <- c
		return handler(ctx, req)
	}
	client := dialBilling(t, auth.UnaryServerInterceptor(interceptors.Authenticate(&ts)), record)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := client.Charge(ctx, &billingv1.ChargeRequest{RequestId: "x"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v", err)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok_a")
	if _, err := client.Charge(actx, &billingv1.ChargeRequest{RequestId: "x"}); err != nil {
		t.Fatal(err)
	}
	close(seen)
	var got []string
	for c := range seen {
		got = append(got, c)
	}
	if len(got) != 1 || got[0] != "caller_a" {
		t.Errorf("handler saw callers %q, want [caller_a]", got)
	}
}
