// Package desiredfile provides desired state read from a file on disk. It is
// kept apart from package desired so that the parser and validator stay
// pure (no I/O).
package desiredfile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/safefile"
)

// DefaultMaxBytes is the default bound on the file's size: 4 MiB. A guest
// entry is 100 to 300 bytes of YAML, so 4 MiB holds tens of thousands of
// guests, far more than one host runs; parsing that much costs about a
// second and tens of MB once, not per tick. The bound keeps a runaway or
// hostile file (issue 7: 60 MB cost 17 s and 3.3 GB) from taking the agent
// down; raise it with --desired-max-bytes.
const DefaultMaxBytes = 4 << 20

// MaxBytesFlag names the setting that raises the bound, for error messages.
const MaxBytesFlag = "--desired-max-bytes (STEWARD_DESIRED_MAX_BYTES)"

// racyWindow: a file changed less than this long before it was examined
// may change again without its size, mtime or ctime changing (timestamps
// have the kernel tick's granularity), so its stat is not trusted to mean
// "unchanged" and it is read and hashed again.
const racyWindow = 2 * time.Second

// File is a desired.Provider reading the document at Path. The path was
// configured explicitly, so a missing or unreadable file is an error (never
// an empty document); an empty file is a valid empty document.
//
// The file is parsed only when its content changed: each call stats it
// (size, mtime, ctime, inode, device) and, when that identity changed or
// is too recent to be trusted, reads it (see package safefile: regular
// files only, at most MaxBytes) and compares a SHA-256 of the content with
// the last parse. An unchanged file returns the same document (or the same
// parse error) without parsing. Desired blocks on file I/O only and is safe
// for concurrent use; a File must not be copied after first use.
type File struct {
	Path string
	// MaxBytes bounds the file's size; 0 means DefaultMaxBytes.
	MaxBytes int64
	// OnParse, when non-nil, is called each time the file is parsed (a
	// test hook and a place for metrics).
	OnParse func()
	// Now returns the current time; nil means time.Now.
	Now func() time.Time

	mu   sync.Mutex
	last *parsed // the last parse, nil before the first
}

type parsed struct {
	id   fileID
	racy bool // id was too recent to trust when recorded
	sum  [sha256.Size]byte
	doc  *desired.Document
	err  error
}

var _ desired.Provider = (*File)(nil)

// Desired returns the document in the file, or an error naming the path:
// for an invalid document, one *desired.FieldError per problem (joined),
// each naming the path and line.
// The document is shared with earlier and later calls until the file
// changes: callers must not modify it.
func (f *File) Desired(ctx context.Context) (*desired.Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.Path == "" {
		return nil, fmt.Errorf("desiredfile: no path configured; pass the desired-state file's path")
	}
	max := f.MaxBytes
	if max <= 0 {
		max = DefaultMaxBytes
	}
	now := time.Now
	if f.Now != nil {
		now = f.Now
	}
	st, err := safefile.Stat(f.Path)
	if err != nil {
		return nil, fmt.Errorf("desiredfile: %w", err)
	}
	if st.Size() > max {
		return nil, tooLarge(&safefile.TooLargeError{Path: f.Path, Size: st.Size(), Limit: max})
	}
	id := idOf(st)
	racy := now().Sub(id.changed()) < racyWindow

	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.last; l != nil && l.id == id && !l.racy {
		return l.result()
	}
	data, err := safefile.ReadFile(f.Path, max)
	if err != nil {
		if tl := (*safefile.TooLargeError)(nil); errors.As(err, &tl) {
			return nil, tooLarge(tl)
		}
		return nil, fmt.Errorf("desiredfile: %w", err)
	}
	sum := sha256.Sum256(data)
	if l := f.last; l != nil && l.sum == sum {
		l.id, l.racy = id, racy
		return l.result()
	}
	if f.OnParse != nil {
		f.OnParse()
	}
	p := &parsed{id: id, racy: racy, sum: sum}
	// Parse errors name the file and line themselves (desired.FieldError).
	p.doc, p.err = desired.ParseFile(f.Path, data)
	if p.err != nil {
		p.doc = nil
	}
	f.last = p
	return p.result()
}

func (p *parsed) result() (*desired.Document, error) { return p.doc, p.err }

func tooLarge(e *safefile.TooLargeError) error {
	return fmt.Errorf("desiredfile: %w; split the file or raise %s", e, MaxBytesFlag)
}

// fileID is what identifies one version of a file without reading it.
type fileID struct {
	size     int64
	mtime    time.Time
	ctime    time.Time // zero where the platform does not give it
	ino, dev uint64
	mode     fs.FileMode
}

// changed returns the latest time the file is known to have changed.
func (id fileID) changed() time.Time {
	if id.ctime.After(id.mtime) {
		return id.ctime
	}
	return id.mtime
}
