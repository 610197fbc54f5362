package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
)

// A SIGKILL while records wait for the customer (REQUIRES_ACTION) or the
// bank (PROCESSING) leaves them followed: what happened at Stripe while
// billingd was down is picked up by the restarted process's reconciler, and
// no PaymentIntent is ever created a second time.
func TestCrashLeavesFollowedRecordsFollowed(t *testing.T) {
	t.Parallel()
	const (
		n   = 12
		key = "sk_test_billingd_follow_crash"
	)
	sim := stripesim.New(stripesim.Config{APIKeys: []string{key}})
	hs := httptest.NewServer(sim)
	t.Cleanup(hs.Close)
	db := filepath.Join(t.TempDir(), "billingd.db")
	addr := freeAddr(t)
	conn := dial(t, addr)
	client := billingv1.NewBillingServiceClient(conn)
	start := func(life int) *instance {
		p := execBillingd(t, fmt.Sprintf("billingd-follow-%d", life),
			[]string{"STRIPE_SECRET_KEY=" + key, "BILLINGD_STORE="},
			"--listen", addr, "--db", db, "--stripe-url", hs.URL, "--stripe-rate", "off", "--reconcile-interval", "100ms")
		waitServing(t, conn, p, p.exited)
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	proc := start(1)
	// Three of every four wait for 3-D Secure, the fourth is processing.
	reqs := make([]*billingv1.ChargeRequest, n)
	pis := make([]string, n)
	for i := range reqs {
		pm := "pm_card_authenticationRequired"
		if i%4 == 3 {
			pm = stripesim.SimProcessingPaymentMethod
		}
		reqs[i] = &billingv1.ChargeRequest{RequestId: fmt.Sprintf("follow-%02d", i), Amount: 1000, Currency: "usd", PaymentMethodId: pm}
		resp, err := client.Charge(ctx, reqs[i], grpc.WaitForReady(true))
		if err != nil || (resp.GetStatus() != "requires_action" && resp.GetStatus() != "processing") {
			t.Fatalf("Charge %d = %v, %v", i, resp, err)
		}
		pis[i] = resp.GetPaymentIntentId()
	}
	proc.kill(t)

	// While billingd is dead: customers finish (one in three fails), the
	// bank settles.
	want := make([]service.State, n)
	for i, pi := range pis {
		switch {
		case i%4 == 3:
			if err := sim.Settle(pi, true); err != nil {
				t.Fatal(err)
			}
			want[i] = service.StateSucceeded
		case i%3 == 0:
			if err := sim.Authenticate(pi, false); err != nil {
				t.Fatal(err)
			}
			want[i] = service.StateFailed
		default:
			if err := sim.Authenticate(pi, true); err != nil {
				t.Fatal(err)
			}
			want[i] = service.StateSucceeded
		}
	}
	store, err := storage.OpenReadOnly(db)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		rec, found, err := store.Get(ctx, "anonymous", r.GetRequestId())
		if err != nil || !found || !rec.State.Followed() {
			t.Fatalf("after the kill, record %d = %v %v, %v; want a followed state", i, rec.State, found, err)
		}
	}
	_ = store.Close()

	proc = start(2)
	deadline := time.Now().Add(20 * time.Second)
	for i, r := range reqs {
		for {
			op, err := client.GetOperation(ctx, &billingv1.GetOperationRequest{RequestId: r.GetRequestId()})
			if err != nil {
				t.Fatalf("GetOperation %d: %v", i, err)
			}
			if op.GetState() == billingv1.Operation_State(want[i]) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("record %d = %v, want %v", i, op.GetState(), want[i])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	proc.stop(t)
	// The log says the drain finished, and that it left nothing open.
	if b, _ := os.ReadFile(proc.log); !strings.Contains(string(b), `"msg":"stopped","drained":true,"left_pending":0`) {
		t.Errorf("no drain outcome in the log:\n%s", tail(b, 2000))
	}
	byKey := paymentIntentsByKey(sim)
	for i, r := range reqs {
		got := byKey[service.RequestKey("anonymous", r.GetRequestId())]
		if len(got) != 1 || got[0].ID != pis[i] {
			t.Errorf("request %d: %d PaymentIntents, want exactly %s", i, len(got), pis[i])
		}
	}
	if st := sim.Stats(); st.PaymentIntentsCreated != n {
		t.Errorf("PaymentIntents created = %d, want %d", st.PaymentIntentsCreated, n)
	}
}
