// Package stripesim is a stateful Stripe API simulator over real HTTP whose
// idempotency layer, errors and failure modes behave like Stripe's, so
// billingd's exactly-once logic can be tested against them with stripe-go.
//
// # Use
//
//	sim := stripesim.New(stripesim.Config{Seed: 1})
//	srv := httptest.NewServer(sim)
//	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
//		URL: stripe.String(srv.URL), MaxNetworkRetries: stripe.Int64(0)})
//	sc := client.New("sk_test_123", &stripe.Backends{API: backend})
//
// Requests speak Stripe's wire format: form-encoded bodies, JSON answers, a
// Request-Id header on every answer, errors as {"error":{...}}. The JSON is
// that of API version 2023-10-16 and decodes into stripe-go v76 types.
//
// Ids are random: each simulator mixes a nonce from crypto/rand into its id
// stream, so a restarted simulator never repeats an id even with the same
// Config.Seed (which keeps faults and latency jitter reproducible). Set
// Config.ReproducibleIDs for ids that depend on the Seed alone.
//
// # Endpoints
//
//	POST /v1/payment_intents                GET /v1/payment_intents/{id}   GET /v1/payment_intents/search
//	POST /v1/payment_intents/{id}/capture   (amount_to_capture)
//	POST /v1/payment_intents/{id}/cancel    (cancellation_reason)
//	POST /v1/customers                      GET /v1/customers/{id}         GET /v1/customers/search
//	GET  /v1/customers (list)
//	POST /v1/subscriptions                  GET /v1/subscriptions/{id}     GET /v1/subscriptions/search
//	POST /v1/subscriptions/{id}             (cancel_at_period_end)
//	DELETE /v1/subscriptions/{id}           (cancel now: status canceled)
//	POST /v1/refunds                        GET /v1/refunds/{id}           GET /v1/refunds (list)
//
// Unknown parameters are rejected with parameter_unknown, as Stripe does.
// On subscriptions (create, retrieve, update, cancel) expand[]=latest_invoice and
// expand[]=latest_invoice.payment_intent replace the references with the
// objects, and so do data.latest_invoice and data.latest_invoice.payment_intent
// on search; other expansions are accepted and ignored (references stay ids).
//
// # PaymentIntents
//
// Every PaymentIntent carries client_secret, cancellation_reason (null
// unless canceled) and last_payment_error (null unless the last attempt
// failed). One awaiting 3-D Secure is requires_action with next_action
// {"type":"use_stripe_sdk","use_stripe_sdk":{...}}, or, when the create
// carried return_url, {"type":"redirect_to_url","redirect_to_url":{"url":
// <the hosted test page below>,"return_url":...}}. capture_method=manual
// authorises (requires_capture, amount_capturable) for capture or cancel.
// Capturing anything but requires_capture, or canceling a succeeded,
// processing or canceled PaymentIntent, or one an invoice created, is 400
// payment_intent_unexpected_state; amount_to_capture over amount_capturable
// is 400 amount_too_large. Both are under the idempotency layer.
//
// # Refunds
//
// POST /v1/refunds takes payment_intent (refunds by charge are not
// simulated: charge is parameter_unknown), amount (default: all that is
// left), reason (duplicate, fraudulent, requested_by_customer) and
// metadata, under the idempotency layer and faults like any create. It
// refunds the PaymentIntent's latest charge; partial refunds accumulate up
// to amount_received. The refund (re_...) carries amount, currency,
// charge, payment_intent (an id), status, reason, metadata,
// balance_transaction, and failure_reason once failed. Errors, all 400
// invalid_request_error and cached under the key: no such PaymentIntent
// (resource_missing, param payment_intent); a PaymentIntent that is not
// succeeded ("This PaymentIntent (pi_...) does not have a successful
// charge to refund.", no code); a fully refunded charge
// (charge_already_refunded, "Charge ch_... has already been refunded.");
// more than is left (amount_too_large, param amount, "Refund amount
// ($20.01) is greater than unrefunded amount on charge ($20.00)"). A card
// refund is succeeded at once, except for Stripe's asynchronous refund
// test cards (see Test payment methods), which the simulator-only settle
// endpoint decides. A failed refund has failure_reason
// expired_or_canceled_card and gives its amount back to be refunded
// again. GET /v1/refunds lists newest first, filtered by payment_intent
// (an unknown one has none), with limit and starting_after. The charge
// itself is not an object here: GET /v1/charges is not served, and
// PaymentIntent.AmountRefunded stands for its amount_refunded.
//
// # Subscriptions and invoices
//
// A subscription's first invoice (in_..., billing_reason
// subscription_create) is created with it: latest_invoice, with status,
// subscription, customer, amount_due, currency, subscription_details.metadata
// (a copy of the subscription's metadata) and payment_intent (its
// PaymentIntent, with client_secret). With payment_behavior allow_incomplete
// (the default) the PaymentIntent is confirmed at once with
// default_payment_method or the customer's default: success makes the
// invoice paid and the subscription active; 3-D Secure (requires_action) or
// a decline leave the invoice open and the subscription incomplete.
// error_if_incomplete answers 402 instead and creates nothing.
// default_incomplete confirms nothing: the PaymentIntent is
// requires_confirmation when a default payment method is known,
// requires_payment_method otherwise, the invoice open and the subscription
// incomplete, until the PaymentIntent is paid (see Simulator-only
// endpoints). A subscription with nothing to pay starts active.
//
// POST /v1/subscriptions/{id} takes cancel_at_period_end (and expand[]);
// every other update parameter, metadata included, is parameter_unknown.
// true keeps the subscription's status, sets cancel_at to
// current_period_end and canceled_at to now, and sends
// customer.subscription.updated; false takes that back (both null again).
// Updating a canceled or incomplete_expired subscription is 400 (no
// code); an unknown one is 404 resource_missing. The update is under the
// idempotency layer. DELETE ends a subscription at once: status canceled,
// canceled_at and ended_at now. Subscriptions do not renew: nothing
// happens at current_period_end unless cancel_at_period_end is set.
//
// # Simulator-only endpoints
//
// These are not Stripe's API; they stand in for what a customer does on
// Stripe's hosted pages, so like those pages they need no API key, and they
// live outside /v1:
//
//	GET  /_sim/payment_intents/{id}/authenticate   a hosted 3-D Secure test page
//	POST /_sim/payment_intents/{id}/authenticate   outcome=succeed|fail
//	POST /_sim/payment_intents/{id}/settle         outcome=succeed|fail
//	POST /_sim/refunds/{id}/settle                 outcome=succeed|fail
//
// authenticate on a requires_action PaymentIntent: succeed charges the card
// (succeeded; requires_capture under manual capture; requires_payment_method
// with card_declined / insufficient_funds for
// pm_card_authenticationRequiredChargeDeclinedInsufficientFunds); fail makes
// it requires_payment_method with last_payment_error {"type":
// "invalid_request_error","code":"payment_intent_authentication_failure"}.
// On an invoice's unconfirmed PaymentIntent, succeed confirms it with the
// subscription's or customer's default payment method, which may need a
// second authenticate for a 3-D Secure card. settle decides a processing
// PaymentIntent: succeeded (or requires_capture), or requires_payment_method
// with card_declined / generic_decline. Either answers the PaymentIntent, or
// a Stripe-shaped 400 (payment_intent_unexpected_state: nothing to
// authenticate or settle) or 404. The hosted page's own form posts with
// redirect=true and is sent on to return_url with payment_intent,
// payment_intent_client_secret and redirect_status, as Stripe's page does.
// Sim.Authenticate and Sim.Settle do the same from Go. Settling a refund
// decides one the card network has not finished with: a pending refund
// becomes succeeded or failed; a pm_card_refundFail refund, succeeded at
// first, becomes failed (or, with succeed, stays succeeded for good). Any
// other refund is 400 (no code); Sim.SettleRefund does the same from Go.
//
// # Time-based transitions
//
// By the Clock: a requires_capture PaymentIntent older than
// AuthorizationValidity (7 days) becomes canceled with cancellation_reason
// automatic; a subscription still incomplete IncompleteWindow (23 hours)
// after creation becomes incomplete_expired, its invoice void and the
// invoice's PaymentIntent canceled (cancellation_reason void_invoice); a
// subscription set to cancel_at_period_end becomes canceled at its
// current_period_end, ended_at that moment
// (customer.subscription.deleted). Due
// transitions are applied at the start of every request and by the
// snapshot methods; ApplyDueTransitions applies them on demand, for tests
// that advance a ManualClock.
//
// # Fixtures
//
// Every Sim starts with:
//
//	cus_demo             demo@example.com, default payment method pm_card_visa
//	cus_declined         declined@example.com, default payment method pm_card_chargeDeclined
//	price_basic_monthly  usd 900 per month, product prod_basic
//	price_pro_monthly    usd 2900 per month, product prod_pro
//
// AddCustomer and AddPrice add more.
//
// # Test payment methods
//
//	pm_card_visa, pm_card_visa_debit, pm_card_mastercard, pm_card_amex   succeed
//	pm_card_chargeDeclined                    402 card_declined / generic_decline
//	pm_card_chargeDeclinedInsufficientFunds   402 card_declined / insufficient_funds
//	pm_card_chargeDeclinedLostCard            402 card_declined / lost_card
//	pm_card_chargeDeclinedStolenCard          402 card_declined / stolen_card
//	pm_card_chargeDeclinedFraudulent          402 card_declined / fraudulent
//	pm_card_chargeDeclinedExpiredCard         402 expired_card / expired_card
//	pm_card_chargeDeclinedIncorrectCvc        402 incorrect_cvc / incorrect_cvc
//	pm_card_chargeDeclinedProcessingError     402 processing_error / processing_error
//	pm_card_authenticationRequired (3184)     3-D Secure always: requires_action on
//	pm_card_threeDSecure2Required (3220)      session; off session 402
//	                                          authentication_required / authentication_required
//	pm_card_authenticationRequiredOnSetup     (3155) as above, but off session it succeeds
//	                                          once set up: authenticated on session with
//	                                          setup_future_usage=off_session for the customer
//	pm_card_authenticationRequiredChargeDeclinedInsufficientFunds
//	                                          (3178) as 3184, then after authentication
//	                                          card_declined / insufficient_funds
//	pm_card_pendingRefund (7726)              succeeds; its refunds are pending until
//	                                          settled (Stripe: later succeeded)
//	pm_card_refundFail (5126)                 succeeds; its refunds are succeeded, then
//	                                          failed when settled (Stripe: later failed,
//	                                          expired_or_canceled_card)
//	pm_card_simProcessing                     NOT Stripe's (simulator only): processing
//	                                          until settled
//
// A declined confirmation still creates the PaymentIntent (status
// requires_payment_method, last_payment_error set) and the 402 body embeds
// it under "payment_intent". Any other payment method is 400 resource_missing.
//
// # Errors
//
// Parameter validation errors (parameter_missing, parameter_unknown,
// parameter_invalid_integer, parameter_invalid_empty, parameters_exclusive,
// email_invalid, bad enums or currencies, the automatic_payment_methods
// return_url rule) are 400 invalid_request_error and are not cached.
// Errors found while executing are cached under the idempotency key: 402
// card_error; 400 resource_missing (customer, payment_method, price,
// default_payment_method); 400 amount_too_small / amount_too_large; 400
// payment_intent_unexpected_state (confirm without a payment method); 400
// customer_max_subscriptions. Authentication: 401 (key masked as
// MaskKey does) and 403, both invalid_request_error and never cached.
//
// # Idempotency
//
// POSTs carrying an Idempotency-Key are subject to Stripe's idempotency
// layer, scoped per API key. The first answer (status and body) is cached
// for IdempotencyKeyTTL by the Clock and replayed to identical requests
// with Idempotent-Replayed: true and Original-Request naming the request
// that produced it. Parameters are compared canonically. Same key with
// other parameters or another endpoint: 400 idempotency_error. Same key
// while the first request still executes: 409 idempotency_key_in_use, of
// type invalid_request_error, or idempotency_error with
// Config.InUseErrorType (Stripe has answered with both).
//
// # Faults
//
// Faults (random, seeded, applied to authenticated POSTs to every /v1 endpoint,
// customers included) and FailNext (scripted, per path, any method) inject
// rate limiting, 503s, dropped connections before or after processing and
// 500s after processing; see Fault for exactly what each leaves behind.
// Latency is spent while the idempotency key is held; a client that gives
// up during it does not stop the request from executing. ParseFaults reads
// Faults from a "name=value,…" spec such as "unavailable=0.05,latency=20ms".
//
// Note for clients: Go's http.Transport itself resends a POST carrying an
// Idempotency-Key header when a reused keep-alive connection is closed
// before any answer, so a dropped connection may surface as a transparent
// replay rather than an error. Stripe behaves the same way toward Go.
//
// # Webhooks
//
// With Config.WebhookURL every transition is announced with a signed event
// whose data.object is the object's JSON at that moment, queued in order:
//
//	payment_intent.created           every create (and an invoice's PaymentIntent)
//	payment_intent.requires_action   3-D Secure pending
//	payment_intent.processing        pm_card_simProcessing confirmed
//	payment_intent.amount_capturable_updated   manual capture authorised
//	payment_intent.succeeded         paid, or captured
//	payment_intent.payment_failed    declined, or authentication failed
//	payment_intent.canceled          canceled, or expired
//	charge.refunded                  a refund created: the charge, with amount_refunded
//	charge.refund.updated            a refund settled (succeeded or failed): the refund
//	refund.created, refund.updated, refund.failed
//	                                 only with Config.RefundObjectEvents: Stripe sends
//	                                 them for card refunds from API version
//	                                 2024-10-28.acacia on, not under 2023-10-16
//	customer.created
//	customer.subscription.created
//	customer.subscription.updated    status changes (active, incomplete_expired), and
//	                                 cancel_at_period_end set or taken back
//	customer.subscription.deleted    DELETE /v1/subscriptions/{id}, or the period end
//	                                 of one set to cancel_at_period_end
//	invoice.created (draft), invoice.finalized (open), invoice.paid,
//	invoice.payment_succeeded, invoice.payment_failed,
//	invoice.payment_action_required, invoice.voided
//
// A subscription paid at creation sends customer.subscription.created,
// invoice.created, invoice.finalized, payment_intent.created,
// payment_intent.succeeded, invoice.paid, invoice.payment_succeeded; paid
// later, payment_intent.succeeded, invoice.paid, invoice.payment_succeeded,
// customer.subscription.updated.
//
// # Search
//
// Search supports exact-match clauses joined by AND:
// metadata['k']:'v', and status, customer, currency, amount (payment
// intents), status, customer (subscriptions), email, name, phone
// (customers). Objects become searchable Config.SearchLag after creation,
// by the Clock; results are newest first, limit 1..100, paged with page.
package stripesim
