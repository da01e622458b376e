package crashtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/sim"
)

// soakJob is one job of the soak and the mutation it asks for.
type soakJob struct {
	name   string
	job    signedop.Job
	op     string // the simulator's mutation op
	vmid   int
	signed bool
}

// TestCrashFaultSoak runs signed destroys, signed snapshot deletes and
// benign jobs through `steward agent --once` runs that are SIGKILLed at
// random crash points (in the agent, or by the simulator around a
// mutation) while the simulator injects 5xx, 596, dropped connections and
// failing tasks; then clean runs. For every job it asserts: it ran exactly
// once, or its op ended failed with a reason (never silently dropped);
// nothing ran twice; no op is left in flight; and every mutation the
// simulator executed is the task of exactly one journaled op and one job.
// The seed is fixed (STEWARD_SOAK_SEED overrides it); a failure prints it.
func TestCrashFaultSoak(t *testing.T) {
	seed := uint64(1)
	if v := os.Getenv("STEWARD_SOAK_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("STEWARD_SOAK_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (set STEWARD_SOAK_SEED to reproduce another)", seed)
	rng := rand.New(rand.NewPCG(seed, 0x50a6))

	so := newSoak(t, seed, 24) // one job each, presented one more per run
	s, k, jobs, args, present := so.s, so.k, so.jobs, so.args, so.present
	points := []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned, crashpoint.AfterTaskRecorded,
		crashpoint.AfterCall, crashpoint.AfterEnd, crashpoint.BeforeRecover, crashpoint.AfterResolve, serverBeforeExec, serverAfterExec}
	faults := []sim.Faults{{}, {ErrorRate: 0.2}, {Status596Rate: 0.3}, {DropAfterExecRate: 0.5}, {TaskFailRate: 0.15}}
	kills := 0
	for round := range 30 {
		if round < len(jobs) {
			present(jobs[round])
		}
		s.SetFaults(faults[rng.IntN(len(faults))])
		point, at := points[rng.IntN(len(points))], ""
		k.disarm()
		if strings.HasPrefix(point, "server-") {
			k.mu.Lock()
			k.at, k.n, k.seen = point, 1+rng.IntN(3), 0
			k.mu.Unlock()
		} else {
			at = fmt.Sprintf("%s:%d", point, 1+rng.IntN(3))
		}
		if r := k.run(t, agentBin, args, at); r.killed {
			kills++
		}
	}
	k.disarm()
	s.SetFaults(sim.Faults{})
	for range 3 {
		if r := k.run(t, agentBin, args, ""); r.killed {
			t.Fatalf("a clean run was killed\n%s", r.out)
		}
	}
	t.Logf("%d of 30 faulty runs killed", kills)

	so.check(t, fmt.Sprintf("seed %d", seed))
}

// soak is a simulator with n qemu guests 200.., a job for each (a signed
// destroy, a signed snapshot delete of snapshot s1, or a benign start, in
// turn) not yet presented, and the agent's command line.
type soak struct {
	s        *sim.Sim
	k        *killer
	jobs     []soakJob
	args     []string
	present  func(soakJob) // writes the job into the jobs directory
	setup    int           // mutations made by the setup, not the agent
	stateDir string
}

func newSoak(t *testing.T, seed uint64, n int) *soak {
	t.Helper()
	s, err := sim.New(sim.Options{Node: "pve", TaskDuration: 2 * time.Millisecond, Seed: int64(seed), Token: "root@pam!crash=7d9f0c54-crash-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for i := range n {
		vmid := 200 + i
		err := s.AddGuest(sim.GuestSpec{VMID: vmid, Kind: guest.QEMU, Name: "soak" + strconv.Itoa(vmid), Config: map[string]string{
			"cores": "1", "memory": "512", "scsi0": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=8G", vmid), "ostype": "l26"}})
		if err != nil {
			t.Fatal(err)
		}
	}
	k := &killer{}
	srv := httptest.NewUnstartedServer(k.wrap(s.Handler()))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	// Snapshots for the snapshot deletes, made through the API as an
	// operator would.
	tok, err := pve.ParseToken(s.Token())
	if err != nil {
		t.Fatal(err)
	}
	client, err := pve.New(pve.Options{URL: srv.URL, Token: tok, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if i%3 != 1 {
			continue
		}
		res, err := client.SnapshotCreate(t.Context(), "pve", guest.QEMU, 200+i, "s1", "")
		if err != nil {
			t.Fatal(err)
		}
		if u, ok := res.Task(); ok {
			if _, err := client.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
	}

	setup := len(s.Mutations()) // the snapshots above; not the agent's
	env := signedoptest.NewEnv(t)
	env.Host, env.Now = "pve", time.Now()
	dir := t.TempDir()
	jobsDir := filepath.Join(dir, "jobs")
	if err := os.MkdirAll(jobsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	var jobs []soakJob
	for i := range n {
		vmid := 200 + i
		g, _ := s.Guest(vmid)
		var a action.Action
		j := soakJob{vmid: vmid, signed: true}
		switch i % 3 {
		case 0:
			a, j.op = action.Action{Op: action.Destroy, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}, "destroy"
		case 1:
			a, j.op = action.Action{Op: action.SnapshotDelete, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"snapname": "s1"}, Digest: g.Digest}, "delsnapshot"
		default:
			a, j.op, j.signed = action.Action{Op: action.Start, VMID: vmid, Kind: guest.QEMU, Digest: g.Digest}, "start", false
		}
		env.Action, env.Current = a, g.Digest
		if j.signed {
			j.job = env.Job(nil, env.Alice.Signer)
		} else {
			j.job = env.Job(func(p *signedop.Payload) {
				p.Op, p.VMID, p.Kind, p.Digest, p.Params = a.Op, a.VMID, a.Kind, a.Digest, a.Params
			})
			j.job.Signatures = nil
		}
		j.name = fmt.Sprintf("%s-%d", a.Op, vmid)
		jobs = append(jobs, j)
	}
	// present writes a job into the jobs directory, signatures first.
	present := func(jb soakJob) {
		base := filepath.Join(jobsDir, jb.name+".json")
		for si, sig := range jb.job.Signatures {
			if err := os.WriteFile(base+".sig"+strconv.Itoa(si), sig, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(base, jb.job.Payload, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	signers := filepath.Join(dir, "allowed_signers")
	tokenFile := filepath.Join(dir, "token")
	for path, body := range map[string]string{signers: env.AllowedSigners, tokenFile: s.Token() + "\n"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sum := sha256.Sum256(srv.Certificate().Raw)
	fp := make([]string, len(sum))
	for i, b := range sum {
		fp[i] = fmt.Sprintf("%02X", b)
	}
	stateDir := filepath.Join(dir, "state")
	args := []string{"agent", "--once", "--node", "pve", "--state-dir", stateDir,
		"--pve-url", srv.URL, "--pve-fingerprint", strings.Join(fp, ":"), "--pve-token-file", tokenFile,
		"--signed-jobs", jobsDir, "--allowed-signers", signers, "--not-run-grace", "1ms",
		"--task-poll", "2ms", "--task-poll-max", "10ms", "--log-level", "error"}

	return &soak{s: s, k: k, jobs: jobs, args: args, present: present, setup: setup, stateDir: stateDir}
}

// check asserts, from the journal and the simulator's mutation record,
// that every presented job ran exactly once, or ended failed after it ran
// (its task failed) or with an unknowable fate; that nothing ran twice;
// that no op is in flight; and that every mutation is the task of exactly
// one journaled op of one job.
func (so *soak) check(t *testing.T, label string) {
	t.Helper()
	j, err := journal.Open(filepath.Join(so.stateDir, "journal"), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if fl := j.InFlight(); len(fl) != 0 {
		t.Errorf("%s: ops left in flight: %+v", label, fl)
	}
	ran := map[string]int{}
	owners := map[string]string{}
	for _, m := range so.s.Mutations()[so.setup:] {
		ran[m.Op+" "+strconv.Itoa(m.VMID)]++
		owner, ok := j.TaskOwner(m.UPID)
		if !ok {
			t.Errorf("%s: mutation %s %d (task %s) is in no journaled op", label, m.Op, m.VMID, m.UPID)
		} else if prev, dup := owners[owner]; dup {
			t.Errorf("%s: op %s owns two mutations (%s and %s)", label, owner, prev, m.UPID)
		}
		owners[owner] = m.UPID
	}
	okJobs := 0
	for _, jb := range so.jobs {
		key := jb.op + " " + strconv.Itoa(jb.vmid)
		sum := sha256.Sum256(jb.job.Payload)
		res, done := j.Completed("signed:" + hex.EncodeToString(sum[:16]))
		switch {
		case ran[key] > 1:
			t.Errorf("%s: job %s ran %d times", label, jb.name, ran[key])
		case !done:
			t.Errorf("%s: job %s was lost: no op ended for it (mutations %d)", label, jb.name, ran[key])
		case res.Retry:
			t.Errorf("%s: job %s still waits for a retry after clean runs: %+v", label, jb.name, res)
		case res.OK && ran[key] != 1:
			t.Errorf("%s: job %s journaled done but ran %d times", label, jb.name, ran[key])
		case !res.OK && ran[key] != 0:
			t.Errorf("%s: job %s journaled failed but ran", label, jb.name)
		case !res.OK && res.ExitStatus == "" && !strings.Contains(res.Resolution, "fate unknown"):
			// Only a task that ran and failed, or a fate that cannot be
			// known, may end a valid job: anything else PVE proved did
			// not run, and the job must have been retried.
			t.Errorf("%s: job %s lost: ended failed without having run: %+v", label, jb.name, res)
		}
		if done && res.OK {
			okJobs++
		}
	}
	if got := len(so.s.Mutations()) - so.setup; got != okJobs {
		t.Errorf("%s: the simulator executed %d mutations; the journal has %d jobs done", label, got, okJobs)
	}
}

// TestSignedJobTransitionsUnderSIGKILL kills the agent at every crash
// point a signed job passes (verified → committed → running → done, and
// recovery) and from the simulator's side just before and just after PVE
// executes the call, with a signed destroy, a signed snapshot delete and a
// benign start in the inbox, then restarts it: each job runs exactly once,
// none is lost and none runs twice (the journal package doc names the
// states).
func TestSignedJobTransitionsUnderSIGKILL(t *testing.T) {
	type crash struct {
		point  string
		second string // a crash point for the first restart (during recovery)
	}
	var crashes []crash
	for _, p := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd, serverBeforeExec, serverAfterExec} {
		crashes = append(crashes, crash{point: p})
	}
	crashes = append(crashes, crash{crashpoint.AfterBegin, crashpoint.BeforeRecover}, crash{crashpoint.AfterTaskReturned, crashpoint.AfterResolve},
		crash{serverAfterExec, crashpoint.AfterResolve})
	for _, c := range crashes {
		for hit := 1; hit <= 3; hit++ {
			name := fmt.Sprintf("%s:%d", c.point, hit)
			if c.second != "" {
				name += "+" + c.second
			}
			t.Run(name, func(t *testing.T) {
				so := newSoak(t, 1, 3)
				for _, jb := range so.jobs {
					so.present(jb)
				}
				at := ""
				if strings.HasPrefix(c.point, "server-") {
					so.k.mu.Lock()
					so.k.at, so.k.n, so.k.seen = c.point, hit, 0
					so.k.mu.Unlock()
				} else {
					at = fmt.Sprintf("%s:%d", c.point, hit)
				}
				if r := so.k.run(t, agentBin, so.args, at); !r.killed {
					t.Fatalf("not killed at %s (exit %v)\n%s", name, r.err, r.out)
				}
				so.k.disarm()
				if c.second != "" {
					if r := so.k.run(t, agentBin, so.args, c.second+":1"); !r.killed {
						t.Fatalf("restart not killed at %s (exit %v)\n%s", c.second, r.err, r.out)
					}
				}
				for range 2 {
					if r := so.k.run(t, agentBin, so.args, ""); r.killed {
						t.Fatalf("clean restart killed\n%s", r.out)
					}
				}
				so.check(t, name)
				if got, want := len(so.s.Mutations())-so.setup, len(so.jobs); got != want {
					t.Errorf("%s: %d mutations; want each of the %d jobs run once", name, got, want)
				}
			})
		}
	}
}
