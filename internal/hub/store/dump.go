package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// Dump is every record a store holds, token hashes included (the store
// keeps no secret), for copying a hub from one store to another (steward
// hub migrate) and verifying the copy. Every slice is in a fixed order
// (given with each field), so two stores holding the same records export
// equal Dumps.
type Dump struct {
	Hosts      []DumpHost      // by ID
	JoinTokens []DumpJoinToken // by TokenHash
	Operators  []DumpOperator  // by Name
	Desired    []Desired       // every generation, by Host then Generation
	Reports    []Report        // by Host
	Jobs       []DumpJob       // by Host then Seq
	Pending    []DumpPending   // by Host then Ord
	Receipts   []DumpReceipt   // by Host then Seq
	Audit      []AuditEntry    // by ID
	Events     []Event         // by ID
	Sessions   []DumpSession   // by TokenHash
	Outbox     []Notification  // by ID
}

// DumpHost is a host with its current token's hash ("" when none).
// ReportHash is not a stored field (it comes from Reports) and is left
// empty.
type DumpHost struct {
	Host
	TokenHash string
}

// DumpJoinToken is a join token's record.
type DumpJoinToken struct {
	TokenHash string
	Host      string
	ExpiresAt int64 // Unix nanoseconds
	UsedAt    int64 // Unix nanoseconds, 0: unused
}

// DumpOperator is an operator token's record.
type DumpOperator struct {
	Operator
	TokenHash string
}

// DumpSession is a dashboard session's record.
type DumpSession struct {
	Session
	TokenHash string
}

// DumpJob is a job with its place in its host's upload order.
type DumpJob struct {
	Job
	Seq int64
}

// DumpPending is one of a host's pending actions.
type DumpPending struct {
	Host    string
	Ord     int
	Since   time.Time // when first reported (see PendingWait)
	Pending wire.Pending
}

// DumpReceipt is one receipt of a host's chain.
type DumpReceipt struct {
	Host    string
	Receipt wire.Receipt
}

// Exporter is a store that can export a Dump: one consistent snapshot
// (concurrent writes are wholly in it or wholly not). It holds the whole
// store in memory.
type Exporter interface {
	Export(ctx context.Context) (*Dump, error)
}

// Importer is a store that can load a Dump into itself while it is empty
// (no host, operator, audit entry or event), in one transaction: on error it
// holds nothing of it.
type Importer interface {
	Import(ctx context.Context, d *Dump) error
}

// TableSum is the count and content hash of one table of a Dump.
type TableSum struct {
	Table  string
	Count  int
	SHA256 string // of the table's records, JSON-encoded in order
}

// Sums returns a TableSum for every table of d, in Dump's field order.
func (d *Dump) Sums() ([]TableSum, error) {
	var out []TableSum
	add := func(name string, n int, rows any) error {
		b, err := json.Marshal(rows)
		if err != nil {
			return fmt.Errorf("store: hashing %s: %w", name, err)
		}
		sum := sha256.Sum256(b)
		out = append(out, TableSum{Table: name, Count: n, SHA256: hex.EncodeToString(sum[:])})
		return nil
	}
	for _, t := range []struct {
		name string
		n    int
		rows any
	}{
		{"hosts", len(d.Hosts), d.Hosts},
		{"join_tokens", len(d.JoinTokens), d.JoinTokens},
		{"operators", len(d.Operators), d.Operators},
		{"desired", len(d.Desired), d.Desired},
		{"reports", len(d.Reports), d.Reports},
		{"jobs", len(d.Jobs), d.Jobs},
		{"pending", len(d.Pending), d.Pending},
		{"receipts", len(d.Receipts), d.Receipts},
		{"audit", len(d.Audit), d.Audit},
		{"events", len(d.Events), d.Events},
		{"sessions", len(d.Sessions), d.Sessions},
		{"outbox", len(d.Outbox), d.Outbox},
	} {
		if err := add(t.name, t.n, t.rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ErrCopyMismatch: the copy a Copy verified differs from its source.
var ErrCopyMismatch = fmt.Errorf("store: the copy differs from its source")

// Copy exports from, imports into to, exports to again and compares the
// two: count and SHA-256 of every table. It returns the source's sums. A
// difference is an error wrapping ErrCopyMismatch naming the tables.
func Copy(ctx context.Context, from Exporter, to interface {
	Importer
	Exporter
}) ([]TableSum, error) {
	src, err := from.Export(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the source: %w", err)
	}
	want, err := src.Sums()
	if err != nil {
		return nil, err
	}
	if err := to.Import(ctx, src); err != nil {
		return nil, fmt.Errorf("writing the target: %w", err)
	}
	dst, err := to.Export(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the target back: %w", err)
	}
	got, err := dst.Sums()
	if err != nil {
		return nil, err
	}
	var bad []string
	for i := range want {
		if got[i] != want[i] {
			bad = append(bad, fmt.Sprintf("%s (source %d rows %.12s…, target %d rows %.12s…)", want[i].Table, want[i].Count, want[i].SHA256, got[i].Count, got[i].SHA256))
		}
	}
	if bad != nil {
		return want, fmt.Errorf("%w: %v", ErrCopyMismatch, bad)
	}
	return want, nil
}
