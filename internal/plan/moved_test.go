package plan

import (
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// TestDiffMoved: a desired guest the host does not list but the cluster
// shows on another node is moved, with its node, and nothing is planned
// for it: not a create (even with a create block), not an error; a guest
// the host lists is planned as usual whatever Elsewhere says.
func TestDiffMoved(t *testing.T) {
	want := parseHost(t, ""+
		"      120: {kind: qemu, state: running}\n"+
		"      121:\n        kind: qemu\n        create: {clone: 9000}\n        config: {cores: 2}\n"+
		"      122: {kind: lxc, mode: observe, state: running}\n"+
		"      123: {kind: qemu, state: running}\n"+
		"      124: {kind: qemu, state: running}\n")
	actual := []guest.Observed{{VMID: 123, Kind: guest.QEMU, Status: "stopped"}}
	elsewhere := map[int]string{120: "pve-b", 121: "pve-c", 122: "pve-b", 123: "pve-b"}
	p := Diff(want, actual, Options{Elsewhere: elsewhere})
	got := map[int]GuestStatus{}
	for _, g := range p.Guests {
		got[g.VMID] = g
	}
	for vmid, node := range map[int]string{120: "pve-b", 121: "pve-c", 122: "pve-b"} {
		if g := got[vmid]; g.Phase != Moved || g.Node != node || g.Err != "" || len(g.Drift) != 0 {
			t.Errorf("%d: %+v; want moved to %s, no error, no drift", vmid, g, node)
		}
	}
	if g := got[123]; g.Phase != Converging || g.Node != "" {
		t.Errorf("123 (listed here): %+v; want converging here", g)
	}
	if g := got[124]; g.Phase != Error || g.Err != "not found on this host" {
		t.Errorf("124 (nowhere): %+v; want not found", g)
	}
	if len(p.Steps) != 1 || p.Steps[0].Action.VMID != 123 {
		t.Errorf("steps %+v; want only 123's start", p.Steps)
	}
	if r := p.Render(); !strings.Contains(r, "* 120 moved to node pve-b (nothing done here)\n") {
		t.Errorf("render:\n%s\nwant the moved line", r)
	}
}
