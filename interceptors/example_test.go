package interceptors_test

import (
	"fmt"

	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/billingd/billingd/interceptors"
)

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
