package engine_test

import (
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/sim"
)

// A guest whose kind desired state does not pin is checked against PVE's
// schema for the kind the host reports, before it is planned: a guest whose
// config that kind refuses makes no PVE call at all (not even its run
// state, nor a payload to sign), while the other guests converge.
func TestSchemaInvalidGuestChangesNothingOthersConverge(t *testing.T) {
	h := newHarness(t, sim.Options{},
		qemuGuest(101, false, nil),
		lxcGuest(102, true, nil),
		qemuGuest(103, false, nil),
	)
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        state: running
        config:
          cores: 2
          swap: 256
      102:
        config: {memory: 1024, swap: 256}
      103:
        state: running
        config: {cores: 99999999999999999999}
`)
	for _, dry := range []bool{true, false} {
		pass := h.eng.Tick
		if dry {
			pass = h.eng.PlanOnly
		}
		rep, err := pass(t.Context(), want, nil)
		if err != nil {
			t.Fatalf("Tick(dry run %v): %v", dry, err)
		}
		render := rep.Plan.Render()
		for _, w := range []string{"101", "line 11: hosts.pve.guests.101.config.swap: unknown config key for a qemu guest", "pin kind:"} {
			if !strings.Contains(render, w) {
				t.Errorf("dry run %v: plan lacks %q:\n%s", dry, w, render)
			}
		}
		for _, d := range rep.Pending {
			t.Errorf("dry run %v: %s held for signature (%s); want nothing held", dry, d.Action, d.Reason)
		}
		for _, g := range rep.Guests {
			if g.VMID == 101 && g.Phase != engine.PhaseError {
				t.Errorf("dry run %v: guest 101 phase %s; want error", dry, g.Phase)
			}
		}
		for _, r := range rep.Results {
			if r.Action.VMID == 101 {
				t.Errorf("dry run %v: an action for guest 101: %v", dry, r.Action)
			}
			if r.Err != nil {
				t.Errorf("dry run %v: action %s failed: %v", dry, r.Action, r.Err)
			}
		}
	}
	got := h.mutations()
	if !sameSet(got, []string{"config 102", "config 103", "start 103"}) {
		t.Errorf("mutations = %v; want guests 102 and 103 converged and nothing for 101", got)
	}
	// The operator's digits reach PVE exactly (qemu's schema sets no
	// maximum on cores), never a float64's rounding.
	for _, m := range h.srv.Sim.Mutations() {
		if m.VMID == 103 && m.Op == "config" && m.Params["cores"] != "99999999999999999999" {
			t.Errorf("guest 103 config write carried cores=%q; want 99999999999999999999", m.Params["cores"])
		}
	}
	if g, _ := h.srv.Sim.Guest(102); g.Config["swap"] != "256" || g.Config["memory"] != "1024" {
		t.Errorf("guest 102 swap=%s memory=%s; want 256 1024", g.Config["swap"], g.Config["memory"])
	}
}
