package interceptors_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/billingd/billingd/interceptors"
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

	client := &http.Client{Transport: interceptors.Retry(nil,
		interceptors.WithMaxAttempts(3),
		interceptors.WithRetryObserver(func(reason string) { fmt.Println("retry:", reason) }),
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

// declined has the shape of service.Error.
type declined struct{}

func (declined) Error() string         { return "service: CARD_DECLINED" }
func (declined) ErrorReason() string   { return "CARD_DECLINED" }
func (declined) PublicMessage() string { return "Your card was declined." }
func (declined) ErrorCode() string     { return "FAILED_PRECONDITION" }
func (declined) ErrorMetadata() map[string]string {
	return map[string]string{"code": "card_declined", "decline_code": "insufficient_funds"}
}

func ExampleStatusOf() {
	st := interceptors.StatusOf(fmt.Errorf("charge: %w", declined{}))
	info := st.Details()[0].(*errdetails.ErrorInfo)
	fmt.Println(st.Code(), st.Message())
	fmt.Println(info.GetDomain(), info.GetReason(), info.GetMetadata()["decline_code"])
	// Output:
	// FailedPrecondition Your card was declined.
	// billingd CARD_DECLINED insufficient_funds
}
