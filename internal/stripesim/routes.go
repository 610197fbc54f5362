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
	}
	return "unknown"
}

func (r route) creates() bool {
	return r == routeCreatePaymentIntent || r == routeCreateCustomer || r == routeCreateSubscription
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
	default:
		return routeUnknown, ""
	}
	switch {
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
