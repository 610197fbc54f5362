package stripesim_test

import (
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/billingd/billingd/internal/stripesim"
	stripe "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// A charge whose answer is lost after Stripe processed it: the retry with
// the same idempotency key gets the original PaymentIntent, not a second charge.
func Example() {
	sim := stripesim.New(stripesim.Config{Seed: 1})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL:               stripe.String(srv.URL),
		MaxNetworkRetries: stripe.Int64(0),
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	sc := client.New("sk_test_example", &stripe.Backends{API: backend})

	params := &stripe.PaymentIntentParams{
		Amount:             stripe.Int64(2000),
		Currency:           stripe.String("usd"),
		Customer:           stripe.String("cus_demo"),
		PaymentMethod:      stripe.String("pm_card_visa"),
		PaymentMethodTypes: stripe.StringSlice([]string{"card"}),
		Confirm:            stripe.Bool(true),
	}
	params.SetIdempotencyKey("order-42")

	sim.FailNext("/v1/payment_intents", stripesim.FaultDropAfter, 1)
	if _, err := sc.PaymentIntents.New(params); err != nil {
		fmt.Println("first attempt: connection lost")
	}
	pi, err := sc.PaymentIntents.New(params)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("retry:", pi.Status, "replayed:", pi.LastResponse.Header.Get("Idempotent-Replayed"))
	fmt.Println("payment intents at Stripe:", len(sim.PaymentIntents()))

	// Declines come back as *stripe.Error with the PaymentIntent embedded.
	params.PaymentMethod = stripe.String("pm_card_chargeDeclinedInsufficientFunds")
	params.SetIdempotencyKey("order-43")
	_, err = sc.PaymentIntents.New(params)
	var se *stripe.Error
	if errors.As(err, &se) {
		fmt.Println(se.HTTPStatusCode, se.Code, se.DeclineCode, se.PaymentIntent.Status)
	}
	// Output:
	// first attempt: connection lost
	// retry: succeeded replayed: true
	// payment intents at Stripe: 1
	// 402 card_declined insufficient_funds requires_payment_method
}
