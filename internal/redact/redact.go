// Package redact removes secrets from text before it is logged, stored or
// answered: Stripe API keys (even masked ones) and client_secrets.
package redact

import "regexp"

// secretLike matches Stripe API keys (even masked: sk_test_****1234) and
// client secrets (pi_..._secret_...), which no message or log may carry.
var secretLike = regexp.MustCompile(`\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]+|\b[A-Za-z0-9]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+`)

// Scrub replaces whatever looks like a Stripe key or a client_secret in s
// with [redacted].
func Scrub(s string) string { return secretLike.ReplaceAllString(s, "[redacted]") }
