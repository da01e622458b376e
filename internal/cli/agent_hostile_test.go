package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runBounded runs the command line and fails the test instead of hanging
// when it does not return: the regressions guarded here are reads that
// block forever.
func runBounded(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var o, e bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, &o, &e) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatalf("steward %v did not return: a read blocked", args)
	}
	return o.String(), e.String(), err
}

// Issue 7 defect 4: a FIFO, a directory or a device where the agent reads
// the desired file is an error naming it, never a hang or an OOM.
func TestAgentHostileDesiredFile(t *testing.T) {
	f := newAgentFixture(t)
	fifo := filepath.Join(f.dir, "desired-fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(f.dir, "desired-zero.yaml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "named pipe"},
		{zero, "character device"},
		{f.dir, "directory"},
	} {
		_, _, err := runBounded(t, f.args("--once", "--desired", tc.path)...)
		if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--desired %s: err = %v; want one naming the file and %q", tc.path, err, tc.want)
		}
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("unreadable desired file mutated: %+v", m)
	}
}

// Issue 7 defect 4: hostile entries in the jobs inbox (a directory named
// x.json, a FIFO job, a FIFO signature, a symlink to /dev/zero, an
// oversized file) are skipped and reported by name; the good job runs and
// desired state still converges.
func TestAgentHostileJobsInbox(t *testing.T) {
	f := newAgentFixture(t)
	jobs := filepath.Join(f.dir, "jobs")
	if err := os.MkdirAll(jobs, 0o700); err != nil {
		t.Fatal(err)
	}
	// A good, benign job: stop guest 102 (which desired state does not
	// manage).
	good, _, err := runCLI(t, "op", "payload", "--host", "pve", "--vmid", "102", "--kind", "lxc", "--op", "stop")
	if err != nil {
		t.Fatalf("op payload: %v", err)
	}
	if err := os.WriteFile(filepath.Join(jobs, "good.json"), []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	mustDo(t, os.Mkdir(filepath.Join(jobs, "x.json"), 0o700))
	mustDo(t, syscall.Mkfifo(filepath.Join(jobs, "fifo.json"), 0o600))
	mustDo(t, os.WriteFile(filepath.Join(jobs, "sigfifo.json"), []byte(good), 0o600))
	mustDo(t, syscall.Mkfifo(filepath.Join(jobs, "sigfifo.json.sig"), 0o600))
	mustDo(t, os.Symlink("/dev/zero", filepath.Join(jobs, "zero.json")))
	mustDo(t, os.WriteFile(filepath.Join(jobs, "huge.json"), bytes.Repeat([]byte(" "), 1<<20), 0o600))

	out, stderr, err := runBounded(t, f.args("--once", "--desired", f.desired(t, agentDoc), "--signed-jobs", jobs)...)
	if ExitCode(err) != ExitChanged {
		t.Fatalf("agent --once with a hostile inbox: %v\n%s\n%s", err, out, stderr)
	}
	if g, _ := f.srv.Sim.Guest(101); g.Status != "running" || g.Config["cores"] != "2" {
		t.Errorf("desired state did not converge: guest 101 = %s cores=%s; want running, 2", g.Status, g.Config["cores"])
	}
	if g, _ := f.srv.Sim.Guest(102); g.Status != "stopped" {
		t.Errorf("the good job did not run: guest 102 = %s; want stopped", g.Status)
	}
	for _, name := range []string{"x.json", "fifo.json", "sigfifo.json.sig", "zero.json", "huge.json"} {
		p := filepath.Join(jobs, name)
		if n := strings.Count(stderr, "file="+p+" "); n != 1 {
			t.Errorf("%s reported %d times in the log; want once:\n%s", name, n, stderr)
		}
	}
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Issue 7 defect 8: the desired file's size bound is a flag; an oversized
// file is refused naming the file, its size and the flag, and changes
// nothing.
func TestAgentDesiredMaxBytes(t *testing.T) {
	f := newAgentFixture(t)
	doc := f.desired(t, agentDoc)
	_, _, err := runBounded(t, f.args("--once", "--desired", doc, "--desired-max-bytes", "20")...)
	if err == nil || !strings.Contains(err.Error(), doc) || !strings.Contains(err.Error(), "at most 20") || !strings.Contains(err.Error(), "--desired-max-bytes") {
		t.Fatalf("err = %v; want one naming %s, the limit and --desired-max-bytes", err, doc)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("oversized desired file mutated: %+v", m)
	}
	_, _, err = runBounded(t, f.args("--once", "--desired", doc, "--desired-max-bytes", "0")...)
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "--desired-max-bytes must be positive") {
		t.Errorf("--desired-max-bytes 0: err = %v; want a usage error", err)
	}
	t.Setenv("STEWARD_DESIRED_MAX_BYTES", "4096")
	if _, _, err := runBounded(t, f.args("--once", "--desired", doc)...); ExitCode(err) != ExitChanged {
		t.Errorf("with STEWARD_DESIRED_MAX_BYTES=4096: %v", err)
	}
}

// Issue 8 §6: the agent warns at start when its token file is readable by
// every user, without printing the token.
func TestAgentWarnsWorldReadableToken(t *testing.T) {
	f := newAgentFixture(t)
	mustDo(t, os.Chmod(f.token, 0o644))
	_, stderr, err := runBounded(t, f.args("--dry-run", "--desired", f.desired(t, agentDoc))...)
	if err != nil {
		t.Fatal(err)
	}
	secret := f.srv.Token[strings.LastIndexByte(f.srv.Token, '=')+1:]
	if !strings.Contains(stderr, "readable by every user") || !strings.Contains(stderr, f.token) || strings.Contains(stderr, secret) {
		t.Errorf("stderr: %s\nwant a warning naming %s, without the secret", stderr, f.token)
	}
}

// Issue 8 §6: a bad policy file is reported like a bad desired file:
// file, line, entry, what was expected, and no stacked prefixes.
func TestAgentPolicyErrorReadsWell(t *testing.T) {
	f := newAgentFixture(t)
	ops := newOpFixture(t, "alice")
	pol := filepath.Join(f.dir, "policy.yaml")
	mustDo(t, os.WriteFile(pol, []byte("require:\n  destroy:\n    role: operator\n    count: 0\n"), 0o600))
	_, _, err := runBounded(t, f.args("--once", "--desired", f.desired(t, agentDoc), "--allowed-signers", ops.allowed, "--policy", pol)...)
	want := "agent: --policy: signedop: policy " + pol + `: line 4: require.destroy.count: want an integer from 1 to 100, got "0"`
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("bad policy mutated: %+v", m)
	}
}
