package interceptors

import (
	"context"
	"errors"
	"fmt"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
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
