package gate_test

import (
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
)

// TestRedteamSplitNeverLeaksDestructive: whatever a mixed config write
// holds, every part DecideSplit allows is benign on its own as a whole
// (never a data-bearing delete or replace smuggled in with benign keys),
// and no key is dropped or duplicated between the parts.
func TestRedteamSplitNeverLeaksDestructive(t *testing.T) {
	actual := guest.Config{"cores": "1", "memory": "1024", "scsi0": "local-lvm:vm-101-disk-0,size=32G",
		"ide2": "local-lvm:vm-101-disk-5,size=8G", "unused0": "local-lvm:vm-101-disk-3", "net0": "virtio,bridge=vmbr0"}
	g := &gate.Gate{Host: "pve"}
	for _, p := range []map[string]string{
		{"cores": "2", "delete": "unused0"},
		{"cores": "2", "delete": "memory;unused0"},
		{"memory": "2048", "delete": "cores\x00scsi0"},
		{"cores": "2", "cdrom": "none"},
		{"cores": "2", "delete": "cdrom"},
		{"cores": "2", "SCSI0": "local-lvm:4"},
		{"cores": "2", "scsi0": "local-lvm:vm-101-disk-0,size=31G"},
		{"cores": "2", "delete": "memory,scsi0", "force": "1"},
		{"cores": "2", "skiplock": "1"},
		{"cores": "2", "delete": "net0 unused0 memory"},
	} {
		a := action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: p, Digest: "d1"}
		ds := g.DecideSplit(a, actual, classify.Provenance{})
		setKeys := map[string]int{}
		for _, d := range ds {
			for k := range d.Action.Params {
				if k != "delete" {
					setKeys[k]++
				}
			}
			if d.Outcome != gate.Allowed {
				if d.Permit.Valid() {
					t.Errorf("%v: held part %v carries a valid permit", p, d.Action)
				}
				continue
			}
			if v := classify.Classify(d.Action, actual, classify.Provenance{}); v.Class != classify.Benign {
				t.Errorf("%v: allowed part %v classifies %s (%s); want benign", p, d.Action, v.Class, v.Reason)
			}
			if d.Action.Digest != a.Digest {
				t.Errorf("%v: allowed part digest %q; want %q", p, d.Action.Digest, a.Digest)
			}
			for _, k := range d.Action.DeleteKeys() {
				if classify.IsDataBearing(guest.QEMU, k) {
					t.Errorf("%v: allowed part deletes data-bearing %s", p, k)
				}
			}
		}
		for k := range p {
			if k != "delete" && setKeys[k] != 1 {
				t.Errorf("%v: key %s appears in %d parts; want 1", p, k, setKeys[k])
			}
		}
	}
}
