package stripesim_test

import (
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

// A restarted simulator with billingd's default seed must not hand out an
// id its predecessor did: billingd keeps ids across restarts.
func TestIDsDifferAcrossInstancesWithOneSeed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      stripesim.Config
		wantSame bool
	}{
		{"default", stripesim.Config{Seed: 1}, false},
		{"reproducible ids", stripesim.Config{Seed: 1, ReproducibleIDs: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var ids, reqIDs [2]string
			for i := range ids {
				_, srv := newSim(t, tt.cfg)
				r := post(t, srv, "/v1/payment_intents", "", charge("pm_card_visa"))
				if r.status != 200 {
					t.Fatalf("create: %d %s", r.status, r.raw)
				}
				ids[i], reqIDs[i] = r.id(t), r.header.Get("Request-Id")
			}
			if got := ids[0] == ids[1]; got != tt.wantSame {
				t.Errorf("payment intent ids %s and %s: same = %v, want %v", ids[0], ids[1], got, tt.wantSame)
			}
			if got := reqIDs[0] == reqIDs[1]; got != tt.wantSame {
				t.Errorf("request ids %s and %s: same = %v, want %v", reqIDs[0], reqIDs[1], got, tt.wantSame)
			}
		})
	}
}
