// Package desiredfile provides desired state read from a file on disk. It is
// kept apart from package desired so that the parser and validator stay
// pure (no I/O).
package desiredfile

import (
	"context"
	"fmt"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/safefile"
)

// MaxSize bounds the file read; a fleet document is far smaller.
const MaxSize = 64 << 20

// File is a desired.Provider reading the document at Path on every call.
// The path was configured explicitly, so a missing or unreadable file is an
// error (never an empty document); an empty file is a valid empty document.
// Desired blocks on file I/O only and is safe for concurrent use.
type File struct {
	Path string
}

var _ desired.Provider = File{}

// Desired reads, parses and validates the file. It returns a non-nil
// document or an error naming the path.
func (f File) Desired(ctx context.Context) (*desired.Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f.Path == "" {
		return nil, fmt.Errorf("desiredfile: no path configured; pass the desired-state file's path")
	}
	data, err := safefile.ReadFile(f.Path, MaxSize)
	if err != nil {
		return nil, fmt.Errorf("desiredfile: %w", err)
	}
	doc, err := desired.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("desiredfile: %s: %w", f.Path, err)
	}
	return doc, nil
}
