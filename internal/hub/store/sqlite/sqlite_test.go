package sqlite

import (
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
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
