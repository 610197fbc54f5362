package interceptors

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// ReplayedHeader is the response header that marks an answer served from a
// stored record instead of a new Stripe call (docs/design.md, "Record states").
const ReplayedHeader = "idempotent-replayed"

// ReplayHeader sends the response header "idempotent-replayed: true" when the
// handler's response reports GetReplayed() == true, so callers and proxies can
// tell a replay without decoding the body.
func ReplayHeader() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if r, ok := resp.(interface{ GetReplayed() bool }); ok && err == nil && r.GetReplayed() {
			MarkReplayed(ctx)
		}
		return resp, err
	}
}

// replayedMD is the header of every replay. grpc.SetHeader merges it into
// the call's header with metadata.Join, which copies it: nothing keeps or
// changes it, so one value serves every call (metadata.Pairs would build a
// map per replay).
var replayedMD = metadata.MD{ReplayedHeader: {"true"}}

// MarkReplayed sets the response header "idempotent-replayed: true" on a
// unary call. SetHeader fails only when headers were already sent, which a
// unary handler cannot have done; the answer matters more than the header,
// so it is sent either way.
func MarkReplayed(ctx context.Context) {
	_ = grpc.SetHeader(ctx, replayedMD)
}
