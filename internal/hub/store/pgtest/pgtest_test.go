package pgtest

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// TestDatabasesAreFreshAndSeparate: each NewDatabase is empty and what
// one test writes, another does not see.
func TestDatabasesAreFreshAndSeparate(t *testing.T) {
	ctx := t.Context()
	a, b := NewDatabase(t), NewDatabase(t)
	if a == b {
		t.Fatalf("two NewDatabase calls gave the same URL %s", a)
	}
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	var n int
	if err := cb.QueryRow(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'x'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("table x in the other database: got %d, %v; want 0", n, err)
	}
	var super bool
	if err := ca.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Fatalf("connected as superuser: got %v, %v; want true", super, err)
	}
}

// TestStopLeavesNothing: after Stop no server process is left and the
// directory is gone.
func TestStopLeavesNothing(t *testing.T) {
	c, err := Start(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("postgres (pid %d) after Stop: kill -0 gave %v; want ESRCH (no such process)", pid, err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("cluster directory after Stop: %v; want it removed", err)
	}
	if _, err := pgx.Connect(t.Context(), c.URL("postgres")); err == nil {
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

// TestMissingBinariesFail: with no binaries the error says what to
// install (the tests fail with it; they never skip).
func TestMissingBinariesFail(t *testing.T) {
	t.Setenv("STEWARD_PG_BIN", t.TempDir())
	_, err := Start(t.Context())
	if err == nil {
		t.Fatal("Start with an empty STEWARD_PG_BIN succeeded")
	}
	if want := "initdb"; !contains(err.Error(), want) {
		t.Fatalf("error %q does not name %q", err, want)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
