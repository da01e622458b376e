package engine_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
)

// nodeAgent is a second agent's engine on another node of h's simulated
// cluster, as host id host, with its own journal.
func nodeAgent(h *harness, host, node string) *engine.Engine {
	h.t.Helper()
	j, err := journal.Open(h.t.TempDir(), journal.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	q := guestq.New(guestq.Options{})
	h.t.Cleanup(func() {
		q.Close(h.t.Context())
		j.Close()
	})
	e := &engine.Engine{
		Host: host, Node: node, PVE: h.client, Journal: j, Queue: q, TaskUser: h.taskUser,
		Gate:    &gate.Gate{Host: host},
		Exec:    &executor.Executor{Client: h.client, Node: node, Wait: pve.WaitOptions{Initial: time.Millisecond, Max: 10 * time.Millisecond}},
		Backoff: backoff.NewTracker(backoff.Policy{Initial: harnessBackoff, Max: harnessBackoff}, h.backoff.Now, nil),
		Plan:    plan.Options{ShutdownTimeout: 5 * time.Second},
	}
	if err := e.Recover(h.t.Context()); err != nil {
		h.t.Fatal(err)
	}
	return e
}

func hostDoc(t *testing.T, host, guests string) *desired.Host {
	t.Helper()
	d, err := desired.Parse([]byte("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  " + host + ":\n    guests:\n" + guests))
	if err != nil {
		t.Fatal(err)
	}
	return d.ForHost(host)
}

func guestReport(rep engine.Report, vmid int) (engine.GuestReport, bool) {
	for _, g := range rep.Guests {
		if g.VMID == vmid {
			return g, true
		}
	}
	return engine.GuestReport{}, false
}

func clusterVM(vmid int, node string, running bool) sim.GuestSpec {
	return sim.GuestSpec{VMID: vmid, Kind: guest.QEMU, Name: "vm" + itoa(vmid), Node: node, Running: running, Config: map[string]string{
		"cores": "2", "memory": "2048", "scsi0": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=8G", "ostype": "l26"}}
}

// TestHAMovesGuestWhileAgentsTick: HA migrates a running VM from pve-a to
// pve-b while both nodes' agents tick. Agent a, whose document still names
// the guest (with a create block), never creates it and never reports it
// missing or failed: it is in sync until it leaves, then moved with node
// pve-b. Agent b, whose document names it too, manages it from the tick
// it appears: it writes b's config once the guest is there.
func TestHAMovesGuestWhileAgentsTick(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}, TaskDuration: 40 * time.Millisecond, Templates: true},
		clusterVM(101, "pve-a", true))
	a := h.eng // the harness's agent is on pve-a (the sim's default node)
	b := nodeAgent(h, "b", "pve-b")
	if err := h.srv.Sim.SetHA(101, "started"); err != nil {
		t.Fatal(err)
	}
	wantA := hostDoc(t, "pve", "      101:\n        kind: qemu\n        state: running\n        create: {clone: 9000}\n        config: {cores: 2}\n")
	wantB := hostDoc(t, "b", "      101:\n        kind: qemu\n        state: running\n        config: {cores: 2, onboot: 1}\n")

	if _, err := h.srv.Sim.HAMigrate(101, "pve-b"); err != nil {
		t.Fatal(err)
	}
	var phasesA []string
	moved := false
	for i := 0; i < 500 && !moved; i++ {
		rep, err := a.Tick(t.Context(), wantA, nil)
		if err != nil {
			t.Fatal(err)
		}
		g, ok := guestReport(rep, 101)
		if !ok {
			t.Fatalf("agent a's report has no status for 101: %+v", rep.Guests)
		}
		if len(phasesA) == 0 || phasesA[len(phasesA)-1] != g.Phase {
			phasesA = append(phasesA, g.Phase)
		}
		switch g.Phase {
		case engine.PhaseInSync:
		case engine.PhaseMoved:
			if g.Node != "pve-b" || g.Err != "" {
				t.Fatalf("moved status %+v; want node pve-b, no error", g)
			}
			moved = true
		default:
			t.Fatalf("agent a reported 101 %s (%s) during HA's migration; want in_sync, then moved", g.Phase, g.Err)
		}
		if _, err := b.Tick(t.Context(), wantB, nil); err != nil {
			t.Fatal(err)
		}
	}
	if !moved {
		t.Fatalf("agent a never reported 101 moved; phases %v", phasesA)
	}
	// Some more ticks on both sides: a keeps reporting moved, b converges.
	for i := 0; i < 3; i++ {
		rep, err := a.Tick(t.Context(), wantA, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, _ := guestReport(rep, 101); g.Phase != engine.PhaseMoved || g.Node != "pve-b" {
			t.Fatalf("agent a after the move: %+v; want moved to pve-b", g)
		}
		if len(rep.Results) != 0 {
			t.Fatalf("agent a acted after the move: %+v", rep.Results)
		}
		if _, err := b.Tick(t.Context(), wantB, nil); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := b.Tick(t.Context(), wantB, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := guestReport(rep, 101); g.Phase != engine.PhaseInSync {
		t.Errorf("agent b: %+v; want 101 in sync with b's document", g)
	}
	sg, _ := h.srv.Sim.Guest(101)
	if sg.Node != "pve-b" || sg.Config["onboot"] != "1" || sg.Status != "running" {
		t.Errorf("guest 101: node %s onboot %s %s; want running on pve-b with b's onboot 1", sg.Node, sg.Config["onboot"], sg.Status)
	}
	for _, m := range h.srv.Sim.Mutations() {
		if m.Op == "create" || m.Op == "clone" {
			t.Errorf("a guest was created: %+v", m)
		}
		if m.Op == "config" && !strings.HasPrefix(m.Path, "/nodes/pve-b/") {
			t.Errorf("config written through %s; only agent b may write 101's config, once it is on pve-b", m.Path)
		}
	}
}

// TestMovedGuestWithCreateBlockIsNotCreated: a desired guest with a create
// block that already exists on another node is reported moved, and no
// create is attempted, not even refused.
func TestMovedGuestWithCreateBlockIsNotCreated(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}, Templates: true}, clusterVM(120, "pve-b", false))
	want := hostDoc(t, "pve", "      120:\n        kind: qemu\n        create: {clone: 9000}\n        config: {cores: 2}\n")
	rep := h.tick(want)
	g, _ := guestReport(rep, 120)
	if g.Phase != engine.PhaseMoved || g.Node != "pve-b" {
		t.Fatalf("status %+v; want moved to pve-b", g)
	}
	if len(rep.Results) != 0 || len(rep.Plan.Steps) != 0 {
		t.Errorf("results %+v, steps %+v; want nothing planned", rep.Results, rep.Plan.Steps)
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("mutations %v; want none", m)
	}
}

// TestAbsentGuestClusterUnreadable: when /cluster/resources cannot be
// read, an absent guest is not declared missing outright: its error says
// the agent could not tell whether it moved.
func TestAbsentGuestClusterUnreadable(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterVM(120, "pve-b", false))
	h.setFault(func(r *http.Request, pass func() (*http.Response, error)) (*http.Response, error) {
		if strings.HasSuffix(r.URL.Path, "/cluster/resources") {
			return nil, errors.New("injected: connection refused")
		}
		return pass()
	})
	rep := h.tick(hostDoc(t, "pve", "      120: {kind: qemu}\n"))
	g, _ := guestReport(rep, 120)
	if g.Phase != engine.PhaseError || !strings.Contains(g.Err, "whether it moved to another node is unknown") {
		t.Errorf("status %+v; want an error saying whether it moved is unknown", g)
	}
	h.setFault(nil)
	rep = h.tick(hostDoc(t, "pve", "      120: {kind: qemu}\n"))
	if g, _ := guestReport(rep, 120); g.Phase != engine.PhaseMoved {
		t.Errorf("once /cluster/resources answers: %+v; want moved", g)
	}
}
