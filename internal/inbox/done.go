// Finished jobs: after each tick the agent reports what became of every
// job and moves the jobs that will never run again out of the inbox into a
// done directory, where they are kept for a bounded time and then pruned.
//
// Reports are logged once per change of verdict: a job that ran is
// reported once and leaves the inbox; a rejected or waiting job is reported
// when it first appears and again only when its verdict changes, not on
// every tick. Exactly-once execution does not depend on this: the journal
// and the nonce store refuse a job that ran, so a crash between a job's run
// and its move only means the next tick finds it completed, reports that
// and moves it.

package inbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/engine"
)

// DefaultRetention is how long finished jobs are kept in the done
// directory: longer than any payload may be valid (7 days), so a job can be
// looked at after it expired.
const DefaultRetention = 14 * 24 * time.Hour

// stampLayout prefixes the name a finished job gets in the done
// directory; Prune reads it back.
const stampLayout = "20060102T150405Z"

// Done is the directory finished jobs are moved to, and the memory of
// which verdict was last reported for each job. Settle and Prune are for
// one goroutine at a time (the agent's tick loop).
type Done struct {
	Dir string // where finished jobs go; created on first use (0700)
	// Retention is how long a finished job is kept in Dir; default
	// DefaultRetention.
	Retention time.Duration
	Now       func() time.Time // default time.Now
	Logger    *slog.Logger     // nil: no logging

	last map[string]string // payload file → verdict last reported
}

// CheckDir returns nil when path is an existing directory, else an error
// naming path and saying what to do.
func CheckDir(flag, path string) error {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s %s does not exist; create it (install -d -m 0700 -o steward %s) or point %s at the jobs directory", flag, path, path, flag)
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, path, err)
	case !st.IsDir():
		return fmt.Errorf("%s %s is not a directory; point %s at the directory that holds the signed jobs", flag, path, flag)
	}
	return nil
}

// Settle reports the fate of each job of a tick (jobs as the engine
// returned them, Name being the payload file) and moves each job whose
// status is final into Dir, with its signature files. It returns the
// first error moving a job; the other jobs are still handled. A job whose
// move failed stays in the inbox: the journal keeps it from running again,
// and the next Settle finds it completed and moves it then.
func (in *Done) Settle(jobs []engine.JobReport) error {
	if in.last == nil {
		in.last = map[string]string{}
	}
	seen := map[string]bool{}
	var first error
	for _, j := range jobs {
		seen[j.Name] = true
		verdict := string(j.Status)
		if j.Status != engine.JobWaiting {
			verdict += "\x00" + j.Reason
		}
		if in.last[j.Name] != verdict {
			in.last[j.Name] = verdict
			in.report(j)
		}
		if !j.Status.Final() || j.Name == "" {
			continue
		}
		to, err := in.retire(j.Name)
		if err != nil {
			in.log().Error("moving a finished signed job out of the inbox failed; it stays there and cannot run again (journal), the next tick retries the move",
				"file", j.Name, "err", err)
			if first == nil {
				first = err
			}
			continue
		}
		delete(in.last, j.Name)
		in.log().Info("signed job moved out of the inbox", "file", j.Name, "to", to)
	}
	for name := range in.last {
		if !seen[name] {
			delete(in.last, name) // gone from the inbox: a job put back is reported afresh
		}
	}
	return first
}

func (in *Done) report(j engine.JobReport) {
	l := in.log().With("file", j.Name)
	if j.Action.Op != "" {
		l = l.With("vmid", j.Action.VMID, "op", j.Action.Op)
	}
	switch j.Status {
	case engine.JobRan:
		l.Info("signed job ran")
	case engine.JobFailed:
		l.Warn("signed job failed and will not run again; sign a new payload to try again", "reason", j.Reason)
	case engine.JobCompleted:
		l.Info("signed job had already been handled (journal); not run again", "outcome", j.Reason)
	case engine.JobRejected:
		l.Warn("signed job rejected; it stays in the inbox and is reported again only if its verdict changes", "reason", j.Reason)
	case engine.JobWaiting:
		l.Info("signed job not run this tick; it stays in the inbox", "reason", j.Reason)
	}
}

// retire moves the payload file and its signature files into Dir,
// named with the time of the move, signatures first: a crash part-way
// leaves the payload in the inbox, where the next tick finds it completed
// and finishes the move.
func (in *Done) retire(payload string) (string, error) {
	if err := os.MkdirAll(in.Dir, 0o700); err != nil {
		return "", err
	}
	stamp := in.now().UTC().Format(stampLayout)
	sigs, err := filepath.Glob(globEscape(payload) + ".sig*")
	if err != nil {
		return "", err
	}
	sort.Strings(sigs)
	base := filepath.Base(payload)
	dst := filepath.Join(in.Dir, stamp+"-"+base)
	for n := 1; exists(dst); n++ {
		dst = filepath.Join(in.Dir, fmt.Sprintf("%s.%d-%s", stamp, n, base))
	}
	for _, s := range sigs {
		if err := atomicfile.Move(s, dst+strings.TrimPrefix(s, payload)); err != nil {
			return "", err
		}
	}
	if err := atomicfile.Move(payload, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// Prune removes the files in Dir whose move time (in their name) is
// older than Retention. It returns how many it removed. A missing Dir
// holds nothing to prune.
func (in *Done) Prune() (int, error) {
	entries, err := os.ReadDir(in.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	ret := in.Retention
	if ret <= 0 {
		ret = DefaultRetention
	}
	cutoff := in.now().Add(-ret)
	n := 0
	for _, e := range entries {
		stamp, _, ok := strings.Cut(e.Name(), "-")
		if !ok || e.IsDir() {
			continue
		}
		stamp, _, _ = strings.Cut(stamp, ".")
		t, err := time.Parse(stampLayout, stamp)
		if err != nil || !t.Before(cutoff) {
			continue
		}
		if err := os.Remove(filepath.Join(in.Dir, e.Name())); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (in *Done) now() time.Time {
	if in.Now != nil {
		return in.Now()
	}
	return time.Now()
}

func (in *Done) log() *slog.Logger {
	if in.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return in.Logger
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// globEscape quotes the glob metacharacters of a path.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
