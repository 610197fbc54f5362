package stripesim_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/billingd/billingd/internal/stripesim"
)

func TestMaxObjectsBoundsMemory(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{MaxObjects: 3})
	var ids []string
	for i := range 10 {
		f := charge("pm_card_visa")
		f.Set("metadata[order]", fmt.Sprint(i))
		ids = append(ids, post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", i), f).id(t))
	}
	pis := sim.PaymentIntents()
	if len(pis) != 3 || pis[0].ID != ids[7] || pis[2].ID != ids[9] {
		t.Fatalf("kept %d objects (%v), want the newest 3", len(pis), pis)
	}
	if got := get(t, srv, "/v1/payment_intents/"+ids[0]).status; got != http.StatusNotFound {
		t.Errorf("forgotten object: GET status %d, want 404", got)
	}
	if got := get(t, srv, "/v1/payment_intents/"+ids[9]).status; got != http.StatusOK {
		t.Errorf("kept object: GET status %d", got)
	}
	if body := get(t, srv, "/v1/payment_intents/search?query=metadata%5B%27order%27%5D%3A%270%27").object(t); len(body["data"].([]any)) != 0 {
		t.Errorf("search still finds a forgotten object: %v", body)
	}
	if body := get(t, srv, "/v1/payment_intents/search?query=metadata%5B%27order%27%5D%3A%279%27").object(t); len(body["data"].([]any)) != 1 {
		t.Errorf("search misses a kept object: %v", body)
	}
	// Idempotency keys beyond twice the bound are forgotten too: the oldest
	// key now executes anew (the documented cost of bounding), a recent one replays.
	again := post(t, srv, "/v1/payment_intents", "key-9", charge("pm_card_visa", "metadata[order]", "9"))
	if again.id(t) != ids[9] {
		t.Errorf("recent key did not replay: %s vs %s", again.id(t), ids[9])
	}
	if fresh := post(t, srv, "/v1/payment_intents", "key-0", charge("pm_card_visa", "metadata[order]", "0")).id(t); fresh == ids[0] {
		t.Error("oldest key replayed: idempotency entries are not bounded")
	}
}

// Pruning rebuilds the idempotency key map now and then, so that it does not
// keep the room of every key it ever held. Across rebuilds the keys still
// held replay and still check their parameters; the ones pruned execute anew.
func TestIdempotencyKeysSurviveMapRebuilds(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, stripesim.Config{MaxObjects: 3})
	const n = 600 // keeps 6 keys: ~594 pruned, a rebuild every 256
	var ids []string
	for i := range n {
		ids = append(ids, post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", i), charge("pm_card_visa", "metadata[order]", fmt.Sprint(i))).id(t))
	}
	if got := stripesim.IdemPrunedSinceRebuild(sim); got >= 256 {
		t.Fatalf("%d keys pruned since the last rebuild: the map was not rebuilt", got)
	}
	for _, i := range []int{n - 1, n - 6} {
		if again := post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", i), charge("pm_card_visa", "metadata[order]", fmt.Sprint(i))); again.id(t) != ids[i] {
			t.Errorf("key-%d did not replay: %s, want %s", i, again.id(t), ids[i])
		}
	}
	if other := post(t, srv, "/v1/payment_intents", fmt.Sprintf("key-%d", n-1), charge("pm_card_visa", "metadata[order]", "other")); other.status != http.StatusBadRequest || other.errBody(t).Type != "idempotency_error" {
		t.Errorf("key-%d with other parameters: status %d %s, want 400 idempotency_error", n-1, other.status, other.raw)
	}
	if fresh := post(t, srv, "/v1/payment_intents", "key-0", charge("pm_card_visa", "metadata[order]", "0")).id(t); fresh == ids[0] {
		t.Error("a pruned key replayed")
	}
}
