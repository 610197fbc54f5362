package interceptors

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Validate checks every request against the protovalidate rules of its .proto,
// before anything is recorded or sent. A violation answers INVALID_ARGUMENT
// with ErrorInfo (reason INVALID_ARGUMENT) and one BadRequest field violation
// per broken rule, so polyglot callers see the same rules the contract states.
func Validate(v protovalidate.Validator) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		msg, ok := req.(proto.Message)
		if !ok {
			return handler(ctx, req)
		}
		if err := v.Validate(msg); err != nil {
			return nil, validationStatus(err)
		}
		return handler(ctx, req)
	}
}

func validationStatus(err error) error {
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that fails to compile or evaluate is our bug, not the caller's.
		return status.Error(codes.Internal, "internal error")
	}
	br := &errdetails.BadRequest{}
	for _, v := range verr.Violations {
		field := protovalidate.FieldPathString(v.Proto.GetField())
		if v.Proto.GetForKey() {
			field += " (key)"
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       field,
			Description: v.Proto.GetMessage(),
			Reason:      v.Proto.GetRuleId(),
		})
	}
	msg := "invalid request"
	if n := len(br.FieldViolations); n > 0 {
		msg = fmt.Sprintf("invalid request: %s: %s", br.FieldViolations[0].Field, br.FieldViolations[0].Description)
		if n > 1 {
			msg += fmt.Sprintf(" (and %d more)", n-1)
		}
	}
	st, derr := status.New(codes.InvalidArgument, msg).WithDetails(
		&errdetails.ErrorInfo{Domain: Domain, Reason: "INVALID_ARGUMENT"}, br)
	if derr != nil {
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
}

// ValidateStream is Validate for streaming RPCs: every message the handler
// receives is checked before the handler sees it.
func ValidateStream(v protovalidate.Validator) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &validatingStream{ServerStream: ss, v: v})
	}
}

type validatingStream struct {
	grpc.ServerStream
	v protovalidate.Validator
}

func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if msg, ok := m.(proto.Message); ok {
		if err := s.v.Validate(msg); err != nil {
			return validationStatus(err)
		}
	}
	return nil
}

// RejectUnknownFields refuses a request that carries fields this server does
// not know, for the methods strict selects (those that create or change a
// Stripe object): INVALID_ARGUMENT with one BadRequest violation per unknown
// field number, before anything is recorded or sent. A newer client's field
// that an older server silently dropped (a capture_method, an off_session)
// would move money differently than the caller asked, which is why Stripe
// itself refuses unknown parameters. Deploy servers before clients.
func RejectUnknownFields(strict func(fullMethod string) bool) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if msg, ok := req.(proto.Message); ok && strict(info.FullMethod) {
			if nums := unknownFields(msg.ProtoReflect()); len(nums) > 0 {
				return nil, unknownFieldsStatus(nums)
			}
		}
		return handler(ctx, req)
	}
}

// unknownFields lists the numbers of the unknown fields of m and of the
// messages it holds, in the order met.
func unknownFields(m protoreflect.Message) []protowire.Number {
	var out []protowire.Number
	for b := m.GetUnknown(); len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return append(out, 0) // malformed: cannot be a known field either
		}
		b = b[n:]
		out = append(out, num)
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return out
		}
		b = b[n:]
	}
	if !holdsMessages(m.Descriptor()) {
		return out // a flat message (every request of billingd's API): no walk
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					out = append(out, unknownFields(mv.Message())...)
					return true
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					out = append(out, unknownFields(v.List().Get(i).Message())...)
				}
			}
		case fd.Message() != nil:
			out = append(out, unknownFields(v.Message())...)
		}
		return true
	})
	return out
}

// holdsMessages reports whether messages of type md can hold other messages
// (a message field, or a list or map of them), remembered per type.
func holdsMessages(md protoreflect.MessageDescriptor) bool {
	if v, ok := nested.Load(md.FullName()); ok {
		return v.(bool)
	}
	fields := md.Fields()
	holds := false
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() != nil && (!fd.IsMap() || fd.MapValue().Message() != nil) {
			holds = true
			break
		}
	}
	nested.Store(md.FullName(), holds)
	return holds
}

var nested sync.Map // protoreflect.FullName → bool

func unknownFieldsStatus(nums []protowire.Number) error {
	br := &errdetails.BadRequest{}
	for _, n := range nums {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       fmt.Sprintf("field %d", n),
			Description: "unknown to this server: a newer client's field would be dropped, so the request is refused; upgrade billingd first",
			Reason:      "UNKNOWN_FIELD",
		})
	}
	msg := fmt.Sprintf("invalid request: unknown field %d", nums[0])
	st, err := status.New(codes.InvalidArgument, msg).WithDetails(
		&errdetails.ErrorInfo{Domain: Domain, Reason: "INVALID_ARGUMENT"}, br)
	if err != nil {
		return status.Error(codes.InvalidArgument, msg)
	}
	return st.Err()
}
