package stripeapi_test

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/service"
)

// TestStripeMockConformance sends our requests to stripe-mock, which checks
// them against Stripe's OpenAPI spec: a request Stripe would reject for its
// shape fails here. stripe-mock answers with fixtures, so only the shape of
// requests and the decoding of answers are tested, not Stripe's behaviour.
func TestStripeMockConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs stripe-mock")
	}
	base := startStripeMock(t)
	c, err := stripeapi.New(stripeapi.Config{Key: "sk_test_123", URL: base})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	md := map[string]string{"billingd_request_key": "rk_conformance", "billingd_caller": "shop", "order": "42"}

	t.Run("CreatePaymentIntent", func(t *testing.T) {
		r, err := c.CreatePaymentIntent(ctx, "bd1_pi_plain", service.ChargeParams{
			Amount: 2000, Currency: "usd", PaymentMethodID: "pm_card_visa", Metadata: md,
		})
		if err != nil {
			t.Fatalf("CreatePaymentIntent: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" {
			t.Errorf("result %+v lacks id or status", r)
		}
	})
	t.Run("CreatePaymentIntent with customer", func(t *testing.T) {
		r, err := c.CreatePaymentIntent(ctx, "bd1_pi_customer", service.ChargeParams{
			Amount: 2000, Currency: "usd", CustomerID: "cus_123", PaymentMethodID: "pm_card_visa",
			Description: "order 42", Metadata: md,
		})
		if err != nil {
			t.Fatalf("CreatePaymentIntent: %v", err)
		}
		if r.ObjectID == "" {
			t.Errorf("result %+v lacks id", r)
		}
	})
	t.Run("CreatePaymentIntent off session, manual capture", func(t *testing.T) {
		r, err := c.CreatePaymentIntent(ctx, "bd1_pi_manual", service.ChargeParams{
			Amount: 2000, Currency: "usd", CustomerID: "cus_123", PaymentMethodID: "pm_card_visa",
			Metadata: md, OffSession: true, CaptureMethod: "manual",
		})
		if err != nil {
			t.Fatalf("CreatePaymentIntent: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" {
			t.Errorf("result %+v lacks id or status", r)
		}
	})
	t.Run("GetPaymentIntent", func(t *testing.T) {
		r, err := c.GetPaymentIntent(ctx, "pi_123")
		if err != nil {
			t.Fatalf("GetPaymentIntent: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" || r.Currency == "" {
			t.Errorf("result %+v lacks id, status or currency", r)
		}
	})
	// The subscription calls send payment_behavior=default_incomplete (an
	// enum stripe-mock checks) and expand latest_invoice.payment_intent
	// (data.-prefixed for the search). stripe-mock accepts any expand path,
	// and its spec is of an API version newer than stripe-go v76's
	// 2023-10-16, without invoice.payment_intent: it answers with
	// latest_invoice expanded and no PaymentIntent, so PaymentStatus stays
	// empty here. The expanded shapes are TestSubscriptionShapes' job.
	t.Run("CreateSubscription", func(t *testing.T) {
		r, err := c.CreateSubscription(ctx, "bd1_sub", service.SubscribeParams{
			CustomerID: "cus_123", PriceID: "price_123", Quantity: 2, Metadata: md,
		})
		if err != nil {
			t.Fatalf("CreateSubscription: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" {
			t.Errorf("result %+v lacks id or status", r)
		}
	})
	t.Run("GetSubscription", func(t *testing.T) {
		r, err := c.GetSubscription(ctx, "sub_123")
		if err != nil {
			t.Fatalf("GetSubscription: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" {
			t.Errorf("result %+v lacks id or status", r)
		}
	})
	t.Run("FindPaymentIntent", func(t *testing.T) {
		r, found, err := c.FindPaymentIntent(ctx, "rk_conformance")
		if err != nil {
			t.Fatalf("FindPaymentIntent: %v", err)
		}
		if !found || r.ObjectID == "" {
			t.Errorf("got %+v, found=%v; want a hit (stripe-mock answers every search)", r, found)
		}
	})
	t.Run("FindSubscription", func(t *testing.T) {
		r, found, err := c.FindSubscription(ctx, "rk_conformance")
		if err != nil {
			t.Fatalf("FindSubscription: %v", err)
		}
		if !found || r.ObjectID == "" || r.Status == "" {
			t.Errorf("got %+v, found=%v; want a hit (stripe-mock answers every search)", r, found)
		}
	})
	t.Run("CreateRefund", func(t *testing.T) {
		for _, p := range []service.RefundParams{
			{PaymentIntentID: "pi_123", Metadata: md},
			{PaymentIntentID: "pi_123", Amount: 500, Reason: "requested_by_customer", Metadata: md},
		} {
			r, err := c.CreateRefund(ctx, "bd1_refund_"+p.Reason, p)
			if err != nil {
				t.Fatalf("CreateRefund(%+v): %v", p, err)
			}
			if r.ObjectID == "" || r.Status == "" {
				t.Errorf("result %+v lacks id or status", r)
			}
		}
	})
	t.Run("GetRefund", func(t *testing.T) {
		r, err := c.GetRefund(ctx, "re_123")
		if err != nil {
			t.Fatalf("GetRefund: %v", err)
		}
		if r.ObjectID == "" || r.Status == "" {
			t.Errorf("result %+v lacks id or status", r)
		}
	})
	t.Run("FindRefund", func(t *testing.T) {
		if _, _, err := c.FindRefund(ctx, "pi_123", "rk_conformance"); err != nil {
			t.Fatalf("FindRefund: %v", err)
		}
	})
	t.Run("CapturePaymentIntent", func(t *testing.T) {
		for _, amount := range []int64{0, 1500} {
			r, err := c.CapturePaymentIntent(ctx, "bd1_capture", "pi_123", amount)
			if err != nil {
				t.Fatalf("CapturePaymentIntent(%d): %v", amount, err)
			}
			if r.ObjectID == "" || r.Status == "" {
				t.Errorf("result %+v lacks id or status", r)
			}
		}
	})
	t.Run("CancelPaymentIntent", func(t *testing.T) {
		for _, reason := range []string{"", "requested_by_customer", "abandoned"} {
			r, err := c.CancelPaymentIntent(ctx, "bd1_cancel", "pi_123", reason)
			if err != nil {
				t.Fatalf("CancelPaymentIntent(%q): %v", reason, err)
			}
			if r.ObjectID == "" {
				t.Errorf("result %+v lacks id", r)
			}
		}
	})
	t.Run("CancelSubscription", func(t *testing.T) {
		for _, atPeriodEnd := range []bool{false, true} {
			r, err := c.CancelSubscription(ctx, "bd1_cancel_sub", "sub_123", atPeriodEnd)
			if err != nil {
				t.Fatalf("CancelSubscription(%v): %v", atPeriodEnd, err)
			}
			if r.ObjectID == "" || r.Status == "" {
				t.Errorf("result %+v lacks id or status", r)
			}
		}
	})
	t.Run("stripe-mock rejects what the spec does", func(t *testing.T) {
		// Without this, the passes above could mean stripe-mock accepts
		// anything.
		for _, tt := range []struct{ path, body string }{
			{"/v1/payment_intents", "amount=2000&currency=usd&not_a_parameter=1"},
			{"/v1/payment_intents", "amount=2000&currency=usd&capture_method=later"},
			{"/v1/payment_intents", "amount=2000&currency=usd&off_session=maybe"},
			{"/v1/subscriptions", "customer=cus_123&items[0][price]=price_123&payment_behavior=default_complete"},
		} {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer sk_test_123")
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("POST %s %s: status %d, want 400", tt.path, tt.body, resp.StatusCode)
			}
		}
	})
}

// startStripeMock builds stripe-mock from the version pinned in tools/go.mod,
// runs it on free loopback ports and returns its HTTP base URL. It is killed
// when the test ends.
func startStripeMock(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build stripe-mock")
	}
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "stripe-mock")
	build := exec.Command(goBin, "build", "-modfile="+filepath.Join(root, "tools", "go.mod"), "-o", bin, "github.com/stripe/stripe-mock")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build stripe-mock: %v\n%s", err, out)
	}

	// Port 0 lets the kernel pick free ports, with no race between choosing
	// and binding; stripe-mock prints the address it got.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start stripe-mock: %v", err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		if p, err := os.FindProcess(pid); err == nil {
			p.Kill()
		}
		cmd.Wait()
	})

	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		const prefix = "Listening for HTTP at address: "
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), prefix); ok {
				select {
				case addr <- a:
				default:
				}
			}
			// Keep draining, so stripe-mock never blocks on a full pipe.
		}
	}()
	var a string
	select {
	case a = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatal("stripe-mock did not report its HTTP address within 30s")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", a, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stripe-mock does not accept connections on %s: %v", a, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return "http://" + a
}

// repoRoot walks up from the test's directory to the module's go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
}
