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
//	POST /v1/payment_intents          GET /v1/payment_intents/{id}   GET /v1/payment_intents/search
//	POST /v1/customers                GET /v1/customers/{id}         GET /v1/customers/search
//	GET  /v1/customers (list)
//	POST /v1/subscriptions            GET /v1/subscriptions/{id}     GET /v1/subscriptions/search
//
// Unknown parameters are rejected with parameter_unknown, as Stripe does;
// expand is accepted and ignored (references stay ids).
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
//	pm_card_authenticationRequired            requires_action on session; off session
//	                                          402 authentication_required / authentication_required
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
// while the first request still executes: 409 idempotency_key_in_use.
//
// # Faults
//
// Faults (random, seeded, applied to authenticated POSTs to every endpoint,
// customers included) and FailNext (scripted, per path, any method) inject
// rate limiting, 503s, dropped connections before or after processing and
// 500s after processing; see Fault for exactly what each leaves behind.
// Latency is spent while the idempotency key is held; a client that gives
// up during it does not stop the request from executing.
//
// Note for clients: Go's http.Transport itself resends a POST carrying an
// Idempotency-Key header when a reused keep-alive connection is closed
// before any answer, so a dropped connection may surface as a transparent
// replay rather than an error. Stripe behaves the same way toward Go.
//
// # Search
//
// Search supports exact-match clauses joined by AND:
// metadata['k']:'v', and status, customer, currency, amount (payment
// intents), status, customer (subscriptions), email, name, phone
// (customers). Objects become searchable Config.SearchLag after creation,
// by the Clock; results are newest first, limit 1..100, paged with page.
package stripesim
