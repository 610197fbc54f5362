package stripeapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

// wrapped is what stripe-go's CallRaw decodes an answer into: a wrapper
// around v (for its telemetry) whose UnmarshalJSON calls json.Unmarshal on
// v, as stripe-go's metricsResponseSetter does.
type wrapped struct{ v any }

func (w *wrapped) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, w.v) }

// BenchmarkDecodeCreatedIntent decodes a PaymentIntent create's answer from
// the simulator as callRaw does (once) and as CallRaw did (wrapped).
func BenchmarkDecodeCreatedIntent(b *testing.B) {
	sim := stripesim.New(stripesim.Config{Seed: 1})
	defer sim.Close()
	req := httptest.NewRequest(http.MethodPost, "/v1/payment_intents", strings.NewReader(
		"amount=2000&confirm=true&currency=usd&metadata[billingd_caller]=bench&payment_method=pm_card_visa&payment_method_types[0]=card"))
	req.Header.Set("Authorization", "Bearer sk_test_billingd_bench")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rr := httptest.NewRecorder()
	sim.ServeHTTP(rr, req)
	if rr.Code != http.StatusOK {
		b.Fatalf("create: %d %s", rr.Code, rr.Body)
	}
	body := rr.Body.Bytes()
	for _, c := range []struct {
		name string
		into func(*createdIntent) any
	}{
		{"once", func(pi *createdIntent) any { return pi }},
		{"wrapped", func(pi *createdIntent) any { return &wrapped{pi} }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var pi createdIntent
				if err := json.Unmarshal(body, c.into(&pi)); err != nil || pi.ID == "" {
					b.Fatalf("decode: %v (id %q)", err, pi.ID)
				}
			}
		})
	}
}
