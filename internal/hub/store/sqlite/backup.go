package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/steward-pve/steward/internal/atomicfile"
)

// Backup writes a consistent snapshot of the database at dbPath to out
// while hubs keep using it: VACUUM INTO from a read transaction (one WAL
// snapshot; writers are not blocked), into a temporary file beside out
// that is synced and then moved to out (atomicfile.Move), so out is either
// absent or a whole database. out must not exist; the database is not
// migrated or otherwise changed.
func Backup(ctx context.Context, dbPath, out string) error {
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("sqlite: backup: the database %s: %w", dbPath, err)
	}
	if _, err := os.Lstat(out); err == nil {
		return fmt.Errorf("sqlite: backup: %s exists already; remove it or choose another name", out)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	// Not dsn(…, true): query_only forbids VACUUM INTO. This connection
	// issues nothing but the version read and the VACUUM INTO.
	db, err := sql.Open("sqlite", "file:"+dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("sqlite: backup: opening %s: %w", dbPath, err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("sqlite: backup: %s is not a steward hub database: %w", dbPath, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // gone after a successful Move; removed on failure
	// VACUUM INTO wants a new (or empty) file: the one just made is empty.
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", tmpName); err != nil {
		return fmt.Errorf("sqlite: backup of %s: %w", dbPath, err)
	}
	f, err := os.Open(tmpName)
	if err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sqlite: backup: syncing %s: %w", tmpName, err)
	}
	if err := os.Chmod(tmpName, 0o600); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	if err := atomicfile.Move(tmpName, out); err != nil {
		return fmt.Errorf("sqlite: backup: %w", err)
	}
	return nil
}
