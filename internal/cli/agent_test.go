package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/sim/simtest"
)

type agentFixture struct {
	srv               *simtest.Server
	dir, state, token string
}

func newAgentFixture(t *testing.T) *agentFixture {
	t.Helper()
	srv := simtest.Start(t, sim.Options{TaskDuration: 2 * time.Millisecond})
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024"}},
		{VMID: 102, Kind: guest.LXC, Name: "ct", Running: true, Config: map[string]string{"cores": "1", "memory": "512"}},
	} {
		if err := srv.Sim.AddGuest(g); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	f := &agentFixture{srv: srv, dir: dir, state: filepath.Join(dir, "state"), token: filepath.Join(dir, "token")}
	if err := os.WriteFile(f.token, []byte(srv.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *agentFixture) desired(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(f.dir, "desired.yaml")
	if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *agentFixture) args(extra ...string) []string {
	return append([]string{"agent", "--node", "pve", "--state-dir", f.state, "--pve-url", f.srv.URL,
		"--pve-fingerprint", f.srv.Fingerprint, "--pve-token-file", f.token, "--task-poll", "1ms", "--task-poll-max", "5ms"}, extra...)
}

const agentDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {state: running, config: {cores: 2}}
`

func TestAgentOnceConvergesAndReports(t *testing.T) {
	f := newAgentFixture(t)
	out, _, err := runCLI(t, f.args("--once", "--desired", f.desired(t, agentDoc))...)
	if ExitCode(err) != ExitChanged {
		t.Fatalf("agent --once: %v (exit %d); want exit %d (changed)\n%s", err, ExitCode(err), ExitChanged, out)
	}
	for _, want := range []string{"~ 101 cores: 1 → 2", "+ 101 start", "ok    config 101 cores=2", "ok    start 101",
		"101 in_sync (changed)", "Summary: managed=1 in_sync=1 changed=1 pending_signature=0 failed=0"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if g, _ := f.srv.Sim.Guest(101); g.Status != "running" || g.Config["cores"] != "2" {
		t.Errorf("guest 101 = %s cores=%s; want running, 2", g.Status, g.Config["cores"])
	}
	out, _, err = runCLI(t, f.args("--once", "--desired", f.desired(t, agentDoc))...)
	if err != nil || !strings.Contains(out, "101 in_sync") {
		t.Errorf("second run: err %v; output:\n%s", err, out)
	}
}

func TestAgentDryRunChangesNothing(t *testing.T) {
	f := newAgentFixture(t)
	out, _, err := runCLI(t, f.args("--dry-run", "--desired", f.desired(t, agentDoc))...)
	if err != nil {
		t.Fatalf("agent --dry-run: %v", err)
	}
	if !strings.Contains(out, "+ 101 start") {
		t.Errorf("dry run did not print the plan:\n%s", out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("dry run mutated: %+v", m)
	}
	if _, err := os.Stat(f.state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dry run created the state directory (stat: %v)", err)
	}
}

// A desired document with a mistake is refused with its path and line,
// before anything is read from or written to PVE.
func TestAgentBadDesiredChangesNothing(t *testing.T) {
	f := newAgentFixture(t)
	bad := strings.Replace(agentDoc, "config:", "confg:", 1)
	_, _, err := runCLI(t, f.args("--once", "--desired", f.desired(t, bad))...)
	if err == nil || !strings.Contains(err.Error(), "hosts.pve.guests.101.confg") {
		t.Fatalf("err = %v; want one naming hosts.pve.guests.101.confg", err)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("bad desired state mutated: %+v", m)
	}
}

func TestAgentFlagsFromEnvironment(t *testing.T) {
	f := newAgentFixture(t)
	t.Setenv("STEWARD_PVE_TOKEN", f.srv.Token)
	t.Setenv("STEWARD_NODE", "pve")
	t.Setenv("STEWARD_DESIRED", f.desired(t, agentDoc))
	t.Setenv("STEWARD_PVE_FINGERPRINT", f.srv.Fingerprint)
	out, _, err := runCLI(t, "agent", "--dry-run", "--pve-url", f.srv.URL)
	if err != nil || !strings.Contains(out, "+ 101 start") {
		t.Fatalf("agent from environment: err %v\n%s", err, out)
	}
	t.Setenv("STEWARD_INTERVAL", "soon")
	_, _, err = runCLI(t, "agent", "--dry-run", "--pve-url", f.srv.URL)
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "STEWARD_INTERVAL") {
		t.Fatalf("err = %v; want a usage error naming STEWARD_INTERVAL", err)
	}
}

func TestAgentUsageErrors(t *testing.T) {
	f := newAgentFixture(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent", "--once"}, "--node is required"},
		{f.args("--once", "--interval", "0s"), "--interval must be positive"},
		{f.args("--once", "--timeout-disk", "-1s"), "--timeout-disk must be positive"},
		{f.args("--once", "--log-level", "loud"), "--log-level"},
	} {
		_, _, err := runCLI(t, tc.args...)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) || ExitCode(err) != ExitUsage {
			t.Errorf("%v: err = %v; want a usage error (exit %d) containing %q", tc.args, err, ExitUsage, tc.want)
		}
	}
	_, _, err := runCLI(t, "agent", "--once", "--node", "pve", "--pve-token-file", filepath.Join(f.dir, "missing"))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing token file: err = %v; want it named", err)
	}
}

func TestAgentRefusesSharedStateDir(t *testing.T) {
	f := newAgentFixture(t)
	if err := os.MkdirAll(f.state, 0o700); err != nil {
		t.Fatal(err)
	}
	unlock, err := agent.LockDir(f.state)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, _, err = runCLI(t, f.args("--once", "--desired", f.desired(t, agentDoc))...)
	if err == nil || !strings.Contains(err.Error(), "in use by another steward agent") {
		t.Fatalf("err = %v; want the state directory reported in use", err)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("second agent mutated: %+v", m)
	}
}

// Without --once the agent ticks until its context ends, then returns
// cleanly.
func TestAgentLoopsUntilCancelled(t *testing.T) {
	f := newAgentFixture(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, f.args("--interval", "5ms", "--desired", f.desired(t, agentDoc)), &strings.Builder{}, &strings.Builder{})
	}()
	deadline := time.After(time.Minute)
	for {
		if g, _ := f.srv.Sim.Guest(101); g.Status == "running" {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("agent returned early: %v", err)
		case <-deadline:
			t.Fatal("agent loop never converged guest 101")
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent returned %v after cancellation; want nil", err)
	}
}

// The whole operator flow through the commands: the agent holds a
// destructive change and writes its payload; the operator signs the file
// with ssh-keygen through `steward op sign`; the agent, given the signed
// job and the operator in allowed_signers, runs it exactly once.
func TestAgentPendingSignedFlow(t *testing.T) {
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db",
		Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}}); err != nil {
		t.Fatal(err)
	}
	ops := newOpFixture(t, "alice")
	doc := f.desired(t, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      103: {config: {scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	withSigners := f.args("--once", "--desired", doc, "--allowed-signers", ops.allowed)
	out, _, err := runCLI(t, withSigners...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "PENDING SIGNATURE  config 103") {
		t.Fatalf("first run: err %v\n%s", err, out)
	}
	pending, _ := filepath.Glob(filepath.Join(f.state, "pending", "103-config-*.json"))
	if len(pending) != 1 {
		t.Fatalf("pending payload files = %v; want one for 103", pending)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Fatalf("held change reached PVE: %+v", m)
	}
	// A second tick offers the same payload: one thing to sign.
	if _, _, err := runCLI(t, withSigners...); ExitCode(err) != ExitChanged {
		t.Fatalf("second run: %v; want exit %d (holds an action for a signature)", err, ExitChanged)
	}
	if again, _ := filepath.Glob(filepath.Join(f.state, "pending", "103-config-*.json")); len(again) != 1 || again[0] != pending[0] {
		t.Fatalf("pending files after a second tick = %v; want the same %v", again, pending)
	}

	jobs := filepath.Join(f.dir, "jobs")
	os.MkdirAll(jobs, 0o700)
	job := filepath.Join(jobs, "job.json")
	b, _ := os.ReadFile(pending[0])
	os.WriteFile(job, b, 0o600)
	if _, _, err := runCLI(t, "op", "sign", "--key", ops.keys["alice"], job); err != nil {
		t.Fatalf("op sign: %v", err)
	}
	out, _, err = runCLI(t, append(withSigners, "--signed-jobs", jobs)...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ok    config 103 scsi1=local-lvm:vm-103-disk-7,size=10G") {
		t.Fatalf("signed run: err %v\n%s", err, out)
	}
	out, _, err = runCLI(t, append(withSigners, "--signed-jobs", jobs)...)
	if err != nil || !strings.Contains(out, "103 in_sync") {
		t.Fatalf("after the signed run: err %v\n%s", err, out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 1 || m[0].Params["scsi1"] != "local-lvm:vm-103-disk-7,size=10G" {
		t.Fatalf("mutations = %+v; want exactly the signed scsi1 write", m)
	}
	if left, _ := filepath.Glob(filepath.Join(f.state, "pending", "*.json")); len(left) != 0 {
		t.Errorf("pending payloads left after convergence: %v", left)
	}
}

// TestAgentTwoSignersInbox: under a policy asking two operators, a job in
// the inbox with one operator's signature waits (shown as waiting with
// who signed, exit 2, nothing run, the file kept); once a second
// operator's signature file joins it, it runs exactly once.
func TestAgentTwoSignersInbox(t *testing.T) {
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db",
		Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}}); err != nil {
		t.Fatal(err)
	}
	ops := newOpFixture(t, "alice", "bob")
	policy := filepath.Join(f.dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("require:\n  \"*\": {role: operator, count: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := f.desired(t, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      103: {config: {scsi1: "local-lvm:vm-103-disk-7,size=10G"}}
`)
	jobs := filepath.Join(f.dir, "jobs")
	os.MkdirAll(jobs, 0o700)
	run := append(f.args("--once", "--desired", doc, "--allowed-signers", ops.allowed, "--policy", policy), "--signed-jobs", jobs)
	if _, _, err := runCLI(t, run...); ExitCode(err) != ExitChanged {
		t.Fatalf("first run: %v; want exit 2 (held for a signature)", err)
	}
	pending, _ := filepath.Glob(filepath.Join(f.state, "pending", "103-config-*.json"))
	if len(pending) != 1 {
		t.Fatalf("pending payload files = %v; want one for 103", pending)
	}
	job := filepath.Join(jobs, "job.json")
	b, _ := os.ReadFile(pending[0])
	os.WriteFile(job, b, 0o600)
	if _, _, err := runCLI(t, "op", "sign", "--key", ops.keys["alice"], job); err != nil {
		t.Fatalf("op sign (alice): %v", err)
	}
	for range 2 {
		out, _, err := runCLI(t, run...)
		if ExitCode(err) != ExitChanged || !strings.Contains(out, "waiting   "+job+" (config 103") ||
			!strings.Contains(out, "waiting for 1 more signer(s) of role operator (1 of 2 signed: alice@example.com)") || strings.Contains(out, "REJECTED") {
			t.Fatalf("run with alice's signature: err %v\n%s", err, out)
		}
		if m := f.srv.Sim.Mutations(); len(m) != 0 {
			t.Fatalf("the change ran with 1 of 2 signatures: %+v", m)
		}
	}
	if _, err := os.Stat(job); err != nil {
		t.Fatalf("the held job left the inbox: %v", err)
	}
	if _, _, err := runCLI(t, "op", "sign", "--key", ops.keys["bob"], "--out", job+".sig.2", job); err != nil {
		t.Fatalf("op sign (bob): %v", err)
	}
	out, _, err := runCLI(t, run...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ok    config 103 scsi1=local-lvm:vm-103-disk-7,size=10G") {
		t.Fatalf("run with both signatures: err %v\n%s", err, out)
	}
	if out, _, err := runCLI(t, run...); err != nil || !strings.Contains(out, "103 in_sync") {
		t.Fatalf("after the signed run: err %v\n%s", err, out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 1 || m[0].Params["scsi1"] != "local-lvm:vm-103-disk-7,size=10G" {
		t.Fatalf("mutations = %+v; want exactly the co-signed scsi1 write, once", m)
	}
}
