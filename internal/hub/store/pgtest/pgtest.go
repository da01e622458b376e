// Package pgtest starts a throwaway PostgreSQL server for tests: a new
// cluster (initdb) in a temporary directory, listening on a free loopback
// port with its unix socket in that directory, trust authentication, and
// durability switched off (fsync=off: nothing in it outlives the test).
//
// A test package starts one cluster in TestMain with Main and takes a
// fresh database per test with NewDatabase:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestX(t *testing.T) { url := pgtest.NewDatabase(t); ... }
//
// The server runs the binaries of Debian's postgresql package (found under
// /usr/lib/postgresql/*/bin, the newest version first), of $STEWARD_PG_BIN,
// or on $PATH. Missing binaries are a test failure, never a skip: CI
// installs them (.ci/run). initdb refuses to run as root, so a test run as
// root runs the server as the unprivileged user $STEWARD_PG_USER (default
// "postgres", which Debian's package creates), owning the temporary
// directory. The server is a child of the test process that dies with it
// (Pdeathsig), and Stop shuts it down with pg_ctl stop -m immediate.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the cluster's superuser (initdb -U).
const Superuser = "steward"

// Cluster is one running throwaway PostgreSQL server.
type Cluster struct {
	// Dir is the temporary directory holding the data directory, the
	// socket and the server log; Stop removes it.
	Dir string
	// Port is the loopback TCP port the server listens on.
	Port int

	bin  string
	cred *syscall.Credential // nil: run as this process's user
	cmd  *exec.Cmd
	done chan struct{} // closed when the server process has exited
	n    atomic.Int64  // databases made, for their names
}

// BinDir returns the directory holding initdb, pg_ctl and postgres, or an
// error saying how to install them.
func BinDir() (string, error) {
	if d := os.Getenv("STEWARD_PG_BIN"); d != "" {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err != nil {
			return "", fmt.Errorf("pgtest: $STEWARD_PG_BIN=%s holds no initdb: %w", d, err)
		}
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("pgtest: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found under /usr/lib/postgresql/*/bin, $STEWARD_PG_BIN or $PATH; install them (Debian: apt-get install postgresql) — .ci/run does")
}

// pgVersion reads the major version from /usr/lib/postgresql/N/bin.
func pgVersion(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// credential returns who runs the server: nil (this process's user) unless
// this process is root, then $STEWARD_PG_USER or "postgres".
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv("STEWARD_PG_USER")
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root, the server needs an unprivileged user (initdb refuses root): user %q: %w; install Debian's postgresql package (it creates %q) or set $STEWARD_PG_USER", name, err, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("pgtest: user %q (uid %s, gid %s) cannot run the server: it must be an unprivileged user", name, u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// run runs one PostgreSQL program as the cluster's user and returns its
// combined output in the error.
func (c *Cluster) run(ctx context.Context, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, prog), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	cmd.Dir = c.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + c.Dir}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: %s %s: %w\n%s", prog, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Start creates and starts a cluster; Stop stops it and removes its
// directory. It fails with a message saying what to install when the
// binaries are missing.
func Start(ctx context.Context) (*Cluster, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "steward-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	c := &Cluster{Dir: dir, bin: bin, cred: cred}
	if cred != nil {
		// The directory is the server user's; root (this process) can
		// still remove it.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("pgtest: giving %s to the server's user: %w", dir, err)
		}
	}
	if err := c.run(ctx, "initdb", "-D", c.data(), "-U", Superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// A port can be taken between freePort and the server's bind: retry.
	for attempt := 0; ; attempt++ {
		if err := c.start(ctx); err == nil {
			return c, nil
		} else if attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (c *Cluster) data() string { return filepath.Join(c.Dir, "data") }

// start starts the server on a free port and waits until it accepts
// connections.
func (c *Cluster) start(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	logPath := filepath.Join(c.Dir, "server.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(c.bin, "postgres"), "-D", c.data(),
		"-c", "listen_addresses=127.0.0.1", "-p", strconv.Itoa(port), "-k", c.Dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=32MB")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	cmd.Dir = c.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=" + c.Dir}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	c.cmd, c.done, c.Port = cmd, done, port

	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.URL("postgres"))
		if err == nil {
			conn.Close(ctx)
			return nil
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("pgtest: postgres exited at start-up:\n%s", bytes.TrimSpace(log))
		case <-ctx.Done():
			c.Stop()
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			cmd.Process.Kill()
			<-done
			return fmt.Errorf("pgtest: postgres did not accept connections within 60s (last: %v):\n%s", err, bytes.TrimSpace(log))
		}
	}
}

// URL returns the connection URL of database db over loopback TCP.
func (c *Cluster) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.Port, db)
}

// CreateDatabase creates a new, empty database and returns its URL.
func (c *Cluster) CreateDatabase(ctx context.Context) (string, error) {
	name := fmt.Sprintf("t%d", c.n.Add(1))
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("pgtest: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("pgtest: creating database %s: %w", name, err)
	}
	return c.URL(name), nil
}

// Stop shuts the server down at once (pg_ctl stop -m immediate: no
// checkpoint, nothing in it is kept), waits for it to exit and removes
// its directory. Safe to call more than once.
func (c *Cluster) Stop() error {
	var err error
	if c.cmd != nil {
		select {
		case <-c.done:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err = c.run(ctx, "pg_ctl", "stop", "-D", c.data(), "-m", "immediate", "-w")
			cancel()
			select {
			case <-c.done:
			case <-time.After(30 * time.Second):
				// pg_ctl failed: kill the whole process group.
				syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
				<-c.done
			}
		}
	}
	return errors.Join(err, os.RemoveAll(c.Dir))
}

var (
	mu     sync.Mutex
	shared *Cluster
	// startErr is why Main could not start the cluster.
	startErr error
)

// Main is a TestMain that starts one cluster for the package's tests,
// runs them and stops the cluster. When the cluster cannot start it still
// runs the tests, and NewDatabase fails each one with the reason (missing
// binaries are a failure, never a skip).
func Main(m *testing.M) {
	c, err := Start(context.Background())
	mu.Lock()
	shared, startErr = c, err
	mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	code := m.Run()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// Shared returns the cluster Main started; it fails t when there is none.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	mu.Lock()
	c, err := shared, startErr
	mu.Unlock()
	if c == nil {
		if err == nil {
			err = errors.New("pgtest: no cluster: the package's TestMain must call pgtest.Main")
		}
		t.Fatal(err)
	}
	return c
}

// NewDatabase returns the URL of a new, empty database in the package's
// cluster (see Main).
func NewDatabase(t testing.TB) string {
	t.Helper()
	url, err := Shared(t).CreateDatabase(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return url
}
