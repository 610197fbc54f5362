package storage

import (
	"bytes"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Hooks for the black-box tests in package storage_test. They exist because
// batching and cancellation in the group commit depend on timing; holding
// the commit makes those tests deterministic instead of hopeful.

// HoldCommits makes db behave as if a commit were running: writes queue up
// and wait until release, which hands the queue to a leader as a finished
// commit would. Call it only while no write is in flight.
func (db *DB) HoldCommits() (release func()) {
	c := &db.gc
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.running {
		panic("storage: HoldCommits while a commit is running")
	}
	c.running = true
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.handOff()
			c.mu.Unlock()
		})
	}
}

// Queued returns how many writes wait for a commit.
func (db *DB) Queued() int {
	db.gc.mu.Lock()
	defer db.gc.mu.Unlock()
	return len(db.gc.queue)
}

// RecordsBucket and RecordPos let tests write raw values into a closed file.
func RecordsBucket() []byte { return bytes.Clone(bucketRecords) }

// RecordPos is the records key of (caller, requestID) in tx, or nil.
func RecordPos(tx *bolt.Tx, caller, requestID string) []byte {
	return bytes.Clone(findPos(tx, recordKey(caller, requestID), lookupKey(caller, requestID)))
}
