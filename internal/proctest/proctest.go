// Package proctest runs steward as child processes for integration tests:
// it builds a command once, starts it in a process group of its own with
// its output captured, waits for the lines it prints (addresses,
// fingerprints, tokens) and stops it with a signal to the whole group.
// Children talk to loopback only; that is up to the arguments the test
// passes.
//
// Every Proc is killed (SIGKILL to its group) by the test's cleanup and,
// should the test process itself die, by the kernel (Pdeathsig), so no
// child outlives its test.
package proctest

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Build compiles the Go package pkg (an import path, or a path relative
// to the test's package directory, as `go build` takes it) to dir/name
// and returns the binary's path. It builds without the race detector:
// the children are the system under test, and they stay fast; the test
// process keeps -race. The compiler's output is in the error.
func Build(dir, name, pkg string) (string, error) {
	bin := filepath.Join(dir, name)
	out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput()
	if err != nil {
		return "", &BuildError{Pkg: pkg, Err: err, Output: string(out)}
	}
	return bin, nil
}

// BuildError is a failed Build, with what the compiler said.
type BuildError struct {
	Pkg    string
	Err    error
	Output string
}

func (e *BuildError) Error() string {
	return "proctest: building " + e.Pkg + ": " + e.Err.Error() + "\n" + e.Output
}

func (e *BuildError) Unwrap() error { return e.Err }

// Buffer is a bytes.Buffer that a process (through os/exec) writes while
// the test reads it. Safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Proc is one child process. Out holds its stdout and stderr.
type Proc struct {
	Name string // for messages: "hub", "agent", "sim"
	Cmd  *exec.Cmd
	Out  *Buffer

	done chan struct{}
	err  error // Cmd.Wait's answer; read only after done is closed
}

// Start runs bin with args, env appended to the test's environment, in a
// process group of its own, and returns at once; name appears in
// messages. The test's cleanup kills the group (SIGKILL) and waits for
// the process. A process that cannot start fails the test.
func Start(t testing.TB, name, bin string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Cmd: exec.Command(bin, args...), Out: &Buffer{}, done: make(chan struct{})}
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout, p.Cmd.Stderr = p.Out, p.Out
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.err = p.Cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Kill(syscall.SIGKILL) })
	return p
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process exited (exec.Cmd.Wait's error); valid once Done
// is closed.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Kill sends sig to p's process group and waits for p to exit; a process
// still running a minute after the signal gets SIGKILL. Killing an
// exited process only waits.
func (p *Proc) Kill(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(-p.Cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Line waits until a line of p's output matches re and returns the
// match's first group. It fails the test when p exits first, or after a
// few minutes (a bound against hangs, not a timing assertion).
func (p *Proc) Line(t testing.TB, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	Eventually(t, p.Name+" printing "+re, func() bool {
		sc := bufio.NewScanner(strings.NewReader(p.Out.String()))
		for sc.Scan() {
			if m = rx.FindStringSubmatch(sc.Text()); m != nil {
				return true
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v):\n%s", p.Name, p.err, p.Out)
		default:
		}
		return false
	}, p.Out.String)
	if len(m) < 2 {
		t.Fatalf("%s: pattern %s has no group to return", p.Name, re)
	}
	return m[1]
}

// Eventually polls cond until it holds, failing the test with what and
// detail() after a few minutes (a bound against hangs, not a timing
// assertion).
func Eventually(t testing.TB, what string, cond func() bool, detail func() string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s\n%s", what, detail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago, for a child that must listen where the test says.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
