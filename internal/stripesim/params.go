package stripesim

import (
	"crypto/sha256"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// fingerprint hashes the parsed form canonically (keys sorted, each key's
// values sorted), so two requests match exactly when Stripe would consider
// their parameters the same, whatever order a client encoded them in.
func fingerprint(form url.Values) [32]byte {
	keys := make([]string, 0, len(form))
	n := 0
	for k, vs := range form {
		keys = append(keys, k)
		n += len(k) + 2
		for _, v := range vs {
			n += len(v) + 1
		}
	}
	slices.Sort(keys)
	buf := make([]byte, 0, n)
	var vals []string
	for _, k := range keys {
		buf = append(buf, k...)
		buf = append(buf, 0)
		vals = append(vals[:0], form[k]...)
		slices.Sort(vals)
		for _, v := range vals {
			buf = append(buf, v...)
			buf = append(buf, 0)
		}
		buf = append(buf, 1)
	}
	return sha256.Sum256(buf)
}

// topName returns the top-level parameter name of a form key:
// "metadata" for "metadata[k]", "items" for "items[0][price]".
func topName(key string) string {
	if i := strings.IndexByte(key, '['); i >= 0 {
		return key[:i]
	}
	return key
}

// bracketParts splits "items[0][price]" into ["0", "price"], appending to
// dst; ok is false if the key is not a name followed by well-formed [..]
// groups.
func bracketParts(key string, dst []string) (parts []string, ok bool) {
	parts = dst[:0]
	i := strings.IndexByte(key, '[')
	if i < 0 {
		return parts, true
	}
	rest := key[i:]
	for rest != "" {
		if rest[0] != '[' {
			return nil, false
		}
		j := strings.IndexByte(rest, ']')
		if j < 0 {
			return nil, false
		}
		parts = append(parts, rest[1:j])
		rest = rest[j+1:]
	}
	return parts, true
}

// checkParams rejects parameters the endpoint does not know, the way Stripe
// does, so a typo in billingd fails in tests instead of being ignored.
// nested validates the bracket parts of structured parameters.
func checkParams(form url.Values, known func(name string) bool, nested func(name string, parts []string) bool) *failure {
	var buf [4]string
	for k := range form {
		name := topName(k)
		if !known(name) {
			return paramUnknown(k)
		}
		parts, ok := bracketParts(k, buf[:0])
		if !ok {
			return invalidValue(k, "Invalid parameter name: "+k)
		}
		switch name {
		case "metadata":
			if len(parts) > 1 || len(parts) == 1 && parts[0] == "" {
				return invalidValue(k, "Invalid metadata key: "+k)
			}
		case "expand":
			if len(parts) > 1 {
				return paramUnknown(k)
			}
		default:
			if len(parts) > 0 && (nested == nil || !nested(name, parts)) {
				return paramUnknown(k)
			}
		}
	}
	return nil
}

// str returns the (first) value of a scalar parameter.
func str(form url.Values, name string) string {
	if v := form[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func has(form url.Values, name string) bool { return len(form[name]) > 0 }

func parseBool(form url.Values, name string) (bool, *failure) {
	switch v := str(form, name); v {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	default:
		return false, invalidValue(name, "Invalid boolean: "+v)
	}
}

func parseInt(form url.Values, name string) (int64, *failure) {
	v := str(form, name)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, invalidInteger(name, v)
	}
	return n, nil
}

// parseMetadata collects metadata[k]=v pairs with Stripe's limits. Empty
// values are dropped: on create, Stripe treats them as "unset".
func parseMetadata(form url.Values) (map[string]string, *failure) {
	md := map[string]string{}
	for k, vs := range form {
		if !strings.HasPrefix(k, "metadata[") || len(vs) == 0 || vs[0] == "" {
			continue
		}
		mk := k[len("metadata[") : len(k)-1]
		v := vs[0]
		switch {
		case len(mk) > 40:
			return nil, invalidValue(k, "Metadata keys can have up to 40 characters, but you passed in a key that is "+itoa(int64(len(mk)))+" characters.")
		case len(v) > 500:
			return nil, invalidValue(k, "Metadata values can have up to 500 characters, but you passed in a value that is "+itoa(int64(len(v)))+" characters.")
		}
		md[mk] = v
	}
	if len(md) > 50 {
		return nil, invalidValue("metadata", "You can have at most 50 metadata keys, but you passed in "+itoa(int64(len(md)))+".")
	}
	return md, nil
}

// indexed collects an array parameter such as payment_method_types[0] or
// items[1][price] into index order. field selects the trailing part ("" for
// a plain array element).
func indexed(form url.Values, name string) (map[int]map[string]string, *failure) {
	var out map[int]map[string]string
	for k, vs := range form {
		if topName(k) != name || len(vs) == 0 {
			continue
		}
		parts, _ := bracketParts(k, nil)
		if len(parts) == 0 {
			return nil, invalidValue(k, "Invalid array: "+name)
		}
		idx, err := strconv.Atoi(parts[0])
		if parts[0] == "" {
			idx, err = len(out), nil // name[]=a&name[]=b
		}
		if err != nil || idx < 0 {
			return nil, invalidValue(k, "Invalid array index in "+k)
		}
		field := ""
		if len(parts) > 1 {
			field = parts[1]
		}
		if out == nil {
			out = map[int]map[string]string{}
		}
		if out[idx] == nil {
			out[idx] = map[string]string{}
		}
		if parts[0] == "" {
			for i, v := range vs {
				if out[idx+i] == nil {
					out[idx+i] = map[string]string{}
				}
				out[idx+i][field] = v
			}
			continue
		}
		out[idx][field] = vs[0]
	}
	return out, nil
}

func sortedIndexes(m map[int]map[string]string) []int {
	idx := make([]int, 0, len(m))
	for i := range m {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return idx
}
