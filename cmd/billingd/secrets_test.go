package main

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/internal/stripesim"
)

// The secrets of TestSecretsNeverLeak: distinctive, so a grep cannot miss them.
const (
	leakStripeKey   = "sk_test_leakcheck_7Q2w9E4r6T1y"
	leakRejectedKey = "sk_test_leakcheck_rejected_3Z8x5C"
	leakWebhook     = "whsec_leakcheck_N4m7B1v9"
	leakTokenA      = "tokA_leakcheck_P0o9I8u7"
	leakTokenB      = "tokB_leakcheck_L5k4J3h2"
)

// billingd is one `billingd serve` run by the test through run().
type billingd struct {
	addr   string
	client billingv1.BillingServiceClient
	stop   func() error
}

// startBillingd runs `billingd serve args...` with env until the test stops
// it, writing stdout and stderr to out, and waits until it serves.
func startBillingd(t *testing.T, args []string, env map[string]string, out *syncBuffer) *billingd {
	t.Helper()
	addr := freeAddr(t)
	db := filepath.Join(t.TempDir(), "billingd.db")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", addr, "--db", db, "--log-format", "json"}, args...), envMap(env), out, out)
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	waitServing(t, conn, out, done)
	b := &billingd{addr: addr, client: billingv1.NewBillingServiceClient(conn)}
	stopped := false
	b.stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		_ = conn.Close()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("billingd did not stop within 30s")
		}
	}
	t.Cleanup(func() { _ = b.stop() })
	return b
}

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestSecretsNeverLeak runs full billingd instances against a simulator that
// accepts exactly one distinctive Stripe key, through a success, a decline,
// payments waiting for 3-D Secure (their client_secrets included),
// unauthenticated calls, a Stripe 401 (a second instance with a key the
// simulator rejects), --help and refused configurations; then it greps every
// log line, error and status (details included) for every secret.
// (Panics are covered at the server level, with the production logger, by
// server.TestPanicLeaksNoSecret: cmd exposes no way to make a handler panic.)
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	sim := stripesim.New(stripesim.Config{Seed: 1, APIKeys: []string{leakStripeKey}})
	hs := httptest.NewServer(sim)
	defer hs.Close()

	var out syncBuffer // every byte billingd writes
	var seen []string  // every error and status the test received
	note := func(err error) {
		if err == nil {
			return
		}
		seen = append(seen, err.Error())
		if st, ok := status.FromError(err); ok {
			seen = append(seen, prototext.Format(st.Proto()))
		}
	}
	env := map[string]string{
		"STRIPE_SECRET_KEY":     leakStripeKey,
		"STRIPE_WEBHOOK_SECRET": leakWebhook,
		"BILLING_AUTH_TOKENS":   "caller_a:" + leakTokenA + ",caller_b:" + leakTokenB,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	b := startBillingd(t, []string{"--stripe-url", hs.URL, "--webhook-listen", "127.0.0.1:0"}, env, &out)
	resp, err := b.client.Charge(bearer(ctx, leakTokenA), &billingv1.ChargeRequest{
		RequestId: "leak-1", Amount: 1500, Currency: "usd", PaymentMethodId: "pm_card_visa"})
	if err != nil || resp.GetStatus() != "succeeded" {
		t.Fatalf("success: %v, %v", resp, err)
	}
	_, err = b.client.Charge(bearer(ctx, leakTokenB), &billingv1.ChargeRequest{
		RequestId: "leak-2", Amount: 1500, Currency: "usd", PaymentMethodId: "pm_card_chargeDeclined"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("decline: %v", err)
	}
	note(err)
	op, err := b.client.GetOperation(bearer(ctx, leakTokenB), &billingv1.GetOperationRequest{RequestId: "leak-2"})
	if err != nil {
		t.Errorf("GetOperation: %v", err)
	}
	seen = append(seen, prototext.Format(op))
	// Payments that wait for the customer: their client_secret goes to the
	// owning caller's answers and nowhere else.
	var clientSecrets []string
	threeDS, err := b.client.Charge(bearer(ctx, leakTokenA), &billingv1.ChargeRequest{
		RequestId: "leak-3ds", Amount: 1500, Currency: "usd", PaymentMethodId: "pm_card_threeDSecure2Required"})
	if err != nil || threeDS.GetStatus() != "requires_action" || threeDS.GetClientSecret() == "" {
		t.Fatalf("3-D Secure charge: %v, %v", threeDS, err)
	}
	clientSecrets = append(clientSecrets, threeDS.GetClientSecret())
	_, err = b.client.Charge(bearer(ctx, leakTokenA), &billingv1.ChargeRequest{
		RequestId: "leak-off", Amount: 1500, Currency: "usd", PaymentMethodId: "pm_card_authenticationRequired",
		CustomerId: "cus_demo", OffSession: proto.Bool(true)})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("off session: %v", err)
	}
	note(err)
	offOp, err := b.client.GetOperation(bearer(ctx, leakTokenA), &billingv1.GetOperationRequest{RequestId: "leak-off"})
	if err != nil || offOp.GetCharge().GetClientSecret() == "" {
		t.Fatalf("GetOperation of the off-session charge: %v, %v", offOp, err)
	}
	clientSecrets = append(clientSecrets, offOp.GetCharge().GetClientSecret())
	// Another caller learns nothing of them.
	for _, id := range []string{"leak-3ds", "leak-off"} {
		_, err := b.client.GetOperation(bearer(ctx, leakTokenB), &billingv1.GetOperationRequest{RequestId: id})
		if status.Code(err) != codes.NotFound {
			t.Errorf("caller B's GetOperation of %s: %v", id, err)
		}
		note(err)
	}
	for _, c := range []context.Context{ctx, bearer(ctx, leakTokenA+"x"), bearer(ctx, leakTokenA[:8])} {
		_, err = b.client.Charge(c, &billingv1.ChargeRequest{RequestId: "leak-3", Amount: 1, Currency: "usd", PaymentMethodId: "pm_card_visa"})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("bad token: %v", err)
		}
		note(err)
	}
	if err := b.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}

	// A key the simulator refuses: Stripe answers 401.
	env401 := map[string]string{"STRIPE_SECRET_KEY": leakRejectedKey, "BILLING_AUTH_TOKENS": env["BILLING_AUTH_TOKENS"]}
	b401 := startBillingd(t, []string{"--stripe-url", hs.URL}, env401, &out)
	_, err = b401.client.Charge(bearer(ctx, leakTokenA), &billingv1.ChargeRequest{
		RequestId: "leak-4", Amount: 1500, Currency: "usd", PaymentMethodId: "pm_card_visa"})
	if st := status.Convert(err); st.Code() != codes.Internal || !strings.Contains(prototext.Format(st.Proto()), "STRIPE_AUTH") {
		t.Errorf("Stripe 401: %v, want INTERNAL STRIPE_AUTH", err)
	}
	note(err)
	if err := b401.stop(); err != nil {
		t.Errorf("stop: %v", err)
	}

	// --help, and configurations refused at start.
	var help bytes.Buffer
	if err := run(ctx, []string{"serve", "--help"}, envMap(env), &help, &help); !errors.Is(err, errHelp) {
		t.Errorf("--help: %v", err)
	}
	seen = append(seen, help.String())
	badTokens := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(badTokens, []byte("# callers\ncaller_a:"+leakTokenA+"\n"+leakTokenB+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		args []string
		env  map[string]string
	}{
		{nil, map[string]string{"STRIPE_SECRET_KEY": leakStripeKey, "BILLING_AUTH_TOKENS": "caller a:" + leakTokenA}},
		{nil, map[string]string{"STRIPE_SECRET_KEY": leakStripeKey, "BILLING_AUTH_TOKENS": leakTokenA}},
		{nil, map[string]string{"STRIPE_SECRET_KEY": leakStripeKey, "BILLING_AUTH_TOKENS": "caller_a:" + leakTokenA + ",caller_b:" + leakTokenA}},
		{[]string{"--auth-tokens-file", badTokens}, map[string]string{"STRIPE_SECRET_KEY": leakStripeKey}},
	} {
		var o bytes.Buffer
		err := run(ctx, append([]string{"serve", "--db", filepath.Join(t.TempDir(), "x.db"), "--stripe-url", hs.URL}, bad.args...), envMap(bad.env), &o, &o)
		if err == nil {
			t.Errorf("bad tokens %v accepted", bad)
			continue
		}
		seen = append(seen, err.Error(), o.String())
	}

	all := out.String() + "\n" + strings.Join(seen, "\n")
	if !strings.Contains(all, "billingd serving") || !strings.Contains(all, "STRIPE_AUTH") || !strings.Contains(all, "Unauthenticated") {
		t.Errorf("the run did not log what it should have; output:\n%s", all)
	}
	for _, secret := range append([]string{leakStripeKey, leakRejectedKey, leakWebhook, leakTokenA, leakTokenB}, clientSecrets...) {
		if strings.Contains(all, secret) {
			t.Errorf("secret %q appears in the output:\n%s", secret, all)
		}
		// Not even most of it: a truncated secret is still a leak.
		if strings.Contains(all, secret[:len(secret)-4]) {
			t.Errorf("a prefix of secret %q appears in the output", secret)
		}
	}
}
