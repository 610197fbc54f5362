package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/billingd/billingd/interceptors"
)

// tokensEnv holds caller tokens inline: "caller_a:token_a,caller_b:token_b".
const tokensEnv = "BILLING_AUTH_TOKENS"

// callerTokens reads the caller tokens from file (one caller:token per line,
// blank lines and # comments skipped) or from BILLING_AUTH_TOKENS; not both.
// None at all is not an error: billingd then runs open, on loopback only.
// Errors say where (the entry or line number), never what: an entry that
// fails to parse may be a token.
func callerTokens(file string, getenv func(string) string) (*interceptors.Tokens, error) {
	inline := strings.TrimSpace(getenv(tokensEnv))
	if file != "" && inline != "" {
		return nil, errors.New("caller tokens come from " + tokensEnv + " or --auth-tokens-file, not both")
	}
	var t interceptors.Tokens
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read --auth-tokens-file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := addToken(&t, line); err != nil {
				return nil, fmt.Errorf("--auth-tokens-file line %d: %w", n, err)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read --auth-tokens-file: %w", err)
		}
		if t.Len() == 0 {
			return nil, errors.New("--auth-tokens-file holds no caller:token line")
		}
		return &t, nil
	}
	if inline == "" {
		return &t, nil
	}
	for i, entry := range strings.Split(inline, ",") {
		if err := addToken(&t, strings.TrimSpace(entry)); err != nil {
			return nil, fmt.Errorf("%s entry %d: %w", tokensEnv, i+1, err)
		}
	}
	return &t, nil
}

// addToken parses "caller:token" (the token may contain ':').
func addToken(t *interceptors.Tokens, entry string) error {
	caller, token, ok := strings.Cut(entry, ":")
	if !ok {
		return errors.New("not caller:token")
	}
	return t.Add(strings.TrimSpace(caller), strings.TrimSpace(token))
}
