package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/billingd/billingd/service"
)

// AdminStore is what the admin view reads: every record in the store's key
// order (bbolt: claim time; PostgreSQL: caller, then request_id), and one
// record.
type AdminStore interface {
	Scan(ctx context.Context, fn func(service.Record) bool) error
	Get(ctx context.Context, caller, requestID string) (service.Record, bool, error)
}

// AdminRecord is a record as operators see it: everything but the Stripe
// key and the fingerprint.
type AdminRecord struct {
	Caller         string            `json:"caller"`
	RequestID      string            `json:"request_id"`
	Method         string            `json:"method"`
	State          string            `json:"state"`
	Attempts       int               `json:"attempts"`
	Created        time.Time         `json:"created"`
	FirstAttempt   *time.Time        `json:"first_attempt,omitempty"`
	Updated        time.Time         `json:"updated"`
	RequestKey     string            `json:"request_key"`
	StripeObjectID string            `json:"stripe_object_id,omitempty"`
	StripeStatus   string            `json:"stripe_status,omitempty"`
	Amount         int64             `json:"amount,omitempty"`
	Currency       string            `json:"currency,omitempty"`
	Reason         string            `json:"reason,omitempty"`
	Message        string            `json:"message,omitempty"`
	ErrorMetadata  map[string]string `json:"error_metadata,omitempty"`
	Request        any               `json:"request,omitempty"`
}

// AdminView returns the operator's view of rec.
func AdminView(rec service.Record) AdminRecord {
	a := AdminRecord{
		Caller: rec.Caller, RequestID: rec.RequestID, Method: string(rec.Method), State: rec.State.String(),
		Attempts: rec.Attempts, Created: rec.Created, Updated: rec.Updated, RequestKey: rec.RequestKey,
		StripeObjectID: rec.Result.ObjectID, StripeStatus: rec.Result.Status, Amount: rec.Result.Amount, Currency: rec.Result.Currency,
	}
	if !rec.FirstAttempt.IsZero() {
		t := rec.FirstAttempt
		a.FirstAttempt = &t
	}
	if e := rec.Err; e != nil {
		a.Reason, a.Message, a.ErrorMetadata = string(e.Reason), e.Message, e.Metadata
		if a.StripeObjectID == "" {
			a.StripeObjectID = e.Metadata["stripe_object_id"]
		}
	}
	if p, err := rec.Request(); err == nil {
		a.Request = p
	}
	return a
}

// ParseState reads a state name (PENDING, SUCCEEDED, FAILED, INDETERMINATE,
// REQUIRES_ACTION, PROCESSING, AUTHORIZED).
func ParseState(s string) (service.State, error) {
	names := make([]string, 0, len(service.States()))
	for _, st := range service.States() {
		if st.String() == s {
			return st, nil
		}
		names = append(names, st.String())
	}
	return 0, fmt.Errorf("unknown state %q: want one of %s", s, strings.Join(names, ", "))
}

// DefaultAdminLimit bounds a listing unless the request asks for another.
const DefaultAdminLimit = 1000

// NewAdminHandler returns the read-only admin API:
//
//	GET /records?state=S&limit=N          → [AdminRecord]
//	GET /record?caller=C&request_id=R     → AdminRecord, 404 if none
func NewAdminHandler(store AdminStore) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /records", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var (
			want   service.State
			filter = q.Get("state") != ""
		)
		if filter {
			st, err := ParseState(q.Get("state"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			want = st
		}
		limit := DefaultAdminLimit
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				http.Error(w, "limit must be a positive integer", http.StatusBadRequest)
				return
			}
			limit = n
		}
		out := []AdminRecord{}
		err := store.Scan(r.Context(), func(rec service.Record) bool {
			if !filter || rec.State == want {
				out = append(out, AdminView(rec))
			}
			return len(out) < limit
		})
		if err != nil {
			http.Error(w, "cannot read records", http.StatusInternalServerError)
			return
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("GET /record", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		rec, found, err := store.Get(r.Context(), q.Get("caller"), q.Get("request_id"))
		switch {
		case err != nil:
			http.Error(w, "cannot read the record", http.StatusInternalServerError)
		case !found:
			http.Error(w, "no such record", http.StatusNotFound)
		default:
			writeJSON(w, AdminView(rec))
		}
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// AdminSocketPath is where the server opens its admin socket for the
// database at dbPath.
func AdminSocketPath(dbPath string) string { return dbPath + ".admin.sock" }

// ServeAdmin serves NewAdminHandler(store) on a Unix socket at path, mode
// 0600, until stop is called; stop removes the socket. The caller owns the
// database lock, so a socket file already at path is a crashed server's
// leftover and is replaced.
func ServeAdmin(path string, store AdminStore, log *slog.Logger) (stop func(), err error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s: exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
	}
	// Listen under a temporary name and rename once it is 0600, so the
	// socket is never reachable with looser permissions.
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	_ = os.Remove(tmp)
	lis, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		_ = lis.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = lis.Close()
		_ = os.Remove(tmp)
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	hs := &http.Server{Handler: NewAdminHandler(store), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("admin socket stopped", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
		<-done
		_ = os.Remove(path)
	}, nil
}

// AdminClient returns an HTTP client whose every request goes to the admin
// socket at path (use any http://billingd/… URL).
func AdminClient(path string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}
}
