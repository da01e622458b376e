package classify

import (
	"reflect"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

func TestClassifyMigrate(t *testing.T) {
	q := func(params p) action.Action {
		return action.Action{Op: action.Migrate, VMID: 101, Kind: guest.QEMU, Params: params}
	}
	l := func(params p) action.Action {
		return action.Action{Op: action.Migrate, VMID: 101, Kind: guest.LXC, Params: params}
	}
	qa, la := qemuActual(), lxcActual()
	qk := []string{"efidisk0", "ide2", "sata0", "scsi0", "scsi1", "tpmstate0", "unused0", "virtio0"}
	lk := []string{"mp0", "mp1", "rootfs", "unused0"}
	runCases(t, []classifyCase{
		{name: "qemu offline", a: q(p{"target": "pve-b"}), actual: qa, want: Benign, keys: qk,
			reason: []string{"migrate 101 to node pve-b: moves the guest within its cluster and destroys nothing", "source copies freed only once the guest is there"}},
		{name: "qemu online with local disks", a: q(p{"target": "pve-b", "online": "1", "with-local-disks": "1"}), actual: qa, want: Benign, keys: qk,
			reason: []string{"moves the VM within its cluster while it runs and destroys nothing"}},
		{name: "lxc offline", a: l(p{"target": "pve-c"}), actual: la, want: Benign, keys: lk, reason: []string{"migrate 101 to node pve-c"}},
		{name: "lxc restart mode", a: l(p{"target": "pve-c", "restart": "1", "timeout": "180"}), actual: la, want: Benign, keys: lk,
			reason: []string{"restart mode: a running container is shut down and started again there"}},
		{name: "no target", a: q(p{"online": "1"}), actual: qa, want: Destructive, keys: qk, reason: []string{`target "" is not a node name`}},
		{name: "bad target", a: q(p{"target": "pve_b"}), actual: qa, want: Destructive, keys: qk, reason: []string{`target "pve_b" is not a node name`}},
		{name: "force", a: q(p{"target": "pve-b", "force": "1"}), actual: qa, want: Destructive, keys: qk, reason: []string{`parameter "force" is not on the qemu migrate allow-list`}},
		{name: "targetstorage", a: q(p{"target": "pve-b", "targetstorage": "other"}), actual: qa, want: Destructive, keys: qk, reason: []string{`"targetstorage"`}},
		{name: "lxc target-storage", a: l(p{"target": "pve-b", "target-storage": "other"}), actual: la, want: Destructive, keys: lk, reason: []string{`"target-storage"`}},
		{name: "lxc online", a: l(p{"target": "pve-b", "online": "1"}), actual: la, want: Destructive, keys: lk, reason: []string{`"online" is not on the lxc migrate allow-list`}},
		{name: "qemu restart", a: q(p{"target": "pve-b", "restart": "1"}), actual: qa, want: Destructive, keys: qk, reason: []string{`"restart" is not on the qemu migrate allow-list`}},
		{name: "online not boolean", a: q(p{"target": "pve-b", "online": "yes"}), actual: qa, want: Destructive, keys: qk, reason: []string{`online="yes" is not 0 or 1`}},
		{name: "bad timeout", a: l(p{"target": "pve-b", "restart": "1", "timeout": "-5"}), actual: la, want: Destructive, keys: lk, reason: []string{`timeout "-5" is not a number of seconds`}},
		{name: "unknown config", a: q(p{"target": "pve-b"}), actual: nil, want: Destructive, reason: []string{"config is unknown"}},
		{name: "unknown kind", a: action.Action{Op: action.Migrate, VMID: 101, Kind: "openvz", Params: p{"target": "pve-b"}}, actual: qa, want: Destructive, reason: []string{`unknown guest kind "openvz"`}},
		{name: "held by headroom", a: q(p{"target": "pve-b"}), actual: qa, prov: Provenance{Headroom: "would take local-lvm to 95%"}, want: Destructive, keys: qk,
			reason: []string{"storage headroom: would take local-lvm to 95%; held until signed"}},
	})
}

// A migration copies every sized disk to the storage of the same id.
func TestAllocationsMigrate(t *testing.T) {
	a := action.Action{Op: action.Migrate, VMID: 101, Kind: guest.QEMU, Params: p{"target": "pve-b"}}
	got := Allocations(a, qemuActual(), nil)
	want := map[string]int64{"local-lvm": (32+100+10)<<30 + 8<<20}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("qemu: %v; want %v (the cdrom ISO and the unused volume are not counted)", got, want)
	}
	a.Kind = guest.LXC
	got = Allocations(a, lxcActual(), nil)
	want = map[string]int64{"vmstore": 24 << 30}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("lxc: %v; want %v (the bind mount is not copied)", got, want)
	}
}
