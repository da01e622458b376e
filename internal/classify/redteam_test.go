package classify_test

import (
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
)

// Red-team cases: parameters that PVE might read differently from the
// classifier (list separators, aliases, duplicate or mis-spelled keys,
// leading zeros, case, units) must never classify as benign when PVE would
// act on a data-bearing key.

func rtQEMU() guest.Config {
	return guest.Config{
		"cores": "1", "memory": "1024",
		"scsi0":   "local-lvm:vm-101-disk-0,size=32G",
		"ide2":    "local-lvm:vm-101-disk-5,size=8G", // a data disk in the cdrom alias's slot
		"ide0":    "local:iso/debian.iso,media=cdrom",
		"unused0": "local-lvm:vm-101-disk-3",
		"net0":    "virtio=BC:24:11:00:00:65,bridge=vmbr0",
	}
}

func rtLXC() guest.Config {
	return guest.Config{
		"cores": "1", "memory": "512",
		"rootfs": "local-lvm:vm-201-disk-0,size=8G",
		"mp0":    "local-lvm:vm-201-disk-1,mp=/data,size=8G",
	}
}

func TestRedteamClassifierNeverBenign(t *testing.T) {
	q, l := guest.QEMU, guest.LXC
	cfg := func(k guest.Kind, p map[string]string) action.Action {
		return action.Action{Op: action.SetConfig, VMID: 101, Kind: k, Params: p}
	}
	tests := []struct {
		name string
		a    action.Action
	}{
		// delete list separators: PVE::Tools::split_list splits on NUL, else
		// on [,;] and \s; a data-bearing key hidden behind any separator.
		{"delete with semicolon", cfg(q, map[string]string{"delete": "cores;unused0"})},
		{"delete with space", cfg(q, map[string]string{"delete": "cores unused0"})},
		{"delete with tab", cfg(q, map[string]string{"delete": "cores\tunused0"})},
		{"delete with newline", cfg(q, map[string]string{"delete": "cores\nunused0"})},
		{"delete with vertical tab", cfg(q, map[string]string{"delete": "cores\vunused0"})},
		{"delete with form feed", cfg(q, map[string]string{"delete": "cores\funused0"})},
		{"delete with NUL", cfg(q, map[string]string{"delete": "cores\x00unused0"})},
		{"delete with NUL and comma", cfg(q, map[string]string{"delete": "cores,memory\x00scsi0"})},
		{"delete with empty entries", cfg(q, map[string]string{"delete": ",,;scsi0;,"})},
		// Perl's \s on a decoded string also matches Unicode spaces: the key
		// the classifier sees is unknown, so it must be destructive.
		{"delete with NBSP", cfg(q, map[string]string{"delete": "cores\u00a0unused0"})},
		{"delete with NEL", cfg(q, map[string]string{"delete": "cores\u0085scsi0"})},
		{"delete with line separator", cfg(q, map[string]string{"delete": "cores\u2028mp0"})},
		{"delete lxc mp via space", cfg(l, map[string]string{"delete": "memory mp0"})},
		{"delete rootfs", cfg(l, map[string]string{"delete": "rootfs"})},
		{"delete cdrom alias over a data disk", cfg(q, map[string]string{"delete": "cdrom"})},
		// Key spelling: case, leading zeros, whitespace, out of range.
		{"upper-case SCSI0", cfg(q, map[string]string{"SCSI0": "local-lvm:8"})},
		{"mixed-case Scsi0", cfg(q, map[string]string{"Scsi0": "local-lvm:vm-101-disk-0,size=16G"})},
		{"leading zero scsi00", cfg(q, map[string]string{"scsi00": "local-lvm:vm-101-disk-0,size=16G"})},
		{"leading zero unused00", cfg(q, map[string]string{"delete": "unused00"})},
		{"leading zero mp00", cfg(l, map[string]string{"mp00": "/,mp=/host"})},
		{"leading zero net00", cfg(q, map[string]string{"net00": "virtio,bridge=vmbr0"})},
		{"trailing space key", cfg(q, map[string]string{"scsi0 ": "local-lvm:8"})},
		{"plus sign index", cfg(q, map[string]string{"scsi+1": "local-lvm:8"})},
		{"out of range scsi31", cfg(q, map[string]string{"scsi31": "local-lvm:8"})},
		{"lxc key on qemu rootfs", cfg(q, map[string]string{"rootfs": "local-lvm:8"})},
		{"qemu key on lxc scsi0", cfg(l, map[string]string{"scsi0": "local-lvm:8"})},
		{"unknown kind", action.Action{Op: action.SetConfig, VMID: 101, Kind: "QEMU", Params: map[string]string{"cores": "2"}}},
		// The cdrom alias writes ide2, which here holds a data disk.
		{"cdrom none over ide2 data disk", cfg(q, map[string]string{"cdrom": "none"})},
		{"cdrom iso over ide2 data disk", cfg(q, map[string]string{"cdrom": "local:iso/x.iso"})},
		{"ide2 as cdrom over data disk", cfg(q, map[string]string{"ide2": "none,media=cdrom"})},
		{"cdrom another guest's disk into empty ide2", action.Action{Op: action.SetConfig, VMID: 101, Kind: q,
			Params: map[string]string{"cdrom": "local-lvm:vm-102-disk-0"}}},
		// volume vs file, duplicated and aliased volume keys.
		{"explicit file another volume", cfg(q, map[string]string{"scsi0": "file=local-lvm:vm-102-disk-0,size=32G"})},
		{"duplicate file key", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,file=local-lvm:vm-102-disk-0,size=32G"})},
		{"duplicate size key", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G,size=1G"})},
		{"lxc duplicate volume key", cfg(l, map[string]string{"rootfs": "local-lvm:vm-201-disk-0,volume=local-lvm:vm-102-disk-0,size=8G"})},
		{"lxc mp explicit volume other", cfg(l, map[string]string{"mp0": "volume=local-lvm:vm-102-disk-0,mp=/data,size=8G"})},
		{"volume with trailing space", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0 ,size=32G"})},
		{"size in smaller unit shrinks", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32767M"})},
		{"size fractional shrink", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=0.03T"})},
		// Options that lose or reinterpret data on the same volume.
		{"media=cdrom on a disk", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,media=cdrom,size=32G"})},
		{"format change", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,format=qcow2,size=32G"})},
		{"snapshot mode", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,snapshot=1,size=32G"})},
		{"cache unsafe", cfg(q, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,cache=unsafe,size=32G"})},
		{"import-from", cfg(q, map[string]string{"scsi1": "local-lvm:0,import-from=local-lvm:vm-102-disk-0"})},
		{"lxc mp path change", cfg(l, map[string]string{"mp0": "local-lvm:vm-201-disk-1,mp=/etc,size=8G"})},
		{"lxc bind mount host root", cfg(l, map[string]string{"mp1": "/,mp=/host"})},
		{"lxc device mount", cfg(l, map[string]string{"mp1": "/dev/sda,mp=/host"})},
		{"set unused1 to another guest's disk", cfg(q, map[string]string{"unused1": "local-lvm:vm-102-disk-0"})},
		{"allocation into unused slot", cfg(q, map[string]string{"unused1": "local-lvm:4"})},
		{"cloud-init of another guest", cfg(q, map[string]string{"ide3": "local-lvm:vm-102-cloudinit,media=cdrom"})},
		{"iso path traversal", cfg(q, map[string]string{"ide3": "local:iso/../images/102/vm-102-disk-0.qcow2,media=cdrom"})},
		{"host path as cdrom", cfg(q, map[string]string{"ide3": "/dev/sda,media=cdrom"})},
		// Params PVE accepts that the classifier must not ignore.
		{"skiplock in config", cfg(q, map[string]string{"cores": "2", "skiplock": "1"})},
		{"revert key", cfg(q, map[string]string{"revert": "scsi0"})},
		{"force with delete", cfg(q, map[string]string{"delete": "scsi0", "force": "1"})},
		{"hookscript", cfg(q, map[string]string{"hookscript": "local:snippets/x.sh"})},
		// Resize.
		{"resize negative", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "scsi0", "size": "-1G"}}},
		{"resize plus minus", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "scsi0", "size": "+-1G"}}},
		{"resize to same size other unit", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "scsi0", "size": "32768M"}}},
		{"resize smaller", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "scsi0", "size": "31G"}}},
		{"resize upper-case disk", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "SCSI0", "size": "+1G"}}},
		{"resize with skiplock", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "scsi0", "size": "+1G", "skiplock": "1"}}},
		{"resize cdrom alias", action.Action{Op: action.Resize, VMID: 101, Kind: q, Params: map[string]string{"disk": "cdrom", "size": "+1G"}}},
		// Ops.
		{"destroy without provenance", action.Action{Op: action.Destroy, VMID: 101, Kind: q}},
		{"rollback", action.Action{Op: action.SnapshotRollback, VMID: 101, Kind: q, Params: map[string]string{"snapname": "a"}}},
		{"snapshot delete", action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: q, Params: map[string]string{"snapname": "a"}}},
		{"upper-case op", action.Action{Op: "Destroy", VMID: 101, Kind: q}},
		{"start with skiplock", action.Action{Op: action.Start, VMID: 101, Kind: q, Params: map[string]string{"skiplock": "1"}}},
		{"stop with unknown param", action.Action{Op: action.Stop, VMID: 101, Kind: q, Params: map[string]string{"migratedfrom": "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			actual := rtQEMU()
			if tt.a.Kind == guest.LXC {
				actual = rtLXC()
			}
			if tt.name == "cdrom another guest's disk into empty ide2" {
				delete(actual, "ide2")
			}
			v := classify.Classify(tt.a, actual, classify.Provenance{})
			if v.Class != classify.Destructive {
				t.Errorf("Classify(%v) = %s (%q); want destructive", tt.a, v.Class, v.Reason)
			}
			if v.Reason == "" {
				t.Errorf("Classify(%v) gave no reason", tt.a)
			}
		})
	}
}

// TestRedteamCreateDefaults: a create that leaves a safety parameter to PVE's
// default must be judged by that default. pve-container's unprivileged
// defaults to 0, so an LXC create without it makes a privileged container.
func TestRedteamCreateNeverBenign(t *testing.T) {
	lxcBase := map[string]string{"ostemplate": "local:vztmpl/debian.tar.zst", "rootfs": "local-lvm:8", "unprivileged": "1"}
	with := func(base map[string]string, k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		if v == "\x00" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name   string
		kind   guest.Kind
		params map[string]string
		actual guest.Config
	}{
		{"lxc privileged explicit", guest.LXC, with(lxcBase, "unprivileged", "0"), nil},
		{"lxc unprivileged true spelled out", guest.LXC, with(lxcBase, "unprivileged", "true"), nil},
		{"lxc bind mount at create", guest.LXC, with(lxcBase, "mp0", "/var/lib/vz,mp=/host"), nil},
		{"lxc existing volume at create", guest.LXC, with(lxcBase, "rootfs", "local-lvm:vm-201-disk-0"), nil},
		{"lxc features at create", guest.LXC, with(lxcBase, "features", "nesting=1"), nil},
		{"lxc restore with force", guest.LXC, with(with(lxcBase, "restore", "1"), "force", "1"), nil},
		{"lxc create over existing", guest.LXC, lxcBase, rtLXC()},
		{"qemu existing volume", guest.QEMU, map[string]string{"scsi0": "local-lvm:vm-102-disk-0"}, nil},
		{"qemu import-from", guest.QEMU, map[string]string{"scsi0": "local-lvm:0,import-from=local-lvm:vm-102-disk-0"}, nil},
		{"qemu unusedN", guest.QEMU, map[string]string{"unused0": "local-lvm:vm-102-disk-0"}, nil},
		{"qemu cdrom another guest's disk", guest.QEMU, map[string]string{"cdrom": "local-lvm:vm-102-disk-0"}, nil},
		{"qemu args", guest.QEMU, map[string]string{"args": "-drive file=/dev/sda"}, nil},
		{"qemu hostpci", guest.QEMU, map[string]string{"hostpci0": "0000:01:00.0"}, nil},
		{"qemu archive over existing", guest.QEMU, map[string]string{"archive": "local:backup/vzdump-qemu-101.vma.zst"}, rtQEMU()},
		{"qemu force", guest.QEMU, map[string]string{"force": "1", "scsi0": "local-lvm:8"}, nil},
		{"qemu force true", guest.QEMU, map[string]string{"force": "true", "scsi0": "local-lvm:8"}, nil},
		{"qemu lock", guest.QEMU, map[string]string{"lock": "backup"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := action.Action{Op: action.Create, VMID: 150, Kind: tt.kind, Params: tt.params}
			if v := classify.Classify(a, tt.actual, classify.Provenance{}); v.Class != classify.Destructive {
				t.Errorf("Classify(%v) = %s (%q); want destructive", a, v.Class, v.Reason)
			}
		})
	}
}

// TestRedteamProvenanceParams: the one benign destroy (the agent's own failed
// provision) must not be stretched by parameters.
func TestRedteamProvenanceParams(t *testing.T) {
	prov := classify.Provenance{CreatedByAgent: true, CreateFailed: true}
	for _, p := range []map[string]string{
		{"destroy-unreferenced-disks": "1"},
		{"destroy-unreferenced-disks": "true"},
		{"skiplock": "1"},
		{"purge": "1", "force": "1"},
	} {
		a := action.Action{Op: action.Destroy, VMID: 150, Kind: guest.QEMU, Params: p}
		if v := classify.Classify(a, rtQEMU(), prov); v.Class != classify.Destructive {
			t.Errorf("Classify(%v) with failed-provision provenance = %s; want destructive", a, v.Class)
		}
	}
	for _, prov := range []classify.Provenance{{CreatedByAgent: true}, {CreateFailed: true}} {
		a := action.Action{Op: action.Destroy, VMID: 150, Kind: guest.QEMU}
		if v := classify.Classify(a, rtQEMU(), prov); v.Class != classify.Destructive {
			t.Errorf("Classify(destroy) with provenance %+v = %s; want destructive", prov, v.Class)
		}
	}
}
