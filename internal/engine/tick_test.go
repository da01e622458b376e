package engine_test

import (
	"errors"
	"testing"

	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/sim"
)

// An engine not yet recovered refuses Tick (in-flight ops must be resolved
// before any mutation) but serves PlanOnly, which observes, plans and
// gates and reports every action it would run skipped, changing nothing.
func TestPlanOnlyBeforeRecover(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	fresh := &engine.Engine{Host: h.eng.Host, Node: h.eng.Node, PVE: h.eng.PVE, Exec: h.eng.Exec, Journal: h.eng.Journal,
		Queue: h.eng.Queue, Gate: h.eng.Gate, Backoff: h.eng.Backoff, Plan: h.eng.Plan, TaskUser: h.eng.TaskUser, Now: h.eng.Now}
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        state: running
        config: {cores: 2}
`)
	if _, err := fresh.Tick(t.Context(), want, nil); !errors.Is(err, engine.ErrNotRecovered) {
		t.Fatalf("Tick before Recover: err %v; want ErrNotRecovered", err)
	}
	rep, err := fresh.PlanOnly(t.Context(), want, nil)
	if err != nil {
		t.Fatalf("PlanOnly: %v", err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("PlanOnly results %+v; want the config write and the start", rep.Results)
	}
	for _, r := range rep.Results {
		if r.Skip != engine.SkipPlanOnly || r.Skipped == "" || r.Source != engine.SourceReconcile || r.Err != nil {
			t.Errorf("result %s: skip %v %q source %q err %v; want skipped (plan only) from reconcile", r.Action, r.Skip, r.Skipped, r.Source, r.Err)
		}
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("PlanOnly mutated: %v", m)
	}
	if len(rep.Guests) != 1 || rep.Guests[0].Phase != engine.PhaseConverging || rep.Guests[0].Changed {
		t.Errorf("guests %+v; want 101 converging, unchanged", rep.Guests)
	}
}
