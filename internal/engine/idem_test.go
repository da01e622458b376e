package engine_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

// The idempotency key of a reconcile action must not outlive the
// observation it was planned from: PVE's config digest is a hash of the
// config's text, so a guest that returns to an earlier config has that
// config's digest again, and an action planned against it is a new need,
// not a repeat of the one that ran before.

func wantCores(t *testing.T, cores string) *desired.Host {
	t.Helper()
	return mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        config: {cores: `+cores+`}
`)
}

func cores(t *testing.T, h *harness, vmid int) string {
	t.Helper()
	g, ok := h.srv.Sim.Guest(vmid)
	if !ok {
		t.Fatalf("guest %d is gone", vmid)
	}
	return g.Config["cores"]
}

func digestOf(t *testing.T, h *harness, vmid int) string {
	t.Helper()
	c, err := h.client.GuestConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	return c.Digest
}

// stopByHand stops vmid through PVE's API, as an operator would, and
// waits for the task.
func stopByHand(t *testing.T, h *harness, vmid int) {
	t.Helper()
	r, err := h.client.Stop(t.Context(), h.srv.Sim.Node(), guest.QEMU, vmid)
	if err != nil {
		t.Fatal(err)
	}
	u, ok := r.Task()
	if !ok {
		t.Fatalf("stop of %d returned no task", vmid)
	}
	if _, err := h.client.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond, Max: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
}

func noErrors(t *testing.T, rep engine.Report) {
	t.Helper()
	for _, r := range rep.Results {
		if r.Err != nil {
			t.Fatalf("action %s failed: %v", r.Action, r.Err)
		}
	}
}

// Someone sets cores back by hand on PVE (the config, and so its digest,
// is again what it was before the agent's write): the agent converges
// the guest again instead of taking its earlier write for this one.
func TestDriftBackToAnEarlierConfigIsCorrected(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{"cores": "4"}))
	want := wantCores(t, "2")
	before := digestOf(t, h, 101)

	noErrors(t, h.tick(want))
	if got := cores(t, h, 101); got != "2" {
		t.Fatalf("after the first tick cores = %s; want 2", got)
	}
	if g := reportOf(t, h.tick(want), 101); g.Phase != engine.PhaseInSync {
		t.Fatalf("second tick: phase %s; want in_sync", g.Phase)
	}

	// By hand, through PVE's API, as an operator in the web UI would.
	if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "4"}}); err != nil {
		t.Fatal(err)
	}
	if d := digestOf(t, h, 101); d != before {
		t.Fatalf("test premise: the hand-restored config has digest %s; want the original %s", d, before)
	}

	rep := h.tick(want)
	noErrors(t, rep)
	if got := cores(t, h, 101); got != "2" {
		t.Fatalf("after the drift back to cores 4 the agent left cores = %s; want 2 (results %+v)", got, rep.Results)
	}
	for _, r := range rep.Results {
		if r.Skip == engine.SkipDone {
			t.Errorf("the correction was skipped as already done: %+v", r)
		}
	}
	if g := reportOf(t, h.tick(want), 101); g.Phase != engine.PhaseInSync {
		t.Fatalf("after the correction: phase %s; want in_sync", g.Phase)
	}
}

// Desired state goes A → B → A: each change is applied, though the third
// plans the very write of the first against the very same digest.
func TestDesiredABAConverges(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil)) // cores 1
	for i, c := range []string{"2", "1", "2", "1", "2"} {
		rep := h.tick(wantCores(t, c))
		noErrors(t, rep)
		if got := cores(t, h, 101); got != c {
			t.Fatalf("step %d (want cores %s): cores = %s; results %+v", i, c, got, rep.Results)
		}
		if g := reportOf(t, h.tick(wantCores(t, c)), 101); g.Phase != engine.PhaseInSync {
			t.Fatalf("step %d: phase %s; want in_sync", i, g.Phase)
		}
	}
	var writes int
	for _, m := range h.mutations() {
		if m == "config 101" {
			writes++
		}
	}
	if writes != 5 {
		t.Errorf("config writes = %d; want 5, one per change: %v", writes, h.mutations())
	}
}

// A guest stopped by hand after the agent started it is started again.
func TestRunStateDriftBackIsCorrected(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {kind: qemu, state: running}
`)
	for round := range 3 {
		noErrors(t, h.tick(want))
		if g, _ := h.srv.Sim.Guest(101); g.Status != "running" {
			t.Fatalf("round %d: status %s; want running", round, g.Status)
		}
		stopByHand(t, h, 101)
	}
}

// The key still does what it is for: an action planned from an
// observation that did not yet see an earlier op of the same intent is
// not run again. Here the first write's request is delayed in the network
// (PVE gets it only after the next tick has read the guest); the next
// tick resolves that op as applied after its observation, and must not
// send the write a second time (PVE would refuse it for its stale digest;
// a start has no digest to refuse it).
func TestStalePlanOfACompletedOpIsNotRunAgain(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := wantCores(t, "2")

	var (
		mu      sync.Mutex
		delayed *http.Request // the config write, not yet delivered
		body    []byte
	)
	isWrite := func(r *http.Request) bool {
		return (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.HasSuffix(r.URL.Path, "/qemu/101/config")
	}
	// Tick 1: the write is held back and its response lost, and PVE
	// cannot be reached to learn its fate: the op stays in flight.
	h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
		if isWrite(r) {
			b, err := io.ReadAll(r.Body)
			if err != nil {
				return nil, err
			}
			mu.Lock()
			delayed, body = r.Clone(context.Background()), b
			mu.Unlock()
			// Written to the wire, then the connection dropped.
			if tr := httptrace.ContextClientTrace(r.Context()); tr != nil && tr.WroteRequest != nil {
				tr.WroteRequest(httptrace.WroteRequestInfo{})
			}
			return nil, errors.New("connection reset by peer")
		}
		mu.Lock()
		held := delayed != nil
		mu.Unlock()
		if held {
			return nil, errors.New("connection refused")
		}
		return pass()
	})
	rep := h.tick(want)
	mu.Lock()
	held := delayed != nil
	mu.Unlock()
	if len(rep.Results) != 1 || rep.Results[0].Err == nil || !held {
		t.Fatalf("tick 1 results = %+v; want the write's outcome unknown", rep.Results)
	}
	if len(h.j.InFlight()) != 1 {
		t.Fatalf("in flight = %+v; want the write", h.j.InFlight())
	}

	// Tick 2, past tick 1's backoff: the observation reads the guest as
	// it was; the delayed write reaches PVE right after, before the
	// leftover op is resolved.
	h.passBackoff()
	var pendingReads int
	h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/qemu/101/pending") {
			mu.Lock()
			pendingReads++
			mu.Unlock()
			return pass()
		}
		var d *http.Request
		mu.Lock()
		if pendingReads > 0 {
			d, delayed = delayed, nil
		}
		mu.Unlock()
		if d != nil {
			d.Body = io.NopCloser(bytes.NewReader(body))
			resp, err := h.requests.base.RoundTrip(d)
			if err != nil {
				t.Errorf("delivering the delayed write: %v", err)
			} else {
				resp.Body.Close()
			}
		}
		return pass()
	})
	rep = h.tick(want)
	if got := cores(t, h, 101); got != "2" {
		t.Fatalf("cores = %s; want 2 (the delayed write applied)", got)
	}
	if len(rep.Results) != 1 || rep.Results[0].Skip != engine.SkipDone || rep.Results[0].Err != nil {
		t.Fatalf("tick 2 results = %+v; want the stale write skipped as already done", rep.Results)
	}
	h.setFault(nil)
	if g := reportOf(t, h.tick(want), 101); g.Phase != engine.PhaseInSync {
		t.Fatalf("tick 3: phase %s; want in_sync", g.Phase)
	}
	var writes int
	for _, m := range h.mutations() {
		if m == "config 101" {
			writes++
		}
	}
	if writes != 1 {
		t.Errorf("config writes = %d; want exactly 1: %v", writes, h.mutations())
	}
}

// An agent killed at any point of a reconcile action converges after a
// restart with the action run exactly once, and later drift back is
// still corrected.
func TestReconcileActionExactlyOnceAcrossCrash(t *testing.T) {
	points := []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd}
	cases := []struct {
		name string
		doc  string
		mut  string
		done func(sim.GuestSnapshot) bool
		undo func(t *testing.T, h *harness)
	}{
		{
			name: "config",
			doc:  "config: {cores: 2}",
			mut:  "config 101",
			done: func(g sim.GuestSnapshot) bool { return g.Config["cores"] == "2" },
			undo: func(t *testing.T, h *harness) {
				if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "1"}}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "start",
			doc:  "state: running",
			mut:  "start 101",
			done: func(g sim.GuestSnapshot) bool { return g.Status == "running" },
			undo: func(t *testing.T, h *harness) { stopByHand(t, h, 101) },
		},
	}
	for _, c := range cases {
		for _, point := range points {
			t.Run(c.name+"/"+point, func(t *testing.T) {
				h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
				want := mustParse(t, "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {kind: qemu, "+c.doc+"}\n")
				ctx, cancel := context.WithCancel(t.Context())
				crashAt(t, point, cancel)
				h.eng.Tick(ctx, want, nil)
				crashpoint.SetHook(nil)
				h.open()
				h.tick(want)
				if g := reportOf(t, h.tick(want), 101); g.Phase != engine.PhaseInSync {
					t.Fatalf("after restart: phase %s (%s); want in_sync", g.Phase, g.Err)
				}
				g, _ := h.srv.Sim.Guest(101)
				if !c.done(g) {
					t.Fatalf("after restart the guest did not converge: %+v", g)
				}
				ran := 0
				for _, m := range h.mutations() {
					if m == c.mut {
						ran++
					}
				}
				if ran != 1 {
					t.Fatalf("%s ran %d times; want exactly once: %v", c.mut, ran, h.mutations())
				}
				if got := h.j.InFlight(); len(got) != 0 {
					t.Fatalf("in flight after restart: %+v", got)
				}
				// Drift back by hand: corrected again.
				c.undo(t, h)
				noErrors(t, h.tick(want))
				if g, _ := h.srv.Sim.Guest(101); !c.done(g) {
					t.Fatalf("drift back after the restart was not corrected: %+v", g)
				}
			})
		}
	}
}
