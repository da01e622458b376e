package proctest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The test binary doubles as the child: with PROCTEST_CHILD set it
// prints a few lines the way steward does, then waits for SIGTERM and
// exits 3 (or, with "exit", exits 7 at once).
func TestMain(m *testing.M) {
	switch os.Getenv("PROCTEST_CHILD") {
	case "":
		os.Exit(m.Run())
	case "exit":
		fmt.Println("Token: never-read")
		os.Exit(7)
	default:
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("starting")
		fmt.Fprintln(os.Stderr, "URL:  https://127.0.0.1:8006")
		fmt.Println("Fingerprint: AA:BB")
		<-sig
		fmt.Println("terminated")
		os.Exit(3)
	}
}

func TestStartLineKill(t *testing.T) {
	p := Start(t, "child", os.Args[0], []string{"PROCTEST_CHILD=serve"})
	if got := p.Line(t, `^URL: +(https://\S+)`); got != "https://127.0.0.1:8006" {
		t.Errorf("URL line (from stderr) = %q; want https://127.0.0.1:8006", got)
	}
	if got := p.Line(t, `^Fingerprint: (\S+)`); got != "AA:BB" {
		t.Errorf("Fingerprint line = %q; want AA:BB", got)
	}
	p.Kill(syscall.SIGTERM)
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("exit = %v; want status 3 after SIGTERM", err)
	}
	if !strings.Contains(p.Out.String(), "terminated") {
		t.Errorf("output %q lacks what the child printed on SIGTERM", p.Out.String())
	}
	p.Kill(syscall.SIGKILL) // an exited process: only waits
}

func TestDoneAndErr(t *testing.T) {
	p := Start(t, "child", os.Args[0], []string{"PROCTEST_CHILD=exit"})
	<-p.Done()
	var ee *exec.ExitError
	if err := p.Err(); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Fatalf("exit = %v; want status 7", err)
	}
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(src, "go.mod"), []byte("module example.com/hello\n\ngo 1.22\n"), 0o644))
	must(os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() { println(\"hello\") }\n"), 0o644))
	t.Chdir(src)
	bin, err := Build(dir, "hello", ".")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin).CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("built binary: %q, %v; want hello", out, err)
	}

	must(os.WriteFile(filepath.Join(src, "main.go"), []byte("package main\n\nfunc main() { undefined() }\n"), 0o644))
	_, err = Build(dir, "broken", ".")
	var be *BuildError
	if !errors.As(err, &be) || !strings.Contains(err.Error(), "undefined") {
		t.Fatalf("Build of a broken package: %v; want a BuildError with the compiler's message", err)
	}
}

func TestFreeAddr(t *testing.T) {
	addr := FreeAddr(t)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("FreeAddr = %q (%v); want a 127.0.0.1 address with a port", addr, err)
	}
}
