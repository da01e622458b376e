// Package postgres is the hub's store.Store on PostgreSQL
// (github.com/jackc/pgx/v5), for several hub replicas sharing one
// database: nothing a replica keeps in memory is needed for correctness.
//
// Concurrency between replicas rests on the database: every write is one
// transaction at READ COMMITTED that first locks the row it derives from
// (the host row for generations, jobs, receipts and pending; the join
// token row for Enroll; the job row for results), so two replicas
// bumping one host's generation are serialized exactly as two goroutines
// are, and uniqueness (a job id per host, a token hash) is the database's
// constraint.
//
// # Schema versions
//
// The schema is a list of embedded, numbered migrations (migrations/);
// the table steward_schema holds how many have been applied. Open applies
// the missing ones in one transaction under a transaction-scoped advisory
// lock (schemaLock), so replicas starting together migrate once and the
// others wait, then find nothing to do. A database whose version is higher
// than this steward knows was migrated by a newer steward: Open still
// succeeds (reads keep working during a rolling upgrade) but every write
// fails with an error wrapping store.ErrNewerSchema, and Writable says so
// (the hub's /readyz fails, so a load balancer stops sending it traffic).
// Each write transaction takes the same advisory lock in shared mode and
// reads the version, so a replica that was current when it started
// refuses writes from the moment a newer one has migrated.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/steward-pve/steward/internal/hub/store"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Advisory lock keys (pg_advisory_xact_lock), in steward's own space:
// "stwd" in ASCII as the high half, a small number as the low half.
const (
	schemaLock int64 = 0x73747764_00000001
	auditLock  int64 = 0x73747764_00000002
	// operatorLock serializes revocations, so the last valid operator
	// token is never revoked by two at once.
	operatorLock int64 = 0x73747764_00000003
	// eventLock orders event ids by commit, as auditLock does for audit.
	eventLock int64 = 0x73747764_00000004
)

// migrations returns the embedded migrations in order.
func migrations() ([]string, error) { return store.Migrations(migrationFS, "postgres") }

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
	// MaxConns bounds the connection pool (default: pool_max_conns in the
	// URL, else DefaultMaxConns). The notifier's listening connection
	// comes on top.
	MaxConns int32
}

// DefaultMaxConns is a replica's pool size when neither Options nor the
// URL sets one (pgxpool's own default, 4 on a small machine, would queue
// a busy replica's requests behind each other).
const DefaultMaxConns = 16

// Store is a store.Store on a PostgreSQL database. Safe for concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	now   func() time.Time
	known int // the schema version this binary writes
	where string
}

var _ store.Store = (*Store)(nil)

// Redact returns the URL with its password replaced by "xxxxx", for
// messages (a URL that does not parse is replaced whole).
func Redact(connURL string) string {
	u, err := url.Parse(connURL)
	if err != nil || u.Scheme == "" {
		return "(a PostgreSQL connection string)"
	}
	return u.Redacted()
}

// Open connects to the database at connURL (a postgres:// URL or a
// keyword/value connection string, as libpq takes) and brings its schema
// up to date under the schema advisory lock. A database from a newer
// steward is opened but refuses writes (see the package doc). Errors never
// carry the password.
func Open(ctx context.Context, connURL string, opt Options) (*Store, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	known := SchemaVersion()
	where := Redact(connURL)
	cfg, err := pgxpool.ParseConfig(connURL)
	if err != nil {
		return nil, fmt.Errorf("postgres: the connection string %s does not parse (want postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=...)", where)
	}
	switch {
	case opt.MaxConns > 0:
		cfg.MaxConns = opt.MaxConns
	case !strings.Contains(connURL, "pool_max_conns"):
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connecting to %s: %w", where, err)
	}
	s := &Store{pool: pool, now: opt.Now, known: known, where: where}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// migrate applies the missing migrations in one transaction holding the
// schema advisory lock.
func (s *Store) migrate(ctx context.Context) error {
	migs, err := migrations()
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: connecting to %s: %w", s.where, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", schemaLock); err != nil {
		return fmt.Errorf("postgres: taking the schema lock on %s: %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS steward_schema (
		one     BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
		version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("postgres: creating steward_schema on %s (may the user create tables?): %w", s.where, err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO steward_schema (version) VALUES (0) ON CONFLICT DO NOTHING"); err != nil {
		return fmt.Errorf("postgres: reading the schema version of %s: %w", s.where, err)
	}
	var have int
	if err := tx.QueryRow(ctx, "SELECT version FROM steward_schema").Scan(&have); err != nil {
		return fmt.Errorf("postgres: reading the schema version of %s: %w", s.where, err)
	}
	if have >= len(migs) {
		return tx.Commit(ctx) // current, or newer: writes will refuse
	}
	for v := have; v < len(migs); v++ {
		if _, err := tx.Exec(ctx, migs[v]); err != nil {
			return fmt.Errorf("postgres: migrating %s to schema version %d: %w", s.where, v+1, err)
		}
	}
	if _, err := tx.Exec(ctx, "UPDATE steward_schema SET version = $1", len(migs)); err != nil {
		return fmt.Errorf("postgres: migrating %s: %w", s.where, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrating %s: committing: %w", s.where, err)
	}
	return nil
}

// checkSchemaLocked returns an error wrapping store.ErrNewerSchema when the
// database's schema is newer than this binary's; tx holds the shared schema
// lock.
func (s *Store) checkSchemaLocked(ctx context.Context, tx pgx.Tx) error {
	var have int
	if err := tx.QueryRow(ctx, "SELECT version FROM steward_schema").Scan(&have); err != nil {
		return fmt.Errorf("postgres: reading the schema version: %w", err)
	}
	if have > s.known {
		return fmt.Errorf("%w: the database has schema version %d, this steward knows up to %d, so this replica refuses writes; upgrade it to the steward that migrated the database",
			store.ErrNewerSchema, have, s.known)
	}
	return nil
}

// Writable returns nil when this replica may write: the database's schema
// is not newer than this binary's (else an error wrapping
// store.ErrNewerSchema) and the database answers.
func (s *Store) Writable(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	return s.checkSchemaLocked(ctx, tx)
}

// SchemaVersions returns the database's schema version and this binary's.
func (s *Store) SchemaVersions(ctx context.Context) (db, known int, err error) {
	err = s.pool.QueryRow(ctx, "SELECT version FROM steward_schema").Scan(&db)
	if err != nil {
		return 0, s.known, fmt.Errorf("postgres: reading the schema version: %w", err)
	}
	return db, s.known, nil
}

// Close closes the pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Pool returns the store's connection pool (for the notifier and tools).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

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

// write runs fn in one write transaction, committing if fn returns nil.
// Before fn, it takes the schema lock in shared mode and refuses when the
// database's schema is newer than this binary's.
func (s *Store) write(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock_shared($1)", schemaLock); err != nil {
		return fmt.Errorf("postgres: %s: %w", what, err)
	}
	if err := s.checkSchemaLocked(ctx, tx); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: %s: committing: %w", what, err)
	}
	return nil
}

// queryer is what a transaction and the pool share.
type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// hostExists returns an error wrapping store.ErrNotFound unless host exists.
func hostExists(ctx context.Context, q queryer, host string) error {
	var one int
	err := q.QueryRow(ctx, "SELECT 1 FROM hosts WHERE id = $1", host).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return fmt.Errorf("postgres: looking up host %q: %w", host, err)
	}
	return nil
}

// lockHost locks host's row for the rest of tx (serializing every write
// that derives a number from the host's rows: generations, job and receipt
// sequences); ErrNotFound if it does not exist.
func lockHost(ctx context.Context, tx pgx.Tx, host string) (gen int64, err error) {
	err = tx.QueryRow(ctx, "SELECT desired_generation FROM hosts WHERE id = $1 FOR UPDATE", host).Scan(&gen)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("%w: host %q", store.ErrNotFound, host)
	}
	if err != nil {
		return 0, fmt.Errorf("postgres: locking host %q: %w", host, err)
	}
	return gen, nil
}

// isUnique reports whether err is a unique violation (SQLSTATE 23505).
func isUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
