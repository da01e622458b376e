package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary runs as the steward binary when STEWARD_TEST_CLI_MAIN
// is set (as cmd/steward's main does), so tests can start commands as
// subprocesses and signal them.
func init() {
	if os.Getenv("STEWARD_TEST_CLI_MAIN") != "1" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := RunIO(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !Silent(err) {
		fmt.Fprintln(os.Stderr, "steward:", err)
	}
	os.Exit(ExitCode(err))
}

// upProc is a `steward up` subprocess and its output so far.
type upProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  strings.Builder
	line chan string
}

// startUp starts `steward up` in cwd.
func startUp(t *testing.T, cwd, dir, cfg string) *upProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "up", "--data-dir", dir, "--login-file", cfg)
	cmd.Env = append(os.Environ(), "STEWARD_TEST_CLI_MAIN=1", "NO_COLOR=1")
	cmd.Dir = cwd
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &upProc{cmd: cmd, line: make(chan string, 1000)}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.line <- sc.Text():
			default:
			}
		}
		close(p.line)
	}()
	return p
}

func (p *upProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor reads lines until one contains s.
func (p *upProc) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case l, ok := <-p.line:
			if !ok {
				t.Fatalf("steward up exited before printing %q:\n%s", s, p.output())
			}
			if strings.Contains(l, s) {
				return
			}
		case <-deadline:
			t.Fatalf("steward up did not print %q:\n%s", s, p.output())
		}
	}
}

// interrupt sends SIGINT and waits for a clean exit.
func (p *upProc) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("steward up after SIGINT: %v; want exit 0\n%s", err, p.output())
		}
	case <-time.After(time.Minute):
		p.cmd.Process.Kill()
		t.Fatalf("steward up still running a minute after SIGINT:\n%s", p.output())
	}
}

// TestUpConvergesStopsAndResumes starts `steward up` as a subprocess in a
// checkout (as the README's quick start does, whose output it must print)
// until its guests converge, uses the CLI it logged in, stops it with
// SIGINT (exit 0, its ports closed), and starts it again on the same
// directory outside a checkout, which resumes.
func TestUpConvergesStopsAndResumes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "up")
	cfg := filepath.Join(t.TempDir(), "config.yaml")

	p := startUp(t, filepath.Join("..", ".."), dir, cfg)
	p.waitFor(t, "Every named guest has settled.")
	p.waitFor(t, "steward import pve")
	out := p.output()
	checkREADMEQuickStart(t, out, dir)
	for _, want := range []string{"Starting afresh in " + dir, "pve 101: in sync", "pve 102: in sync", "pve 103: in sync",
		"steward sign --key " + filepath.Join(dir, "demo_key")} {
		if !strings.Contains(out, want) {
			t.Errorf("first up: output lacks %q:\n%s", want, out)
		}
	}
	// The CLI is logged in: an operator command works with the config alone.
	var stdout, stderr strings.Builder
	if err := RunIO(t.Context(), []string{"hosts", "show", "pve", "-o", "json", "--login-file", cfg}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("steward hosts show with up's context: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), `"phase": "in_sync"`) {
		t.Errorf("hosts show: want guests in sync:\n%s", stdout.String())
	}
	var st upState
	b, err := os.ReadFile(filepath.Join(dir, upStateFile))
	if err != nil || json.Unmarshal(b, &st) != nil || st.HubAddr == "" {
		t.Fatalf("%s: %v %s", upStateFile, err, b)
	}
	if fi, err := os.Stat(filepath.Join(dir, upStateFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode: %v %v; want 0600 (it holds tokens)", upStateFile, fi.Mode(), err)
	}

	p.interrupt(t)
	if !strings.Contains(p.output(), "Stopping...") {
		t.Errorf("no stop message after SIGINT:\n%s", p.output())
	}
	if c, err := net.DialTimeout("tcp", st.HubAddr, time.Second); err == nil {
		c.Close()
		t.Fatalf("the hub's port %s still accepts connections after up exited", st.HubAddr)
	}

	p = startUp(t, t.TempDir(), dir, cfg) // no examples/fleet.yaml: up writes its own copy
	p.waitFor(t, "steward is up.")
	out = p.output()
	if !strings.Contains(out, "Resuming in "+dir) || !strings.Contains(out, st.HubAddr) || !strings.Contains(out, "pve 102: in sync") {
		t.Errorf("second up: want it resumed on the same hub address %s, guests in sync:\n%s", st.HubAddr, out)
	}
	p.interrupt(t)
}

// TestUpFleetIsTheExample keeps up's embedded desired state equal to
// examples/fleet.yaml, which the README tells newcomers to edit.
func TestUpFleetIsTheExample(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(upFleet) {
		t.Fatal("internal/cli/up_fleet.yaml differs from examples/fleet.yaml: copy the example over it")
	}
}

// checkREADMEQuickStart holds the README's quick start to what up printed:
// the command is `go run ./cmd/steward up`, and every line of the output
// block shown after it appears in out (a line with "…" up to the "…";
// ~/.local/state/steward/up stands for the data directory).
func checkREADMEQuickStart(t *testing.T, out, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	if !strings.Contains(readme, "```sh\ngo run ./cmd/steward up\n```") {
		t.Error("README: the quick start is not `go run ./cmd/steward up`")
	}
	_, block, ok := strings.Cut(readme, "```text\nStarting afresh")
	if !ok {
		t.Fatal("README: no output block of steward up (```text starting with \"Starting afresh\")")
	}
	block, _, _ = strings.Cut("Starting afresh"+block, "```")
	have := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		have[strings.TrimRight(l, " ")] = true
	}
	for _, l := range strings.Split(strings.TrimRight(block, "\n"), "\n") {
		l = strings.ReplaceAll(l, "~/.local/state/steward/up", dir)
		if before, _, cut := strings.Cut(l, "…"); cut {
			if !strings.Contains(out, strings.TrimLeft(before, " ")) {
				t.Errorf("README quick start shows %q; steward up printed nothing like it", l)
			}
			continue
		}
		if !have[l] {
			t.Errorf("README quick start shows %q; steward up did not print that line:\n%s", l, out)
		}
	}
}
