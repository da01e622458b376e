// Package sqlite is the hub's default store.Store: one SQLite database
// file (modernc.org/sqlite, pure Go) in WAL mode, written through a single
// connection (so every write transaction is serialized, and generations
// are assigned without races) and read through a pool of read-only
// connections. Writes are group-committed (see write): concurrent writes
// share one transaction and one fsync, each in its own savepoint, and each
// returns only once durable (synchronous=FULL).
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
	"net/url"
	"runtime"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/steward-pve/steward/internal/hub/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrations returns the embedded migrations in order.
func migrations() ([]string, error) { return store.Migrations(migrationFS, "sqlite") }

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
	// Readers is the size of the read pool (default 2×GOMAXPROCS, at
	// least 4: a long read, such as the hub's periodic host listing, must
	// not hold up agents' requests).
	Readers int
}

// Store is a store.Store on one SQLite file. Safe for concurrent use.
type Store struct {
	w   *sql.DB // one connection: every write
	r   *sql.DB // read-only pool
	now func() time.Time
	// hostByToken is prepared once: every agent request runs it, and
	// parsing it each time was a sixth of the hub's CPU under load.
	hostByToken *sql.Stmt

	writes     chan *writeReq // to the writer goroutine (group commit)
	closed     chan struct{}  // closed by Close
	closeOnce  sync.Once
	writerDone chan struct{}
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
		opt.Readers = max(2*runtime.GOMAXPROCS(0), 4)
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
	hbt, err := r.PrepareContext(ctx, "SELECT "+hostCols+" WHERE h.token_hash = ? AND h.revoked_at = 0")
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: preparing queries on %s: %w", path, err)
	}
	s := &Store{w: w, r: r, now: opt.Now, hostByToken: hbt,
		writes: make(chan *writeReq), closed: make(chan struct{}), writerDone: make(chan struct{})}
	go s.writer()
	return s, nil
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
	s.closeOnce.Do(func() { close(s.closed) })
	<-s.writerDone
	return errors.Join(s.hostByToken.Close(), s.r.Close(), s.w.Close())
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

// maxGroup bounds how many writes one group commit carries.
const maxGroup = 128

// writeReq is one write waiting for the writer.
type writeReq struct {
	ctx  context.Context
	what string
	fn   func(tx *sql.Tx) error
	done chan error
}

// write runs fn as one atomic write and returns once it is durable (or
// refused). Writes are group-committed: the writer goroutine takes every
// write queued while the previous commit was syncing, runs each inside
// a SAVEPOINT of one transaction (BEGIN IMMEDIATE on the single writer
// connection), rolls back to its savepoint the ones whose fn fails, and
// commits once: one fsync for the group instead of one per write, with
// the same contract per write (all of it durable before write returns
// nil; none of it on error).
func (s *Store) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	req := &writeReq{ctx: ctx, what: what, fn: fn, done: make(chan error, 1)}
	select {
	case s.writes <- req:
	case <-ctx.Done():
		return fmt.Errorf("sqlite: %s: %w", what, ctx.Err())
	case <-s.closed:
		return fmt.Errorf("sqlite: %s: the store is closed", what)
	}
	return <-req.done // the writer always answers a request it took
}

// writer runs the group commits until Close.
func (s *Store) writer() {
	defer close(s.writerDone)
	for {
		var group []*writeReq
		select {
		case r := <-s.writes:
			group = append(group, r)
		case <-s.closed:
			return
		}
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-s.writes:
				group = append(group, r)
			default:
				break drain
			}
		}
		s.commitGroup(group)
	}
}

// commitGroup runs and commits one group, answering every request.
func (s *Store) commitGroup(group []*writeReq) {
	errs := make([]error, len(group))
	fail := func(err error) {
		for i, r := range group {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("sqlite: %s: %w", r.what, err)
			}
			r.done <- errs[i]
		}
	}
	ctx := context.Background() // each write's own ctx bounds its statements
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		fail(err)
		return
	}
	ok := 0
	for i, r := range group {
		if err := r.ctx.Err(); err != nil {
			errs[i] = fmt.Errorf("sqlite: %s: %w", r.what, err)
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		if err := r.fn(tx); err != nil {
			errs[i] = err
			if _, rerr := tx.ExecContext(ctx, "ROLLBACK TO w"); rerr != nil {
				tx.Rollback()
				fail(rerr)
				return
			}
		} else {
			ok++
		}
		if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if ok == 0 {
		tx.Rollback()
	} else if err := tx.Commit(); err != nil {
		for i, r := range group {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("sqlite: %s: committing: %w", r.what, err)
			}
		}
	}
	for i, r := range group {
		r.done <- errs[i]
	}
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
