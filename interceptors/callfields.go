package interceptors

import (
	"context"
	"sync"

	"google.golang.org/grpc"
)

// CallFields collects log fields that only inner layers learn — the caller
// once authenticated, the request_id, whether the answer was a replay, the
// Stripe request id, attempts — so the logging interceptor's finish line
// can carry them. Set them with SetCallField; read them with AppendCallFields.
type CallFields struct {
	mu sync.Mutex
	kv []any
}

type callFieldsKey struct{}

// CollectCallFields puts an empty CallFields into every call's context. It
// must run outside (before) the logging interceptor.
func CollectCallFields() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(context.WithValue(ctx, callFieldsKey{}, &CallFields{}), req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &fieldsStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), callFieldsKey{}, &CallFields{})})
	}
	return unary, stream
}

type fieldsStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *fieldsStream) Context() context.Context { return s.ctx }

// SetCallField records key=value for the call's log line, replacing an
// earlier value of key. Without CollectCallFields it does nothing.
func SetCallField(ctx context.Context, key string, value any) {
	f, ok := ctx.Value(callFieldsKey{}).(*CallFields)
	if !ok {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := 0; i+1 < len(f.kv); i += 2 {
		if f.kv[i] == key {
			f.kv[i+1] = value
			return
		}
	}
	if f.kv == nil {
		f.kv = make([]any, 0, 2*typicalCallFields)
	}
	f.kv = append(f.kv, key, value)
}

// typicalCallFields is how many fields a Charge or Subscribe sets (request_id,
// caller, replayed, attempts, stripe_request_id, stripe_ms): room for them at the first
// SetCallField, instead of growing the slice four times on the way.
const typicalCallFields = 6

// AppendCallFields appends the call's recorded fields to dst as alternating
// keys and values.
func AppendCallFields(ctx context.Context, dst []any) []any {
	f, ok := ctx.Value(callFieldsKey{}).(*CallFields)
	if !ok {
		return dst
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(dst, f.kv...)
}
