package stripehttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/billingd/billingd/internal/stripehttp"
)

func ExampleRetry() {
	// A Stripe stand-in that is busy once, then answers.
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, `{"id":"pi_1"}`)
	}))
	defer srv.Close()

	client := &http.Client{Transport: stripehttp.Retry(nil,
		stripehttp.WithMaxAttempts(3),
		stripehttp.WithRetryObserver(func(reason string) { fmt.Println("retry:", reason) }),
	)}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/payment_intents", strings.NewReader("amount=2000"))
	req.Header.Set("Idempotency-Key", "bd1_example")
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output:
	// retry: unavailable
	// 200 {"id":"pi_1"}
}
