package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/postgres"
	"github.com/billingd/billingd/storage/postgres/pgtest"
)

func opsRecords() []service.Record {
	t0 := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	base := func(id string, st service.State) service.Record {
		return service.Record{Caller: "shop", RequestID: id, Method: service.MethodCharge, Fingerprint: []byte("fp"),
			StripeKey: "bd1_SECRETKEY_" + id, RequestKey: service.RequestKey("shop", id), State: st, Attempts: 1,
			Created: t0, FirstAttempt: t0, Updated: t0}
	}
	ok := base("order-1", service.StateSucceeded)
	ok.Result = service.Result{ObjectID: "pi_123", Status: "succeeded", Amount: 2000, Currency: "usd"}
	stuck := base("order-2", service.StateIndeterminate)
	stuck.Err = &service.Error{Reason: service.ReasonOutcomePending, Message: "being reconciled"}
	return []service.Record{ok, stuck}
}

func writeRecords(t *testing.T, db *storage.DB) {
	t.Helper()
	for _, r := range opsRecords() {
		if err := db.Put(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
}

func runOps(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errw bytes.Buffer
	err := run(context.Background(), append([]string{"ops"}, args...), func(string) string { return "" }, &out, &errw)
	if strings.Contains(out.String()+errw.String(), "SECRETKEY") {
		t.Errorf("ops printed a Stripe key:\n%s", out.String())
	}
	return out.String(), err
}

// checkOps runs list and show against dbPath and checks what they print.
func checkOps(t *testing.T, dbPath string) {
	t.Helper()
	out, err := runOps(t, "list", "--db", dbPath, "--json")
	if err != nil {
		t.Fatalf("ops list: %v", err)
	}
	var recs []server.AdminRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("list JSON: %v\n%s", err, out)
	}
	if len(recs) != 2 || recs[0].StripeObjectID != "pi_123" || recs[1].State != "INDETERMINATE" {
		t.Errorf("list = %+v", recs)
	}

	out, err = runOps(t, "list", "--db", dbPath, "--state", "INDETERMINATE")
	if err != nil {
		t.Fatalf("ops list --state: %v", err)
	}
	if !strings.Contains(out, "order-2") || strings.Contains(out, "order-1") || !strings.Contains(out, "OUTCOME_PENDING_RECONCILIATION") {
		t.Errorf("table:\n%s", out)
	}

	out, err = runOps(t, "show", "order-1", "--caller", "shop", "--db", dbPath, "--json")
	if err != nil {
		t.Fatalf("ops show: %v", err)
	}
	var one server.AdminRecord
	if err := json.Unmarshal([]byte(out), &one); err != nil || one.RequestID != "order-1" || one.Amount != 2000 {
		t.Errorf("show = %+v, %v", one, err)
	}
	if _, err := runOps(t, "show", "order-1", "--caller", "someone-else", "--db", dbPath); err == nil {
		t.Error("show found another caller's record")
	}
}

func TestOpsReadsFreeFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	db, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	checkOps(t, path)
}

// While a server holds the file lock, ops asks it over the admin socket.
func TestOpsAsksRunningServer(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	db, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	writeRecords(t, db)
	if _, err := storage.OpenReadOnly(path, storage.WithLockTimeout(50*time.Millisecond)); err == nil {
		t.Fatal("the file is not locked: this test would not test the socket")
	}
	stop, err := server.ServeAdmin(server.AdminSocketPath(path), db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	checkOps(t, path)
}

func TestAdminSocketIsPrivateAndRemoved(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	db, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	sock := server.AdminSocketPath(path)
	stop, err := server.ServeAdmin(sock, db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode = %v, %v; want a 0600 socket", fi.Mode(), err)
	}
	stop()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestWebhookFlagsNeedSecret(t *testing.T) {
	t.Parallel()
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr bool
	}{
		{"off by default", nil, map[string]string{"STRIPE_SECRET_KEY": "sk_test_x"}, false},
		{"no secret", []string{"--webhook-listen", "127.0.0.1:0"}, map[string]string{"STRIPE_SECRET_KEY": "sk_test_x"}, true},
		{"secret from env", []string{"--webhook-listen", "127.0.0.1:0"}, map[string]string{"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"}, false},
		{"simulator generates one", []string{"--stripe-sim", "--webhook-listen", "127.0.0.1:0"}, nil, false},
		{"retention under a day", []string{"--stripe-sim", "--retention", "1h"}, nil, true},
		{"env sets listen", nil, map[string]string{"STRIPE_SECRET_KEY": "sk_test_x", "BILLINGD_WEBHOOK_LISTEN": "127.0.0.1:0"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseServe(tt.args, env(tt.env), io.Discard)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "whsec_") {
				t.Errorf("error leaks the secret: %v", err)
			}
			if err == nil && c.WebhookListen != "" && c.webhookSecret == "" && !c.StripeSim {
				t.Error("webhooks on without a secret")
			}
		})
	}
}

// serve with the simulator and webhooks: the admin socket answers ops while
// the server holds the file, no secret reaches the logs, and shutdown
// removes the socket.
func TestServeRecoveryWiring(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	db := filepath.Join(t.TempDir(), "billingd.db")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--stripe-sim", "--listen", addr, "--db", db, "--webhook-listen", "127.0.0.1:0",
			"--reconcile-interval", "50ms"}, envMap(nil), &logs, &logs)
	}()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := billingv1.NewBillingServiceClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	var resp *billingv1.ChargeResponse
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err = client.Charge(cctx, &billingv1.ChargeRequest{RequestId: "ops-1", Amount: 500, Currency: "eur", PaymentMethodId: "pm_card_visa"})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Charge: %v; logs:\n%s", err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, err := runOps(t, "show", "ops-1", "--caller", "anonymous", "--db", db, "--json")
	if err != nil {
		t.Fatalf("ops show while serving: %v", err)
	}
	var rec server.AdminRecord
	if err := json.Unmarshal([]byte(out), &rec); err != nil || rec.StripeObjectID != resp.GetPaymentIntentId() || rec.State != "SUCCEEDED" {
		t.Errorf("ops show = %+v, %v", rec, err)
	}
	// The simulator's webhooks reach billingd (the record is final: "final").
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), `"outcome":"final"`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), `"outcome":"final"`) {
		t.Errorf("no webhook handled; logs:\n%s", logs.String())
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop within 30s")
	}
	if strings.Contains(logs.String(), "whsec_") {
		t.Error("logs contain the webhook secret")
	}
	if _, err := os.Stat(server.AdminSocketPath(db)); !os.IsNotExist(err) {
		t.Errorf("admin socket left behind: %v", err)
	}
}

// With --store, ops reads the PostgreSQL database the replicas share.
func TestOpsPostgres(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pg, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range opsRecords() {
		if err := pg.Put(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := pg.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runOps(t, "list", "--store", dsn, "--json")
	if err != nil {
		t.Fatalf("ops list: %v", err)
	}
	var recs []server.AdminRecord
	if err := json.Unmarshal([]byte(out), &recs); err != nil {
		t.Fatalf("list JSON: %v\n%s", err, out)
	}
	if len(recs) != 2 || recs[0].StripeObjectID != "pi_123" || recs[1].State != "INDETERMINATE" {
		t.Errorf("list = %+v", recs)
	}
	out, err = runOps(t, "show", "order-2", "--caller", "shop", "--store", dsn)
	if err != nil || !strings.Contains(out, "OUTCOME_PENDING_RECONCILIATION") {
		t.Errorf("show = %v\n%s", err, out)
	}
	if _, err := runOps(t, "show", "order-9", "--caller", "shop", "--store", dsn); err == nil {
		t.Error("show of an unknown record succeeded")
	}
}

// Without authentication every record belongs to "anonymous": ops show
// finds it without --caller.
func TestOpsShowDefaultsToAnonymous(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "billingd.db")
	db, err := storage.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := opsRecords()[0]
	rec.Caller, rec.RequestKey = "anonymous", service.RequestKey("anonymous", rec.RequestID)
	if err := db.Put(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runOps(t, "show", rec.RequestID, "--db", path, "--json")
	var one server.AdminRecord
	if err != nil || json.Unmarshal([]byte(out), &one) != nil || one.Caller != "anonymous" || one.RequestID != rec.RequestID {
		t.Fatalf("ops show without --caller = %q, %v", out, err)
	}
}

// --help asks for the usage: printed, exit 0, for every command.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"ops", "list", "--help"}} {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), runAsBillingd+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "sage") {
			t.Errorf("billingd %v: %v\n%s", args, err, out)
		}
	}
}
