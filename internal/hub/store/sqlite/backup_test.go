package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
)

// TestBackupWhileServing: a backup taken while another connection keeps
// writing opens as a whole database whose generations agree with its own
// history (one snapshot), and holds what was written before it began.
func TestBackupWhileServing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.db")
	s := open(t, path)
	defer s.Close()
	ctx := t.Context()
	if err := s.CreateJoinToken(ctx, "pve-a", store.HashToken("j"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := s.PutDesired(ctx, "pve-a", []byte(`{"before":true}`), store.AnyGeneration, "alice"); err != nil {
			t.Fatal(err)
		}
	}
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; wctx.Err() == nil && i < 2000; i++ {
			if _, err := s.PutDesired(wctx, "pve-a", fmt.Appendf(nil, `{"i":%d}`, i), store.AnyGeneration, "alice"); err != nil && wctx.Err() == nil {
				t.Errorf("a write during the backup: %v", err)
				return
			}
		}
	})
	outs := []string{filepath.Join(dir, "b1.db"), filepath.Join(dir, "b2.db")}
	for _, out := range outs {
		if err := Backup(ctx, path, out); err != nil {
			t.Fatalf("Backup: %v", err)
		}
	}
	stop()
	wg.Wait()
	for _, out := range outs {
		if st, err := os.Stat(out); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("backup file %s: %v; want mode 0600", out, err)
		}
		b := open(t, out)
		var ok string
		if err := b.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&ok); err != nil || ok != "ok" {
			t.Fatalf("integrity_check of %s: %q, %v", out, ok, err)
		}
		d, err := b.Desired(ctx, "pve-a")
		if err != nil || d.Generation < 5 {
			t.Fatalf("backup %s: generation %d, %v; want at least the 5 written before", out, d.Generation, err)
		}
		hist, err := b.DesiredHistory(ctx, "pve-a", 1<<20)
		if err != nil || int64(len(hist)) != d.Generation {
			t.Fatalf("backup %s: generation %d but %d history rows, %v; want one snapshot", out, d.Generation, len(hist), err)
		}
		b.Close()
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Fatalf("a temporary file was left behind: %s", e.Name())
		}
	}
}

// TestBackupRefusals: an existing target and a missing database are
// refused with the path named, and nothing is written.
func TestBackupRefusals(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.db")
	open(t, path).Close()
	out := filepath.Join(dir, "exists.db")
	if err := os.WriteFile(out, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Backup(t.Context(), path, out); err == nil || !strings.Contains(err.Error(), out) {
		t.Fatalf("Backup over an existing file: %v; want an error naming it", err)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep me" {
		t.Fatalf("the existing file was changed: %q", b)
	}
	missing := filepath.Join(dir, "nope.db")
	if err := Backup(t.Context(), missing, filepath.Join(dir, "x.db")); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Backup of a missing database: %v; want an error naming it", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("Backup of a missing database created it")
	}
}
