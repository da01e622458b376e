package cli

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// Regression tests of issue 8 §5: no silent no-ops.

// writeJob writes an unsigned job for a into dir as name and returns its
// path. A benign job runs unsigned; a destructive one is rejected.
func writeJob(t *testing.T, dir, name string, a action.Action) string {
	t.Helper()
	p, err := signedop.NewPayload("pve", a, time.Now().Add(-time.Minute), time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, p.Canonical(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (f *agentFixture) digest(t *testing.T, vmid int) string {
	t.Helper()
	g, ok := f.srv.Sim.Guest(vmid)
	if !ok {
		t.Fatalf("guest %d missing", vmid)
	}
	return g.Digest
}

// `agent --once` exits 0 when nothing changed, 2 when it changed something
// or holds something for a signature, 1 on a failure or a rejected job.
func TestAgentOnceExitCodes(t *testing.T) {
	const head = "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n"
	for _, tc := range []struct {
		name, doc string
		job       func(t *testing.T, f *agentFixture, dir string)
		want      int
		output    string
	}{
		{name: "in sync", doc: head + "      101: {config: {cores: 1}}\n", want: 0, output: "101 in_sync"},
		{name: "changed", doc: head + "      101: {config: {cores: 3}}\n", want: ExitChanged, output: "101 in_sync (changed)"},
		{name: "held for a signature", doc: head + "      101: {config: {scsi0: \"local-lvm:vm-101-disk-9,size=32G\"}}\n",
			want: ExitChanged, output: "101 pending_signature"},
		{name: "guest not found", doc: head + "      999: {state: running}\n", want: ExitFailure, output: "999 error: not found on this host"},
		{name: "rejected job", doc: head + "      101: {config: {cores: 1}}\n", want: ExitFailure, output: "REJECTED  ",
			job: func(t *testing.T, f *agentFixture, dir string) {
				writeJob(t, dir, "destroy-102.json", action.Action{Op: action.Destroy, VMID: 102, Kind: guest.LXC,
					Params: map[string]string{"purge": "1"}, Digest: f.digest(t, 102)})
			}},
		{name: "benign job ran", doc: head + "      101: {config: {cores: 1}}\n", want: ExitChanged, output: "ran       ",
			job: func(t *testing.T, f *agentFixture, dir string) {
				writeJob(t, dir, "start-101.json", action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU})
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newAgentFixture(t)
			jobs := filepath.Join(f.dir, "jobs")
			if err := os.Mkdir(jobs, 0o700); err != nil {
				t.Fatal(err)
			}
			if tc.job != nil {
				tc.job(t, f, jobs)
			}
			out, _, err := runCLI(t, f.args("--once", "--desired", f.desired(t, tc.doc), "--signed-jobs", jobs)...)
			if got := ExitCode(err); got != tc.want {
				t.Errorf("exit %d (err %v); want %d\n%s", got, err, tc.want, out)
			}
			if !strings.Contains(out, tc.output) {
				t.Errorf("output lacks %q:\n%s", tc.output, out)
			}
			if tc.want == ExitChanged && Silent(err) != true {
				t.Errorf("exit 2 carries an error to print (%v); want a silent status", err)
			}
		})
	}
}

// Mistakes that would make the agent quietly manage nothing are refused
// at start, naming what is wrong, before anything is changed; a document
// that gives this host nothing to manage is a warning.
func TestAgentStartChecks(t *testing.T) {
	f := newAgentFixture(t)
	other := filepath.Join(f.dir, "other.yaml")
	os.WriteFile(other, []byte("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-b:\n    guests:\n      101: {state: running}\n  pve-c: {}\n"), 0o600)
	notDir := filepath.Join(f.dir, "file")
	os.WriteFile(notDir, nil, 0o600)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"host not in document", f.args("--once", "--desired", other), `no host "pve"; it names hosts "pve-b", "pve-c"`},
		{"host flag not in document", f.args("--once", "--desired", other, "--host", "pve-a"), `no host "pve-a"`},
		{"jobs dir missing", f.args("--once", "--desired", f.desired(t, agentDoc), "--signed-jobs", filepath.Join(f.dir, "nope")), "--signed-jobs " + filepath.Join(f.dir, "nope") + " does not exist"},
		{"jobs dir a file", f.args("--once", "--desired", f.desired(t, agentDoc), "--signed-jobs", notDir), "is not a directory"},
		{"dry run, host not in document", f.args("--dry-run", "--desired", other), `no host "pve"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCLI(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || ExitCode(err) != ExitFailure {
				t.Errorf("err = %v (exit %d); want exit 1 with %q", err, ExitCode(err), tc.want)
			}
			if m := f.srv.Sim.Mutations(); len(m) != 0 {
				t.Errorf("mutated: %+v", m)
			}
		})
	}

	for _, doc := range []string{"apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve: {}\n", ""} {
		out, stderr, err := runCLI(t, f.args("--once", "--desired", f.desired(t, doc))...)
		if err != nil || !strings.Contains(stderr, "level=WARN") || !strings.Contains(stderr, "nothing on this host is managed") {
			t.Errorf("document %q: err %v; want exit 0 and a warning that nothing is managed\nstderr:\n%s", doc, err, stderr)
		}
		if !strings.Contains(out, "Summary: managed=0 ") {
			t.Errorf("document %q: output lacks the summary of 0 managed guests:\n%s", doc, out)
		}
	}
}

// syncBuffer is a strings.Builder safe for the agent's logger and the test
// to use at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runLoop runs the agent without --once until stop returns true for its
// log, then cancels it and returns the log.
func runLoop(t *testing.T, args []string, stop func(log string) bool) string {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var stderr syncBuffer
	done := make(chan error, 1)
	go func() { done <- Run(ctx, args, &strings.Builder{}, &stderr) }()
	deadline := time.After(time.Minute)
	for !stop(stderr.String()) {
		select {
		case err := <-done:
			t.Fatalf("agent returned early: %v\n%s", err, stderr.String())
		case <-deadline:
			t.Fatalf("agent never reached the expected state; log:\n%s", stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("agent returned %v after cancellation", err)
	}
	return stderr.String()
}

var tickLine = regexp.MustCompile(`(?m)^.*msg=tick managed=(\d+) in_sync=(\d+) changed=(\d+) pending_signature=(\d+) failed=(\d+).*$`)

// Every tick of the daemon logs one summary line; a job that ran is
// reported once and moved to <state-dir>/jobs/done/; a rejected job is
// reported once, not every tick, and stays in the inbox.
func TestAgentLoopSummaryAndJobReports(t *testing.T) {
	f := newAgentFixture(t)
	jobs := filepath.Join(f.state, "jobs") // the default inbox, created by the agent
	if err := os.MkdirAll(jobs, 0o700); err != nil {
		t.Fatal(err)
	}
	ran := writeJob(t, jobs, "stop-102.json", action.Action{Op: action.Stop, VMID: 102, Kind: guest.LXC})
	os.WriteFile(ran+".sig", []byte("not a signature, moved along"), 0o600)
	rejected := writeJob(t, jobs, "destroy-102.json", action.Action{Op: action.Destroy, VMID: 102, Kind: guest.LXC,
		Params: map[string]string{"purge": "1"}, Digest: f.digest(t, 102)})

	doc := f.desired(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {config: {cores: 2}}\n")
	log := runLoop(t, f.args("--interval", "5ms", "--desired", doc), func(log string) bool {
		return len(tickLine.FindAllString(log, -1)) >= 4
	})
	lines := tickLine.FindAllStringSubmatch(log, -1)
	if got := lines[0][1:]; strings.Join(got, " ") != "1 1 1 0 0" {
		t.Errorf("first tick summary (managed in_sync changed pending failed) = %v; want 1 1 1 0 0\n%s", got, lines[0][0])
	}
	if !strings.Contains(lines[0][0], "jobs_ran=1") || !strings.Contains(lines[0][0], "jobs_rejected=1") {
		t.Errorf("first tick summary lacks the jobs: %s", lines[0][0])
	}
	if got := lines[len(lines)-1][1:]; strings.Join(got, " ") != "1 1 0 0 0" {
		t.Errorf("later tick summary = %v; want 1 1 0 0 0 (nothing changed)", got)
	}
	if n := strings.Count(log, `msg="signed job ran" file=`+ran); n != 1 {
		t.Errorf("job that ran reported %d times; want once\n%s", n, log)
	}
	if n := strings.Count(log, `msg="signed job rejected; it stays in the inbox and is reported again only if its verdict changes" file=`+rejected); n != 1 {
		t.Errorf("rejected job reported %d times over %d ticks; want once\n%s", n, len(lines), log)
	}
	// The engine's own messages about a job name its file too.
	if !strings.Contains(log, "source=signed job_file="+ran) {
		t.Errorf("the signed job's op log does not name its file %s\n%s", ran, log)
	}
	if !strings.Contains(log, `msg="gate decision" job_file=`+rejected) {
		t.Errorf("the rejected job's gate decision does not name its file %s\n%s", rejected, log)
	}
	if _, err := os.Stat(ran); !os.IsNotExist(err) {
		t.Errorf("the job that ran is still in the inbox (stat: %v)", err)
	}
	if _, err := os.Stat(rejected); err != nil {
		t.Errorf("the rejected job left the inbox: %v", err)
	}
	done, _ := filepath.Glob(filepath.Join(f.state, "jobs", "done", "*"))
	if len(done) != 2 || !strings.HasSuffix(done[0], "-stop-102.json") || !strings.HasSuffix(done[1], "-stop-102.json.sig") {
		t.Errorf("done/ holds %v; want the job and its signature file", done)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 2 {
		t.Errorf("mutations = %+v; want the config write and one stop", m)
	}
}

// A crash between a job's run and its move leaves it in the inbox: the
// next run does not run it again, reports that it ran before, and moves it.
func TestAgentJobRanBeforeMoveIsReportedAndMoved(t *testing.T) {
	f := newAgentFixture(t)
	jobs := filepath.Join(f.dir, "jobs")
	os.Mkdir(jobs, 0o700)
	job := writeJob(t, jobs, "start-101.json", action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU})
	payload, _ := os.ReadFile(job)
	args := f.args("--once", "--signed-jobs", jobs)
	out, _, err := runCLI(t, args...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "ran       "+job) {
		t.Fatalf("first run: exit %d (%v); want 2 and the job reported as ran\n%s", ExitCode(err), err, out)
	}
	// As if the agent died before the move: the job is back in the inbox.
	os.WriteFile(job, payload, 0o600)
	out, _, err = runCLI(t, args...)
	if err != nil || !strings.Contains(out, "done      "+job) || !strings.Contains(out, "ran before") {
		t.Fatalf("second run: exit %d (%v); want 0 and the job reported as having run before\n%s", ExitCode(err), err, out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 1 {
		t.Errorf("mutations = %+v; want the one start", m)
	}
	if _, err := os.Stat(job); !os.IsNotExist(err) {
		t.Errorf("job still in the inbox after the second run (stat: %v)", err)
	}
	if done, _ := filepath.Glob(filepath.Join(f.state, "jobs", "done", "*-start-101.json")); len(done) != 2 {
		t.Errorf("done/ holds %v; want both copies of the job", done)
	}
}
