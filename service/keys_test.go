package service

import (
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// TestKeysAreStable pins billingd's derived keys. A Stripe idempotency key
// that changed between versions would let a retried charge run twice, and a
// request key that changed would hide Stripe objects from search: these
// values must never move. The golden values were computed outside Go
// (Python's hashlib and base64).
func TestKeysAreStable(t *testing.T) {
	if got, want := StripeKey("acme", "order-1", "create_payment_intent"), "bd1_QJ28GebiAwIBB2o0v8yO419K9fAZc7O_qjxjv-LtqzY"; got != want {
		t.Errorf("StripeKey = %q, want %q", got, want)
	}
	if got, want := RequestKey("acme", "order-1"), "rk1_r19PGEHojryuUCAo1RwGLBJZ3GJb4gOHbo4B2tTamzI"; got != want {
		t.Errorf("RequestKey = %q, want %q", got, want)
	}
	// Every length, including parts longer than hashParts' stack buffer.
	ref := func(prefix string, parts ...string) string {
		h := sha256.New()
		h.Write([]byte(strings.Join(parts, "\x00")))
		return prefix + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
	}
	for _, id := range []string{"", "x", "ünïcode-✓", strings.Repeat("r", 200), strings.Repeat("r", 255), strings.Repeat("q", 1000)} {
		for _, caller := range []string{"a", strings.Repeat("c", 300)} {
			if got, want := StripeKey(caller, id, "create_subscription"), ref("bd1_", caller, id, "create_subscription"); got != want {
				t.Errorf("StripeKey(%d, %d bytes) = %q, want %q", len(caller), len(id), got, want)
			}
			if got, want := RequestKey(caller, id), ref("rk1_", caller, id); got != want {
				t.Errorf("RequestKey(%d, %d bytes) = %q, want %q", len(caller), len(id), got, want)
			}
		}
	}
}
