package server

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/billingd/billingd/internal/redact"
	"github.com/billingd/billingd/service"
)

// WebhookPath is where Stripe posts events.
const WebhookPath = "/stripe/webhook"

// maxWebhookBody bounds an event. Stripe's events carry one object; the
// largest billingd cares about is a PaymentIntent, a few KiB.
const maxWebhookBody = 256 << 10

// NewWebhookSecret returns a random endpoint secret in Stripe's whsec_
// form, for a sender billingd runs itself (the built-in simulator): the
// sender signs with it and the handler verifies with it.
func NewWebhookSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return "whsec_" + hex.EncodeToString(b)
}

// NewWebhookHandler returns the handler for Stripe's webhook endpoint at
// WebhookPath. Every event's Stripe-Signature is verified with the endpoint
// secret before anything is read from it; a bad one is 400 and changes
// nothing. Events that settle records are handled once per event id; others
// are acknowledged and ignored. The secret is never logged.
func NewWebhookHandler(secret string, hooks *service.Webhooks, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+WebhookPath, &webhookHandler{secret: secret, hooks: hooks, log: log})
	return mux
}

type webhookHandler struct {
	secret string
	hooks  *service.Webhooks
	log    *slog.Logger
}

func (h *webhookHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	payload, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	// billingd reads only ids, metadata, status, amounts and the payment
	// error of an event's object, fields stable across API versions, so an
	// endpoint pinned to another version is still understood.
	ev, err := webhook.ConstructEventWithOptions(payload, r.Header.Get("Stripe-Signature"), h.secret,
		webhook.ConstructEventOptions{IgnoreAPIVersionMismatch: true})
	if err != nil {
		h.log.WarnContext(r.Context(), "webhook rejected: bad signature or payload")
		http.Error(w, "invalid signature", http.StatusBadRequest)
		return
	}
	sev, ok, err := serviceEvent(ev)
	if err != nil {
		h.log.WarnContext(r.Context(), "webhook rejected: malformed object", "event", ev.ID, "type", string(ev.Type))
		http.Error(w, "malformed event object", http.StatusBadRequest)
		return
	}
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		writeWebhookAnswer(w, "ignored")
		return
	}
	out, err := h.hooks.Handle(r.Context(), sev)
	if err != nil {
		// Nothing was decided: Stripe delivers again later.
		h.log.ErrorContext(r.Context(), "webhook not applied", "event", ev.ID, "type", string(ev.Type), "err", err)
		http.Error(w, "temporarily unable to apply the event", http.StatusServiceUnavailable)
		return
	}
	h.log.InfoContext(r.Context(), "webhook", "event", ev.ID, "type", string(ev.Type), "outcome", out.String())
	w.Header().Set("Content-Type", "application/json")
	if out == service.EventInFlight {
		// The record's drive may still end without an answer: ask Stripe to
		// deliver again later rather than drop what the event knows.
		w.WriteHeader(http.StatusConflict)
	}
	writeWebhookAnswer(w, out.String())
}

func writeWebhookAnswer(w http.ResponseWriter, outcome string) {
	_ = json.NewEncoder(w).Encode(map[string]string{"outcome": outcome})
}

// serviceEvent reduces a verified event to a service.Event; ok=false for
// event types billingd does not act on.
func serviceEvent(ev stripe.Event) (service.Event, bool, error) {
	out := service.Event{ID: ev.ID}
	switch ev.Type {
	case "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
		"payment_intent.requires_action", "payment_intent.processing", "payment_intent.amount_capturable_updated":
		var pi stripe.PaymentIntent
		if err := json.Unmarshal(ev.Data.Raw, &pi); err != nil {
			return out, false, err
		}
		out.RequestKey, out.Caller = pi.Metadata[service.MetadataRequestKey], pi.Metadata[service.MetadataCaller]
		out.Object = service.Result{ObjectID: pi.ID, Status: string(pi.Status), Amount: pi.Amount, Currency: string(pi.Currency),
			ClientSecret: pi.ClientSecret, CancellationReason: string(pi.CancellationReason)}
		if na := pi.NextAction; na != nil {
			out.Object.NextActionType = string(na.Type)
			if na.RedirectToURL != nil {
				out.Object.RedirectURL = na.RedirectToURL.URL
			}
		}
		switch ev.Type {
		case "payment_intent.succeeded":
			out.Kind = service.EventPaymentSucceeded
		case "payment_intent.canceled":
			out.Kind = service.EventPaymentCanceled
		case "payment_intent.payment_failed":
			out.Kind = service.EventPaymentFailed
			out.Object.Failure = paymentFailure(&pi)
		default:
			out.Kind = service.EventPaymentUpdated
		}
	case "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted":
		var sub stripe.Subscription
		if err := json.Unmarshal(ev.Data.Raw, &sub); err != nil {
			return out, false, err
		}
		out.Kind = service.EventSubscriptionChanged
		if ev.Type == "customer.subscription.created" {
			out.Kind = service.EventSubscriptionCreated
		}
		out.RequestKey, out.Caller = sub.Metadata[service.MetadataRequestKey], sub.Metadata[service.MetadataCaller]
		out.Object = service.Result{ObjectID: sub.ID, Status: string(sub.Status)}
	case "invoice.paid", "invoice.payment_failed", "invoice.payment_succeeded", "invoice.payment_action_required":
		// The subscription's first invoice: it carries a snapshot of the
		// subscription's metadata, which names the record.
		var in stripe.Invoice
		if err := json.Unmarshal(ev.Data.Raw, &in); err != nil {
			return out, false, err
		}
		if in.Subscription == nil || in.Subscription.ID == "" || in.SubscriptionDetails == nil {
			return out, false, nil
		}
		out.Kind = service.EventSubscriptionChanged
		md := in.SubscriptionDetails.Metadata
		out.RequestKey, out.Caller = md[service.MetadataRequestKey], md[service.MetadataCaller]
		out.Object = service.Result{ObjectID: in.Subscription.ID}
	case "refund.created", "refund.updated", "refund.failed", "charge.refund.updated":
		var re stripe.Refund
		if err := json.Unmarshal(ev.Data.Raw, &re); err != nil {
			return out, false, err
		}
		out.Kind = service.EventRefundChanged
		out.RequestKey, out.Caller = re.Metadata[service.MetadataRequestKey], re.Metadata[service.MetadataCaller]
		out.Object = service.Result{ObjectID: re.ID, Status: string(re.Status), Amount: re.Amount, Currency: string(re.Currency)}
		if re.PaymentIntent != nil {
			out.Object.ParentID = re.PaymentIntent.ID
		}
		if re.FailureReason != "" {
			out.Object.Failure = &service.UpstreamError{Kind: service.UpstreamDeclined, Code: string(re.FailureReason), ObjectID: re.ID}
		}
	default:
		return out, false, nil
	}
	return out, true, nil
}

// paymentFailure is the failed payment a PaymentIntent records. Stripe's
// message goes through the same scrub as a create's.
func paymentFailure(pi *stripe.PaymentIntent) *service.UpstreamError {
	f := &service.UpstreamError{Kind: service.UpstreamDeclined, HTTPStatus: http.StatusPaymentRequired,
		Type: "card_error", Code: "card_declined", ObjectID: pi.ID}
	if lpe := pi.LastPaymentError; lpe != nil {
		f.Type, f.Code, f.DeclineCode, f.Param, f.Message = string(lpe.Type), string(lpe.Code), string(lpe.DeclineCode), lpe.Param, redact.Scrub(lpe.Msg)
	}
	return f
}
