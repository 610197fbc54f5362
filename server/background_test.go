package server_test

import (
	"bytes"
	"net"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
)

// The background recovers what was left open, serves the admin socket and
// the webhook endpoint, and takes them all down on Stop and Wait.
func TestBackgroundRecoversAndServes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOpts{})
	// Every answer to the create is lost: the record stays PENDING.
	h.sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 4)
	if _, err := h.client.Charge(h.ctx(), visa("left-open")); err == nil {
		t.Fatal("Charge answered OK with every answer lost")
	}
	if rec, _ := h.record(caller, "left-open"); rec.State != service.StatePending {
		t.Fatalf("record %v, want PENDING before the background starts", rec.State)
	}

	hooks, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultBackgroundConfig()
	cfg.AdminPath = h.dbPath
	cfg.Webhooks, cfg.WebhookSecret = hooks, whsec
	bg, err := h.srv.StartBackground(cfg, h.db)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			bg.Stop()
			bg.Wait()
		}
	})

	// The reconciler's first pass re-sends the key, which Stripe replays.
	rec := waitState(t, h, "left-open", service.StateSucceeded)
	if pis := h.intentsFor(caller, "left-open"); len(pis) != 1 || rec.Result.ObjectID != pis[0].ID {
		t.Fatalf("record %+v, PIs %+v", rec.Result, pis)
	}
	if got := bg.Reconciler().Stats().Redriven; got < 1 {
		t.Errorf("reconciler redriven = %d, want the open record", got)
	}

	sock := server.AdminSocketPath(h.dbPath)
	resp, err := server.AdminClient(sock).Get("http://billingd/record?caller=" + caller + "&request_id=left-open")
	if err != nil {
		t.Fatalf("admin socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("admin record: status %d", resp.StatusCode)
	}

	hookURL := (&url.URL{Scheme: "http", Host: hooks.Addr().String(), Path: server.WebhookPath}).String()
	payload := []byte(`{"id":"evt_bg","object":"event","type":"ping.test","data":{"object":{}}}`)
	req, _ := http.NewRequest(http.MethodPost, hookURL, bytes.NewReader(payload))
	req.Header.Set("Stripe-Signature", stripesim.SignWebhook(payload, whsec, time.Now()))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("signed webhook: status %d, want 200", resp.StatusCode)
	}

	bg.Stop()
	bg.Wait()
	stopped = true
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("admin socket after Wait: %v, want it removed", err)
	}
	if _, err := http.Post(hookURL, "application/json", bytes.NewReader(payload)); err == nil {
		t.Error("webhook endpoint still answers after Wait")
	}
}
