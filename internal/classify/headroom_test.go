package classify

import (
	"maps"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

const gib = int64(1) << 30

func TestHeadroom(t *testing.T) {
	pool := StorageUsage{Storage: "local-lvm", Total: 100 * gib, Used: 80 * gib}
	tests := []struct {
		name      string
		u         StorageUsage
		add       int64
		threshold float64
		want      string // "" = fits; else a substring of the reason
	}{
		{"well under", pool, 5 * gib, 0.9, ""},
		{"exactly at the threshold fits", pool, 10 * gib, 0.9, ""},
		{"one byte past", pool, 10*gib + 1, 0.9, "would take local-lvm to 90.0% of 100 GiB, above the 90% threshold"},
		{"the issue's example", pool, 13 * gib, 0.9, "would take local-lvm to 93% of 100 GiB, above the 90% threshold"},
		{"per-storage threshold", pool, 5 * gib, 0.8, "to 85% of 100 GiB, above the 80% threshold"},
		{"zero threshold means the default", pool, 13 * gib, 0, "above the 90% threshold"},
		{"out-of-range threshold means the default", pool, 5 * gib, 1.5, ""},
		{"threshold 1 allows filling", pool, 20 * gib, 1, ""},
		{"already past, any growth held", StorageUsage{Storage: "tank", Total: 10 * gib, Used: 95 * gib / 10}, 1, 0.9, "would take tank to 95%"},
		{"no size reported", StorageUsage{Storage: "nfs"}, gib, 0.9, "nfs reports no size"},
		{"figures named", pool, 13 * gib, 0.9, "(80 GiB used, 13 GiB more)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Headroom(tt.u, tt.add, tt.threshold)
			if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("Headroom(%+v, %d, %v) = %q; want %q", tt.u, tt.add, tt.threshold, got, tt.want)
			}
		})
	}
}

func TestAllocations(t *testing.T) {
	vm := guest.Config{"scsi0": "local-lvm:vm-101-disk-0,size=32G", "ide2": "local:iso/d.iso,media=cdrom", "memory": "2048"}
	tmpl := guest.Config{"scsi0": "local-lvm:base-9000-disk-0,size=10G", "efidisk0": "local-lvm:base-9000-disk-1,size=4M",
		"ide2": "local-lvm:vm-9000-cloudinit,media=cdrom", "unused0": "local-lvm:vm-9000-disk-2"}
	q := func(op action.Op, p map[string]string) action.Action {
		return action.Action{Op: op, Kind: guest.QEMU, VMID: 101, Params: p}
	}
	tests := []struct {
		name           string
		a              action.Action
		actual, source guest.Config
		want           map[string]int64
	}{
		{"grow by", q(action.Resize, map[string]string{"disk": "scsi0", "size": "+8G"}), vm, nil, map[string]int64{"local-lvm": 8 * gib}},
		{"grow to", q(action.Resize, map[string]string{"disk": "scsi0", "size": "40G"}), vm, nil, map[string]int64{"local-lvm": 8 * gib}},
		{"resize to the same size", q(action.Resize, map[string]string{"disk": "scsi0", "size": "32G"}), vm, nil, nil},
		{"resize of a missing disk", q(action.Resize, map[string]string{"disk": "scsi1", "size": "+1G"}), vm, nil, nil},
		{"new disk in an empty slot", q(action.SetConfig, map[string]string{"scsi1": "local-lvm:16,discard=on", "cores": "4"}), vm, nil, map[string]int64{"local-lvm": 16 * gib}},
		{"fractional GiB", q(action.SetConfig, map[string]string{"scsi1": "tank:0.5"}), vm, nil, map[string]int64{"tank": gib / 2}},
		{"option change on a filled slot allocates nothing", q(action.SetConfig, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G,ssd=1"}), vm, nil, nil},
		{"cloud-init drive is not sized", q(action.SetConfig, map[string]string{"ide0": "local-lvm:cloudinit"}), vm, nil, nil},
		{"create from scratch", q(action.Create, map[string]string{"scsi0": "local-lvm:32", "virtio1": "tank:8", "ide2": "local:iso/d.iso,media=cdrom"}), nil, nil,
			map[string]int64{"local-lvm": 32 * gib, "tank": 8 * gib}},
		{"lxc rootfs", action.Action{Op: action.Create, Kind: guest.LXC, VMID: 200, Params: map[string]string{"rootfs": "local-lvm:8", "ostemplate": "local:vztmpl/d.tar.zst"}}, nil, nil,
			map[string]int64{"local-lvm": 8 * gib}},
		{"full clone onto a storage", q(action.Clone, map[string]string{"source": "9000", "full": "1", "storage": "tank"}), nil, tmpl, map[string]int64{"tank": 10*gib + 4<<20}},
		{"full clone in place", q(action.Clone, map[string]string{"source": "9000", "full": "1"}), nil, tmpl, map[string]int64{"local-lvm": 10*gib + 4<<20}},
		{"linked clone", q(action.Clone, map[string]string{"source": "9000"}), nil, tmpl, nil},
		{"clone of an unknown source", q(action.Clone, map[string]string{"source": "9000", "full": "1"}), nil, nil, nil},
		{"full container clone", action.Action{Op: action.Clone, Kind: guest.LXC, VMID: 140, Params: map[string]string{"source": "9001", "full": "1", "storage": "tank", "unprivileged": "1"}}, nil,
			guest.Config{"rootfs": "local-lvm:base-9001-disk-0,size=8G", "mp0": "local-lvm:base-9001-disk-1,mp=/srv,size=2G", "mp1": "/mnt/shared,mp=/shared", "unused0": "local-lvm:vm-9001-disk-2"},
			map[string]int64{"tank": 10 * gib}},
		{"linked container clone", action.Action{Op: action.Clone, Kind: guest.LXC, VMID: 140, Params: map[string]string{"source": "9001", "unprivileged": "1"}}, nil,
			guest.Config{"rootfs": "local-lvm:base-9001-disk-0,size=8G"}, nil},
		{"start allocates nothing", q(action.Start, nil), vm, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Allocations(tt.a, tt.actual, tt.source)
			if !maps.Equal(got, tt.want) {
				t.Errorf("Allocations(%s) = %v; want %v", tt.a, got, tt.want)
			}
		})
	}
}

func TestClassifyHeldByHeadroom(t *testing.T) {
	vm := guest.Config{"scsi0": "local-lvm:vm-101-disk-0,size=32G"}
	grow := action.Action{Op: action.Resize, Kind: guest.QEMU, VMID: 101, Params: map[string]string{"disk": "scsi0", "size": "+8G"}}
	why := "would take local-lvm to 93% of 100 GiB, above the 90% threshold"
	if v := Classify(grow, vm, Provenance{}); v.Class != Benign {
		t.Fatalf("grow without a headroom finding: got %s (%s); want benign", v.Class, v.Reason)
	}
	v := Classify(grow, vm, Provenance{Headroom: why})
	if v.Class != Destructive || !strings.Contains(v.Reason, why) {
		t.Errorf("grow past headroom: got %s %q; want destructive naming %q", v.Class, v.Reason, why)
	}
	// The finding never makes a non-allocating op held, nor changes an
	// already destructive verdict's reason.
	start := action.Action{Op: action.Start, Kind: guest.QEMU, VMID: 101}
	if v := Classify(start, vm, Provenance{Headroom: why}); v.Class != Benign {
		t.Errorf("start with a headroom finding: got %s; want benign", v.Class)
	}
	shrink := action.Action{Op: action.Resize, Kind: guest.QEMU, VMID: 101, Params: map[string]string{"disk": "scsi0", "size": "16G"}}
	if v := Classify(shrink, vm, Provenance{Headroom: why}); v.Class != Destructive || strings.Contains(v.Reason, "headroom") {
		t.Errorf("shrink: got %s %q; want destructive for shrinking only", v.Class, v.Reason)
	}
}
