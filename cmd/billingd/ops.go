package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/billingd/billingd/server"
	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/postgres"
)

const opsUsage = `Usage:
  billingd ops list [--state S] [--limit N] [--json] [--db PATH | --store URL]
  billingd ops show REQUEST_ID [--caller C] [--json] [--db PATH | --store URL]

Reads records without changing them. When no server holds the database it is
read directly (read-only); while a server runs, the server is asked over its
admin socket (<db>.admin.sock). With --store (BILLINGD_STORE), the PostgreSQL
database the replicas share is read directly.
States: PENDING, SUCCEEDED, FAILED, INDETERMINATE, REQUIRES_ACTION, PROCESSING, AUTHORIZED.
The Stripe idempotency key is never printed.
`

// opsFlags are the flags both ops commands take.
type opsFlags struct {
	db, store, state, caller string
	limit                    int
	json                     bool
}

func ops(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, opsUsage)
		if len(args) == 0 {
			return errors.New("ops: missing list or show")
		}
		return nil
	}
	cmd := args[0]
	if cmd != "list" && cmd != "show" {
		fmt.Fprint(stderr, opsUsage)
		return fmt.Errorf("ops: unknown command %q", cmd)
	}
	var f opsFlags
	fs := flag.NewFlagSet("billingd ops "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, opsUsage) }
	defDB := getenv("BILLINGD_DB")
	if defDB == "" {
		defDB = "./data/billingd.db"
	}
	fs.StringVar(&f.db, "db", defDB, "bbolt database file (BILLINGD_DB)")
	fs.StringVar(&f.store, "store", getenv("BILLINGD_STORE"), "PostgreSQL URL the replicas share (BILLINGD_STORE); read instead of --db")
	fs.BoolVar(&f.json, "json", false, "print JSON instead of a table")
	if cmd == "list" {
		fs.StringVar(&f.state, "state", "", "only records in this state")
		fs.IntVar(&f.limit, "limit", server.DefaultAdminLimit, "print at most this many records")
	} else {
		fs.StringVar(&f.caller, "caller", "anonymous", "the caller the request belongs to (anonymous: the one caller when authentication is off)")
	}
	// Flags may come before or after REQUEST_ID.
	var pos []string
	rest := args[1:]
	for {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	switch {
	case cmd == "list" && len(pos) > 0:
		return fmt.Errorf("ops list: unexpected arguments %v", pos)
	case cmd == "show" && (len(pos) != 1 || f.caller == ""):
		fmt.Fprint(stderr, opsUsage)
		return errors.New("ops show: needs one REQUEST_ID (and --caller unless it is anonymous)")
	}
	var filter service.State
	if f.state != "" {
		st, err := server.ParseState(f.state)
		if err != nil {
			return fmt.Errorf("ops list: %w", err)
		}
		filter = st
	}

	var recs []server.AdminRecord
	var err error
	if cmd == "list" {
		recs, err = opsList(ctx, f, filter)
	} else {
		var r server.AdminRecord
		r, err = opsShow(ctx, f, pos[0])
		recs = []server.AdminRecord{r}
	}
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if cmd == "show" {
			return enc.Encode(recs[0])
		}
		return enc.Encode(recs)
	}
	if cmd == "show" {
		return printRecord(stdout, recs[0])
	}
	return printTable(stdout, recs)
}

// errNoRecord is ops show's answer for an unknown (caller, request_id).
var errNoRecord = errors.New("ops show: no such record")

// openForOps opens the database read-only, or reports that a server holds it.
func openForOps(path string) (db *storage.DB, locked bool, err error) {
	db, err = storage.OpenReadOnly(path, storage.WithLockTimeout(200*time.Millisecond))
	if errors.Is(err, storage.ErrLocked) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	return db, false, nil
}

// openPostgresForOps opens --store. Errors show the URL without its password.
func openPostgresForOps(ctx context.Context, store string) (*postgres.Store, error) {
	if err := checkStore(serveConfig{Store: store, LeaseTTL: postgres.DefaultLeaseTTL}); err != nil {
		return nil, err
	}
	pg, err := postgres.Open(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", redactedStore(store), err)
	}
	return pg, nil
}

// scanList collects up to f.limit records in state filter (any: unspecified).
func scanList(ctx context.Context, db server.AdminStore, f opsFlags, filter service.State) ([]server.AdminRecord, error) {
	out := []server.AdminRecord{}
	err := db.Scan(ctx, func(r service.Record) bool {
		if filter == service.StateUnspecified || r.State == filter {
			out = append(out, server.AdminView(r))
		}
		return len(out) < f.limit
	})
	return out, err
}

func showOne(ctx context.Context, db server.AdminStore, f opsFlags, requestID string) (server.AdminRecord, error) {
	rec, found, err := db.Get(ctx, f.caller, requestID)
	if err != nil {
		return server.AdminRecord{}, err
	}
	if !found {
		return server.AdminRecord{}, errNoRecord
	}
	return server.AdminView(rec), nil
}

func opsList(ctx context.Context, f opsFlags, filter service.State) ([]server.AdminRecord, error) {
	if f.store != "" {
		pg, err := openPostgresForOps(ctx, f.store)
		if err != nil {
			return nil, err
		}
		defer pg.Close()
		return scanList(ctx, pg, f, filter)
	}
	db, locked, err := openForOps(f.db)
	if err != nil {
		return nil, err
	}
	if locked {
		q := url.Values{"limit": {strconv.Itoa(f.limit)}}
		if filter != service.StateUnspecified {
			q.Set("state", filter.String())
		}
		var out []server.AdminRecord
		return out, askServer(ctx, f.db, "/records?"+q.Encode(), &out)
	}
	defer db.Close()
	return scanList(ctx, db, f, filter)
}

func opsShow(ctx context.Context, f opsFlags, requestID string) (server.AdminRecord, error) {
	if f.store != "" {
		pg, err := openPostgresForOps(ctx, f.store)
		if err != nil {
			return server.AdminRecord{}, err
		}
		defer pg.Close()
		return showOne(ctx, pg, f, requestID)
	}
	db, locked, err := openForOps(f.db)
	if err != nil {
		return server.AdminRecord{}, err
	}
	if locked {
		var out server.AdminRecord
		q := url.Values{"caller": {f.caller}, "request_id": {requestID}}
		return out, askServer(ctx, f.db, "/record?"+q.Encode(), &out)
	}
	defer db.Close()
	return showOne(ctx, db, f, requestID)
}

// askServer reads path from the admin socket of the server holding dbPath.
func askServer(ctx context.Context, dbPath, path string, v any) error {
	sock := server.AdminSocketPath(dbPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://billingd"+path, nil)
	if err != nil {
		return err
	}
	resp, err := server.AdminClient(sock).Do(req)
	if err != nil {
		return fmt.Errorf("database %s is locked by a running server, and its admin socket %s does not answer: %w", dbPath, sock, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return json.NewDecoder(resp.Body).Decode(v)
	case http.StatusNotFound:
		return errNoRecord
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return fmt.Errorf("admin socket: %s: %s", resp.Status, b)
}

func printTable(w io.Writer, recs []server.AdminRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALLER\tREQUEST_ID\tMETHOD\tSTATE\tATTEMPTS\tUPDATED\tOBJECT\tREASON")
	for _, r := range recs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Caller, r.RequestID, r.Method, r.State,
			r.Attempts, r.Updated.Format(time.RFC3339), dash(r.StripeObjectID), dash(r.Reason))
	}
	return tw.Flush()
}

func printRecord(w io.Writer, r server.AdminRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("caller", r.Caller)
	row("request_id", r.RequestID)
	row("method", r.Method)
	row("state", r.State)
	row("attempts", strconv.Itoa(r.Attempts))
	row("created", r.Created.Format(time.RFC3339Nano))
	if r.FirstAttempt != nil {
		row("first_attempt", r.FirstAttempt.Format(time.RFC3339Nano))
	}
	row("updated", r.Updated.Format(time.RFC3339Nano))
	row("request_key", r.RequestKey)
	row("stripe_object_id", dash(r.StripeObjectID))
	if r.StripeStatus != "" {
		row("stripe_status", r.StripeStatus)
	}
	if r.Amount != 0 {
		row("amount", strconv.FormatInt(r.Amount, 10)+" "+r.Currency)
	}
	if r.Reason != "" {
		row("reason", r.Reason)
		row("message", r.Message)
	}
	if r.Request != nil {
		b, err := json.Marshal(r.Request)
		if err == nil {
			row("request", string(b))
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
