package engine_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/sim"
)

func qemuGuest(vmid int, running bool, cfg map[string]string) sim.GuestSpec {
	base := map[string]string{"cores": "1", "memory": "1024", "scsi0": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=32G",
		"net0": "virtio=BC:24:11:00:00:" + hex2(vmid) + ",bridge=vmbr0,firewall=1", "ostype": "l26"}
	for k, v := range cfg {
		base[k] = v
	}
	return sim.GuestSpec{VMID: vmid, Kind: guest.QEMU, Name: "vm" + itoa(vmid), Running: running, Config: base}
}

func lxcGuest(vmid int, running bool, cfg map[string]string) sim.GuestSpec {
	base := map[string]string{"cores": "1", "memory": "512", "swap": "512", "rootfs": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=8G",
		"net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:01:" + hex2(vmid) + ",ip=dhcp,type=veth", "ostype": "debian", "arch": "amd64"}
	for k, v := range cfg {
		base[k] = v
	}
	return sim.GuestSpec{VMID: vmid, Kind: guest.LXC, Name: "ct" + itoa(vmid), Running: running, Config: base}
}

func hex2(n int) string { return fmt.Sprintf("%02X", n%256) }

func itoa(n int) string { return strconv.Itoa(n) }

func TestTickConvergesAndThenPlansNothing(t *testing.T) {
	h := newHarness(t, sim.Options{},
		qemuGuest(101, false, nil),
		lxcGuest(102, true, nil),
		qemuGuest(103, true, nil), // unmanaged: never touched
	)
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        state: running
        description: web frontend
        tags: [web, prod]
        config: {cores: 2, memory: 2048}
      102:
        kind: lxc
        state: stopped
        config: {memory: 1024}
`)
	rep := h.tick(want)
	for _, r := range rep.Results {
		if r.Err != nil {
			t.Fatalf("action %s failed: %v", r.Action, r.Err)
		}
	}
	got := h.mutations()
	wantMut := []string{"config 101", "start 101", "config 102", "shutdown 102"}
	if !sameSet(got, wantMut) {
		t.Fatalf("mutations = %v; want (any order across guests) %v", got, wantMut)
	}
	// Per guest, config before run state.
	if i, j := slices.Index(got, "config 101"), slices.Index(got, "start 101"); i > j {
		t.Errorf("start 101 ran before config 101: %v", got)
	}
	g101, _ := h.srv.Sim.Guest(101)
	if g101.Status != "running" || g101.Config["cores"] != "2" || g101.Config["memory"] != "2048" {
		t.Errorf("guest 101 = %s cores=%s memory=%s; want running 2 2048", g101.Status, g101.Config["cores"], g101.Config["memory"])
	}
	g102, _ := h.srv.Sim.Guest(102)
	if g102.Status != "stopped" {
		t.Errorf("guest 102 status = %s; want stopped", g102.Status)
	}

	// Level-based: the next tick sees PVE's round-trip forms (LXC
	// description newline, sorted tags, memory as string) and plans nothing.
	rep = h.tick(want)
	if len(rep.Plan.Steps) != 0 {
		t.Fatalf("second tick planned %d steps:\n%s", len(rep.Plan.Steps), rep.Plan.Render())
	}
	for _, g := range rep.Guests {
		if g.Phase != engine.PhaseInSync {
			t.Errorf("guest %d phase %s (%s); want in_sync", g.VMID, g.Phase, g.Err)
		}
	}
	if n := len(h.srv.Sim.Mutations()); n != len(wantMut) {
		t.Errorf("second tick made %d more mutations", n-len(wantMut))
	}
}

func TestTickReadsOnlyManagedConfigs(t *testing.T) {
	var guests []sim.GuestSpec
	for id := 200; id < 220; id++ {
		guests = append(guests, qemuGuest(id, true, nil))
	}
	h := newHarness(t, sim.Options{}, guests...)
	before := h.requests.n.Load()
	h.tick(mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      205: {state: running}
      210: {state: running}
`))
	// Two list reads plus one config read per managed guest; nothing for
	// the 18 unmanaged guests.
	if n := h.requests.n.Load() - before; n != 4 {
		t.Errorf("tick made %d PVE requests; want 4 (2 lists + 2 configs)", n)
	}
}

func TestObserveModeChangesNothing(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	rep := h.tick(mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {mode: observe, state: running, config: {cores: 4}}
`))
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("observe mode mutated: %v", m)
	}
	if len(rep.Guests) != 1 || rep.Guests[0].Phase != engine.PhaseDriftObserved || len(rep.Guests[0].Drift) != 2 {
		t.Fatalf("guests = %+v; want one drift_observed with 2 changes", rep.Guests)
	}
}

func TestLockedGuestFailsAndBacksOffWithoutBlockingOthers(t *testing.T) {
	h := newHarness(t, sim.Options{LockTimeout: 20_000_000}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
	if err := h.srv.Sim.SetLock(101, "backup"); err != nil {
		t.Fatal(err)
	}
	rep := h.tick(mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {config: {cores: 2}}
      102: {config: {cores: 2}}
`))
	var g101, g102 engine.GuestReport
	for _, g := range rep.Guests {
		switch g.VMID {
		case 101:
			g101 = g
		case 102:
			g102 = g
		}
	}
	if g101.Phase != engine.PhaseError || !strings.Contains(g101.Err, "locked (backup)") {
		t.Errorf("guest 101 = %+v; want error mentioning the backup lock", g101)
	}
	if g102.Phase != engine.PhaseInSync && g102.Phase != engine.PhaseConverging {
		t.Errorf("guest 102 = %+v; want it converged despite 101's failure", g102)
	}
	if got := h.mutations(); !slices.Equal(got, []string{"config 102"}) {
		t.Errorf("mutations = %v; want [config 102]", got)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A destructive change held tick after tick is journaled and logged once,
// not on every tick: a long-pending action must not grow the journal.
func TestHeldDecisionRecordedOnce(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	var logs strings.Builder
	h.eng.Logger = slog.New(slog.NewTextHandler(&lockedWriter{w: &logs}, nil))
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {config: {scsi0: "local-lvm:vm-101-disk-9,size=32G"}}
`)
	for range 3 {
		if rep := h.tick(want); len(rep.Pending) != 1 {
			t.Fatalf("pending = %d; want 1", len(rep.Pending))
		}
	}
	if n := strings.Count(logs.String(), "gate decision"); n != 1 {
		t.Errorf("%d gate decisions logged over 3 identical ticks; want 1\n%s", n, logs.String())
	}
	// Once the hold goes away and comes back, it is recorded again.
	h.tick(mustParse(t, "apiVersion: steward/v1\nkind: Fleet\n"))
	h.tick(want)
	if n := strings.Count(logs.String(), "gate decision"); n != 2 {
		t.Errorf("%d gate decisions logged; want 2 after the hold reappeared", n)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
