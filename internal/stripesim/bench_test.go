package stripesim_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

// BenchmarkServeHTTP measures the simulator's own cost per request,
// without a network, for the shapes of traffic billingd produces.
func BenchmarkServeHTTP(b *testing.B) {
	body := charge("pm_card_visa").Encode()
	var n atomic.Int64
	cases := []struct {
		name string
		req  func() *http.Request
	}{
		{"create", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/v1/payment_intents", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Idempotency-Key", "bench-"+strconv.FormatInt(n.Add(1), 10))
			return r
		}},
		{"replay", func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/v1/payment_intents", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Idempotency-Key", "bench-replay")
			return r
		}},
		{"get", func() *http.Request {
			return httptest.NewRequest(http.MethodGet, "/v1/customers/cus_demo", nil)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			sim := stripesim.New(stripesim.Config{})
			warm := c.req() // makes "replay" a replay from the start
			warm.Header.Set("Authorization", "Bearer "+testKey)
			sim.ServeHTTP(httptest.NewRecorder(), warm)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := c.req()
					r.Header.Set("Authorization", "Bearer "+testKey)
					w := httptest.NewRecorder()
					sim.ServeHTTP(w, r)
					if w.Code != 200 {
						b.Errorf("status %d: %s", w.Code, w.Body)
						return
					}
				}
			})
		})
	}
}
