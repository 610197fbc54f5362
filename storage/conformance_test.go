package storage_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/billingd/billingd/storage"
	"github.com/billingd/billingd/storage/storagetest"
)

// TestConformance runs the record-store conformance suite on bbolt, in both
// commit modes.
func TestConformance(t *testing.T) {
	t.Parallel()
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			storagetest.Run(t, storagetest.Backend{New: func(t *testing.T) func(t *testing.T) storagetest.Store {
				path := filepath.Join(t.TempDir(), "billingd.db")
				return func(t *testing.T) storagetest.Store {
					t.Helper()
					db, err := storage.Open(path, storage.WithCommitMode(mode))
					if err != nil {
						t.Fatalf("Open: %v", err)
					}
					t.Cleanup(func() {
						if err := db.Close(); err != nil && !errors.Is(err, storage.ErrClosed) {
							t.Errorf("Close: %v", err)
						}
					})
					return db
				}
			}})
		})
	}
}
