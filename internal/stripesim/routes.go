package stripesim

import "strings"

// route is an endpoint the simulator serves.
type route uint8

const (
	routeUnknown route = iota
	routeCreatePaymentIntent
	routeGetPaymentIntent
	routeSearchPaymentIntents
	routeCreateCustomer
	routeListCustomers
	routeGetCustomer
	routeSearchCustomers
	routeCreateSubscription
	routeGetSubscription
	routeSearchSubscriptions
	routeCapturePaymentIntent
	routeCancelPaymentIntent
	routeCancelSubscription
	routeCreateRefund
	routeGetRefund
	routeListRefunds
	routeUpdateSubscription
)

// pattern names the route in Stats, with {id} in place of object ids so
// the counts stay bounded.
func (r route) pattern() string {
	switch r {
	case routeCreatePaymentIntent:
		return "/v1/payment_intents"
	case routeGetPaymentIntent:
		return "/v1/payment_intents/{id}"
	case routeSearchPaymentIntents:
		return "/v1/payment_intents/search"
	case routeCreateCustomer, routeListCustomers:
		return "/v1/customers"
	case routeGetCustomer:
		return "/v1/customers/{id}"
	case routeSearchCustomers:
		return "/v1/customers/search"
	case routeCreateSubscription:
		return "/v1/subscriptions"
	case routeGetSubscription:
		return "/v1/subscriptions/{id}"
	case routeSearchSubscriptions:
		return "/v1/subscriptions/search"
	case routeCapturePaymentIntent:
		return "/v1/payment_intents/{id}/capture"
	case routeCancelPaymentIntent:
		return "/v1/payment_intents/{id}/cancel"
	case routeCancelSubscription, routeUpdateSubscription:
		return "/v1/subscriptions/{id}"
	case routeCreateRefund, routeListRefunds:
		return "/v1/refunds"
	case routeGetRefund:
		return "/v1/refunds/{id}"
	}
	return "unknown"
}

// idempotent reports whether r is a POST that goes through the
// idempotency layer: the creates, and the changes of mutates.
func (r route) idempotent() bool {
	return r == routeCreatePaymentIntent || r == routeCreateCustomer || r == routeCreateSubscription || r.mutates()
}

// mutates reports whether r changes an existing object (a refund changes
// its PaymentIntent's refundable amount). Such a change is executed under
// the lock after latency, where it can see the object's state at that
// moment.
func (r route) mutates() bool {
	return r == routeCapturePaymentIntent || r == routeCancelPaymentIntent || r == routeCreateRefund ||
		r == routeUpdateSubscription
}

// matchRoute maps a request to a route and the object id in its path.
func matchRoute(method, path string) (route, string) {
	rest, ok := strings.CutPrefix(path, "/v1/")
	if !ok {
		return routeUnknown, ""
	}
	resource, id, hasID := strings.Cut(rest, "/")
	type ops struct{ create, list, get, search route }
	var o ops
	switch resource {
	case "payment_intents":
		o = ops{routeCreatePaymentIntent, routeUnknown, routeGetPaymentIntent, routeSearchPaymentIntents}
	case "customers":
		o = ops{routeCreateCustomer, routeListCustomers, routeGetCustomer, routeSearchCustomers}
	case "subscriptions":
		o = ops{routeCreateSubscription, routeUnknown, routeGetSubscription, routeSearchSubscriptions}
	case "refunds":
		o = ops{routeCreateRefund, routeListRefunds, routeGetRefund, routeUnknown}
	default:
		return routeUnknown, ""
	}
	if id, action, ok := strings.Cut(id, "/"); ok && resource == "payment_intents" && method == "POST" &&
		id != "" && !strings.Contains(action, "/") {
		switch action {
		case "capture":
			return routeCapturePaymentIntent, id
		case "cancel":
			return routeCancelPaymentIntent, id
		}
		return routeUnknown, ""
	}
	switch {
	case hasID && method == "DELETE" && resource == "subscriptions" && id != "" && !strings.Contains(id, "/"):
		return routeCancelSubscription, id
	case hasID && method == "POST" && resource == "subscriptions" && id != "" && !strings.Contains(id, "/"):
		return routeUpdateSubscription, id
	case !hasID && method == "POST":
		return o.create, ""
	case !hasID && method == "GET":
		return o.list, ""
	case hasID && method == "GET" && id == "search":
		return o.search, ""
	case hasID && method == "GET" && id != "" && !strings.Contains(id, "/"):
		return o.get, id
	}
	return routeUnknown, ""
}
