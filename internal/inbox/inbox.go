// Package inbox reads signed jobs from the agent's jobs directory (the
// --signed-jobs inbox): every PAYLOAD.json with its signatures in
// PAYLOAD.json.sig, PAYLOAD.json.sig.2, ...
//
// Whatever is dropped into the directory is read defensively (see
// package safefile): only regular files, never through a symlink, a
// payload at most signedop.MaxPayloadSize and a signature at most
// signedop.MaxSignatureSize bytes. An entry that cannot be read (a FIFO, a
// directory named x.json, a symlink, a file too large, a permission
// error) is a Problem naming the file: that one job is skipped and every
// other job, and the rest of the agent's tick, proceeds. Inbox logs each
// problem once per change of verdict, not on every read.
package inbox

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
)

// Job is one signed job read from the inbox.
type Job struct {
	File string // the payload file's path
	signedop.Job
}

// Problem is an inbox entry that could not be read; its job (if it is a
// payload or one of its signatures) is skipped.
type Problem struct {
	File string // the entry's path; the directory itself when it could not be listed
	Err  error
}

func (p Problem) String() string { return p.Err.Error() }

// Scan reads the jobs in dir, in payload file name order. It never fails
// as a whole: an unreadable directory is one Problem and no jobs; an
// unreadable entry is a Problem and its job is left out.
func Scan(dir string) ([]Job, []Problem) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, []Problem{{File: dir, Err: fmt.Errorf("inbox: listing signed jobs: %w", err)}}
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	var (
		jobs     []Job
		problems []Problem
	)
	for _, name := range names {
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		p := filepath.Join(dir, name)
		b, err := safefile.ReadFileNoFollow(p, signedop.MaxPayloadSize)
		if err != nil {
			problems = append(problems, Problem{File: p, Err: fmt.Errorf("inbox: signed job %s skipped: %w", p, err)})
			continue
		}
		j := Job{File: p, Job: signedop.Job{Payload: b, Name: p}}
		ok := true
		// Names are sorted, so the signatures of name form one run.
		start, _ := slices.BinarySearch(names, name+".sig")
		for _, sn := range names[start:] {
			if !strings.HasPrefix(sn, name+".sig") {
				break
			}
			s := filepath.Join(dir, sn)
			sb, err := safefile.ReadFileNoFollow(s, signedop.MaxSignatureSize)
			if err != nil {
				problems = append(problems, Problem{File: s, Err: fmt.Errorf("inbox: signed job %s skipped: signature %w", p, err)})
				ok = false
				break
			}
			j.Signatures = append(j.Signatures, sb)
		}
		if ok {
			jobs = append(jobs, j)
		}
	}
	return jobs, problems
}

// Inbox reads a jobs directory tick after tick and logs each Problem once
// per change of verdict: when it first appears and whenever its message
// changes, not again while it stays the same. Safe for concurrent use.
type Inbox struct {
	Dir    string       // "" means no inbox: Read returns nothing
	Logger *slog.Logger // nil: problems are not logged

	mu       sync.Mutex
	reported map[string]string // file → message last logged
}

// Read scans Dir (see Scan) and logs new or changed problems. A problem
// that disappears is forgotten, so it is logged again if it comes back.
func (in *Inbox) Read() []Job {
	if in.Dir == "" {
		return nil
	}
	jobs, problems := Scan(in.Dir)
	in.mu.Lock()
	defer in.mu.Unlock()
	now := make(map[string]string, len(problems))
	for _, p := range problems {
		msg := p.String()
		now[p.File] = msg
		if in.reported[p.File] == msg {
			continue
		}
		if in.Logger != nil {
			in.Logger.Warn("signed jobs inbox: entry skipped; the other jobs proceed", "file", p.File, "err", msg)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(in.reported)) {
		if _, still := now[f]; !still && in.Logger != nil {
			in.Logger.Info("signed jobs inbox: entry no longer a problem", "file", f)
		}
	}
	in.reported = now
	return jobs
}

// Jobs returns the signed jobs of js, in order.
func Jobs(js []Job) []signedop.Job {
	out := make([]signedop.Job, 0, len(js))
	for _, j := range js {
		out = append(out, j.Job)
	}
	return out
}
