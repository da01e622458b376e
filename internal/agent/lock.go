package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockDir creates dir (0700) when missing and takes an exclusive lock on
// it, so two agents never share a journal. The returned func releases it.
func LockDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: creating state directory: %w", err)
	}
	fh, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := syscall.Flock(int(fh.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		fh.Close()
		return nil, fmt.Errorf("agent: state directory %s is in use by another steward agent (%w)", dir, err)
	}
	return func() { fh.Close() }, nil
}
