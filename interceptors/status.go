// Package interceptors holds billingd's gRPC server interceptors; it imports
// no project package.
package interceptors

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// internalMessage is the whole message of an error billingd does not
// recognise: its text may hold anything, a client_secret included.
const internalMessage = "internal error"

// ReasonError is an error that knows its google.rpc.ErrorInfo. service.Error
// implements it; ErrorStatus finds it with errors.As, so wrapping is fine.
// PublicMessage becomes the status message: it must be caller-safe.
type ReasonError interface {
	error
	ErrorReason() string
	PublicMessage() string
	ErrorMetadata() map[string]string
}

// RetryDelayError is optionally implemented by a ReasonError; a positive
// delay adds google.rpc.RetryInfo.
type RetryDelayError interface {
	RetryDelay() time.Duration
}

// FieldViolationError is optionally implemented by a ReasonError; (field,
// description) pairs add google.rpc.BadRequest.
type FieldViolationError interface {
	FieldViolations() [][2]string
}

// ResourceError is optionally implemented by a ReasonError; a non-empty type
// or name adds google.rpc.ResourceInfo.
type ResourceError interface {
	Resource() (typ, name string)
}

// CodedError is optionally implemented by a ReasonError: ErrorCode names
// the gRPC code of its answer ("UNAVAILABLE", "FAILED_PRECONDITION", …), so
// the error's own package keeps the reason → code table next to the reasons
// (service.Error does). Without it, or with an unknown name, the answer is
// INTERNAL.
type CodedError interface {
	ErrorCode() string
}

// codes by their canonical names, the ones ErrorCode may return.
var codeByName = map[string]codes.Code{
	"INVALID_ARGUMENT":    codes.InvalidArgument,
	"FAILED_PRECONDITION": codes.FailedPrecondition,
	"NOT_FOUND":           codes.NotFound,
	"UNAVAILABLE":         codes.Unavailable,
	"RESOURCE_EXHAUSTED":  codes.ResourceExhausted,
	"INTERNAL":            codes.Internal,
}

func codeOf(re ReasonError) codes.Code {
	if ce, ok := re.(CodedError); ok {
		if c, ok := codeByName[ce.ErrorCode()]; ok {
			return c
		}
	}
	return codes.Internal
}

// StatusOption configures ErrorStatus.
type StatusOption func(*statusConfig)

type statusConfig struct {
	observe func(ctx context.Context, fullMethod string, err error, st *status.Status)
}

// WithStatusObserver calls observe for every handler error ErrorStatus
// translates, with the original error and the status sent, for logs and
// metrics. The original error may hold secrets (stripe-go's Error() can
// contain a client_secret): log st, or err only after redaction.
func WithStatusObserver(observe func(ctx context.Context, fullMethod string, err error, st *status.Status)) StatusOption {
	return func(c *statusConfig) { c.observe = observe }
}

// ErrorStatus translates a handler's error into a gRPC status, once, at the
// edge, as StatusOf does. It belongs innermost in the chain, next to the
// handler, so that every outer interceptor sees a status.
func ErrorStatus(opts ...StatusOption) grpc.UnaryServerInterceptor {
	var cfg statusConfig
	for _, o := range opts {
		o(&cfg)
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err == nil {
			return resp, nil
		}
		st := StatusOf(err)
		if cfg.observe != nil {
			cfg.observe(ctx, info.FullMethod, err, st)
		}
		return resp, st.Err()
	}
}

// ErrorStatusStream is ErrorStatus for streaming RPCs.
func ErrorStatusStream(opts ...StatusOption) grpc.StreamServerInterceptor {
	var cfg statusConfig
	for _, o := range opts {
		o(&cfg)
	}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		if err == nil {
			return nil
		}
		st := StatusOf(err)
		if cfg.observe != nil {
			cfg.observe(ss.Context(), info.FullMethod, err, st)
		}
		return st.Err()
	}
}

// StatusOf translates err per docs/design.md, "Errors": a ReasonError (found with
// errors.As) becomes its reason's code with ErrorInfo first, then BadRequest,
// ResourceInfo, QuotaFailure and RetryInfo when present; an error that
// already is a gRPC status is returned unchanged; context.Canceled and
// context.DeadlineExceeded keep their codes; anything else is INTERNAL
// "internal error", never the error's text. The result is deterministic: the
// same error always gives the same bytes, so a stored error replays
// identically. StatusOf(nil) is OK.
func StatusOf(err error) *status.Status {
	if err == nil {
		return status.New(codes.OK, "")
	}
	var re ReasonError
	if errors.As(err, &re) {
		return reasonStatus(re)
	}
	if st, ok := status.FromError(err); ok {
		return st
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return status.New(codes.Internal, internalMessage)
}

func reasonStatus(re ReasonError) *status.Status {
	reason := re.ErrorReason()
	code := codeOf(re)
	var md map[string]string
	if m := re.ErrorMetadata(); len(m) > 0 {
		md = make(map[string]string, len(m))
		for k, v := range m {
			md[utf8(k)] = utf8(v)
		}
	}
	details := []proto.Message{&errdetails.ErrorInfo{Reason: utf8(reason), Domain: Domain, Metadata: md}}
	if fv, ok := re.(FieldViolationError); ok {
		if pairs := fv.FieldViolations(); len(pairs) > 0 {
			br := &errdetails.BadRequest{}
			for _, p := range pairs {
				br.FieldViolations = append(br.FieldViolations,
					&errdetails.BadRequest_FieldViolation{Field: utf8(p[0]), Description: utf8(p[1])})
			}
			details = append(details, br)
		}
	}
	if r, ok := re.(ResourceError); ok {
		if typ, name := r.Resource(); typ != "" || name != "" {
			details = append(details, &errdetails.ResourceInfo{ResourceType: utf8(typ), ResourceName: utf8(name)})
		}
	}
	if code == codes.ResourceExhausted {
		details = append(details, &errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{
			{Subject: "caller", Description: utf8(re.PublicMessage())},
		}})
	}
	if rd, ok := re.(RetryDelayError); ok {
		if d := rd.RetryDelay(); d > 0 {
			details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(d)})
		}
	}
	p := &spb.Status{Code: int32(code), Message: utf8(re.PublicMessage())}
	for _, d := range details {
		p.Details = append(p.Details, deterministicAny(d))
	}
	return status.FromProto(p)
}

// utf8 makes s valid UTF-8: proto3 refuses to marshal anything else, and a
// detail that fails to marshal would be lost.
func utf8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// deterministicAny packs m with map entries sorted (ErrorInfo.Metadata is a
// map), where anypb.New would order them at random.
func deterministicAny(m proto.Message) *anypb.Any {
	// Cannot fail: every string was made valid UTF-8 and nothing is required.
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return &anypb.Any{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: b}
}
