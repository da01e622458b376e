package sqlite

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/storetest"
)

func open(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, filepath.Join(t.TempDir(), "hub.db"))
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	})
}

// TestReopenKeepsState checks that what one Open wrote, the next reads,
// and that opening an up-to-date database applies nothing.
func TestReopenKeepsState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, "pve-a", store.HashToken("j"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutDesired(ctx, "pve-a", []byte(`{"x":1}`), 0, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	d, err := s.Desired(ctx, "pve-a")
	if err != nil || d.Generation != 1 || string(d.Document) != `{"x":1}` {
		t.Fatalf("after reopen: got %+v, %v; want generation 1", d, err)
	}
	var v int
	if err := s.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("user_version: got %d, %v; want %d", v, err, SchemaVersion())
	}
	var mode string
	if err := s.r.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode: got %q, %v; want wal", mode, err)
	}
}

// TestNewerSchemaRefused: a database a newer steward wrote is refused with
// an error naming both versions, and is left as it was.
func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	newer := SchemaVersion() + 1
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = " + itoa(newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err = Open(t.Context(), path, Options{})
	if !errors.Is(err, store.ErrNewerSchema) {
		t.Fatalf("Open of a newer database: got %v; want ErrNewerSchema", err)
	}
	for _, want := range []string{path, "version " + itoa(newer), "up to " + itoa(SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	db, _ = sql.Open("sqlite", "file:"+path)
	defer db.Close()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != newer {
		t.Fatalf("user_version after the refused Open: got %d, %v; want %d untouched", v, err, newer)
	}
}

// TestNotADatabase: a file that is not SQLite is refused, not overwritten.
func TestNotADatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	if err := writeFile(path, strings.Repeat("not a database\n", 200)); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), path, Options{}); err == nil {
		s.Close()
		t.Fatal("Open of a text file succeeded; want an error")
	}
}

func TestMigrationsNumbered(t *testing.T) {
	m, err := migrations()
	if err != nil || len(m) == 0 {
		t.Fatalf("migrations: got %d, %v", len(m), err)
	}
}

// Concurrent writes are committed in groups: a write that fails inside a
// group leaves the others of that group stored, and every write that
// returned nil is on disk.
func TestGroupCommitIsolatesFailures(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := open(t, path)
	ctx := t.Context()
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		// Even and odd i share a token hash: of each pair exactly one
		// may be stored.
		wg.Go(func() {
			errs[i] = s.CreateJoinToken(ctx, fmt.Sprint("h", i), store.HashToken(fmt.Sprint("j", i/2)), time.Now().Add(time.Hour))
		})
	}
	wg.Wait()
	stored := map[string]bool{}
	for i, err := range errs {
		switch {
		case err == nil:
			stored[fmt.Sprint("h", i)] = true
		case !errors.Is(err, store.ErrExists):
			t.Fatalf("write %d: %v; want nil or ErrExists", i, err)
		}
	}
	if len(stored) != n/2 {
		t.Fatalf("%d writes succeeded; want %d (one of each pair)", len(stored), n/2)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path)
	defer s.Close()
	hosts, err := s.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, h := range hosts {
		got[h.ID] = true
	}
	for h := range stored {
		if !got[h] {
			t.Errorf("host %s: its write returned nil but it is not in the database after reopening", h)
		}
	}
	if len(got) != len(stored) {
		t.Errorf("after reopening: %d hosts; want %d (a failed write left its host behind)", len(got), len(stored))
	}
}

// TestHostReadsUseIndexesOnly: reading a host (by token, on every agent
// request; all of them, in the hub's sweep) takes the report's hash and
// whether jobs wait from covering indexes, never from the rows, where
// they sit behind report bodies and job payloads on overflow pages.
func TestHostReadsUseIndexesOnly(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "hub.db"))
	defer s.Close()
	for _, q := range []string{"SELECT " + hostCols + " WHERE h.token_hash = ? AND h.revoked_at = 0", "SELECT " + hostCols + " ORDER BY h.id"} {
		rows, err := s.r.QueryContext(t.Context(), "EXPLAIN QUERY PLAN "+q, "x")
		if err != nil {
			t.Fatal(err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		all := strings.Join(plan, "\n")
		for _, want := range []string{"COVERING INDEX reports_host_hash", "COVERING INDEX jobs_waiting"} {
			if !strings.Contains(all, want) {
				t.Errorf("plan of %q:\n%s\nwant %s", q, all, want)
			}
		}
	}
}
