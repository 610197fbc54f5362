package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/billingd/billingd/interceptors"
	"github.com/billingd/billingd/internal/flagenv"
	"github.com/billingd/billingd/internal/stripeapi"
	"github.com/billingd/billingd/internal/stripesim"
	"github.com/billingd/billingd/internal/telemetry"
	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/storage/postgres"
)

// serveConfig is everything `billingd serve` is told. stripeKey is resolved
// from the environment or a file, never from a flag value, and never printed.
type serveConfig struct {
	Listen         string
	DB             string
	Store          string // postgres:// URL; empty: the bbolt file DB. Holds a password: never printed whole
	LeaseTTL       time.Duration
	StripeURL      string
	StripeSim      bool
	SimFaults      string
	SimSeed        int64
	SimListen      string
	AllowForeign   bool
	StripeKeyFile  string
	StripeInFlight int
	StripeRate     string     // "auto", "off" or requests a second
	stripeRate     rate.Limit // StripeRate resolved; 0: no pacing
	LogFormat      string
	ShutdownGrace  time.Duration

	AuthTokensFile string
	AuthReflection bool
	TLSCert        string
	TLSKey         string
	TLSClientCA    string
	RateLimit      float64
	RateBurst      int

	WebhookListen      string
	Retention          time.Duration
	TombstoneRetention time.Duration
	SearchLag          time.Duration
	ReconcileInterval  time.Duration
	webhookSecret      string // from STRIPE_WEBHOOK_SECRET only; never printed

	MetricsListen string
	tracing       bool // the standard OTEL_* variables ask for traces

	stripeKey string
	tokens    *interceptors.Tokens // from BILLING_AUTH_TOKENS or AuthTokensFile; never printed
}

// errHelp is returned after printing usage for -h/--help.
var errHelp = flag.ErrHelp

// envFor names the environment variable that sets each flag, so every flag is
// settable both ways; a flag on the command line wins over the environment.
var envFor = map[string]string{
	"listen":                "BILLINGD_LISTEN",
	"db":                    "BILLINGD_DB",
	"store":                 "BILLINGD_STORE",
	"lease-ttl":             "BILLINGD_LEASE_TTL",
	"stripe-url":            "BILLINGD_STRIPE_URL",
	"stripe-sim":            "BILLINGD_STRIPE_SIM",
	"stripe-sim-faults":     "BILLINGD_STRIPE_SIM_FAULTS",
	"stripe-sim-seed":       "BILLINGD_STRIPE_SIM_SEED",
	"stripe-sim-listen":     "BILLINGD_STRIPE_SIM_LISTEN",
	"allow-foreign-objects": "BILLINGD_ALLOW_FOREIGN_OBJECTS",
	"stripe-key-file":       "BILLINGD_STRIPE_KEY_FILE",
	"stripe-max-inflight":   "BILLINGD_STRIPE_MAX_INFLIGHT",
	"stripe-rate":           "BILLINGD_STRIPE_RATE",
	"log-format":            "BILLINGD_LOG_FORMAT",
	"shutdown-grace":        "BILLINGD_SHUTDOWN_GRACE",
	"auth-tokens-file":      "BILLINGD_AUTH_TOKENS_FILE",
	"auth-reflection":       "BILLINGD_AUTH_REFLECTION",
	"tls-cert":              "BILLINGD_TLS_CERT",
	"tls-key":               "BILLINGD_TLS_KEY",
	"tls-client-ca":         "BILLINGD_TLS_CLIENT_CA",
	"rate-limit":            "BILLINGD_RATE_LIMIT",
	"rate-burst":            "BILLINGD_RATE_BURST",

	// Reconciliation, retention and webhooks.
	"webhook-listen":      "BILLINGD_WEBHOOK_LISTEN",
	"retention":           "BILLINGD_RETENTION",
	"tombstone-retention": "BILLINGD_TOMBSTONE_RETENTION",
	"search-lag":          "BILLINGD_SEARCH_LAG",
	"reconcile-interval":  "BILLINGD_RECONCILE_INTERVAL",

	// Observability.
	"metrics-listen": "BILLINGD_METRICS_LISTEN",
}

func parseServe(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("billingd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&c.DB, "db", "./data/billingd.db", "bbolt database file (one process owns it); unused with --store")
	fs.StringVar(&c.Store, "store", "", "record store shared by replicas: a postgres://user:pass@host/db URL (default: the bbolt file --db)")
	fs.DurationVar(&c.LeaseTTL, "lease-ttl", postgres.DefaultLeaseTTL, "with --store: how long a dead replica's records stay blocked before another replica takes them over")
	fs.StringVar(&c.StripeURL, "stripe-url", "", "Stripe API base URL, e.g. a stripe-mock or fake (default: Stripe itself)")
	fs.BoolVar(&c.StripeSim, "stripe-sim", false, "run against the built-in Stripe simulator (no key needed)")
	fs.StringVar(&c.SimFaults, "stripe-sim-faults", "", "simulator fault rates, e.g. unavailable=0.05,drop_after=0.02,server_error=0.01,rate_limit=0.02,drop_before=0.02,latency=20ms")
	fs.Int64Var(&c.SimSeed, "stripe-sim-seed", 1, "simulator random seed (faults and latency are reproducible; object ids never repeat)")
	fs.StringVar(&c.SimListen, "stripe-sim-listen", "127.0.0.1:0", "loopback address of the built-in simulator (its /_sim/ test pages complete 3-D Secure)")
	fs.BoolVar(&c.AllowForeign, "allow-foreign-objects", false, "let Refund, CapturePayment, CancelPayment and CancelSubscription act on Stripe objects made outside billingd (another caller's stay NOT_FOUND)")
	fs.StringVar(&c.StripeKeyFile, "stripe-key-file", "", "file holding the Stripe secret key (else STRIPE_SECRET_KEY)")
	fs.IntVar(&c.StripeInFlight, "stripe-max-inflight", stripeapi.DefaultMaxInFlight, "most Stripe calls under way at once; more wait for a slot (Stripe's default live-mode rate limit is 100 operations a second)")
	fs.StringVar(&c.StripeRate, "stripe-rate", "auto", "Stripe requests a second, retries included, halved on 429 and recovering; auto: 90 for a live key, 25 for a test key (Stripe allows 100 and 25), with --stripe-sim 90% of its rate= fault or none; off: no pacing")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 20*time.Second, "how long in-flight calls may finish on SIGTERM")
	fs.StringVar(&c.WebhookListen, "webhook-listen", "", "address for Stripe webhooks at /stripe/webhook (secret from STRIPE_WEBHOOK_SECRET); off if empty")
	fs.DurationVar(&c.Retention, "retention", 7*24*time.Hour, "how long final records are kept before they are swept")
	fs.DurationVar(&c.TombstoneRetention, "tombstone-retention", 400*24*time.Hour, "how long a swept record's tombstone refuses its request_id (REQUEST_ID_EXPIRED) before the id is free again")
	fs.DurationVar(&c.SearchLag, "search-lag", time.Hour, "how long Stripe search may lag: nothing found for this long settles NOT_CREATED")
	fs.DurationVar(&c.ReconcileInterval, "reconcile-interval", 30*time.Second, "time between reconciler passes over open records")
	fs.StringVar(&c.MetricsListen, "metrics-listen", "", "address serving Prometheus /metrics (default off); tracing is configured by the standard OTEL_* variables")
	fs.StringVar(&c.AuthTokensFile, "auth-tokens-file", "", "file of caller bearer tokens, one caller:token per line (else BILLING_AUTH_TOKENS=caller:token,...); none: open, loopback only")
	fs.BoolVar(&c.AuthReflection, "auth-reflection", false, "require caller credentials for server reflection too (health never needs them)")
	fs.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate (chain) to serve TLS 1.2+ with; needs --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: require client certificates it issued (mutual TLS); the certificate's CommonName is the caller")
	fs.Float64Var(&c.RateLimit, "rate-limit", 0, "requests per second each caller may send; 0 turns the limit off")
	fs.IntVar(&c.RateBurst, "rate-burst", 0, "burst each caller may send above --rate-limit (0: the rate, rounded up)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: billingd serve [flags]\n\nEvery flag can also be set by the environment variable shown.\nThe Stripe secret key comes only from STRIPE_SECRET_KEY or --stripe-key-file;\ncaller tokens only from BILLING_AUTH_TOKENS or --auth-tokens-file.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (%s)\n    \t%s", f.Name, envFor[f.Name], f.Usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := flagenv.Parse(fs, args, envFor, getenv); err != nil {
		return c, err
	}
	if err := checkRecovery(&c, getenv); err != nil {
		return c, err
	}
	if err := checkStore(c); err != nil {
		return c, err
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return c, fmt.Errorf("--log-format must be json or text, not %q", c.LogFormat)
	}
	if c.StripeSim && c.StripeURL != "" {
		return c, errors.New("--stripe-sim and --stripe-url are exclusive: the simulator is the Stripe API")
	}
	if !c.StripeSim && c.SimFaults != "" {
		return c, errors.New("--stripe-sim-faults needs --stripe-sim")
	}
	if c.StripeSim {
		if !server.IsLoopback(c.SimListen) {
			return c, fmt.Errorf("--stripe-sim-listen must be a loopback host:port, not %q", c.SimListen)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return c, errors.New("--tls-cert and --tls-key go together")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		return c, errors.New("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS")
	}
	if c.StripeInFlight < 1 || c.StripeInFlight > 10_000 {
		return c, fmt.Errorf("--stripe-max-inflight must be 1 to 10000, not %d", c.StripeInFlight)
	}
	if c.RateLimit < 0 || c.RateBurst < 0 {
		return c, errors.New("--rate-limit and --rate-burst must not be negative")
	}
	tokens, err := callerTokens(c.AuthTokensFile, getenv)
	if err != nil {
		return c, err
	}
	c.tokens = tokens
	if !c.StripeSim {
		key, err := stripeKey(c.StripeKeyFile, getenv)
		if err != nil {
			return c, err
		}
		c.stripeKey = key
	}
	if c.stripeRate, err = resolveStripeRate(c); err != nil {
		return c, err
	}
	c.tracing = telemetry.TracingEnabled(getenv)
	return c, nil
}

// resolveStripeRate reads --stripe-rate: auto follows the key's mode or, with
// the simulator, stays under its rate= fault (a simulator without one has no
// limit to stay under, and `make bench` measures billingd, not pacing).
func resolveStripeRate(c serveConfig) (rate.Limit, error) {
	switch v := strings.TrimSpace(c.StripeRate); v {
	case "off", "0":
		return 0, nil
	case "auto", "":
		if !c.StripeSim {
			return stripeapi.DefaultRate(c.stripeKey), nil
		}
		faults, err := simFaults(c.SimFaults)
		if err != nil {
			return 0, err
		}
		return rate.Limit(faults.Rate * 0.9), nil
	default:
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return 0, fmt.Errorf("--stripe-rate must be auto, off or requests a second, not %q", v)
		}
		return rate.Limit(r), nil
	}
}

// simFaults reads --stripe-sim-faults.
func simFaults(spec string) (stripesim.Faults, error) {
	f, err := stripesim.ParseFaults(spec)
	if err != nil {
		return f, fmt.Errorf("--stripe-sim-faults: %w", err)
	}
	return f, nil
}

// stripeKey reads the secret key from the file or STRIPE_SECRET_KEY. Errors
// name where the key was looked for, never its content.
func stripeKey(file string, getenv func(string) string) (string, error) {
	key, err := readStripeKey(file, getenv)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(key, "pk_") {
		// Never echo it, even a publishable key: the message names the kind.
		return "", errors.New("the Stripe key is a publishable key (pk_…), which cannot call Stripe's API: give billingd a secret key (sk_…) or a restricted key (rk_…)")
	}
	return key, nil
}

// stripeMode says whether a Stripe secret key is a test or a live one, for
// the startup log: never the key itself.
func stripeMode(key string) string {
	switch {
	case strings.HasPrefix(key, "sk_test_"), strings.HasPrefix(key, "rk_test_"):
		return "test"
	case strings.HasPrefix(key, "sk_live_"), strings.HasPrefix(key, "rk_live_"):
		return "live"
	}
	return "unknown"
}

func readStripeKey(file string, getenv func(string) string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read --stripe-key-file: %w", err)
		}
		key := strings.TrimSpace(string(b))
		if key == "" {
			return "", errors.New("--stripe-key-file is empty")
		}
		return key, nil
	}
	if key := strings.TrimSpace(getenv("STRIPE_SECRET_KEY")); key != "" {
		return key, nil
	}
	return "", errors.New("no Stripe key: set STRIPE_SECRET_KEY or --stripe-key-file, or use --stripe-sim to run against the built-in simulator")
}

// checkStore validates --store and --lease-ttl. Errors never repeat the URL:
// it may hold a password.
func checkStore(c serveConfig) error {
	if c.Store == "" {
		return nil
	}
	u, err := url.Parse(c.Store)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return errors.New("--store must be a postgres://user:password@host:port/database URL")
	}
	if c.LeaseTTL < time.Second {
		return fmt.Errorf("--lease-ttl %v: must be at least 1s", c.LeaseTTL)
	}
	return nil
}

// redactedStore is --store as logs may show it: without the password.
func redactedStore(store string) string {
	u, err := url.Parse(store)
	if err != nil {
		return "postgres"
	}
	return u.Redacted()
}

// checkRecovery validates the reconciliation, retention and webhook flags
// and reads the webhook secret. With --stripe-sim and no secret, serve
// generates one for the simulator.
func checkRecovery(c *serveConfig, getenv func(string) string) error {
	if c.Retention < 24*time.Hour {
		return fmt.Errorf("--retention %v: must be at least 24h, Stripe's idempotency window", c.Retention)
	}
	if c.TombstoneRetention < 24*time.Hour {
		return fmt.Errorf("--tombstone-retention %v: must be at least 24h", c.TombstoneRetention)
	}
	if c.SearchLag <= 0 || c.ReconcileInterval <= 0 {
		return errors.New("--search-lag and --reconcile-interval must be positive")
	}
	if c.WebhookListen == "" {
		return nil
	}
	c.webhookSecret = strings.TrimSpace(getenv("STRIPE_WEBHOOK_SECRET"))
	if c.webhookSecret == "" && !c.StripeSim {
		return errors.New("--webhook-listen needs the endpoint secret in STRIPE_WEBHOOK_SECRET")
	}
	return nil
}
