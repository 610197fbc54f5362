//go:build unix

package storage

import (
	"fmt"
	"syscall"
)

// headroom returns the bytes an unprivileged writer may still use on the
// filesystem holding dir.
func headroom(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	// The fields' types differ between systems.
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
