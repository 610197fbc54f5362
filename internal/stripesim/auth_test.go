package stripesim_test

import (
	"encoding/base64"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestAuthentication(t *testing.T) {
	t.Parallel()
	const (
		allowed   = "sk_test_allowedallowedallowed1"
		forbidden = "rk_test_forbiddenforbidden9876"
	)
	tests := []struct {
		name       string
		cfg        stripesim.Config
		header     string
		wantStatus int
		wantMasked string // must appear in the message
		secret     string // must not appear in the message
	}{
		{"any sk_test key by default", stripesim.Config{}, "Bearer sk_test_whatever", 200, "", ""},
		{"basic auth", stripesim.Config{}, "Basic " + base64.StdEncoding.EncodeToString([]byte("sk_test_whatever:")), 200, "", ""},
		{"missing", stripesim.Config{}, "", 401, "did not provide an API key", ""},
		{"live key refused by default", stripesim.Config{}, "Bearer sk_live_0123456789abcdef", 401, "sk_live_************cdef", "sk_live_0123456789abcdef"},
		{"configured key", stripesim.Config{APIKeys: []string{allowed}}, "Bearer " + allowed, 200, "", ""},
		{"not configured", stripesim.Config{APIKeys: []string{allowed}}, "Bearer sk_test_otherotherother4321", 401, "****4321", "sk_test_otherotherother4321"},
		{"forbidden", stripesim.Config{ForbiddenKeys: []string{forbidden}}, "Bearer " + forbidden, 403, "rk_test_****", forbidden},
		{"not bearer", stripesim.Config{}, "Token sk_test_x", 401, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, srv := newSim(t, tt.cfg)
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/v1/customers/cus_demo", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if !strings.HasPrefix(resp.Header.Get("Request-Id"), "req_") {
				t.Errorf("Request-Id = %q", resp.Header.Get("Request-Id"))
			}
			if tt.wantStatus == 200 {
				return
			}
			raw, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body := string(raw)
			if !strings.Contains(body, tt.wantMasked) || tt.secret != "" && strings.Contains(body, tt.secret) {
				t.Errorf("body %s: want it to contain %q and not the key", body, tt.wantMasked)
			}
			if !strings.Contains(body, `"type":"invalid_request_error"`) {
				t.Errorf("body %s: want type invalid_request_error", body)
			}
		})
	}
}

func TestMaskKey(t *testing.T) {
	t.Parallel()
	tests := []struct{ key, want string }{
		{"sk_test_4eC39HqLyjWDarjtT1zdp7dc", "sk_test_********************p7dc"},
		{"rk_live_abcdefghij", "rk_live_******ghij"},
		{"sk_test_short", "sk_test_****"},
		{"whatever", "****"},
		{"", "****"},
	}
	for _, tt := range tests {
		if got := stripesim.MaskKey(tt.key); got != tt.want {
			t.Errorf("MaskKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}
