package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	billingv1 "github.com/billingd/billingd/gen/billing/v1"
	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/service"
)

// anonymous is the caller of every request when authentication is off
// (loopback only).
const anonymous = "anonymous"

// billing adapts service.Service to the generated BillingServiceServer.
type billing struct {
	billingv1.UnimplementedBillingServiceServer
	svc *service.Service
}

func callerOf(ctx context.Context) string {
	if c, ok := interceptors.CallerFrom(ctx); ok {
		return c
	}
	interceptors.SetCallField(ctx, "caller", anonymous)
	return anonymous
}

// logOutcome leaves what the call's log line should say about its outcome.
func logOutcome(ctx context.Context, out service.Outcome, err error) {
	interceptors.SetCallField(ctx, "replayed", out.Replayed)
	if err == nil {
		interceptors.SetCallField(ctx, "attempts", out.Result.Attempts)
		if id := out.Result.StripeRequestID; id != "" {
			interceptors.SetCallField(ctx, "stripe_request_id", id)
		}
		if d := out.Result.StripeTime; d > 0 && !out.Replayed { // the drive's own caller
			interceptors.SetCallField(ctx, "stripe_ms", float64(d)/float64(time.Millisecond))
		}
		return
	}
	var e *service.Error
	if errors.As(err, &e) {
		interceptors.SetCallField(ctx, "reason", string(e.Reason))
		if id := e.Metadata["stripe_request_id"]; id != "" {
			interceptors.SetCallField(ctx, "stripe_request_id", id)
		}
	}
}

func (b *billing) Charge(ctx context.Context, req *billingv1.ChargeRequest) (*billingv1.ChargeResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.Charge(ctx, callerOf(ctx), service.ChargeRequest{
		RequestID:       req.GetRequestId(),
		Amount:          req.GetAmount(),
		Currency:        req.GetCurrency(),
		CustomerID:      req.GetCustomerId(),
		PaymentMethodID: req.GetPaymentMethodId(),
		Description:     req.GetDescription(),
		Metadata:        req.GetMetadata(),
		OffSession:      req.OffSession,
		CaptureMethod:   req.GetCaptureMethod(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return chargeResponse(out.Result, out.Replayed), nil
}

func (b *billing) Subscribe(ctx context.Context, req *billingv1.SubscribeRequest) (*billingv1.SubscribeResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.Subscribe(ctx, callerOf(ctx), service.SubscribeRequest{
		RequestID:  req.GetRequestId(),
		CustomerID: req.GetCustomerId(),
		PriceID:    req.GetPriceId(),
		Quantity:   req.GetQuantity(),
		Metadata:   req.GetMetadata(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return subscribeResponse(out.Result, out.Replayed), nil
}

func (b *billing) Refund(ctx context.Context, req *billingv1.RefundRequest) (*billingv1.RefundResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.Refund(ctx, callerOf(ctx), service.RefundRequest{
		RequestID: req.GetRequestId(), PaymentIntentID: req.GetPaymentIntentId(), Amount: req.GetAmount(),
		Reason: req.GetReason(), Metadata: req.GetMetadata(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return refundResponse(out.Result, out.Replayed), nil
}

func (b *billing) CapturePayment(ctx context.Context, req *billingv1.CapturePaymentRequest) (*billingv1.CapturePaymentResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.CapturePayment(ctx, callerOf(ctx), service.CaptureRequest{
		RequestID: req.GetRequestId(), PaymentIntentID: req.GetPaymentIntentId(), Amount: req.GetAmount(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return captureResponse(out.Result, out.Replayed), nil
}

func (b *billing) CancelPayment(ctx context.Context, req *billingv1.CancelPaymentRequest) (*billingv1.CancelPaymentResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.CancelPayment(ctx, callerOf(ctx), service.CancelPaymentRequest{
		RequestID: req.GetRequestId(), PaymentIntentID: req.GetPaymentIntentId(), Reason: req.GetReason(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return cancelPaymentResponse(out.Result, out.Replayed), nil
}

func (b *billing) CancelSubscription(ctx context.Context, req *billingv1.CancelSubscriptionRequest) (*billingv1.CancelSubscriptionResponse, error) {
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	out, err := b.svc.CancelSubscription(ctx, callerOf(ctx), service.CancelSubscriptionRequest{
		RequestID: req.GetRequestId(), SubscriptionID: req.GetSubscriptionId(), AtPeriodEnd: req.GetAtPeriodEnd(),
	})
	logOutcome(ctx, out, err)
	if err != nil {
		return nil, replayedError(ctx, out, err)
	}
	return cancelSubscriptionResponse(out.Result, out.Replayed), nil
}

func (b *billing) GetOperation(ctx context.Context, req *billingv1.GetOperationRequest) (*billingv1.Operation, error) {
	rec, err := b.svc.GetOperation(ctx, callerOf(ctx), req.GetRequestId())
	if err != nil {
		return nil, err
	}
	return operation(rec), nil
}

// WatchOperation streams the caller's operation until it is final.
func (b *billing) WatchOperation(req *billingv1.GetOperationRequest, stream grpc.ServerStreamingServer[billingv1.Operation]) error {
	ctx := stream.Context()
	interceptors.SetCallField(ctx, "request_id", req.GetRequestId())
	return b.svc.Watch(ctx, callerOf(ctx), req.GetRequestId(), func(rec service.Record) error {
		return stream.Send(operation(rec))
	})
}

// replayedError marks a final failure answered from the record with the
// idempotent-replayed header, as a replayed success is marked.
func replayedError(ctx context.Context, out service.Outcome, err error) error {
	if out.Replayed {
		interceptors.MarkReplayed(ctx)
	}
	return err
}

func chargeResponse(r service.Result, replayed bool) *billingv1.ChargeResponse {
	return &billingv1.ChargeResponse{PaymentIntentId: r.ObjectID, Status: r.Status, Amount: r.Amount, Currency: r.Currency, Replayed: replayed,
		PaymentStatus: paymentStatuses[r.Status], ClientSecret: r.ClientSecret, NextActionType: r.NextActionType, RedirectUrl: r.RedirectURL}
}

func subscribeResponse(r service.Result, replayed bool) *billingv1.SubscribeResponse {
	return &billingv1.SubscribeResponse{SubscriptionId: r.ObjectID, Status: r.Status, Replayed: replayed,
		SubscriptionStatus: subscriptionStatuses[r.Status], ClientSecret: r.ClientSecret, NextActionType: r.NextActionType,
		RedirectUrl: r.RedirectURL}
}

func refundResponse(r service.Result, replayed bool) *billingv1.RefundResponse {
	return &billingv1.RefundResponse{RefundId: r.ObjectID, Status: r.Status, Amount: r.Amount, Currency: r.Currency,
		PaymentIntentId: r.ParentID, Replayed: replayed}
}

func captureResponse(r service.Result, replayed bool) *billingv1.CapturePaymentResponse {
	return &billingv1.CapturePaymentResponse{PaymentIntentId: r.ObjectID, Status: r.Status, PaymentStatus: paymentStatuses[r.Status],
		AmountCaptured: r.Amount, Currency: r.Currency, Replayed: replayed}
}

func cancelPaymentResponse(r service.Result, replayed bool) *billingv1.CancelPaymentResponse {
	return &billingv1.CancelPaymentResponse{PaymentIntentId: r.ObjectID, Status: r.Status, PaymentStatus: paymentStatuses[r.Status],
		CancellationReason: r.CancellationReason, Replayed: replayed}
}

func cancelSubscriptionResponse(r service.Result, replayed bool) *billingv1.CancelSubscriptionResponse {
	return &billingv1.CancelSubscriptionResponse{SubscriptionId: r.ObjectID, Status: r.Status,
		SubscriptionStatus: subscriptionStatuses[r.Status], CancelAtPeriodEnd: r.CancelAtPeriodEnd, Replayed: replayed}
}

// paymentStatuses and subscriptionStatuses type Stripe's status strings; a
// status Stripe adds later reads UNSPECIFIED (the zero value).
var (
	paymentStatuses = map[string]billingv1.PaymentStatus{
		service.PaymentSucceeded:             billingv1.PaymentStatus_PAYMENT_STATUS_SUCCEEDED,
		service.PaymentRequiresAction:        billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_ACTION,
		service.PaymentProcessing:            billingv1.PaymentStatus_PAYMENT_STATUS_PROCESSING,
		service.PaymentRequiresCapture:       billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_CAPTURE,
		service.PaymentRequiresPaymentMethod: billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_PAYMENT_METHOD,
		service.PaymentRequiresConfirmation:  billingv1.PaymentStatus_PAYMENT_STATUS_REQUIRES_CONFIRMATION,
		service.PaymentCanceled:              billingv1.PaymentStatus_PAYMENT_STATUS_CANCELED,
	}
	subscriptionStatuses = map[string]billingv1.SubscriptionStatus{
		service.SubscriptionActive:            billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_ACTIVE,
		service.SubscriptionTrialing:          billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_TRIALING,
		service.SubscriptionIncomplete:        billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_INCOMPLETE,
		service.SubscriptionIncompleteExpired: billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED,
		service.SubscriptionPastDue:           billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_PAST_DUE,
		service.SubscriptionCanceled:          billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_CANCELED,
		service.SubscriptionUnpaid:            billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_UNPAID,
		service.SubscriptionPaused:            billingv1.SubscriptionStatus_SUBSCRIPTION_STATUS_PAUSED,
	}
)

func operation(rec service.Record) *billingv1.Operation {
	op := &billingv1.Operation{
		RequestId:      rec.RequestID,
		Method:         string(rec.Method),
		State:          billingv1.Operation_State(rec.State),
		CreateTime:     timestamppb.New(rec.Created),
		UpdateTime:     timestamppb.New(rec.Updated),
		Attempts:       int32(rec.Attempts),
		StripeObjectId: rec.Result.ObjectID,
	}
	if op.StripeObjectId == "" && rec.Err != nil {
		op.StripeObjectId = rec.Err.Metadata["stripe_object_id"]
	}
	if !rec.FirstAttempt.IsZero() {
		op.FirstAttemptTime = timestamppb.New(rec.FirstAttempt)
	}
	if rec.Err != nil {
		op.Error = interceptors.StatusOf(rec.Err).Proto()
	}
	if rec.Result.ObjectID != "" && (rec.State == service.StateSucceeded || rec.State.Followed()) {
		switch rec.Method {
		case service.MethodCharge:
			op.Result = &billingv1.Operation_Charge{Charge: chargeResponse(rec.Result, true)}
		case service.MethodSubscribe:
			op.Result = &billingv1.Operation_Subscription{Subscription: subscribeResponse(rec.Result, true)}
		case service.MethodRefund:
			op.Result = &billingv1.Operation_Refund{Refund: refundResponse(rec.Result, true)}
		case service.MethodCapture:
			op.Result = &billingv1.Operation_Capture{Capture: captureResponse(rec.Result, true)}
		case service.MethodCancelPayment:
			op.Result = &billingv1.Operation_CancelPayment{CancelPayment: cancelPaymentResponse(rec.Result, true)}
		case service.MethodCancelSubscription:
			op.Result = &billingv1.Operation_CancelSubscription{CancelSubscription: cancelSubscriptionResponse(rec.Result, true)}
		}
	}
	return op
}
