package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/billingd/billingd/service"
)

// The store-outage tests (outage_postgres_test.go, outage_disk_test.go)
// share what is here: health of both services, the answers seen while the
// store is down, and the creates Stripe received and when.

// healthOf is SERVING only when both health services, the server's ("") and
// BillingService's, say so; NOT_SERVING when either does.
func healthOf(conn *grpc.ClientConn) (healthpb.HealthCheckResponse_ServingStatus, error) {
	hc := healthpb.NewHealthClient(conn)
	out := healthpb.HealthCheckResponse_SERVING
	for _, svc := range []string{"", "billing.v1.BillingService"} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		cancel()
		if err != nil {
			return healthpb.HealthCheckResponse_UNKNOWN, err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			out = resp.GetStatus()
		}
	}
	return out, nil
}

// waitHealth polls conn until healthOf says want and returns how long that
// took, failing the test after within.
func waitHealth(t *testing.T, name string, conn *grpc.ClientConn, want healthpb.HealthCheckResponse_ServingStatus, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got, err := healthOf(conn)
		if err == nil && got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("%s: health %v (%v), want %v within %v", name, got, err, want, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// outageAnswer is one RPC answered while the store was down.
type outageAnswer struct {
	key  string // code and reason
	took time.Duration
	err  error
}

// outageTally checks and counts the answers given while the store is down.
type outageTally struct {
	mu      sync.Mutex
	byKey   map[string]int
	maxTook time.Duration
	bad     []string
}

// add holds one answer to rule 10: UNAVAILABLE with RetryInfo, for
// STORAGE_UNAVAILABLE or where the truth is another retryable reason
// (REQUEST_IN_PROGRESS, UPSTREAM_*), and well inside its deadline.
func (o *outageTally) add(id string, a outageAnswer, deadline time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byKey == nil {
		o.byKey = map[string]int{}
	}
	o.byKey[a.key]++
	o.maxTook = max(o.maxTook, a.took)
	st := status.Convert(a.err)
	ei := errorInfo(a.err)
	reason := ei.GetReason()
	switch {
	case st.Code() != codes.Unavailable:
		o.bad = append(o.bad, fmt.Sprintf("%s: %v, want UNAVAILABLE", id, a.err))
	case reason != "STORAGE_UNAVAILABLE" && reason != "REQUEST_IN_PROGRESS" && !strings.HasPrefix(reason, "UPSTREAM_"):
		o.bad = append(o.bad, fmt.Sprintf("%s: reason %q (%v)", id, reason, a.err))
	case !hasRetryInfo(st):
		o.bad = append(o.bad, fmt.Sprintf("%s: %v has no RetryInfo", id, a.err))
	case a.took > deadline/2:
		o.bad = append(o.bad, fmt.Sprintf("%s: answered after %v, deadline %v", id, a.took, deadline))
	}
}

func (o *outageTally) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, b := range o.bad {
		if i == 10 {
			t.Errorf("... and %d more answers broke rule 10", len(o.bad)-10)
			break
		}
		t.Errorf("answer during the outage: %s", b)
	}
}

func (o *outageTally) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var parts []string
	n := 0
	for k, v := range o.byKey {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
		n += v
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d answers (%s), slowest %v", n, strings.Join(parts, ", "), o.maxTook.Round(time.Millisecond))
}

func answerKey(err error) string {
	k := status.Code(err).String()
	if ei := errorInfo(err); ei != nil {
		k += " " + ei.GetReason()
	}
	return k
}

func hasRetryInfo(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			return true
		}
	}
	return false
}

// createLog is an http.Handler in front of the simulator that notes, for
// every PaymentIntent create, when it arrived and its request key.
type createLog struct {
	next http.Handler
	mu   sync.Mutex
	seen []create
}

type create struct {
	at         time.Time
	requestKey string
}

func (c *createLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/payment_intents" {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			form, _ := url.ParseQuery(string(body))
			c.mu.Lock()
			c.seen = append(c.seen, create{at: time.Now(), requestKey: form.Get("metadata[" + service.MetadataRequestKey + "]")})
			c.mu.Unlock()
		}
	}
	c.next.ServeHTTP(w, r)
}

// between returns the creates that arrived in [from, to).
func (c *createLog) between(from, to time.Time) []create {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []create
	for _, cr := range c.seen {
		if !cr.at.Before(from) && cr.at.Before(to) {
			out = append(out, cr)
		}
	}
	return out
}
