package redact_test

import (
	"testing"

	"github.com/billingd/billingd/internal/redact"
)

func TestScrub(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"key sk_test_4eC39HqLyjWDarjtT1zdp7dc here", "key [redacted] here"},
		{"masked sk_live_****************1234", "masked [redacted]"},
		{"restricted rk_test_abc_DEF and pk_live_x", "restricted [redacted] and [redacted]"},
		{"secret pi_3MtwBw_secret_YrKJUKribcBjcG8H.", "secret [redacted]."},
		{"seti_1Nj_secret_Qx9 in a setup", "[redacted] in a setup"},
		{"pi_3MtwBw succeeded", "pi_3MtwBw succeeded"},
		{"no secrets", "no secrets"},
	}
	for _, tt := range tests {
		if got := redact.Scrub(tt.in); got != tt.want {
			t.Errorf("Scrub(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
