// Package postgres keeps billingd's records in PostgreSQL, so several billingd
// replicas can share one durable, transactional store; record leases keep
// two replicas from driving one record at once.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/billingd/billingd/service"
)

var _ service.Store = (*Store)(nil)

// Errors returned by this package; compare with errors.Is. Records that
// cannot be stored are refused with codec.ErrInvalidRecord and unreadable
// ones with codec.ErrCorrupt, as by the bbolt store.
var (
	// ErrClosed is returned by every call on a Store after Close.
	ErrClosed = errors.New("postgres: store closed")
	// ErrSchemaTooNew means a newer billingd migrated the database past the
	// versions this binary knows: it refuses to write what it may misread.
	ErrSchemaTooNew = errors.New("postgres: database schema is newer than this billingd")
	// ErrSchemaUnknown means schema_migrations lists, under a version this
	// binary has, a migration other than its own: the schema was made by
	// other migrations, which this binary does not read. Open refuses it and
	// changes nothing; the error says what to do with it.
	ErrSchemaUnknown = errors.New("postgres: database schema was made by migrations this billingd does not have")
)

// Defaults for the options.
const (
	// DefaultLeaseTTL is how long a record's lease outlives its holder: a
	// replica that dies mid-drive blocks its records for at most this long.
	// A live holder renews its leases every third of it.
	DefaultLeaseTTL = 15 * time.Second
	// DefaultMaxConns sizes the pool when the DSN has no pool_max_conns.
	DefaultMaxConns = 16
	// DefaultConnectTimeout bounds a new connection when the DSN has no
	// connect_timeout. pgx has no bound of its own: against a server that
	// is gone without refusing (a dead host, a dropped route) every call
	// would wait for its whole context, and callers would see their
	// deadlines pass instead of STORAGE_UNAVAILABLE.
	DefaultConnectTimeout = 2 * time.Second
)

type options struct {
	leaseTTL time.Duration
	owner    string
}

// Option tunes Open.
type Option func(*options)

// WithLeaseTTL sets how long a lease lasts without renewal (d <= 0:
// DefaultLeaseTTL). Every replica on a database should use the same TTL.
func WithLeaseTTL(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			d = DefaultLeaseTTL
		}
		o.leaseTTL = d
	}
}

// WithOwner names this handle as lease holder instead of the generated
// host:pid:random name. Two live handles must never share a name.
func WithOwner(name string) Option { return func(o *options) { o.owner = name } }

// Store is billingd's record store on PostgreSQL. It is safe for concurrent
// use. Each Store is one lease holder: open one per process.
type Store struct {
	pool   *pgxpool.Pool
	owner  string
	ttl    time.Duration
	closed atomic.Bool

	// held are the records whose lease this handle holds, kept alive by
	// the renewal loop until Release or a final Put.
	mu   sync.Mutex
	held map[recordKey]struct{}

	stop    context.CancelFunc
	renewed sync.WaitGroup
}

type recordKey struct{ caller, requestID string }

// Open connects to the database at dsn (a postgres:// URL or key=value
// string; pool_max_conns and the other pgxpool settings are honoured),
// applies the schema migrations it lacks, and starts renewing leases.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	o := options{leaseTTL: DefaultLeaseTTL}
	for _, opt := range opts {
		opt(&o)
	}
	if o.owner == "" {
		o.owner = ownerName()
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err) // pgx redacts the password
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	s := &Store{pool: pool, owner: o.owner, ttl: o.leaseTTL, held: map[recordKey]struct{}{}}
	var rctx context.Context
	rctx, s.stop = context.WithCancel(context.Background())
	s.renewed.Add(1)
	go s.renewLoop(rctx)
	return s, nil
}

// ownerName is unique per process and says where the holder runs.
func ownerName() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b))
}

// Owner returns the name this handle holds leases under.
func (s *Store) Owner() string { return s.owner }

// Close stops renewing leases and closes the pool, waiting for calls in
// progress. Leases still held are not released: they expire, as a crashed
// replica's would, and the service releases those of drives it cancels
// before closing. Every later call returns an error wrapping ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("close: %w", ErrClosed)
	}
	s.stop()
	s.renewed.Wait()
	s.pool.Close()
	return nil
}

// Ping reports whether the database answers: one round trip on a pooled
// connection (a new one if the idle ones died with the server).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// ttlSeconds is the lease TTL as the float seconds the SQL multiplies.
func (s *Store) ttlSeconds() float64 { return s.ttl.Seconds() }
