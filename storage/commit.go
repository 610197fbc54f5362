package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	storagev1 "github.com/billingd/billingd/gen/billingd/storage/v1"
	"github.com/billingd/billingd/service"
)

var (
	// errNothingWritten rolls back a batch with no changes (see commit).
	errNothingWritten = errors.New("storage: nothing written")
	// errCommitPanicked answers the ops of a batch whose commit panicked.
	errCommitPanicked = errors.New("storage: commit panicked")
)

// op is one Claim or Put on its way into a write transaction. Everything that
// can fail without looking at the database (validation, encoding) is done
// before the op is queued.
type op struct {
	claim  bool
	name   []byte            // recordKey(caller, request_id)
	hash   [32]byte          // nameHash(caller, request_id): a tombstone's key
	lookup []byte            // lookupKey(caller, request_id)
	msg    *storagev1.Record // the new record, for its index entry
	val    []byte            // msg encoded

	// The outcome, written by whoever commits the op and read by its owner
	// after opDone.
	created  bool
	existing service.Record
	tomb     *service.Tombstone // a claim found no record but this tombstone
	err      error

	state opState // guarded by committer.mu
	// wake is signalled (never closed) when the op is promoted to leader and
	// when it is done; its owner re-reads state under the lock.
	wake chan struct{}
}

// opState is where an op is in the group commit.
type opState uint8

const (
	opQueued  opState = iota // waiting in the queue
	opLeading                // head of the queue; its owner runs the next commit
	opTaken                  // in a commit: its outcome will be reported, whatever the caller's ctx says
	opDone                   // outcome set
)

// committer is the queue of the leader/follower group commit. It replaces
// bbolt's Batch, whose timer adds up to MaxBatchDelay (10 ms) to every write:
// here the first writer to find no commit running becomes leader and commits
// at once; writers arriving meanwhile queue up, and when the commit ends the
// head of the queue is promoted and commits all of them together. Batches
// form exactly when the disk is the bottleneck, and never wait on a clock.
type committer struct {
	mu      sync.Mutex
	queue   []*op
	running bool // a leader exists (committing or promoted); false implies an empty queue
	closed  bool
}

func signal(o *op) {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// handOff passes leadership to the head of the queue, or ends it. c.mu held.
func (c *committer) handOff() {
	if len(c.queue) == 0 {
		c.running = false
		return
	}
	h := c.queue[0]
	h.state = opLeading
	signal(h)
}

// remove drops o, which has not been taken, from the queue. c.mu held.
func (c *committer) remove(o *op) {
	for i, q := range c.queue {
		if q == o {
			copy(c.queue[i:], c.queue[i+1:])
			c.queue[len(c.queue)-1] = nil
			c.queue = c.queue[:len(c.queue)-1]
			return
		}
	}
}

// close fails every op not yet taken with ErrClosed; a commit in progress
// finishes and reports normally.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	drained := c.queue
	c.queue = nil
	for _, o := range drained {
		o.err = ErrClosed
		o.state = opDone
	}
	c.mu.Unlock()
	for _, o := range drained {
		signal(o)
	}
}

// newOp validates and encodes rec for a write.
func (db *DB) newOp(claim bool, rec *service.Record) (*op, error) {
	if err := db.checkWritable(); err != nil {
		return nil, err
	}
	if err := validate(rec); err != nil {
		return nil, err
	}
	m := toProto(rec)
	val, err := encodeStored(m)
	if err != nil {
		return nil, err
	}
	h := nameHash(rec.Caller, rec.RequestID)
	lookup := lookupOfHash(h)
	return &op{claim: claim, name: recordKey(rec.Caller, rec.RequestID), hash: h, lookup: lookup[:], msg: m, val: val}, nil
}

// submit runs o in a write transaction according to the commit mode and
// returns when its outcome is durable, or when ctx ends before o was taken
// into a commit (then o is never applied).
func (db *DB) submit(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if db.opts.mode == BoltBatch {
		return db.boltBatch(o)
	}
	o.wake = make(chan struct{}, 1)
	c := &db.gc
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.queue = append(c.queue, o)
	if !c.running {
		c.running = true
		o.state = opLeading
		c.mu.Unlock()
		db.lead(o)
		return o.err
	}
	c.mu.Unlock()

	done := ctx.Done()
	for {
		select {
		case <-o.wake:
		case <-done:
			c.mu.Lock()
			switch o.state {
			case opQueued:
				c.remove(o)
				c.mu.Unlock()
				return ctx.Err()
			case opLeading:
				c.remove(o)
				c.handOff()
				c.mu.Unlock()
				return ctx.Err()
			}
			c.mu.Unlock()
			// Taken: the commit decides, and the caller must learn what it
			// decided. It is at most one transaction away.
			done = nil
			continue
		}
		c.mu.Lock()
		st := o.state
		c.mu.Unlock()
		switch st {
		case opDone:
			return o.err
		case opLeading:
			db.lead(o)
			return o.err
		}
	}
}

// lead commits up to maxBatch queued ops, self (the head) first, in one
// transaction, then promotes the next head if more ops arrived.
func (db *DB) lead(self *op) {
	c := &db.gc
	c.mu.Lock()
	if self.state != opLeading { // Close failed it meanwhile
		c.mu.Unlock()
		return
	}
	n := min(len(c.queue), db.opts.maxBatch)
	batch := make([]*op, n)
	copy(batch, c.queue)
	rest := copy(c.queue, c.queue[n:])
	clear(c.queue[rest:])
	c.queue = c.queue[:rest]
	for _, o := range batch {
		o.state = opTaken
	}
	c.mu.Unlock()

	finished := false
	// Deferred so that a panic in the commit (which the server's recovery
	// interceptor may swallow) still answers the batch and passes leadership
	// on, instead of wedging every later write.
	defer func() {
		c.mu.Lock()
		for _, o := range batch {
			if !finished {
				o.err = errCommitPanicked
			}
			o.state = opDone
		}
		c.handOff()
		c.mu.Unlock()
		for _, o := range batch {
			if o != self {
				signal(o)
			}
		}
	}()
	db.commit(batch)
	finished = true
}

// commit applies batch in queue order in one transaction. An op that fails
// gets its error and is dropped, and the transaction is retried without it,
// so one bad op cannot fail the others (bbolt's Batch does the same).
//
// A batch that wrote nothing (claims that all found their record) is rolled
// back instead of committed: what it read was fsync'd by earlier commits, so
// the answer is as durable without another fsync.
func (db *DB) commit(batch []*op) {
	for len(batch) > 0 {
		failed := -1
		start := time.Now()
		err := db.bolt.Update(func(tx *bolt.Tx) error {
			setFill(tx)
			wrote := false
			for i, o := range batch {
				w, err := applyOp(tx, o)
				if err != nil {
					failed = i
					return err
				}
				wrote = wrote || w
			}
			if !wrote {
				return errNothingWritten
			}
			return nil
		})
		if failed >= 0 {
			batch[failed].err = boltError(err)
			rest := make([]*op, 0, len(batch)-1)
			rest = append(rest, batch[:failed]...)
			batch = append(rest, batch[failed+1:]...)
			continue
		}
		switch {
		case err == nil:
			db.noteWrite(nil)
			db.commits.Add(1)
			db.writes.Add(uint64(len(batch)))
			if db.opts.onCommit != nil {
				db.opts.onCommit(time.Since(start), len(batch))
			}
		case errors.Is(err, errNothingWritten):
			err = nil
			db.writes.Add(uint64(len(batch)))
		default:
			err = boltError(err)
			if !errors.Is(err, ErrClosed) {
				db.noteWrite(err)
			}
		}
		for _, o := range batch {
			o.err = err
		}
		return
	}
}

// boltBatch runs o through bbolt's DB.Batch, for comparison with GroupCommit.
// Batch may call the function more than once: applyOp resets o's outcome.
func (db *DB) boltBatch(o *op) error {
	err := db.bolt.Batch(func(tx *bolt.Tx) error {
		if tx != db.lastBatchTx {
			db.lastBatchTx = tx
			setFill(tx)
			tx.OnCommit(func() { db.commits.Add(1) })
		}
		if _, err := applyOp(tx, o); err != nil {
			return err
		}
		tx.OnCommit(func() { db.writes.Add(1) })
		return nil
	})
	return boltError(err)
}

// applyOp is the read-check-write of one Claim or Put inside tx. It reports
// whether it wrote anything.
func applyOp(tx *bolt.Tx, o *op) (wrote bool, err error) {
	o.created, o.existing, o.tomb = false, service.Record{}, nil
	var old *storagev1.Record
	pos := findPos(tx, o.name, o.lookup)
	if pos != nil {
		v := tx.Bucket(bucketRecords).Get(pos)
		if v == nil {
			return false, fmt.Errorf("%w: reqkeys entry %q has no record", ErrCorrupt, o.lookup)
		}
		m, err := decodeStored(pos[tsLen:], v)
		if err != nil {
			return false, fmt.Errorf("stored record: %w", err)
		}
		if o.claim {
			o.existing = fromProto(m)
			return false, nil
		}
		old = m
		pos = bytes.Clone(pos) // bbolt's bytes are valid only until the next write
	} else {
		if o.claim {
			// No record: a swept one's tombstone refuses the claim. The
			// sweep that wrote it deleted the record in its own
			// transaction, so this one sees one or the other.
			t, found, err := getTombstone(tx, o.hash[:])
			if err != nil {
				return false, err
			}
			if found {
				o.tomb = &t
				return false, nil
			}
		}
		pos = posKey(o.msg.CreateUnixNano, o.name)
	}
	if err := writeRecord(tx, pos, old, o.msg, o.val); err != nil {
		return false, err
	}
	o.created = o.claim
	return true, nil
}
