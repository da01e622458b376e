package plan

import (
	"reflect"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// TestDiffMigrate: a guest this node lists whose entry names another node
// gets one migrate step and nothing else; a running VM online, a stopped
// guest offline, a running container only in restart mode when restarts
// are allowed; nothing under the migrate lock; observe reports it.
func TestDiffMigrate(t *testing.T) {
	want := parseHost(t, ""+
		"      130: {kind: qemu, node: pve-b, state: running, config: {cores: 4}}\n"+
		"      131: {kind: qemu, node: pve-b}\n"+
		"      132: {kind: lxc, node: pve-c, restart: allowed}\n"+
		"      133: {kind: lxc, node: pve-c, config: {cores: 4}}\n"+
		"      134: {kind: lxc, node: pve-c}\n"+
		"      135: {kind: qemu, node: pve-b, config: {cores: 4}}\n"+
		"      136: {kind: qemu, node: pve-b, mode: observe}\n"+
		"      137: {kind: qemu, node: pve-a, config: {cores: 4}}\n"+
		"      138: {kind: qemu, node: pve-b, ignore: [node]}\n"+
		"      139: {kind: lxc, node: pve-b}\n"+
		"      140: {node: pve-b}\n")
	cfg := guest.Config{"cores": "2", "scsi0": "local-lvm:vm-disk,size=8G"}
	obs := func(vmid int, k guest.Kind, status, lock string) guest.Observed {
		return guest.Observed{VMID: vmid, Kind: k, Status: status, Lock: lock, Config: cfg, Digest: "d" + status}
	}
	actual := []guest.Observed{
		obs(130, guest.QEMU, "running", ""),
		obs(131, guest.QEMU, "stopped", ""),
		obs(132, guest.LXC, "running", ""),
		obs(133, guest.LXC, "running", ""),
		obs(134, guest.LXC, "stopped", ""),
		obs(135, guest.QEMU, "running", "migrate"),
		obs(136, guest.QEMU, "running", ""),
		obs(137, guest.QEMU, "running", ""),
		obs(138, guest.QEMU, "running", ""),
		obs(139, guest.QEMU, "running", ""),
		obs(140, guest.QEMU, "paused", ""),
	}
	p := Diff(want, actual, Options{Node: "pve-a", ShutdownTimeout: 60e9})
	steps := map[int][]action.Action{}
	for _, s := range p.Steps {
		steps[s.Action.VMID] = append(steps[s.Action.VMID], s.Action)
	}
	mig := func(vmid int, k guest.Kind, digest string, params map[string]string) []action.Action {
		return []action.Action{{Op: action.Migrate, VMID: vmid, Kind: k, Params: params, Digest: digest}}
	}
	wantSteps := map[int][]action.Action{
		130: mig(130, guest.QEMU, "drunning", map[string]string{"target": "pve-b", "online": "1", "with-local-disks": "1"}),
		131: mig(131, guest.QEMU, "dstopped", map[string]string{"target": "pve-b"}),
		132: mig(132, guest.LXC, "drunning", map[string]string{"target": "pve-c", "restart": "1", "timeout": "60"}),
		133: {{Op: action.SetConfig, VMID: 133, Kind: guest.LXC, Params: map[string]string{"cores": "4"}, Digest: "drunning"}},
		134: mig(134, guest.LXC, "dstopped", map[string]string{"target": "pve-c"}),
		137: {{Op: action.SetConfig, VMID: 137, Kind: guest.QEMU, Params: map[string]string{"cores": "4"}, Digest: "drunning"}},
		140: mig(140, guest.QEMU, "dpaused", map[string]string{"target": "pve-b", "online": "1", "with-local-disks": "1"}),
	}
	for vmid := range 11 {
		vmid += 130
		if !reflect.DeepEqual(steps[vmid], wantSteps[vmid]) {
			t.Errorf("%d: steps %+v; want %+v", vmid, steps[vmid], wantSteps[vmid])
		}
	}
	got := map[int]GuestStatus{}
	for _, g := range p.Guests {
		got[g.VMID] = g
	}
	node := []Change{{Key: "node", From: "pve-a", To: "pve-b"}}
	for _, vmid := range []int{130, 131, 135, 140} {
		if g := got[vmid]; g.Phase != Converging || !reflect.DeepEqual(g.Drift, node) {
			t.Errorf("%d: %+v; want converging with drift %v", vmid, g, node)
		}
	}
	if g := got[133]; g.Phase != Error || !strings.Contains(g.Err, "a running container migrates only by restarting") || !strings.Contains(g.Err, "set restart: allowed, or stop it") {
		t.Errorf("133: %+v; want an error saying the restart is not allowed", g)
	}
	if g := got[136]; g.Phase != DriftObserved || !reflect.DeepEqual(g.Drift, node) {
		t.Errorf("136 (observe): %+v; want drift_observed %v", g, node)
	}
	if g := got[137]; g.Phase != Converging || len(g.Drift) != 1 || g.Drift[0].Key != "cores" {
		t.Errorf("137 (on its node): %+v; want its config converging", g)
	}
	if g := got[138]; g.Phase != InSync {
		t.Errorf("138 (node ignored): %+v; want in sync", g)
	}
	if g := got[139]; g.Phase != Error || !strings.Contains(g.Err, "kind mismatch") {
		t.Errorf("139 (kind mismatch): %+v; want the kind error, no migration", g)
	}
	r := p.Render()
	for _, l := range []string{
		"~ 130 migrate to node pve-b (online)\n",
		"~ 131 migrate to node pve-b\n",
		"~ 132 migrate to node pve-c (restart mode, timeout 60s)\n",
		"* 135 locked: migrate\n",
		"? 136 node: pve-a → pve-b (observe)\n",
	} {
		if !strings.Contains(r, l) {
			t.Errorf("render:\n%s\nwant the line %q", r, l)
		}
	}

	// Without this host's node name nothing is migrated.
	p = Diff(want, actual[:2], Options{})
	for _, s := range p.Steps {
		if s.Action.Op == action.Migrate {
			t.Errorf("with no Options.Node: %v planned", s.Action)
		}
	}
	// On the node its entry names, a guest is simply planned.
	p = Diff(want, actual[1:2], Options{Node: "pve-b"})
	if len(p.Steps) != 0 || p.Guests[1].Phase != InSync {
		t.Errorf("131 on pve-b: %+v; want in sync, no step", p)
	}
}
