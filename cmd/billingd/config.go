package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// serveConfig is everything `billingd serve` is told. stripeKey is resolved
// from the environment or a file, never from a flag value, and never printed.
type serveConfig struct {
	Listen        string
	DB            string
	StripeURL     string
	StripeSim     bool
	SimFaults     string
	SimSeed       int64
	StripeKeyFile string
	LogFormat     string
	ShutdownGrace time.Duration

	stripeKey string
}

// errHelp is returned after printing usage for -h/--help.
var errHelp = flag.ErrHelp

// envFor names the environment variable that sets each flag, so every flag is
// settable both ways; a flag on the command line wins over the environment.
var envFor = map[string]string{
	"listen":            "BILLINGD_LISTEN",
	"db":                "BILLINGD_DB",
	"stripe-url":        "BILLINGD_STRIPE_URL",
	"stripe-sim":        "BILLINGD_STRIPE_SIM",
	"stripe-sim-faults": "BILLINGD_STRIPE_SIM_FAULTS",
	"stripe-sim-seed":   "BILLINGD_STRIPE_SIM_SEED",
	"stripe-key-file":   "BILLINGD_STRIPE_KEY_FILE",
	"log-format":        "BILLINGD_LOG_FORMAT",
	"shutdown-grace":    "BILLINGD_SHUTDOWN_GRACE",
}

func parseServe(args []string, getenv func(string) string, stderr io.Writer) (serveConfig, error) {
	var c serveConfig
	fs := flag.NewFlagSet("billingd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:50051", "gRPC listen address")
	fs.StringVar(&c.DB, "db", "./data/billingd.db", "bbolt database file (one process owns it)")
	fs.StringVar(&c.StripeURL, "stripe-url", "", "Stripe API base URL, e.g. a stripe-mock or fake (default: Stripe itself)")
	fs.BoolVar(&c.StripeSim, "stripe-sim", false, "run against the built-in Stripe simulator (no key needed)")
	fs.StringVar(&c.SimFaults, "stripe-sim-faults", "", "simulator fault rates, e.g. unavailable=0.05,drop_after=0.02,server_error=0.01,rate_limit=0.02,drop_before=0.02,latency=20ms")
	fs.Int64Var(&c.SimSeed, "stripe-sim-seed", 1, "simulator random seed (faults and ids are reproducible)")
	fs.StringVar(&c.StripeKeyFile, "stripe-key-file", "", "file holding the Stripe secret key (else STRIPE_SECRET_KEY)")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 20*time.Second, "how long in-flight calls may finish on SIGTERM")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: billingd serve [flags]\n\nEvery flag can also be set by the environment variable shown.\nThe Stripe secret key comes only from STRIPE_SECRET_KEY or --stripe-key-file.\n\nFlags:\n")
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (%s)\n    \t%s", f.Name, envFor[f.Name], f.Usage)
			if f.DefValue != "" && f.DefValue != "false" {
				fmt.Fprintf(stderr, " (default %q)", f.DefValue)
			}
			fmt.Fprintln(stderr)
		})
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, env := range envFor {
		if v := getenv(env); v != "" && !set[name] {
			if err := fs.Set(name, v); err != nil {
				return c, fmt.Errorf("%s: %w", env, err)
			}
		}
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
	if !c.StripeSim {
		key, err := stripeKey(c.StripeKeyFile, getenv)
		if err != nil {
			return c, err
		}
		c.stripeKey = key
	}
	return c, nil
}

// stripeKey reads the secret key from the file or STRIPE_SECRET_KEY. Errors
// name where the key was looked for, never its content.
func stripeKey(file string, getenv func(string) string) (string, error) {
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
