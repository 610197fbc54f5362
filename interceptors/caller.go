package interceptors

import "context"

// Domain is the ErrorInfo domain of every billingd error.
const Domain = "billingd"

type callerKey struct{}

// WithCaller returns ctx carrying the authenticated caller's name.
func WithCaller(ctx context.Context, caller string) context.Context {
	SetCallField(ctx, "caller", caller)
	return context.WithValue(ctx, callerKey{}, caller)
}

// CallerFrom returns the authenticated caller's name, set by the auth interceptor.
func CallerFrom(ctx context.Context) (string, bool) {
	c, ok := ctx.Value(callerKey{}).(string)
	return c, ok && c != ""
}
