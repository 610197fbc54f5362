// Package storage keeps billingd's records durably in one bbolt file, with
// every write fsync'd before it returns and concurrent writes sharing fsyncs.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/billingd/billingd/service"
	"github.com/billingd/billingd/storage/codec"
)

var _ service.Records = (*DB)(nil)

// Errors returned by this package; compare with errors.Is.
var (
	// ErrClosed is returned by every call on a DB after Close. The service
	// fails closed on it: no record, no Stripe call.
	ErrClosed = errors.New("storage: closed")
	// ErrLocked means another process (or another open handle) holds the
	// file lock: bbolt allows one writer per file, or readers only.
	ErrLocked = errors.New("storage: database file is locked by another process")
	// ErrReadOnly is returned by writes on a DB from OpenReadOnly.
	ErrReadOnly = errors.New("storage: database is open read-only")
	// ErrInvalidRecord means a record cannot be stored (empty or 0x00 in
	// caller, unknown state, ...). It is found before the write joins a batch.
	ErrInvalidRecord = codec.ErrInvalidRecord
	// ErrCorrupt means a stored value or the file layout is not one this
	// version understands.
	ErrCorrupt = codec.ErrCorrupt
	// ErrOldLayout means the file has an older layout than this version
	// reads. Open and OpenReadOnly refuse it and leave it as it is; the
	// error says what to do with it.
	ErrOldLayout = errors.New("storage: older file layout")
)

// CommitMode chooses how concurrent writes share transactions.
type CommitMode int

const (
	// GroupCommit (the default) commits whatever writes queued up while the
	// previous commit ran, in one transaction and one fsync, with no timer:
	// a lone write commits at once, a busy store batches by itself.
	GroupCommit CommitMode = iota
	// BoltBatch uses bbolt's DB.Batch with its defaults (up to 1000 calls or
	// 10 ms). It is kept to benchmark against: its delay caps a closed-loop
	// client at roughly concurrency/10ms writes per second.
	BoltBatch
)

func (m CommitMode) String() string {
	switch m {
	case GroupCommit:
		return "GroupCommit"
	case BoltBatch:
		return "BoltBatch"
	}
	return fmt.Sprintf("CommitMode(%d)", int(m))
}

// Defaults for the options.
const (
	DefaultMaxBatch    = 256
	DefaultLockTimeout = time.Second
)

type options struct {
	mode        CommitMode
	maxBatch    int
	lockTimeout time.Duration
	onCommit    func(d time.Duration, writes int)
}

// Option tunes Open and OpenReadOnly.
type Option func(*options)

// WithCommitObserver reports every group commit's duration (the fsync'd
// transaction) and the number of writes it carried, for metrics. f must be
// cheap; it runs on the committing goroutine.
func WithCommitObserver(f func(d time.Duration, writes int)) Option {
	return func(o *options) { o.onCommit = f }
}

// WithCommitMode selects GroupCommit (default) or BoltBatch.
func WithCommitMode(m CommitMode) Option { return func(o *options) { o.mode = m } }

// WithMaxBatch bounds how many writes one group commit takes, which bounds
// the size (and so the latency) of a single transaction. n <= 0 means
// DefaultMaxBatch.
func WithMaxBatch(n int) Option {
	return func(o *options) {
		if n <= 0 {
			n = DefaultMaxBatch
		}
		o.maxBatch = n
	}
}

// WithLockTimeout bounds the wait for the file lock, so that a second
// process fails with ErrLocked instead of hanging. d <= 0 means
// DefaultLockTimeout: waiting forever is never what billingd wants.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) {
		if d <= 0 {
			d = DefaultLockTimeout
		}
		o.lockTimeout = d
	}
}

// Stats counts write transactions, so tests and benchmarks can see batching.
type Stats struct {
	// Commits is the number of committed write transactions (one fsync
	// each) that carried Claim or Put calls.
	Commits uint64
	// Writes is the number of Claim and Put calls that completed, claims that
	// found an existing record included. A batch of such claims alone writes
	// nothing and is rolled back, not committed, so Writes/Commits is the
	// batching factor only for writes that change something.
	Writes uint64
}

// DB is billingd's record store. It is safe for concurrent use.
type DB struct {
	bolt     *bolt.DB
	opts     options
	readOnly bool
	closed   atomic.Bool

	gc      committer
	commits atomic.Uint64
	writes  atomic.Uint64
	// writeFailed is set by a group commit of records that failed and
	// cleared by one that committed (see Ping).
	writeFailed atomic.Bool

	// lastBatchTx is the BoltBatch transaction last seen, to count commits.
	// Only touched inside write transactions, which bbolt serialises; holding
	// the pointer keeps a new Tx from ever reusing its address.
	lastBatchTx *bolt.Tx
}

// Open opens (creating if needed, with its parent directory) the database at
// path for reading and writing. Every commit is fsync'd: billingd writes a
// record before it moves money, so NoSync is never an option.
func Open(path string, opts ...Option) (*DB, error) {
	o := buildOptions(opts)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      o.lockTimeout,
		NoSync:       false,
		FreelistType: bolt.FreelistMapType,
		// The free page list is not written: every commit would rewrite
		// it whole (a page or more, sorted, as the sweeper frees pages),
		// and Open rebuilds it by walking the file instead, as etcd does.
		// Durability is unchanged: the freelist is derived data.
		NoFreelistSync: true,
	})
	if err != nil {
		return nil, openError(path, o, err)
	}
	if err := bdb.Update(createBuckets); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{bolt: bdb, opts: o}, nil
}

// OpenReadOnly opens an existing database for reading, for admin tools.
//
// bbolt's file lock is exclusive for a writer and shared for readers, so this
// cannot read a file a running server has open: it waits for the lock up to
// the lock timeout (DefaultLockTimeout unless WithLockTimeout) and then fails
// with ErrLocked. The reverse holds too: while a reader has the file, Open
// fails with ErrLocked. Stop the server, or ask it, to inspect a live store.
func OpenReadOnly(path string, opts ...Option) (*DB, error) {
	o := buildOptions(opts)
	bdb, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:  o.lockTimeout,
		ReadOnly: true,
	})
	if err != nil {
		return nil, openError(path, o, err)
	}
	if err := bdb.View(checkLayout); err != nil {
		_ = bdb.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &DB{bolt: bdb, opts: o, readOnly: true}, nil
}

func buildOptions(opts []Option) options {
	o := options{mode: GroupCommit, maxBatch: DefaultMaxBatch, lockTimeout: DefaultLockTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

func openError(path string, o options, err error) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("open %s: waited %v: %w", path, o.lockTimeout, ErrLocked)
	}
	return fmt.Errorf("open %s: %w", path, err)
}

// Close fails writes still waiting for a commit with ErrClosed, waits for the
// commit in progress and any open read, and closes the file. Every later
// call, Close included, returns an error wrapping ErrClosed.
func (db *DB) Close() error {
	if db.closed.Swap(true) {
		return fmt.Errorf("close: %w", ErrClosed)
	}
	db.gc.close()
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// Stats returns the write counters since Open.
func (db *DB) Stats() Stats {
	return Stats{Commits: db.commits.Load(), Writes: db.writes.Load()}
}

// MinHeadroom is the free space Ping wants on the database's filesystem
// after a failed commit: room for a few hundred commits of new records.
const MinHeadroom = 1 << 20

// ErrNoRoom is Ping's answer while the filesystem has less than MinHeadroom
// free after a failed commit.
var ErrNoRoom = errors.New("storage: filesystem nearly full")

// Ping reports whether the store can be written now. While the last commit
// of records succeeded it writes nothing: a disk that fails shows
// on the next write, which fails closed and marks the store down. After a
// failed commit (disk full, a file size limit, an I/O error) only a write
// shows that writes work again, so Ping then commits an empty write
// transaction, which still writes the meta page and
// fsyncs. On a full disk that write alone succeeds (it reuses pages bbolt
// freed) while new records cannot be written, so Ping first wants
// MinHeadroom free on the filesystem. A size limit on the file
// (RLIMIT_FSIZE, a quota) is seen only by the next record that fails.
//
// The free space is looked at on every Ping (one statfs), not only after a
// failure: on a nearly full disk some commits still find pages bbolt freed
// and succeed while others fail, and a store that fails every other write
// must not look healthy.
func (db *DB) Ping(_ context.Context) error {
	if err := db.checkWritable(); err != nil {
		return err
	}
	free, err := headroom(filepath.Dir(db.bolt.Path()))
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if free < MinHeadroom {
		return fmt.Errorf("ping: %d bytes free: %w", free, ErrNoRoom)
	}
	if !db.writeFailed.Load() {
		return nil
	}
	err = db.bolt.Update(func(*bolt.Tx) error { return nil })
	db.noteWrite(err)
	if err != nil {
		return fmt.Errorf("ping: %w", boltError(err))
	}
	return nil
}

// noteWrite remembers whether the last write transaction committed, for
// Ping. Errors that are not the disk's (a record refused before the write, a
// closed store) say nothing about it and are not passed here.
func (db *DB) noteWrite(err error) {
	db.writeFailed.Store(err != nil)
}

// checkOpen is the entry check of every call; bbolt's own "not open" error
// is mapped too, for calls that race with Close.
func (db *DB) checkOpen() error {
	if db.closed.Load() {
		return ErrClosed
	}
	return nil
}

func (db *DB) checkWritable() error {
	if err := db.checkOpen(); err != nil {
		return err
	}
	if db.readOnly {
		return ErrReadOnly
	}
	return nil
}

// boltError maps bbolt's errors to this package's sentinels.
func boltError(err error) error {
	switch {
	case errors.Is(err, bolterrors.ErrDatabaseNotOpen):
		return ErrClosed
	case errors.Is(err, bolterrors.ErrDatabaseReadOnly), errors.Is(err, bolterrors.ErrTxNotWritable):
		return ErrReadOnly
	}
	return err
}
