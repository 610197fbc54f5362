package stripesim

import (
	"encoding/base64"
	"strings"
)

// authenticate returns the API key of a request, or the 401/403 Stripe
// would answer. Keys are never echoed whole: a key in a log or an error
// message is a leaked key.
func (s *Sim) authenticate(header string) (string, *failure) {
	var key string
	switch {
	case header == "":
	case len(header) > 7 && strings.EqualFold(header[:7], "Bearer "):
		key = strings.TrimSpace(header[7:])
	case len(header) > 6 && strings.EqualFold(header[:6], "Basic "):
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header[6:]))
		if err != nil {
			return "", invalidAPIKey("")
		}
		key, _, _ = strings.Cut(string(raw), ":")
	default:
		return "", invalidAPIKey("")
	}
	switch {
	case key == "":
		return "", &failure{status: 401, err: apiError{Type: typeInvalidRequest,
			Message: "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/."}}
	case s.forbidden[key]:
		return "", &failure{status: 403, err: apiError{Type: typeInvalidRequest,
			Message: "The provided key '" + MaskKey(key) + "' does not have the required permissions for this endpoint on account 'acct_stripesim'. Having more permissions would allow this request to continue."}}
	case len(s.keys) > 0 && !s.keys[key], len(s.keys) == 0 && !strings.HasPrefix(key, "sk_test_"):
		return "", invalidAPIKey(key)
	}
	return key, nil
}

func invalidAPIKey(key string) *failure {
	msg := "Invalid API Key provided: " + MaskKey(key)
	if key == "" {
		msg = "Invalid API Key provided: the Authorization header must be 'Bearer <key>'"
	}
	return &failure{status: 401, err: apiError{Type: typeInvalidRequest, Message: msg}}
}

// MaskKey hides an API key the way Stripe's error messages do: the prefix
// and the last four characters survive, e.g. sk_test_****************abcd.
// Exported so that billingd's logs can mask keys identically.
func MaskKey(key string) string {
	prefix := ""
	for _, p := range [...]string{"sk_test_", "sk_live_", "rk_test_", "rk_live_", "pk_test_", "pk_live_"} {
		if strings.HasPrefix(key, p) {
			prefix = p
			break
		}
	}
	rest := key[len(prefix):]
	if len(rest) <= 8 {
		return prefix + "****"
	}
	return prefix + strings.Repeat("*", len(rest)-4) + rest[len(rest)-4:]
}
