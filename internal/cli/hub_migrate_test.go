package cli

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/hub/store/pgtest"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
)

// TestHubBackupThenMigrateToPostgres is the move from one SQLite hub to
// PostgreSQL replicas: a backup while the SQLite hub serves, the copy
// into PostgreSQL, and a replica on it that accepts the admin token the
// SQLite hub printed and serves the same certificate.
func TestHubBackupThenMigrateToPostgres(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "hub")
	out, stop := startHub(t, "--data-dir", dir, "--listen", "127.0.0.1:0")
	tok, fp := hubTokenFile(t, out), hubFPRe.FindStringSubmatch(out)[1]
	c := pinnedClient(t, fp)
	url := hubURLRe.FindStringSubmatch(out)[1]
	if code := get(t, c, url+"/v1/hosts", tok); code != 200 {
		t.Fatalf("SQLite hub: %d", code)
	}

	snap := filepath.Join(t.TempDir(), "snap.db")
	var bout hubOut
	if err := Run(t.Context(), []string{"hub", "backup", "--data-dir", dir, "--out", snap}, &bout, &hubOut{}); err != nil {
		t.Fatalf("hub backup while serving: %v", err)
	}
	st, err := sqlite.Open(t.Context(), snap, sqlite.Options{})
	if err != nil {
		t.Fatalf("opening the snapshot: %v", err)
	}
	if ops, err := st.Operators(t.Context()); err != nil || len(ops) != 1 || ops[0].Name != hubAdminOperator {
		t.Fatalf("operators in the snapshot: %+v, %v; want admin", ops, err)
	}
	st.Close()
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	db := pgtest.NewDatabase(t)
	var mout hubOut
	if err := Run(t.Context(), []string{"hub", "migrate", "--from", "sqlite:" + dir, "--to", db}, &mout, &hubOut{}); err != nil {
		t.Fatalf("hub migrate: %v", err)
	}
	if !strings.Contains(mout.String(), "Verified") || !strings.Contains(mout.String(), "operators          1 rows") {
		t.Fatalf("hub migrate printed:\n%s\nwant the verified tables", mout.String())
	}
	out2, stop2 := startHub(t, "--store", db, "--tls-cert", filepath.Join(dir, hubCertFile), "--tls-key", filepath.Join(dir, hubKeyFile), "--listen", "127.0.0.1:0")
	defer stop2()
	if hubTokenRe.MatchString(out2) || hubTokenFileRe.MatchString(out2) {
		t.Fatalf("the PostgreSQL replica made a new admin token after the migration:\n%s", out2)
	}
	if fp2 := hubFPRe.FindStringSubmatch(out2); fp2 == nil || fp2[1] != fp {
		t.Fatalf("replica fingerprint %v; want the SQLite hub's %s", fp2, fp)
	}
	if code := get(t, c, hubURLRe.FindStringSubmatch(out2)[1]+"/v1/hosts", tok); code != 200 {
		t.Fatalf("the SQLite hub's admin token on the PostgreSQL replica: %d; want 200", code)
	}

	// Again into the now-used database: refused.
	err = Run(t.Context(), []string{"hub", "migrate", "--from", "sqlite:" + dir, "--to", db}, &hubOut{}, &hubOut{})
	if err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("a second migrate: %v; want a refusal (the target is not empty)", err)
	}
}

func TestHubMigrateBackupUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"hub", "migrate", "--from", "/var/lib/steward-hub", "--to", "postgres://x/y"}, "sqlite:DIR"},
		{[]string{"hub", "migrate", "--from", "sqlite:" + t.TempDir(), "--to", "mysql://x"}, "postgres://"},
		{[]string{"hub", "backup", "--out", "x.db"}, "--data-dir"},
	} {
		err := Run(t.Context(), tc.args, &hubOut{}, &hubOut{})
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v; want a usage error saying %q", tc.args, err, tc.want)
		}
	}
	empty := t.TempDir()
	err := Run(t.Context(), []string{"hub", "migrate", "--from", "sqlite:" + empty, "--to", "postgres://u@127.0.0.1:1/db"}, &hubOut{}, &hubOut{})
	if err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("migrate from a directory without a hub: %v; want an error naming it", err)
	}
}
