// Package sqlite is the hub's default store.Store: one SQLite database
// file (modernc.org/sqlite, pure Go) in WAL mode, written through a single
// connection (so every write transaction is serialized, and generations
// are assigned without races) and read through a pool of read-only
// connections.
//
// The schema is a list of embedded, numbered migrations (migrations/);
// PRAGMA user_version records how many have been applied. Open applies the
// missing ones, each in its own transaction, and refuses a database whose
// version is higher than this steward knows (store.ErrNewerSchema): a
// newer steward wrote it, and an older one would misread it.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/steward-pve/steward/internal/hub/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations returns the embedded migrations in order.
func migrations() ([]string, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]string, 0, len(names))
	for i, n := range names {
		want := fmt.Sprintf("migrations/%04d_", i+1)
		if !strings.HasPrefix(n, want) {
			return nil, fmt.Errorf("sqlite: migration %s out of sequence (want %s*)", n, want)
		}
		b, err := migrationFS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

// SchemaVersion is the schema version this steward writes: the number of
// embedded migrations.
func SchemaVersion() int {
	m, err := migrations()
	if err != nil {
		panic(err) // the embedded files are fixed at build time; a test covers them
	}
	return len(m)
}

// Options tune Open. The zero value is usable.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Readers is the size of the read pool (default GOMAXPROCS, at least 2).
	Readers int
}

// Store is a store.Store on one SQLite file. Safe for concurrent use.
type Store struct {
	w   *sql.DB // one connection: every write
	r   *sql.DB // read-only pool
	now func() time.Time
}

var _ store.Store = (*Store)(nil)

func dsn(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Add("_pragma", "journal_mode(WAL)")
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// Open opens (creating if needed) the database at path and brings its
// schema up to date. A database from a newer steward is refused with an
// error wrapping store.ErrNewerSchema, and left untouched.
func Open(ctx context.Context, path string, opt Options) (*Store, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Readers <= 0 {
		opt.Readers = max(runtime.GOMAXPROCS(0), 2)
	}
	w, err := sql.Open("sqlite", dsn(path, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: opening %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := migrate(ctx, w, path); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", dsn(path, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: opening %s for reading: %w", path, err)
	}
	r.SetMaxOpenConns(opt.Readers)
	r.SetMaxIdleConns(opt.Readers)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: opening %s for reading: %w", path, err)
	}
	return &Store{w: w, r: r, now: opt.Now}, nil
}

// migrate applies the missing migrations to the database behind w.
func migrate(ctx context.Context, w *sql.DB, path string) error {
	migs, err := migrations()
	if err != nil {
		return err
	}
	var have int
	if err := w.QueryRowContext(ctx, "PRAGMA user_version").Scan(&have); err != nil {
		return fmt.Errorf("sqlite: reading the schema version of %s (is it a SQLite database?): %w", path, err)
	}
	if have > len(migs) {
		return fmt.Errorf("%w: %s has schema version %d, this steward knows up to %d; run the newer steward that wrote it, or restore a backup taken before the upgrade",
			store.ErrNewerSchema, path, have, len(migs))
	}
	for v := have; v < len(migs); v++ {
		tx, err := w.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("sqlite: migrating %s to version %d: %w", path, v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migs[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqlite: migrating %s to version %d: %w", path, v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqlite: migrating %s to version %d: %w", path, v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqlite: migrating %s to version %d: %w", path, v+1, err)
		}
	}
	return nil
}

// Close closes both pools.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// nanos encodes a time (zero: 0).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos decodes what nanos wrote.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// write runs fn in one write transaction (BEGIN IMMEDIATE on the single
// writer connection), committing if fn returns nil.
func (s *Store) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: %s: %w", what, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: %s: committing: %w", what, err)
	}
	return nil
}

// queryer is what a transaction and a pool share.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// hostExists returns an error wrapping store.ErrNotFound unless host exists.
func hostExists(ctx context.Context, q queryer, host string) error {
	var one int
	err := q.QueryRowContext(ctx, "SELECT 1 FROM hosts WHERE id = ?", host).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return fmt.Errorf("sqlite: looking up host %q: %w", host, err)
	}
	return nil
}

// isUnique reports whether err is a UNIQUE or PRIMARY KEY violation.
func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}
