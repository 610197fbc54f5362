package stripesim

import (
	"bytes"
	"net/url"
	"strconv"
	"strings"
)

// term is one `field:'value'` clause of a Stripe search query; key is set
// for metadata['key'] clauses.
type term struct {
	field, key, value string
}

// parseQuery parses the subset of Stripe's search query language billingd
// needs: exact-match clauses joined by AND, e.g.
//
//	metadata['billingd_request_key']:'abc' AND status:'succeeded'
//
// OR, negation and the ~ < > operators are rejected rather than
// misinterpreted, so a query that works here means the same at Stripe.
func parseQuery(q string, fieldOK func(string) bool, resource string) ([]term, *failure) {
	bad := func(msg string) ([]term, *failure) {
		return nil, invalidValue("query", msg)
	}
	p := strings.TrimSpace(q)
	if p == "" {
		return nil, paramMissing("query")
	}
	var terms []term
	for {
		var t term
		if strings.HasPrefix(p, "-") {
			return bad("stripesim: negated search clauses are not supported")
		}
		i := 0
		for i < len(p) && (p[i] == '_' || p[i] == '.' || 'a' <= p[i] && p[i] <= 'z') {
			i++
		}
		if i == 0 {
			return bad("Invalid search query: expected a field name at '" + p + "'")
		}
		t.field, p = p[:i], p[i:]
		if !fieldOK(t.field) {
			return bad("Field '" + t.field + "' is an unsupported search field for resource " + resource + ". See https://stripe.com/docs/search#query-fields-for-" + strings.ReplaceAll(resource, "_", "-") + " for a list of supported fields.")
		}
		if t.field == "metadata" {
			if !strings.HasPrefix(p, "[") {
				return bad("Invalid search query: metadata must be followed by ['key']")
			}
			key, rest, ok := quoted(p[1:])
			if !ok || !strings.HasPrefix(rest, "]") {
				return bad("Invalid search query: malformed metadata key")
			}
			t.key, p = key, rest[1:]
		}
		if !strings.HasPrefix(p, ":") {
			return bad("stripesim: only exact-match ':' clauses are supported in search queries")
		}
		p = p[1:]
		if strings.HasPrefix(p, "'") || strings.HasPrefix(p, `"`) {
			v, rest, ok := quoted(p)
			if !ok {
				return bad("Invalid search query: unterminated string")
			}
			t.value, p = v, rest
		} else {
			j := strings.IndexAny(p, " \t")
			if j < 0 {
				j = len(p)
			}
			t.value, p = p[:j], p[j:]
			if t.value == "" {
				return bad("Invalid search query: missing value for " + t.field)
			}
		}
		terms = append(terms, t)
		rest := strings.TrimLeft(p, " \t")
		if rest == "" {
			return terms, nil
		}
		if len(rest) == len(p) {
			return bad("Invalid search query: expected AND between clauses")
		}
		switch {
		case strings.HasPrefix(rest, "AND ") || strings.HasPrefix(rest, "and "):
			p = strings.TrimLeft(rest[4:], " \t")
		case strings.HasPrefix(rest, "OR ") || strings.HasPrefix(rest, "or "):
			return bad("stripesim: OR search queries are not supported")
		default:
			return bad("Invalid search query: expected AND between clauses")
		}
	}
}

// quoted reads a '...' or "..." string with backslash escapes at the start
// of s and returns its value and the rest of s.
func quoted(s string) (value, rest string, ok bool) {
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", s, false
	}
	q := s[0]
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case c == q:
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return "", s, false
}

func paymentIntentSearchField(f string) bool {
	switch f {
	case "metadata", "status", "customer", "currency", "amount":
		return true
	}
	return false
}

func subscriptionSearchField(f string) bool {
	switch f {
	case "metadata", "status", "customer":
		return true
	}
	return false
}

func customerSearchField(f string) bool {
	switch f {
	case "metadata", "email", "name", "phone":
		return true
	}
	return false
}

func paymentIntentField(p *PaymentIntent, f string) string {
	switch f {
	case "status":
		return p.Status
	case "customer":
		return p.Customer
	case "currency":
		return p.Currency
	case "amount":
		return strconv.FormatInt(p.Amount, 10)
	}
	return ""
}

func subscriptionField(s *Subscription, f string) string {
	switch f {
	case "status":
		return s.Status
	case "customer":
		return s.Customer
	}
	return ""
}

func piStateField(p *piState, f string) string { return paymentIntentField(&p.PaymentIntent, f) }

func subStateField(s *subState, f string) string { return subscriptionField(&s.Subscription, f) }

func customerField(c *Customer, f string) string {
	switch f {
	case "email":
		return c.Email
	case "name":
		return c.Name
	case "phone":
		return c.Phone
	}
	return ""
}

// listRequest holds the parsed parameters of a search or list GET.
type listRequest struct {
	terms         []term
	limit         int
	offset        int    // search: from the page token
	startingAfter string // list
	email         string // customer list filter
	paymentIntent string // refund list filter
}

const pagePrefix = "page_"

func parseLimit(form url.Values) (int, *failure) {
	v := form.Get("limit")
	if v == "" {
		return 10, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, invalidInteger("limit", v)
	}
	if n < 1 || n > 100 {
		return 0, invalidRequest("parameter_invalid_integer", "limit", "This value must be between 1 and 100 (it currently is "+v+").")
	}
	return n, nil
}

func parseSearch(form url.Values, fieldOK func(string) bool, resource string) (listRequest, *failure) {
	var lr listRequest
	var f *failure
	if lr.terms, f = parseQuery(form.Get("query"), fieldOK, resource); f != nil {
		return lr, f
	}
	if lr.limit, f = parseLimit(form); f != nil {
		return lr, f
	}
	if pg := form.Get("page"); pg != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(pg, pagePrefix))
		if err != nil || n < 0 || !strings.HasPrefix(pg, pagePrefix) {
			return lr, invalidValue("page", "Invalid page: "+pg)
		}
		lr.offset = n
	}
	return lr, nil
}

// listing is a search_result or list body waiting to be assembled from
// records' cached JSON, outside the lock.
type listing struct {
	object   string // "search_result" or "list"
	url      string
	items    [][]byte
	hasMore  bool
	nextPage string
	// expansions, when set, expand each item's latest_invoice (subscriptions).
	expansions []*expansion
}

func (l *listing) encode() []byte {
	n := 96 + len(l.url) + len(l.nextPage)
	for _, it := range l.items {
		n += len(it) + 1
	}
	b := bytes.NewBuffer(make([]byte, 0, n))
	b.WriteString(`{"object":"`)
	b.WriteString(l.object)
	b.WriteString(`","data":[`)
	for i, it := range l.items {
		if i > 0 {
			b.WriteByte(',')
		}
		if l.expansions != nil {
			it = l.expansions[i].apply(it)
		}
		b.Write(it)
	}
	b.WriteString(`],"has_more":`)
	b.WriteString(strconv.FormatBool(l.hasMore))
	if l.object == "search_result" {
		b.WriteString(`,"next_page":`)
		if l.nextPage == "" {
			b.WriteString("null")
		} else {
			b.WriteString(strconv.Quote(l.nextPage))
		}
	}
	b.WriteString(`,"url":`)
	b.WriteString(strconv.Quote(l.url))
	b.WriteByte('}')
	return b.Bytes()
}

// searchLocked runs a search on st and shapes the page.
func searchLocked[T any](st *store[T], lr listRequest, field func(*T, string) string, s *Sim, url string) listing {
	_, l := searchRecordsLocked(st, lr, field, s, url)
	return l
}

// searchRecordsLocked is searchLocked that also returns the records found.
func searchRecordsLocked[T any](st *store[T], lr listRequest, field func(*T, string) string, s *Sim, url string) ([]*record[T], listing) {
	cutoff := s.clock.Now().Add(-s.searchLag)
	recs, more := st.search(lr.terms, field, cutoff, lr.offset, lr.limit)
	l := listing{object: "search_result", url: url, hasMore: more, items: make([][]byte, len(recs))}
	for i, r := range recs {
		l.items[i] = r.json
	}
	if more {
		l.nextPage = pagePrefix + strconv.Itoa(lr.offset+len(recs))
	}
	return recs, l
}
