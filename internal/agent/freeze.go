package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/safefile"
)

// FreezeFile is the file under the state directory that freezes the
// host: while it exists the agent changes nothing in PVE (it observes,
// plans and reports, and every action is reported as held by the
// freeze). Its content is the reason. Only someone with access to the
// host can create or remove it; the hub cannot lift it.
const FreezeFile = "freeze"

// maxFreezeReason bounds the reason read from FreezeFile.
const maxFreezeReason = 4 << 10

// Freeze creates the freeze file of stateDir with reason (atomically).
func Freeze(stateDir, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		reason = "frozen by a local operator"
	}
	if len(reason) > maxFreezeReason {
		return fmt.Errorf("agent: the freeze reason is %d bytes; at most %d", len(reason), maxFreezeReason)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("agent: creating state directory: %w", err)
	}
	return atomicfile.Write(filepath.Join(stateDir, FreezeFile), []byte(reason+"\n"), 0o600)
}

// Unfreeze removes the freeze file of stateDir; it reports whether there
// was one.
func Unfreeze(stateDir string) (bool, error) {
	err := os.Remove(filepath.Join(stateDir, FreezeFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, fmt.Errorf("agent: removing the freeze file: %w", err)
}

// Frozen reports whether the freeze file of stateDir exists, and its
// reason. A freeze file that exists but cannot be read still freezes
// (the reason then says so): the safe reading of a doubt.
func Frozen(stateDir string) (bool, string) {
	if stateDir == "" {
		return false, ""
	}
	path := filepath.Join(stateDir, FreezeFile)
	b, err := safefile.ReadFileNoFollow(path, maxFreezeReason)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, ""
	case err != nil:
		if _, serr := os.Lstat(path); errors.Is(serr, os.ErrNotExist) {
			return false, ""
		}
		return true, fmt.Sprintf("freeze file %s unreadable (%v)", path, err)
	}
	reason := strings.TrimSpace(string(b))
	if reason == "" {
		reason = "frozen by a local operator"
	}
	return true, reason
}
