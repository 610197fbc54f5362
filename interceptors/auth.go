package interceptors

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// MaxCallerLen bounds a caller name: it is part of every record key and of
// the metadata billingd puts on Stripe objects.
const MaxCallerLen = 64

// unauthenticatedMessage is the whole answer to every failed authentication:
// missing header, wrong scheme, unknown token, certificate mismatch. Saying
// which would help a guesser.
const unauthenticatedMessage = "unauthenticated"

var (
	// ErrBadCaller is returned for a caller name outside [A-Za-z0-9._-]{1,64}.
	ErrBadCaller = errors.New("interceptors: caller name must be 1-64 characters of A-Z a-z 0-9 . _ -")
	// ErrEmptyToken is returned for an empty token.
	ErrEmptyToken = errors.New("interceptors: empty token")
	// ErrDuplicateToken is returned when two entries share a token: a token
	// must name exactly one caller.
	ErrDuplicateToken = errors.New("interceptors: duplicate token")
)

// ValidCaller reports whether name is an acceptable caller name: 1-64 bytes
// of ASCII letters, digits, '.', '_' and '-'. The charset keeps names safe in
// logs, record keys (which separate caller and request_id with 0x00) and
// Stripe metadata.
func ValidCaller(name string) bool {
	if len(name) == 0 || len(name) > MaxCallerLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Tokens is the set of bearer tokens billingd accepts, each naming one
// caller. Only SHA-256 digests of the tokens are kept, so a heap dump or a
// stray %v does not reveal them. A caller may hold several tokens (rotation);
// a token belongs to one caller. The zero value holds no tokens.
type Tokens struct {
	callers []string
	digests [][sha256.Size]byte
}

// Add registers token for caller. Errors never contain the token.
func (t *Tokens) Add(caller, token string) error {
	if !ValidCaller(caller) {
		return ErrBadCaller
	}
	if token == "" {
		return ErrEmptyToken
	}
	d := sha256.Sum256([]byte(token))
	for _, have := range t.digests {
		if have == d {
			return ErrDuplicateToken
		}
	}
	t.callers = append(t.callers, caller)
	t.digests = append(t.digests, d)
	return nil
}

// Len returns how many tokens are registered.
func (t *Tokens) Len() int {
	if t == nil {
		return 0
	}
	return len(t.digests)
}

// String never shows a token or a digest.
func (t *Tokens) String() string { return fmt.Sprintf("%d caller tokens", t.Len()) }

// Lookup returns the caller that token belongs to. It compares the token's
// digest with every registered digest in constant time and visits all of
// them whatever matches, so timing reveals neither the token nor which
// caller it belongs to (only how many tokens exist).
func (t *Tokens) Lookup(token string) (string, bool) {
	if t.Len() == 0 || token == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(token))
	match := -1
	for i := range t.digests {
		eq := subtle.ConstantTimeCompare(d[:], t.digests[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return "", false
	}
	return t.callers[match], true
}

// AuthOption configures Authenticate.
type AuthOption func(*authConfig)

type authConfig struct {
	certCallers bool
}

// WithClientCertCallers identifies callers by the subject CommonName of their
// verified TLS client certificate (mutual TLS). A call that also carries a
// bearer token is admitted only when the token's caller equals the CN: two
// credentials that disagree are a misconfiguration or a stolen credential,
// and picking either one silently would hide it.
func WithClientCertCallers() AuthOption {
	return func(c *authConfig) { c.certCallers = true }
}

// Authenticate returns the auth.AuthFunc for go-grpc-middleware's auth
// interceptors: it finds the caller from an "authorization: Bearer <token>"
// header (and, with WithClientCertCallers, the client certificate) and puts
// it into the context with WithCaller. Every failure is UNAUTHENTICATED with
// the same fixed message.
func Authenticate(tokens *Tokens, opts ...AuthOption) auth.AuthFunc {
	var cfg authConfig
	for _, o := range opts {
		o(&cfg)
	}
	return func(ctx context.Context) (context.Context, error) {
		var fromToken string
		if token, err := auth.AuthFromMD(ctx, "bearer"); err == nil && token != "" {
			c, ok := tokens.Lookup(token)
			if !ok {
				return nil, errUnauthenticated()
			}
			fromToken = c
		}
		fromCert := ""
		if cfg.certCallers {
			fromCert = certCaller(ctx)
		}
		switch {
		case fromCert != "" && fromToken != "" && fromCert != fromToken:
			return nil, errUnauthenticated()
		case fromCert != "":
			return WithCaller(ctx, fromCert), nil
		case fromToken != "":
			return WithCaller(ctx, fromToken), nil
		}
		return nil, errUnauthenticated()
	}
}

func errUnauthenticated() error { return status.Error(codes.Unauthenticated, unauthenticatedMessage) }

// certCaller returns the CommonName of the verified client certificate, or ""
// when there is none or it is not a valid caller name. Only a verified chain
// counts: PeerCertificates alone are whatever the client sent.
func certCaller(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return ""
	}
	return callerOfCert(info.State.VerifiedChains[0][0])
}

func callerOfCert(c *x509.Certificate) string {
	if cn := c.Subject.CommonName; ValidCaller(cn) {
		return cn
	}
	return ""
}
