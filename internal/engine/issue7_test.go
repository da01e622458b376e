package engine_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/sim"
)

// Regression tests of issue 7: a signed operation is never lost, a benign
// job PVE proves did not run is retried, recovery adopts only its own task,
// and an unknown outcome is resolved at the next tick.

// signedDestroy returns a signed destroy of qemu guest vmid on its current
// config, with the harness's gate verifying env's signers (kept across
// h.open).
func signedDestroy(t *testing.T, h *harness, env *signedoptest.Env, vmid int) signedop.Job {
	t.Helper()
	g, _ := h.srv.Sim.Guest(vmid)
	env.Action = action.Action{Op: action.Destroy, VMID: vmid, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	env.Current = g.Digest
	useVerifier(h, env)
	h.gate = h.eng.Gate
	return env.Job(nil, env.Alice.Signer)
}

// crashAt makes the engine's op goroutine stop dead at crashpoint point
// the first time it is reached (as SIGKILL would stop it: nothing after
// it runs) and cancels the tick, so the test can restart the engine over
// the same journal and simulator.
func crashAt(t *testing.T, point string, cancel context.CancelFunc) {
	t.Helper()
	var fired atomic.Bool
	crashpoint.SetHook(func(name string) {
		if name == point && fired.CompareAndSwap(false, true) {
			cancel()
			runtime.Goexit()
		}
	})
	t.Cleanup(func() { crashpoint.SetHook(nil) })
}

func destroyed(h *harness, vmid int) bool {
	_, ok := h.srv.Sim.Guest(vmid)
	return !ok
}

// A signed destroy skipped because its guest is in backoff is not spent:
// once the backoff is over the same job runs.
func TestSignedJobSkippedInBackoffStaysRunnable(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	job := signedDestroy(t, h, env, 101)
	h.eng.Backoff = backoff.NewTracker(backoff.Policy{Initial: time.Hour, Max: time.Hour}, nil, nil)
	h.eng.Backoff.Failure(101)
	rep := h.tick(nil, job)
	if len(rep.Results) != 1 || !strings.HasPrefix(rep.Results[0].Skipped, "backing off") {
		t.Fatalf("results = %+v; want the destroy skipped for backoff", rep.Results)
	}
	h.eng.Backoff = backoff.NewTracker(backoff.Policy{Initial: time.Millisecond, Max: time.Millisecond}, nil, nil)
	rep = h.tick(nil, job)
	if !destroyed(h, 101) {
		t.Fatalf("after the backoff the signed destroy did not run: rejected %+v results %+v", rep.Rejected, rep.Results)
	}
}

// A transient 5xx on the config re-read just before a destroy leaves the
// signed job runnable (and is logged at warn with its cause): its guest
// backs off, and once the backoff is over the same job runs.
func TestSignedJobRecheckFailureStaysRunnable(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	job := signedDestroy(t, h, env, 101)
	var reads atomic.Int32
	h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
		// The observation reads …/pending; the first config read is the
		// re-read before the destroy.
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/qemu/101/config") && reads.Add(1) == 1 {
			return &http.Response{StatusCode: 500, Status: "500 proxy loop detected", Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
		}
		return pass()
	})
	rep := h.tick(nil, job)
	if destroyed(h, 101) || len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results = %+v; want the destroy not run, with the re-read's error", rep.Results)
	}
	h.setFault(nil)
	rep = h.tick(nil, job)
	if destroyed(h, 101) || len(rep.Results) != 1 || rep.Results[0].Skip != engine.SkipBackoff {
		t.Fatalf("within the backoff: results %+v; want the destroy skipped", rep.Results)
	}
	h.passBackoff()
	rep = h.tick(nil, job)
	if !destroyed(h, 101) {
		t.Fatalf("after the 5xx the signed destroy did not run: rejected %+v results %+v", rep.Rejected, rep.Results)
	}
}

// An agent killed after the signature was accepted and before begin, or
// after begin and before PVE received the call, runs the signed job after
// restart; killed after PVE ran it, never again.
func TestSignedJobSurvivesCrash(t *testing.T) {
	for _, point := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd} {
		t.Run(point, func(t *testing.T) {
			h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
			env := signingEnv(t)
			job := signedDestroy(t, h, env, 101)
			ctx, cancel := context.WithCancel(t.Context())
			crashAt(t, point, cancel)
			h.eng.Tick(ctx, nil, []signedop.Job{job})
			crashpoint.SetHook(nil)
			// Restart past the not-run grace: the journal then proves
			// whether PVE ever got the call.
			h.now = func() time.Time { return time.Now().Add(time.Minute) }
			env.ReopenNonces()
			useVerifier(h, env)
			h.gate = h.eng.Gate
			h.open()
			h.tick(nil, job)
			h.tick(nil, job)
			if m := h.mutations(); !slices.Equal(m, []string{"destroy 101"}) {
				t.Fatalf("mutations = %v; want the destroy exactly once", m)
			}
			if got := h.j.InFlight(); len(got) != 0 {
				t.Errorf("ops left in flight: %+v", got)
			}
		})
	}
}

// A signed op found in flight too soon after it began to know PVE never
// got it is not run again and not dropped: its guest waits, and the job
// runs once the grace has passed.
func TestSignedJobInFlightWithinGraceWaits(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	job := signedDestroy(t, h, env, 101)
	ctx, cancel := context.WithCancel(t.Context())
	crashAt(t, crashpoint.AfterBegin, cancel)
	h.eng.Tick(ctx, nil, []signedop.Job{job})
	crashpoint.SetHook(nil)
	h.open()
	rep := h.tick(nil, job)
	if destroyed(h, 101) || len(rep.Results) != 1 || !strings.Contains(rep.Results[0].Skipped, "not yet known") {
		t.Fatalf("within the grace: results %+v rejected %+v; want the guest held", rep.Results, rep.Rejected)
	}
	h.eng.Now = func() time.Time { return time.Now().Add(time.Minute) }
	h.tick(nil, job)
	if m := h.mutations(); !slices.Equal(m, []string{"destroy 101"}) {
		t.Fatalf("mutations = %v; want the destroy once", m)
	}
}

// A replayed signed job is refused even when the nonce store was lost:
// the store is rebuilt from the journal.
func TestNonceStoreRebuiltFromJournal(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
	env := signingEnv(t)
	job := signedDestroy(t, h, env, 101)
	h.tick(nil, job)
	if !destroyed(h, 101) {
		t.Fatal("destroy did not run")
	}
	env.ReopenNonces()
	if err := os.Remove(filepath.Join(env.Dir, nonce.FileName)); err != nil {
		t.Fatal(err)
	}
	useVerifier(h, env)
	h.gate = h.eng.Gate
	h.open()
	if !env.Nonces().Used(mustNonce(t, job)) {
		t.Error("the nonce store was not rebuilt from the journal at recovery")
	}
}

func mustNonce(t *testing.T, j signedop.Job) string {
	t.Helper()
	p, err := signedop.ParsePayload(j.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return p.Nonce
}

// A benign job that failed where PVE guarantees nothing ran is retried
// once its guest's backoff is over, not dropped.
func TestBenignJobRetriedAfterNotRunFailure(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fault func(r *http.Request) (*http.Response, error)
	}{
		{"500 before execution", func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 500, Status: "500 got timeout", Body: io.NopCloser(strings.NewReader("{}")), Request: r}, nil
		}},
		{"596", func(r *http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 596, Status: "596 Connection timed out", Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
		}},
		{"connection refused", func(r *http.Request) (*http.Response, error) {
			return nil, errors.New("dial tcp 127.0.0.1:8006: connect: connection refused")
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
			env := signingEnv(t)
			useVerifier(h, env)
			g, _ := h.srv.Sim.Guest(101)
			job := unsignedJob(env, action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Digest: g.Digest})
			var failed atomic.Bool
			h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
				if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/status/start") && failed.CompareAndSwap(false, true) {
					return tt.fault(r)
				}
				return pass()
			})
			rep := h.tick(nil, job)
			if len(rep.Results) != 1 || rep.Results[0].Err == nil {
				t.Fatalf("first tick: results %+v; want the start failed and reported", rep.Results)
			}
			if rep := h.tick(nil, job); len(rep.Results) != 1 || rep.Results[0].Skip != engine.SkipBackoff || len(h.mutations()) != 0 {
				t.Fatalf("within the backoff: results %+v, mutations %v; want the start skipped", rep.Results, h.mutations())
			}
			h.passBackoff()
			h.tick(nil, job)
			if m := h.mutations(); !slices.Equal(m, []string{"start 101"}) {
				t.Fatalf("mutations = %v; want the start retried and run once", m)
			}
			h.tick(nil, job)
			if n := len(h.mutations()); n != 1 {
				t.Fatalf("after success: %d mutations; want 1", n)
			}
		})
	}
}

// Recovery never adopts an earlier op's task: an interrupted start whose
// call never reached PVE must not take the failed task of the start
// before it, so no two ops share a UPID.
func TestRecoveryDoesNotAdoptAnotherOpsTask(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := mustParse(t, fleet(101, guest.QEMU, "")+"        state: running\n")
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	h.tick(want)
	h.srv.Sim.SetFaults(sim.Faults{})
	if n := len(h.srv.Sim.Mutations()); n != 0 {
		t.Fatalf("the failing task applied %d mutations; want 0", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	crashAt(t, crashpoint.AfterBegin, cancel)
	h.eng.Tick(ctx, want, nil)
	crashpoint.SetHook(nil)
	h.open()
	b, err := os.ReadFile(filepath.Join(h.dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	upids := map[string]int{}
	for _, part := range strings.Split(string(b), `"upid":"`)[1:] {
		upids[part[:strings.IndexByte(part, '"')]]++
	}
	for u, n := range upids {
		if n > 1 {
			t.Errorf("UPID %s recorded for %d ops; want each task for one op", u, n)
		}
	}
	h.tick(want)
	if m := h.mutations(); !slices.Equal(m, []string{"start 101"}) {
		t.Errorf("mutations = %v; want the start run once after recovery", m)
	}
}

// An op whose outcome was unknown when it returned is resolved by the next
// tick, before its guest is changed again, not only at restart.
func TestUnknownOutcomeResolvedNextTick(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := mustParse(t, fleet(101, guest.QEMU, "")+"        state: running\n")
	var down atomic.Bool
	h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
		if down.Load() {
			return nil, errors.New("dial tcp 127.0.0.1:8006: connect: connection refused")
		}
		resp, err := pass()
		if err == nil && r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/status/start") {
			// PVE started the task; the answer is lost and PVE is then
			// unreachable, so the op cannot be resolved this tick.
			resp.Body.Close()
			down.Store(true)
			resp.Body = io.NopCloser(strings.NewReader(`{"data":"UPID:trunc`))
		}
		return resp, err
	})
	h.tick(want)
	if got := h.j.InFlight(); len(got) != 1 {
		t.Fatalf("after the lost answer: in flight %+v; want the start", got)
	}
	down.Store(false)
	h.setFault(nil)
	h.tick(want)
	if got := h.j.InFlight(); len(got) != 0 {
		t.Fatalf("after the next tick: in flight %+v; want it resolved", got)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"start 101"}) {
		t.Errorf("mutations = %v; want one start", m)
	}
}

// When more than one task could be an interrupted op's (here: two snapshot
// deletes by the agent's token on the guest, started after the op began,
// recorded for no op), recovery adopts none: it judges by the guest's
// state, and since the snapshot the op deletes is still there, ends the op
// with an unknown fate, reported and never run again, instead of taking
// the earliest task's success for its own.
func TestRecoveryAmbiguousTaskJudgedByState(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	ctx := t.Context()
	node := h.srv.Sim.Node()
	wait := func(res interface{ Task() (pve.UPID, bool) }, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if u, ok := res.Task(); ok {
			if _, err := h.client.WaitTask(ctx, u, pve.WaitOptions{Initial: time.Millisecond, Max: 5 * time.Millisecond}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"s1", "s2", "s3"} {
		wait(h.client.SnapshotCreate(ctx, node, guest.QEMU, 101, name, ""))
	}
	g, _ := h.srv.Sim.Guest(101)
	op := journal.Op{ID: "op-interrupted", Time: time.Now().Add(-2 * time.Second), Source: "signed", Host: "pve",
		Action:  action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "s1"}, Digest: g.Digest},
		IdemKey: "signed:interrupted", Nonce: "n-interrupted", NonceExpires: time.Now().Add(time.Hour)}
	if err := h.j.Begin(op); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"s2", "s3"} {
		wait(h.client.SnapshotDelete(ctx, node, guest.QEMU, 101, name))
	}
	h.now = func() time.Time { return time.Now().Add(time.Minute) }
	h.open()
	res, ok := h.j.Completed("signed:interrupted")
	if !ok || res.OK || res.Retry || !strings.Contains(res.Resolution, "fate unknown") {
		t.Fatalf("resolution = %+v (ended %v); want failed with an unknown fate, not retried", res, ok)
	}
	for _, m := range h.srv.Sim.Mutations() {
		if m.Op == "delsnapshot" && m.Params["snapname"] == "s1" {
			t.Fatal("snapshot s1 was deleted")
		}
	}
}

// A benign job whose task failed only because it could not take the
// guest's config lock (nothing changed) ends retryable, not dropped.
func TestBenignJobLockTimeoutTaskRetryable(t *testing.T) {
	h := newHarness(t, sim.Options{LockTimeout: time.Millisecond}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	// A snapshot task that holds the guest's lock far longer than the test.
	h.srv.Sim.SetFaults(sim.Faults{SlowTaskRate: 1, SlowTaskFactor: 1_000_000})
	if _, err := h.client.SnapshotCreate(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101, "hold", ""); err != nil {
		t.Fatal(err)
	}
	h.srv.Sim.SetFaults(sim.Faults{})
	g, _ := h.srv.Sim.Guest(101)
	job := unsignedJob(env, action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Digest: g.Digest})
	rep := h.tick(nil, job)
	if len(rep.Results) != 1 || rep.Results[0].Err == nil || !strings.Contains(rep.Results[0].Err.Error(), "lock") {
		t.Fatalf("results = %+v; want the start failed on the lock", rep.Results)
	}
	sum := sha256.Sum256(job.Payload)
	res, ok := h.j.Completed("signed:" + hex.EncodeToString(sum[:16]))
	if !ok || res.OK || !res.Retry {
		t.Fatalf("journaled result = %+v (ended %v); want failed and retryable", res, ok)
	}
}
