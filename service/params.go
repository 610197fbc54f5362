package service

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math/bits"
	"slices"
	"strings"
)

// ChargeRequest is one Charge call, as the service sees it.
type ChargeRequest struct {
	RequestID       string
	Amount          int64
	Currency        string
	CustomerID      string
	PaymentMethodID string
	Description     string
	Metadata        map[string]string
	// OffSession is nil when the caller did not say: then a CustomerID means
	// off session, as it always has. CaptureMethod is "" (automatic) or "manual".
	OffSession    *bool
	CaptureMethod string
}

// canonical spells the request one way: the currency in lowercase (Stripe's
// spelling: "USD" and "usd" are one request), and what Stripe would do anyway is
// said by leaving it unset (capture_method "automatic"; an off_session equal
// to what the customer_id implies). Two spellings of one payment are then
// one request, with one fingerprint, and a request without the newer fields
// keeps the fingerprint it always had.
func (r *ChargeRequest) canonical() {
	r.Currency = strings.ToLower(r.Currency)
	if r.CaptureMethod == "automatic" {
		r.CaptureMethod = ""
	}
	if r.OffSession != nil && *r.OffSession == (r.CustomerID != "") {
		r.OffSession = nil
	}
}

// offSession is what Stripe is told: the caller's choice, or, unsaid, off
// session exactly when a customer is given.
func (r *ChargeRequest) offSession() bool {
	if r.OffSession != nil {
		return *r.OffSession
	}
	return r.CustomerID != ""
}

// SubscribeRequest is one Subscribe call, as the service sees it.
type SubscribeRequest struct {
	RequestID  string
	CustomerID string
	PriceID    string
	Quantity   int64
	Metadata   map[string]string
}

// Metadata keys billingd puts on every Stripe object it creates (docs/design.md, rule 4).
const (
	MetadataRequestKey = "billingd_request_key"
	MetadataCaller     = "billingd_caller"
	reservedPrefix     = "billingd_"
)

// encoder appends a canonical, self-delimiting encoding: every field is
// length-prefixed and map entries are sorted, so equal requests encode to equal
// bytes whatever order the caller built them in. It is both the fingerprint's
// input and the stored form that lets a record be re-driven without its caller.
type encoder []byte

func (e *encoder) str(s string) {
	*e = binary.AppendUvarint(*e, uint64(len(s)))
	*e = append(*e, s...)
}

func (e *encoder) int(v int64) { *e = binary.AppendVarint(*e, v) }

func (e *encoder) meta(m map[string]string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	*e = binary.AppendUvarint(*e, uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(m[k])
	}
}

var errBadParams = errors.New("service: malformed stored params")

type decoder struct {
	b   []byte
	err error
}

// uvarint is binary.Uvarint accepting only the shortest encoding, the one
// the encoder writes: a stored encoding has exactly one form, so equal
// requests have equal fingerprints and decode → encode gives the same bytes.
func uvarint(b []byte) (uint64, int) {
	v, k := binary.Uvarint(b)
	if k > 0 && k != (bits.Len64(v|1)+6)/7 {
		return 0, 0
	}
	return v, k
}

func (d *decoder) str() string {
	n, k := uvarint(d.b)
	if k <= 0 || uint64(len(d.b)-k) < n {
		d.err = errBadParams
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func (d *decoder) int() int64 {
	ux, k := uvarint(d.b) // binary.Varint's zig-zag, on a shortest uvarint
	if k <= 0 {
		d.err = errBadParams
		return 0
	}
	d.b = d.b[k:]
	v := int64(ux >> 1)
	if ux&1 != 0 {
		v = ^v
	}
	return v
}

func (d *decoder) meta() map[string]string {
	n, k := uvarint(d.b)
	if k <= 0 || n > uint64(len(d.b)) {
		d.err = errBadParams
		return nil
	}
	d.b = d.b[k:]
	if n == 0 {
		return nil
	}
	m := make(map[string]string, n)
	prev := ""
	for i := range n {
		key := d.str()
		// The encoder writes keys sorted and once each: anything else is
		// a second spelling of some map.
		if i > 0 && key <= prev {
			d.err = errBadParams
		}
		prev = key
		m[key] = d.str()
	}
	return m
}

// paramsVersion leads every encoding, so the format can change later.
const paramsVersion = 1

func (r *ChargeRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodCharge))
	e.int(r.Amount)
	e.str(r.Currency)
	e.str(r.CustomerID)
	e.str(r.PaymentMethodID)
	e.str(r.Description)
	e.meta(r.Metadata)
	// Added later, and written only when set, so that a request without them
	// encodes (and fingerprints) exactly as before they existed.
	if r.OffSession != nil || r.CaptureMethod != "" {
		e.int(int64(triOf(r.OffSession)))
		e.str(r.CaptureMethod)
	}
	return e
}

// tri is an optional bool as stored: unset, false or true.
type tri int64

const (
	triUnset tri = iota
	triFalse
	triTrue
)

func triOf(b *bool) tri {
	switch {
	case b == nil:
		return triUnset
	case *b:
		return triTrue
	}
	return triFalse
}

func (t tri) ptr() *bool {
	if t == triUnset {
		return nil
	}
	b := t == triTrue
	return &b
}

func (r *SubscribeRequest) encode() []byte {
	e := encoder{paramsVersion}
	e.str(string(MethodSubscribe))
	e.str(r.CustomerID)
	e.str(r.PriceID)
	e.int(r.Quantity)
	e.meta(r.Metadata)
	return e
}

// decodeParams turns a stored encoding back into the request it came from
// (*ChargeRequest or *SubscribeRequest, RequestID left empty).
func decodeParams(b []byte) (any, error) {
	if len(b) == 0 || b[0] != paramsVersion {
		return nil, errBadParams
	}
	d := decoder{b: b[1:]}
	var out any
	switch m := Method(d.str()); m {
	case MethodCharge:
		c := &ChargeRequest{Amount: d.int(), Currency: d.str(), CustomerID: d.str(),
			PaymentMethodID: d.str(), Description: d.str(), Metadata: d.meta()}
		if len(d.b) > 0 && d.err == nil {
			t := tri(d.int())
			c.CaptureMethod = d.str()
			// Written only when one is set: anything else is a second
			// spelling of the request without them.
			if t < triUnset || t > triTrue || (t == triUnset && c.CaptureMethod == "") {
				return nil, errBadParams
			}
			c.OffSession = t.ptr()
		}
		out = c
	case MethodSubscribe:
		out = &SubscribeRequest{CustomerID: d.str(), PriceID: d.str(), Quantity: d.int(), Metadata: d.meta()}
	default:
		var ok bool
		if out, ok = decodeLifecycle(m, &d); !ok {
			return nil, errBadParams
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errBadParams
	}
	return out, nil
}

// Fingerprint is SHA-256 over a canonical request encoding (which names the
// method and excludes request_id): equal fingerprints mean the same request.
func Fingerprint(params []byte) []byte {
	sum := sha256.Sum256(params)
	return sum[:]
}

// StripeKey derives the Idempotency-Key of one Stripe call of an operation
// (docs/design.md, rule 3). It is deterministic, so a lost or restored database still
// cannot produce a second charge within Stripe's 24 h window, and it hides the
// raw request_id. Stripe allows 255 characters; this is 47.
func StripeKey(caller, requestID, step string) string {
	return hashParts("bd1_", caller, requestID, step)
}

// RequestKey is the value of metadata[billingd_request_key]: it finds the
// operation's Stripe object in search and webhooks without the raw request_id.
func RequestKey(caller, requestID string) string {
	return hashParts("rk1_", caller, requestID)
}

// hashParts returns prefix and the unpadded base64url SHA-256 of parts
// joined by 0x00, hashed and encoded on the stack: one allocation, the
// string itself (every new charge derives two keys).
func hashParts(prefix string, parts ...string) string {
	var buf [256]byte
	b := buf[:0]
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	sum := sha256.Sum256(b)
	if len(prefix) > 8 {
		return prefix + base64.RawURLEncoding.EncodeToString(sum[:])
	}
	var out [8 + 43]byte
	n := copy(out[:], prefix)
	base64.RawURLEncoding.Encode(out[n:], sum[:])
	return string(out[:n+base64.RawURLEncoding.EncodedLen(len(sum))])
}

// checkMetadata rejects caller metadata that collides with billingd's own keys.
// The edge validates this too; the service re-checks because reconciliation
// depends on it.
func checkMetadata(m map[string]string) []FieldViolation {
	var out []FieldViolation
	for k := range m {
		if strings.HasPrefix(k, reservedPrefix) {
			out = append(out, FieldViolation{Field: "metadata[" + k + "]", Description: "keys starting with billingd_ are reserved"})
		}
	}
	slices.SortFunc(out, func(a, b FieldViolation) int { return strings.Compare(a.Field, b.Field) })
	return out
}

// stripeMetadata is the caller's metadata plus billingd's reconciliation keys.
func stripeMetadata(caller, requestKey string, m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	out[MetadataRequestKey] = requestKey
	out[MetadataCaller] = caller
	return out
}

// Request decodes the record's stored parameters into the *ChargeRequest or
// *SubscribeRequest it was made from (RequestID set), for admin views.
func (r Record) Request() (any, error) {
	p, err := decodeParams(r.Params)
	if err != nil {
		return nil, err
	}
	switch p := p.(type) {
	case *ChargeRequest:
		p.RequestID = r.RequestID
	case *SubscribeRequest:
		p.RequestID = r.RequestID
	case *RefundRequest:
		p.RequestID = r.RequestID
	case *CaptureRequest:
		p.RequestID = r.RequestID
	case *CancelPaymentRequest:
		p.RequestID = r.RequestID
	case *CancelSubscriptionRequest:
		p.RequestID = r.RequestID
	}
	return p, nil
}
