package engine_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

func coresDoc(extra string) string {
	return `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        config: {cores: 4}
` + extra
}

func reportOf(t *testing.T, rep engine.Report, vmid int) engine.GuestReport {
	t.Helper()
	for _, g := range rep.Guests {
		if g.VMID == vmid {
			return g
		}
	}
	t.Fatalf("no report for guest %d in %+v", vmid, rep.Guests)
	return engine.GuestReport{}
}

// Cores on a running QEMU guest without cpu hotplug: PVE keeps the write
// pending. The agent writes it once, then reports pending_restart tick
// after tick and never writes it again, at the cost of one read per guest.
func TestPendingRestartWrittenOnce(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, true, nil))
	want := mustParse(t, coresDoc(""))
	h.tick(want)
	if m := h.mutations(); !slices.Equal(m, []string{"config 101"}) {
		t.Fatalf("mutations after first tick = %v; want one config write", m)
	}
	g, _ := h.srv.Sim.Guest(101)
	if g.Config["cores"] != "1" || g.Pending["cores"] != "4" {
		t.Fatalf("sim: current cores %q pending %v; want 1 running, 4 pending", g.Config["cores"], g.Pending)
	}
	for i := range 3 {
		before := h.requests.n.Load()
		rep := h.tick(want)
		gr := reportOf(t, rep, 101)
		if gr.Phase != engine.PhasePendingRestart || !slices.Equal(gr.Pending, []string{"cores"}) || len(gr.Drift) != 0 {
			t.Errorf("tick %d: phase %s pending %v drift %v; want pending_restart [cores], no drift", i+2, gr.Phase, gr.Pending, gr.Drift)
		}
		if w := rep.Wire(); len(w.Sync) != 1 || w.Sync[0].Phase != "pending_restart" || !slices.Equal(w.Sync[0].Pending, []string{"cores"}) {
			t.Errorf("tick %d: wire sync %+v; want pending_restart with pending [cores]", i+2, w.Sync)
		}
		if n := h.requests.n.Load() - before; n != 3 {
			t.Errorf("tick %d made %d PVE requests; want 3 (2 lists + 1 pending read)", i+2, n)
		}
	}
	if m := h.mutations(); len(m) != 1 {
		t.Fatalf("mutations after four ticks = %v; want still the one config write", m)
	}
}

// restart: allowed reboots the guest once, through the journal, and then
// it is in sync.
func TestPendingRestartAllowedReboots(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, true, nil))
	want := mustParse(t, coresDoc("        restart: allowed\n"))
	h.tick(want)
	rep := h.tick(want)
	if len(rep.Plan.Steps) != 1 || rep.Plan.Steps[0].Action.Op != action.Reboot || rep.Plan.Steps[0].Action.Params["timeout"] != "5" {
		t.Fatalf("second tick planned %+v; want one reboot with the shutdown timeout (5s)", rep.Plan.Steps)
	}
	if len(rep.Results) != 1 || rep.Results[0].Err != nil || rep.Results[0].Outcome.ExitStatus != "OK" {
		t.Fatalf("reboot result %+v; want it run, task OK", rep.Results)
	}
	if !strings.Contains(rep.Results[0].Outcome.UPID, ":qmreboot:101:") {
		t.Errorf("reboot UPID %q; want a qmreboot task", rep.Results[0].Outcome.UPID)
	}
	for i := range 2 {
		rep = h.tick(want)
		if gr := reportOf(t, rep, 101); gr.Phase != engine.PhaseInSync || len(gr.Pending) != 0 {
			t.Errorf("tick %d after reboot: phase %s pending %v; want in_sync", i+1, gr.Phase, gr.Pending)
		}
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 101", "reboot 101"}) {
		t.Fatalf("mutations = %v; want one config write and one reboot", m)
	}
	g, _ := h.srv.Sim.Guest(101)
	if g.Status != "running" || g.Config["cores"] != "4" || len(g.Pending) != 0 {
		t.Errorf("sim: %s cores %q pending %v; want running with cores 4 live", g.Status, g.Config["cores"], g.Pending)
	}
}

// A guest that ignores ACPI makes the reboot fail; it stays pending,
// running, and the failure is reported (and backed off), never forced.
func TestPendingRestartRebootFails(t *testing.T) {
	spec := qemuGuest(101, true, nil)
	spec.IgnoreShutdown = true
	h := newHarness(t, sim.Options{}, spec)
	want := mustParse(t, coresDoc("        restart: allowed\n"))
	h.tick(want)
	rep := h.tick(want)
	gr := reportOf(t, rep, 101)
	if gr.Phase != engine.PhaseError || !strings.Contains(gr.Err, "got timeout") {
		t.Errorf("phase %s err %q; want error with the shutdown timeout", gr.Phase, gr.Err)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Status != "running" || g.Pending["cores"] != "4" {
		t.Errorf("sim: %s pending %v; want still running, cores still pending", g.Status, g.Pending)
	}
}

// Observe mode reports pending_restart and never reboots, whatever the
// restart policy.
func TestPendingRestartObserveDoesNotReboot(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, true, nil))
	if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "4"}}); err != nil {
		t.Fatal(err)
	}
	before := len(h.srv.Sim.Mutations())
	want := mustParse(t, coresDoc("        mode: observe\n        restart: allowed\n"))
	for range 2 {
		rep := h.tick(want)
		if gr := reportOf(t, rep, 101); gr.Phase != engine.PhasePendingRestart || !slices.Equal(gr.Pending, []string{"cores"}) {
			t.Errorf("phase %s pending %v; want pending_restart [cores]", gr.Phase, gr.Pending)
		}
		if len(rep.Plan.Steps) != 0 {
			t.Errorf("observe planned %+v; want nothing", rep.Plan.Steps)
		}
	}
	if n := len(h.srv.Sim.Mutations()); n != before {
		t.Errorf("observe mode made %d mutations; want none", n-before)
	}
}

// A stopped guest takes the write at once: one write, then in sync.
func TestPendingStoppedGuestAppliesDirectly(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := mustParse(t, coresDoc("        restart: allowed\n"))
	h.tick(want)
	rep := h.tick(want)
	if gr := reportOf(t, rep, 101); gr.Phase != engine.PhaseInSync {
		t.Errorf("phase %s pending %v; want in_sync", gr.Phase, gr.Pending)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 101"}) {
		t.Errorf("mutations = %v; want one config write, no reboot", m)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Config["cores"] != "4" || len(g.Pending) != 0 {
		t.Errorf("sim: cores %q pending %v; want 4 applied", g.Config["cores"], g.Pending)
	}
}

// A change PVE takes live (memory on a container) is in sync right after
// it is written: no reboot even with restart: allowed.
func TestHotpluggedChangeNeedsNoReboot(t *testing.T) {
	h := newHarness(t, sim.Options{}, lxcGuest(201, true, nil))
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      201:
        restart: allowed
        config: {memory: 1024}
`)
	h.tick(want)
	rep := h.tick(want)
	if gr := reportOf(t, rep, 201); gr.Phase != engine.PhaseInSync {
		t.Errorf("phase %s pending %v; want in_sync", gr.Phase, gr.Pending)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 201"}) {
		t.Errorf("mutations = %v; want one config write", m)
	}
}

// Recovery knows a reboot's task: an agent that crashed after PVE started
// the reboot adopts the qmreboot task instead of rebooting again.
func TestRecoveryAdoptsRebootTask(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, true, nil))
	ctx := t.Context()
	node := h.srv.Sim.Node()
	if _, err := h.client.SetConfig(ctx, node, guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "4"}}); err != nil {
		t.Fatal(err)
	}
	op := journal.Op{ID: "op-reboot", Time: time.Now().Add(-time.Second), Source: "reconcile", Host: "pve",
		Action:  action.Action{Op: action.Reboot, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"timeout": "5"}},
		IdemKey: "reconcile:reboot-crashed"}
	if err := h.j.Begin(op); err != nil {
		t.Fatal(err)
	}
	res, err := h.client.Reboot(ctx, node, guest.QEMU, 101, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := res.Task()
	h.open()
	got, ok := h.j.Completed("reconcile:reboot-crashed")
	if !ok || !got.OK || !strings.Contains(got.Resolution, u.String()) {
		t.Fatalf("resolution %+v (ended %v); want OK by adopting task %s", got, ok, u)
	}
	reboots := 0
	for _, m := range h.srv.Sim.Mutations() {
		if m.Op == "reboot" {
			reboots++
		}
	}
	if reboots != 1 {
		t.Errorf("%d reboots; want exactly the one that was in flight", reboots)
	}
}
