package classify

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// qemuActual is a VM with every kind of data-bearing key.
func qemuActual() guest.Config {
	return guest.Config{
		"scsi0":     "local-lvm:vm-101-disk-0,size=32G",
		"scsi1":     "local-lvm:vm-101-disk-1,cache=writeback,discard=on,size=100G",
		"virtio0":   "local-lvm:vm-101-disk-5,size=10G",
		"efidisk0":  "local-lvm:vm-101-disk-2,efitype=4m,pre-enrolled-keys=1,size=4M",
		"tpmstate0": "local-lvm:vm-101-disk-3,size=4M,version=v2.0",
		"ide2":      "none,media=cdrom",
		"sata0":     "local:iso/debian.iso,media=cdrom,size=600M",
		"unused0":   "local-lvm:vm-101-disk-4",
		"net0":      "virtio=BC:24:11:00:00:01,bridge=vmbr0",
		"cores":     "2",
		"memory":    "2048",
		"name":      "web",
		"digest":    "a2019681a11059dc5602d474c3443b907db213b7",
	}
}

// lxcActual is the fixture container (gp-pve7-lxc-config.json) plus a
// volume mount point and an unused volume.
func lxcActual() guest.Config {
	return guest.Config{
		"rootfs":   "vmstore:subvol-101-disk-0,size=8G",
		"mp0":      "vmstore:subvol-101-disk-1,mp=/data,backup=1,size=16G",
		"mp1":      "/mnt/foo/bar,mp=/storage",
		"unused0":  "vmstore:subvol-101-disk-2",
		"net0":     "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth",
		"hostname": "test-container",
		"cores":    "2",
		"memory":   "4096",
	}
}

func qcfg(params map[string]string) action.Action {
	return action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: params}
}

func lcfg(params map[string]string) action.Action {
	return action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.LXC, Params: params}
}

type p = map[string]string

type classifyCase struct {
	name   string
	a      action.Action
	actual guest.Config
	prov   Provenance
	want   Class
	reason []string // substrings the Reason must contain
	absent []string // substrings the Reason must not contain
	keys   []string
}

func runCases(t *testing.T, tests []classifyCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.actual.Clone()
			got := Classify(tt.a, tt.actual, tt.prov)
			if got.Class != tt.want {
				t.Errorf("Class = %s (%s); want %s", got.Class, got.Reason, tt.want)
			}
			if got.Reason == "" {
				t.Error("Reason is empty; want a precise reason")
			}
			for _, r := range tt.reason {
				if !strings.Contains(got.Reason, r) {
					t.Errorf("Reason = %q; want it to contain %q", got.Reason, r)
				}
			}
			for _, r := range tt.absent {
				if strings.Contains(got.Reason, r) {
					t.Errorf("Reason = %q; want it without %q", got.Reason, r)
				}
			}
			if !reflect.DeepEqual(got.Keys, tt.keys) {
				t.Errorf("Keys = %q; want %q", got.Keys, tt.keys)
			}
			if !reflect.DeepEqual(tt.actual, before) {
				t.Errorf("Classify modified actual: got %v; want %v", tt.actual, before)
			}
		})
	}
}

func TestClassifyRunState(t *testing.T) {
	q := qemuActual()
	runCases(t, []classifyCase{
		{name: "start", a: action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU}, actual: q, want: Benign, reason: []string{"start 101 changes run state only"}},
		{name: "start with timeout", a: action.Action{Op: action.Start, VMID: 101, Kind: guest.LXC, Params: p{"timeout": "30"}}, want: Benign},
		{name: "shutdown with timeout and forceStop", a: action.Action{Op: action.Shutdown, VMID: 101, Kind: guest.QEMU, Params: p{"timeout": "60", "forceStop": "1"}}, actual: q, want: Benign},
		{name: "stop", a: action.Action{Op: action.Stop, VMID: 101, Kind: guest.QEMU}, actual: q, want: Benign},
		{name: "reboot with timeout", a: action.Action{Op: action.Reboot, VMID: 101, Kind: guest.QEMU, Params: p{"timeout": "180"}}, actual: q, want: Benign},
		{name: "reboot with skiplock", a: action.Action{Op: action.Reboot, VMID: 101, Kind: guest.LXC, Params: p{"skiplock": "1"}}, actual: q, want: Destructive, reason: []string{"skiplock bypasses the guest's lock"}},
		{name: "stop with skiplock", a: action.Action{Op: action.Stop, VMID: 101, Kind: guest.QEMU, Params: p{"skiplock": "1"}}, actual: q, want: Destructive, reason: []string{"skiplock bypasses the guest's lock"}},
		{name: "start with unknown parameter", a: action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Params: p{"migratedfrom": "pve2"}}, actual: q, want: Destructive, reason: []string{`unknown parameter "migratedfrom"`}},
	})
}

func TestClassifyConfigQEMU(t *testing.T) {
	q := qemuActual()
	runCases(t, []classifyCase{
		{name: "benign allow-list", a: qcfg(p{"cores": "4", "sockets": "2", "memory": "4096", "balloon": "1024", "name": "web2", "description": "x\n", "tags": "a;b", "onboot": "1", "startup": "order=1", "cpulimit": "2", "cpuunits": "100", "digest": "abc"}), actual: q, want: Benign,
			reason: []string{"allow-listed keys: balloon, cores, cpulimit, cpuunits, description, memory, name, onboot, sockets, startup, tags"}},
		{name: "network device set", a: qcfg(p{"net1": "virtio=BC:24:11:00:00:02,bridge=vmbr1"}), actual: q, want: Benign, reason: []string{"net1"}},
		{name: "network device delete", a: qcfg(p{"delete": "net0"}), actual: q, want: Benign, reason: []string{"delete net0"}},
		{name: "delete benign keys", a: qcfg(p{"delete": "description,tags;onboot startup"}), actual: q, want: Benign},
		{name: "empty config", a: qcfg(nil), actual: q, want: Benign, reason: []string{"config 101 changes no data"}},
		{name: "digest only", a: qcfg(p{"digest": "abc"}), actual: q, want: Benign},
		{name: "hostname is not a qemu key", a: qcfg(p{"hostname": "x"}), actual: q, want: Destructive, reason: []string{`unknown config key "hostname"`}},
		{name: "unknown key", a: qcfg(p{"foo": "1"}), actual: q, want: Destructive, reason: []string{`unknown config key "foo"`}},
		{name: "unknown key deleted", a: qcfg(p{"delete": "foo"}), actual: q, want: Destructive, reason: []string{`delete "foo": unknown config key "foo"`}},
		{name: "key not on allow-list: args", a: qcfg(p{"args": "-drive file=/dev/sda"}), actual: q, want: Destructive, reason: []string{`unknown config key "args"`}},
		{name: "key not on allow-list: hookscript", a: qcfg(p{"hookscript": "local:snippets/x.sh"}), actual: q, want: Destructive},
		{name: "unknown key value is not in the reason", a: qcfg(p{"cipassword": "hunter2"}), actual: q, want: Destructive, reason: []string{`"cipassword"`}, absent: []string{"hunter2"}},
		{name: "uppercase SCSI0", a: qcfg(p{"SCSI0": "local-lvm:vm-101-disk-9"}), actual: q, want: Destructive, reason: []string{`unknown config key "SCSI0"`}},
		{name: "leading zero scsi00", a: qcfg(p{"scsi00": "local-lvm:32"}), actual: q, want: Destructive, reason: []string{`unknown config key "scsi00"`}},
		{name: "out of range scsi31", a: qcfg(p{"scsi31": "local-lvm:32"}), actual: q, want: Destructive, reason: []string{`unknown config key "scsi31"`}},
		{name: "out of range net32", a: qcfg(p{"net32": "virtio,bridge=vmbr0"}), actual: q, want: Destructive},
		{name: "delete with leading space", a: qcfg(p{"delete": " mp0"}), actual: q, want: Destructive, reason: []string{`unknown config key "mp0" (not on the qemu allow-list)`}},
		{name: "delete NUL-separated keeps spaces", a: qcfg(p{"delete": "net0\x00 scsi0"}), actual: q, want: Destructive, reason: []string{`unknown config key " scsi0"`}},
		{name: "delete with tab separator", a: qcfg(p{"delete": "net0\tscsi0"}), actual: q, want: Destructive, reason: []string{"delete scsi0: detaches disk local-lvm:vm-101-disk-0"}, keys: []string{"scsi0"}},
		{name: "force is not a key", a: qcfg(p{"delete": "net0", "force": "1"}), actual: q, want: Destructive, reason: []string{`unknown config key "force"`}},

		// Data-bearing keys, hostile paths.
		{name: "replace scsi0 volume", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-9,size=32G"}), actual: q, want: Destructive,
			reason: []string{"scsi0: replaces volume local-lvm:vm-101-disk-0 with local-lvm:vm-101-disk-9"}, keys: []string{"scsi0"}},
		{name: "replace scsi0 with new allocation", a: qcfg(p{"scsi0": "local-lvm:64"}), actual: q, want: Destructive,
			reason: []string{"scsi0: replaces volume local-lvm:vm-101-disk-0 with a new allocation local-lvm:64"}, keys: []string{"scsi0"}},
		{name: "replace scsi0 with another guest's disk via file=", a: qcfg(p{"scsi0": "file=local-lvm:vm-105-disk-0"}), actual: q, want: Destructive, keys: []string{"scsi0"}},
		{name: "file and volume alias both given", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,volume=local-lvm:vm-105-disk-0"}), actual: q, want: Destructive, reason: []string{"cannot parse new value"}, keys: []string{"scsi0"}},
		{name: "move disk to unused0 via delete", a: qcfg(p{"delete": "scsi0"}), actual: q, want: Destructive,
			reason: []string{"delete scsi0: detaches disk local-lvm:vm-101-disk-0"}, keys: []string{"scsi0"}},
		{name: "delete with force", a: qcfg(p{"delete": "scsi1", "force": "1"}), actual: q, want: Destructive, reason: []string{"with force (destroys it)"}, keys: []string{"scsi1"}},
		{name: "delete unused0", a: qcfg(p{"delete": "unused0"}), actual: q, want: Destructive,
			reason: []string{"delete unused0: destroys unused volume local-lvm:vm-101-disk-4"}, keys: []string{"unused0"}},
		{name: "set unused1", a: qcfg(p{"unused1": "local-lvm:vm-105-disk-0"}), actual: q, want: Destructive, reason: []string{"unused1: sets an unused-volume reference"}, keys: []string{"unused1"}},
		{name: "delete absent disk", a: qcfg(p{"delete": "scsi5"}), actual: q, want: Destructive, reason: []string{"delete scsi5: detaches disk"}, keys: []string{"scsi5"}},
		{name: "delete cdrom drive", a: qcfg(p{"delete": "ide2"}), actual: q, want: Destructive, keys: []string{"ide2"}},
		{name: "change efidisk0 volume", a: qcfg(p{"efidisk0": "local-lvm:vm-101-disk-7,efitype=4m,pre-enrolled-keys=1,size=4M"}), actual: q, want: Destructive,
			reason: []string{"efidisk0: replaces volume local-lvm:vm-101-disk-2 with local-lvm:vm-101-disk-7"}, keys: []string{"efidisk0"}},
		{name: "change efidisk0 keys option", a: qcfg(p{"efidisk0": "local-lvm:vm-101-disk-2,efitype=4m,pre-enrolled-keys=0,size=4M"}), actual: q, want: Destructive,
			reason: []string{"efidisk0: changes option pre-enrolled-keys of volume local-lvm:vm-101-disk-2 (1 → 0)"}, keys: []string{"efidisk0"}},
		{name: "delete efidisk0", a: qcfg(p{"delete": "efidisk0"}), actual: q, want: Destructive, keys: []string{"efidisk0"}},
		{name: "change tpmstate0 version", a: qcfg(p{"tpmstate0": "local-lvm:vm-101-disk-3,size=4M,version=v1.2"}), actual: q, want: Destructive, reason: []string{"tpmstate0: changes option version"}, keys: []string{"tpmstate0"}},
		{name: "delete tpmstate0", a: qcfg(p{"delete": "tpmstate0"}), actual: q, want: Destructive, keys: []string{"tpmstate0"}},
		{name: "shrink scsi0 via size", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,size=16G"}), actual: q, want: Destructive, reason: []string{"scsi0: shrinks 32G → 16G"}, keys: []string{"scsi0"}},
		{name: "unparseable new size", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,size=16g"}), actual: q, want: Destructive, reason: []string{"scsi0: cannot parse new value"}, keys: []string{"scsi0"}},
		{name: "snapshot mode discards writes", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,size=32G,snapshot=1"}), actual: q, want: Destructive, reason: []string{"scsi0: changes option snapshot of volume local-lvm:vm-101-disk-0 (unset → 1)"}, keys: []string{"scsi0"}},
		{name: "format change reinterprets data", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,format=qcow2,size=32G"}), actual: q, want: Destructive, reason: []string{"changes option format"}, keys: []string{"scsi0"}},
		{name: "cache unsafe", a: qcfg(p{"scsi1": "local-lvm:vm-101-disk-1,cache=unsafe,discard=on,size=100G"}), actual: q, want: Destructive, reason: []string{"changes option cache"}, keys: []string{"scsi1"}},
		{name: "import-from existing volume", a: qcfg(p{"scsi2": "local-lvm:0,import-from=local-lvm:vm-105-disk-0"}), actual: q, want: Destructive, reason: []string{"scsi2: imports from existing volume local-lvm:vm-105-disk-0"}, keys: []string{"scsi2"}},
		{name: "attach existing volume to free slot", a: qcfg(p{"scsi2": "local-lvm:vm-105-disk-0"}), actual: q, want: Destructive,
			reason: []string{"scsi2: attaches existing volume local-lvm:vm-105-disk-0 (it may belong to another guest)"}, keys: []string{"scsi2"}},
		{name: "attach host device", a: qcfg(p{"scsi2": "/dev/sdb"}), actual: q, want: Destructive, reason: []string{"scsi2: attaches host path /dev/sdb"}, keys: []string{"scsi2"}},
		{name: "replace disk with cdrom", a: qcfg(p{"scsi0": "none,media=cdrom"}), actual: q, want: Destructive, reason: []string{"scsi0: replaces disk local-lvm:vm-101-disk-0 with a cdrom"}, keys: []string{"scsi0"}},
		{name: "existing volume as cdrom", a: qcfg(p{"ide2": "local-lvm:vm-105-disk-0,media=cdrom"}), actual: q, want: Destructive, reason: []string{"ide2: attaches existing volume local-lvm:vm-105-disk-0 as a cdrom"}, keys: []string{"ide2"}},
		{name: "cdrom alias with existing volume", a: qcfg(p{"cdrom": "local-lvm:vm-105-disk-0"}), actual: q, want: Destructive, keys: []string{"cdrom", "ide2"}},
		{name: "iso path traversal is not an iso", a: qcfg(p{"ide2": "local:iso/../images/105/vm-105-disk-0.raw,media=cdrom"}), actual: q, want: Destructive, keys: []string{"ide2"}},
		{name: "unparseable current value", a: qcfg(p{"virtio0": "local-lvm:vm-101-disk-5,size=20G"}), actual: guest.Config{"virtio0": "local-lvm:vm-101-disk-5,size=10G,size=1G"}, want: Destructive, reason: []string{"virtio0: cannot parse current value"}, keys: []string{"virtio0"}},
		{name: "current size unknown", a: qcfg(p{"virtio0": "local-lvm:vm-101-disk-5,size=20G"}), actual: guest.Config{"virtio0": "local-lvm:vm-101-disk-5"}, want: Destructive, reason: []string{"current size is unknown"}, keys: []string{"virtio0"}},

		// Data-bearing keys, benign paths.
		{name: "same volume harmless options", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,cache=none,discard=on,iothread=1,ssd=1,backup=0,replicate=0,aio=native,size=32G"}), actual: q, want: Benign,
			reason: []string{"scsi0: keeps volume local-lvm:vm-101-disk-0, changes harmless options aio, backup, cache, discard, iothread, replicate, ssd"}, keys: []string{"scsi0"}},
		{name: "same volume removes harmless options", a: qcfg(p{"scsi1": "local-lvm:vm-101-disk-1,size=100G"}), actual: q, want: Benign, keys: []string{"scsi1"}},
		{name: "same volume larger size", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,size=40G"}), actual: q, want: Benign, reason: []string{"keeps volume", "size 32G → 40G is informational"}, keys: []string{"scsi0"}},
		{name: "same volume no size", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0"}), actual: q, want: Benign, keys: []string{"scsi0"}},
		{name: "same volume written with file=", a: qcfg(p{"scsi0": "file=local-lvm:vm-101-disk-0,size=32G"}), actual: q, want: Benign, keys: []string{"scsi0"}},
		{name: "same volume size in other unit", a: qcfg(p{"scsi0": "local-lvm:vm-101-disk-0,size=32768M"}), actual: q, want: Benign, keys: []string{"scsi0"}},
		{name: "new allocation into free slot", a: qcfg(p{"scsi2": "local-lvm:32"}), actual: q, want: Benign, reason: []string{"scsi2: allocates a new volume local-lvm:32"}, keys: []string{"scsi2"}},
		{name: "new allocation with options", a: qcfg(p{"virtio1": "local-lvm:0.5,discard=on,iothread=1"}), actual: q, want: Benign, keys: []string{"virtio1"}},
		{name: "new efidisk allocation", a: qcfg(p{"efidisk0": "local-lvm:1,efitype=4m,pre-enrolled-keys=1"}), actual: guest.Config{"cores": "1"}, want: Benign, keys: []string{"efidisk0"}},
		{name: "cdrom none to iso", a: qcfg(p{"ide2": "local:iso/debian-12.iso,media=cdrom"}), actual: q, want: Benign, reason: []string{"ide2: cdrom local:iso/debian-12.iso holds no guest data (replacing cdrom none)"}, keys: []string{"ide2"}},
		{name: "cdrom iso to none", a: qcfg(p{"sata0": "none,media=cdrom"}), actual: q, want: Benign, keys: []string{"sata0"}},
		{name: "cdrom alias iso", a: qcfg(p{"cdrom": "local:iso/x.iso"}), actual: q, want: Benign, keys: []string{"cdrom", "ide2"}},
		{name: "cloud-init drive of this guest", a: qcfg(p{"ide2": "ceph:vm-101-cloudinit,media=cdrom"}), actual: q, want: Benign, keys: []string{"ide2"}},
		{name: "cloud-init drive of another guest", a: qcfg(p{"ide2": "ceph:vm-555-cloudinit,media=cdrom"}), actual: q, want: Destructive, keys: []string{"ide2"}},
		{name: "new cdrom drive", a: qcfg(p{"ide0": "none,media=cdrom"}), actual: q, want: Benign, keys: []string{"ide0"}},
		{name: "new allocation replacing a cdrom", a: qcfg(p{"ide2": "local-lvm:8"}), actual: q, want: Benign, reason: []string{"allocates a new volume local-lvm:8 (replacing cdrom none)"}, keys: []string{"ide2"}},

		// Mixed: one destructive key makes the whole action destructive and
		// only destructive findings are reported.
		{name: "mixed benign and destructive", a: qcfg(p{"cores": "8", "memory": "8192", "scsi0": "local-lvm:vm-101-disk-0,size=8G", "delete": "unused0,net0"}), actual: q, want: Destructive,
			reason: []string{"scsi0: shrinks 32G → 8G", "delete unused0: destroys unused volume"}, absent: []string{"allow-listed", "cores"}, keys: []string{"scsi0", "unused0"}},
		{name: "mixed benign and unknown", a: qcfg(p{"cores": "8", "bios": "ovmf"}), actual: q, want: Destructive, reason: []string{`unknown config key "bios"`}},
		{name: "config on unknown kind", a: action.Action{Op: action.SetConfig, VMID: 101, Kind: "vz", Params: p{"cores": "2"}}, actual: q, want: Destructive, reason: []string{`unknown guest kind "vz"`}},
		{name: "config on missing guest allocates", a: qcfg(p{"scsi0": "local-lvm:32"}), actual: nil, want: Benign, keys: []string{"scsi0"}},
	})
}

func TestClassifyConfigLXC(t *testing.T) {
	l := lxcActual()
	runCases(t, []classifyCase{
		{name: "benign allow-list", a: lcfg(p{"hostname": "ct2", "swap": "1024", "cores": "4", "memory": "8192", "net1": "name=eth1,bridge=vmbr1"}), actual: l, want: Benign},
		{name: "name is not an lxc key", a: lcfg(p{"name": "x"}), actual: l, want: Destructive, reason: []string{`unknown config key "name"`}},
		{name: "balloon is not an lxc key", a: lcfg(p{"balloon": "0"}), actual: l, want: Destructive},
		{name: "shrink rootfs", a: lcfg(p{"rootfs": "vmstore:subvol-101-disk-0,size=4G"}), actual: l, want: Destructive, reason: []string{"rootfs: shrinks 8G → 4G"}, keys: []string{"rootfs"}},
		{name: "replace rootfs", a: lcfg(p{"rootfs": "vmstore:subvol-105-disk-0,size=8G"}), actual: l, want: Destructive, reason: []string{"rootfs: replaces volume vmstore:subvol-101-disk-0 with vmstore:subvol-105-disk-0"}, keys: []string{"rootfs"}},
		{name: "delete rootfs", a: lcfg(p{"delete": "rootfs"}), actual: l, want: Destructive, reason: []string{"delete rootfs: removes the container's root filesystem vmstore:subvol-101-disk-0"}, keys: []string{"rootfs"}},
		{name: "drop mp0", a: lcfg(p{"delete": "mp0"}), actual: l, want: Destructive, reason: []string{"delete mp0: detaches a mount point vmstore:subvol-101-disk-1"}, keys: []string{"mp0"}},
		{name: "drop bind mount mp1", a: lcfg(p{"delete": "mp1"}), actual: l, want: Destructive, reason: []string{"delete mp1: detaches a mount point /mnt/foo/bar"}, keys: []string{"mp1"}},
		{name: "delete unused0", a: lcfg(p{"delete": "unused0"}), actual: l, want: Destructive, reason: []string{"delete unused0: destroys unused volume vmstore:subvol-101-disk-2"}, keys: []string{"unused0"}},
		{name: "new bind mount", a: lcfg(p{"mp2": "/srv/data,mp=/data2"}), actual: l, want: Destructive, reason: []string{"mp2: attaches host path /srv/data"}, keys: []string{"mp2"}},
		{name: "new mount point allocation", a: lcfg(p{"mp2": "vmstore:16,mp=/data2,backup=1"}), actual: l, want: Benign, reason: []string{"mp2: allocates a new volume vmstore:16"}, keys: []string{"mp2"}},
		{name: "new mount point allocation without storage", a: lcfg(p{"mp2": "16,mp=/data2"}), actual: l, want: Benign, keys: []string{"mp2"}},
		{name: "mount point harmless options", a: lcfg(p{"mp0": "vmstore:subvol-101-disk-1,mp=/data,backup=0,replicate=0,mountoptions=noatime,size=16G"}), actual: l, want: Benign, keys: []string{"mp0"}},
		{name: "mount point path change", a: lcfg(p{"mp0": "vmstore:subvol-101-disk-1,mp=/other,backup=1,size=16G"}), actual: l, want: Destructive, reason: []string{"mp0: changes option mp of volume vmstore:subvol-101-disk-1 (/data → /other)"}, keys: []string{"mp0"}},
		{name: "mount point made writable shared", a: lcfg(p{"mp0": "vmstore:subvol-101-disk-1,mp=/data,backup=1,shared=1,size=16G"}), actual: l, want: Destructive, keys: []string{"mp0"}},
		{name: "media=cdrom means nothing for lxc", a: lcfg(p{"mp2": "vmstore:subvol-105-disk-0,mp=/x,media=cdrom"}), actual: l, want: Destructive, keys: []string{"mp2"}},
		{name: "mp256 out of range", a: lcfg(p{"mp256": "vmstore:8,mp=/x"}), actual: l, want: Destructive, reason: []string{`unknown config key "mp256"`}},
		{name: "device passthrough", a: lcfg(p{"dev0": "/dev/sdb"}), actual: l, want: Destructive, reason: []string{`unknown config key "dev0"`}},
		{name: "efidisk0 is qemu only", a: lcfg(p{"efidisk0": "vmstore:1"}), actual: l, want: Destructive, reason: []string{`unknown config key "efidisk0"`}},
	})
}

func TestClassifyResize(t *testing.T) {
	q, l := qemuActual(), lxcActual()
	rs := func(kind guest.Kind, disk, size string) action.Action {
		return action.Action{Op: action.Resize, VMID: 101, Kind: kind, Params: p{"disk": disk, "size": size}}
	}
	runCases(t, []classifyCase{
		{name: "grow absolute", a: rs(guest.QEMU, "scsi0", "40G"), actual: q, want: Benign, reason: []string{"scsi0: grows 32G → 40G"}, keys: []string{"scsi0"}},
		{name: "grow relative", a: rs(guest.QEMU, "scsi0", "+8G"), actual: q, want: Benign, reason: []string{"scsi0: grows by 8G"}, keys: []string{"scsi0"}},
		{name: "grow relative without knowing size", a: rs(guest.QEMU, "virtio0", "+1G"), actual: guest.Config{"virtio0": "local-lvm:vm-101-disk-5"}, want: Benign, keys: []string{"virtio0"}},
		{name: "grow bytes", a: rs(guest.QEMU, "scsi0", "34359738369"), actual: q, want: Benign, keys: []string{"scsi0"}},
		{name: "equal", a: rs(guest.QEMU, "scsi0", "32G"), actual: q, want: Destructive, reason: []string{"does not grow"}, keys: []string{"scsi0"}},
		{name: "equal in other unit", a: rs(guest.QEMU, "scsi0", "32768M"), actual: q, want: Destructive, keys: []string{"scsi0"}},
		{name: "shrink", a: rs(guest.LXC, "rootfs", "4G"), actual: l, want: Destructive, reason: []string{"rootfs: shrinks 8G → 4G"}, keys: []string{"rootfs"}},
		{name: "grow lxc rootfs", a: rs(guest.LXC, "rootfs", "16G"), actual: l, want: Benign, reason: []string{"rootfs: grows 8G → 16G"}, keys: []string{"rootfs"}},
		{name: "grow lxc mount point", a: rs(guest.LXC, "mp0", "17G"), actual: l, want: Benign, reason: []string{"mp0: grows 16G → 17G"}, keys: []string{"mp0"}},
		{name: "shrink lxc mount point", a: rs(guest.LXC, "mp0", "15G"), actual: l, want: Destructive, reason: []string{"mp0: shrinks 16G → 15G"}, keys: []string{"mp0"}},
		{name: "grow with digest", a: action.Action{Op: action.Resize, VMID: 101, Kind: guest.QEMU, Params: p{"disk": "scsi0", "size": "40G"}, Digest: "abc"}, actual: q, want: Benign, keys: []string{"scsi0"}},
		{name: "grow efidisk0", a: rs(guest.QEMU, "efidisk0", "8M"), actual: q, want: Benign, keys: []string{"efidisk0"}},
		{name: "plus zero", a: rs(guest.QEMU, "scsi0", "+0"), actual: q, want: Destructive, reason: []string{"+0 does not grow"}, keys: []string{"scsi0"}},
		{name: "negative", a: rs(guest.QEMU, "scsi0", "-1G"), actual: q, want: Destructive, reason: []string{"cannot parse resize size"}, keys: []string{"scsi0"}},
		{name: "lower-case unit", a: rs(guest.QEMU, "scsi0", "40g"), actual: q, want: Destructive, keys: []string{"scsi0"}},
		{name: "empty size", a: rs(guest.QEMU, "scsi0", ""), actual: q, want: Destructive, keys: []string{"scsi0"}},
		{name: "unknown current size", a: rs(guest.LXC, "mp1", "10G"), actual: l, want: Destructive, reason: []string{"growth to 10G cannot be verified"}, keys: []string{"mp1"}},
		{name: "missing disk", a: rs(guest.QEMU, "scsi5", "10G"), actual: q, want: Destructive, reason: []string{"no such disk"}, keys: []string{"scsi5"}},
		{name: "guest missing", a: rs(guest.QEMU, "scsi0", "40G"), actual: nil, want: Destructive, keys: []string{"scsi0"}},
		{name: "cdrom", a: rs(guest.QEMU, "sata0", "1G"), actual: q, want: Destructive, reason: []string{"is a cdrom"}, keys: []string{"sata0"}},
		{name: "unused", a: rs(guest.QEMU, "unused0", "+1G"), actual: q, want: Destructive, reason: []string{"not a resizable disk"}},
		{name: "not a disk", a: rs(guest.QEMU, "memory", "+1G"), actual: q, want: Destructive},
		{name: "wrong kind key", a: rs(guest.LXC, "scsi0", "+1G"), actual: q, want: Destructive},
		{name: "extra parameter", a: action.Action{Op: action.Resize, VMID: 101, Kind: guest.QEMU, Params: p{"disk": "scsi0", "size": "+1G", "skiplock": "1"}}, actual: q, want: Destructive, reason: []string{`unexpected parameter "skiplock"`}, keys: []string{"scsi0"}},
	})
}

func TestClassifyCreate(t *testing.T) {
	q := qemuActual()
	cr := func(kind guest.Kind, params map[string]string) action.Action {
		return action.Action{Op: action.Create, VMID: 120, Kind: kind, Params: params}
	}
	runCases(t, []classifyCase{
		{name: "new qemu guest", a: cr(guest.QEMU, p{"vmid": "120", "name": "new", "cores": "2", "memory": "2048", "scsi0": "local-lvm:32", "ide2": "local:iso/debian.iso,media=cdrom", "net0": "virtio,bridge=vmbr0", "ostype": "l26", "scsihw": "virtio-scsi-pci"}), want: Benign, reason: []string{"create: new guest 120"}, keys: []string{"ide2", "scsi0"}},
		{name: "new lxc guest", a: cr(guest.LXC, p{"vmid": "120", "hostname": "ct", "ostemplate": "local:vztmpl/debian-12.tar.zst", "rootfs": "local-lvm:8", "unprivileged": "1", "password": "s3cret"}), want: Benign, keys: []string{"rootfs"}},
		{name: "password never in reason", a: cr(guest.LXC, p{"password": "s3cret", "hookscript": "local:snippets/x"}), want: Destructive, reason: []string{`"hookscript"`}, absent: []string{"s3cret", "local:snippets/x"}},
		{name: "privileged container", a: cr(guest.LXC, p{"rootfs": "local-lvm:8", "unprivileged": "0"}), want: Destructive, reason: []string{"privileged container"}, keys: []string{"rootfs"}},
		{name: "guest exists", a: cr(guest.QEMU, p{"scsi0": "local-lvm:32"}), actual: q, want: Destructive, reason: []string{"create: guest 120 exists"}, keys: []string{"efidisk0", "ide2", "sata0", "scsi0", "scsi1", "tpmstate0", "unused0", "virtio0"}},
		{name: "restore over existing guest", a: cr(guest.QEMU, p{"archive": "local:backup/vzdump-qemu-120.vma.zst"}), actual: guest.Config{"scsi0": "local-lvm:vm-120-disk-0,size=8G"}, want: Destructive, reason: []string{"restores a backup over existing guest 120"}, keys: []string{"scsi0"}},
		{name: "restore into new guest", a: cr(guest.QEMU, p{"archive": "local:backup/vzdump-qemu-120.vma.zst", "storage": "local-lvm"}), want: Benign, reason: []string{"restores a backup into new guest 120"}},
		{name: "force", a: cr(guest.QEMU, p{"archive": "local:backup/x.vma.zst", "force": "1"}), want: Destructive, reason: []string{"force=1"}},
		{name: "force on lxc", a: cr(guest.LXC, p{"ostemplate": "local:backup/x.tar", "restore": "1", "force": "1"}), want: Destructive},
		{name: "force=0 is fine", a: cr(guest.QEMU, p{"force": "0"}), want: Benign},
		{name: "attach existing volume", a: cr(guest.QEMU, p{"scsi0": "local-lvm:vm-101-disk-0"}), want: Destructive, reason: []string{"scsi0: attaches existing volume local-lvm:vm-101-disk-0"}, keys: []string{"scsi0"}},
		{name: "import-from", a: cr(guest.QEMU, p{"scsi0": "local-lvm:0,import-from=local-lvm:vm-101-disk-0"}), want: Destructive, reason: []string{"imports from existing volume"}, keys: []string{"scsi0"}},
		{name: "bind mount", a: cr(guest.LXC, p{"rootfs": "local-lvm:8", "mp0": "/srv,mp=/srv"}), want: Destructive, keys: []string{"mp0", "rootfs"}},
		{name: "unused reference", a: cr(guest.QEMU, p{"unused0": "local-lvm:vm-101-disk-0"}), want: Destructive, keys: []string{"unused0"}},
		{name: "args", a: cr(guest.QEMU, p{"args": "-drive file=/dev/sda"}), want: Destructive, reason: []string{`parameter "args" is not on the qemu create allow-list`}},
		{name: "hostpci", a: cr(guest.QEMU, p{"hostpci0": "0000:01:00.0"}), want: Destructive},
		{name: "unknown kind", a: cr("vz", nil), want: Destructive},
	})
}

func TestClassifyDestroy(t *testing.T) {
	q := qemuActual()
	ds := func(params map[string]string) action.Action {
		return action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: params}
	}
	allDisks := []string{"efidisk0", "ide2", "sata0", "scsi0", "scsi1", "tpmstate0", "unused0", "virtio0"}
	runCases(t, []classifyCase{
		{name: "destroy", a: ds(nil), actual: q, want: Destructive, reason: []string{"destroys guest 101 and its disks (efidisk0, ide2, sata0, scsi0, scsi1, tpmstate0, unused0, virtio0)"}, keys: allDisks},
		{name: "destroy purge", a: ds(p{"purge": "1"}), actual: q, want: Destructive, keys: allDisks},
		{name: "own failed provision", a: ds(p{"purge": "1"}), actual: q, prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Benign, reason: []string{"the agent's own failed provision"}, keys: allDisks},
		{name: "own failed provision, guest gone", a: ds(nil), prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Benign},
		{name: "own provision that succeeded", a: ds(nil), actual: q, prov: Provenance{CreatedByAgent: true}, want: Destructive, keys: allDisks},
		{name: "failed create not by agent", a: ds(nil), actual: q, prov: Provenance{CreateFailed: true}, want: Destructive, keys: allDisks},
		{name: "own failed provision with unreferenced disks", a: ds(p{"destroy-unreferenced-disks": "1"}), actual: q, prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Destructive, reason: []string{"orphaned volumes"}, keys: allDisks},
		{name: "own failed provision with unreferenced disks off", a: ds(p{"destroy-unreferenced-disks": "0", "purge": "1"}), actual: q, prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Benign, keys: allDisks},
		{name: "own failed provision with skiplock", a: ds(p{"skiplock": "1"}), actual: q, prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Destructive, keys: allDisks},
		// Hub-provided parameters cannot stand in for provenance.
		{name: "hub claims provenance in params", a: ds(p{"CreatedByAgent": "true", "CreateFailed": "true", "provenance": "agent", "created_by_agent": "1"}), actual: q, want: Destructive, keys: allDisks},
		{name: "hub claims provenance in digest", a: action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Digest: "the agent's own failed provision"}, actual: q, want: Destructive, keys: allDisks},
	})
}

func TestClassifySnapshotsAndUnknownOps(t *testing.T) {
	l := lxcActual()
	lxcDisks := []string{"mp0", "mp1", "rootfs", "unused0"}
	runCases(t, []classifyCase{
		{name: "snapshot create", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "s1", "description": "x"}}, actual: l, want: Benign, reason: []string{"changes no data"}},
		{name: "snapshot create qemu vmstate", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: p{"snapname": "steward-20261205-210000", "vmstate": "1"}}, want: Benign, reason: []string{"changes no data"}},
		{name: "snapshot create lxc vmstate", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "s1", "vmstate": "1"}}, actual: l, want: Destructive, reason: []string{`unknown parameter "vmstate"`}},
		{name: "snapshot create bad name", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: p{"snapname": "1-bad"}}, want: Destructive, reason: []string{"not a PVE snapshot name"}},
		{name: "snapshot create too long", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: p{"snapname": "a" + strings.Repeat("b", 40)}}, want: Destructive, reason: []string{"not a PVE snapshot name"}},
		{name: "snapshot create unknown param", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: p{"snapname": "s1", "skiplock": "1"}}, want: Destructive, reason: []string{`unknown parameter "skiplock"`}},
		{name: "snapshot create no name", a: action.Action{Op: action.SnapshotCreate, VMID: 101, Kind: guest.QEMU, Params: p{}}, want: Destructive, reason: []string{"no snapname"}},
		{name: "prune own snapshot", a: action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "steward-20261205-210000"}}, actual: l, prov: Provenance{Snapshot: "steward-20261205-210000"}, want: Benign, reason: []string{"agent's journal shows it took"}},
		{name: "delete another snapshot with provenance for one", a: action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "steward-20261205-220000"}}, actual: l, prov: Provenance{Snapshot: "steward-20261205-210000"}, want: Destructive, reason: []string{`deletes snapshot "steward-20261205-220000"`}, keys: lxcDisks},
		{name: "prune own snapshot with force", a: action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "steward-20261205-210000", "force": "1"}}, actual: l, prov: Provenance{Snapshot: "steward-20261205-210000"}, want: Destructive, reason: []string{`parameter "force"`}, keys: lxcDisks},
		{name: "steward-looking name without provenance", a: action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "steward-20261205-210000"}}, actual: l, want: Destructive, reason: []string{"deletes snapshot"}, keys: lxcDisks},
		{name: "snapshot rollback", a: action.Action{Op: action.SnapshotRollback, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "s1"}}, actual: l, want: Destructive, reason: []string{`rolls back guest 101 to snapshot "s1"`}, keys: lxcDisks},
		{name: "snapshot delete", a: action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.LXC, Params: p{"snapname": "s1"}}, actual: l, want: Destructive, reason: []string{`deletes snapshot "s1"`}, keys: lxcDisks},
		{name: "unknown op", a: action.Action{Op: "move_disk", VMID: 101, Kind: guest.LXC}, actual: l, want: Destructive, reason: []string{`unknown op "move_disk"`}},
		{name: "empty op", a: action.Action{VMID: 101, Kind: guest.LXC}, actual: l, want: Destructive, reason: []string{`unknown op ""`}},
		{name: "op case trick", a: action.Action{Op: "Start", VMID: 101, Kind: guest.LXC}, actual: l, want: Destructive},
		{name: "unknown op with provenance", a: action.Action{Op: "template", VMID: 101, Kind: guest.LXC}, actual: l, prov: Provenance{CreatedByAgent: true, CreateFailed: true}, want: Destructive},
	})
}

func TestIsDataBearing(t *testing.T) {
	yes := map[guest.Kind][]string{
		guest.QEMU: {"scsi0", "scsi30", "virtio0", "virtio15", "sata0", "sata5", "ide0", "ide3", "efidisk0", "tpmstate0", "unused0", "unused255", "cdrom"},
		guest.LXC:  {"rootfs", "mp0", "mp255", "unused0", "unused255"},
	}
	no := map[guest.Kind][]string{
		guest.QEMU: {"scsi31", "virtio16", "sata6", "ide4", "efidisk1", "tpmstate1", "unused256", "scsi00", "scsi01", "SCSI0", " scsi0", "scsi0 ", "scsi", "scsi-1", "scsi+1", "rootfs", "mp0", "net0", "cores", "", "scsi１"},
		guest.LXC:  {"mp256", "mp00", "MP0", "rootfs0", "scsi0", "efidisk0", "cdrom", "unused256", "dev0", "net0"},
		"vz":       {"scsi0", "rootfs", "mp0"},
	}
	for kind, keys := range yes {
		for _, k := range keys {
			if !IsDataBearing(kind, k) {
				t.Errorf("IsDataBearing(%s, %q) = false; want true", kind, k)
			}
		}
	}
	for kind, keys := range no {
		for _, k := range keys {
			if IsDataBearing(kind, k) {
				t.Errorf("IsDataBearing(%s, %q) = true; want false", kind, k)
			}
		}
	}
}

func TestSplitList(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{"a,b;c d\te\nf", []string{"a", "b", "c", "d", "e", "f"}},
		{" ,a,, ", []string{"a"}},
		{"a\x00 b\x00", []string{"a", " b"}},
	}
	for _, tt := range tests {
		if got := splitList(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("splitList(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestClassifyFixtureConfigs checks that re-writing every data-bearing value
// of the captured configs unchanged is benign, and deleting it destructive.
func TestClassifyFixtureConfigs(t *testing.T) {
	configs := map[guest.Kind][]guest.Config{
		guest.QEMU: {
			{"scsi0": "local-lvm:vm-107-disk-0,size=32G", "ide2": "none,media=cdrom"},
			{"scsi0": "ceph-pool-nvme-01:vm-555-disk-0,discard=on,size=50G,ssd=1", "ide2": "ceph-pool-nvme-01:vm-555-cloudinit,media=cdrom"},
			{"ide2": "local:iso/seed-111.iso,media=cdrom,size=380K", "scsi0": "vmdata-1:vm-111-disk-0,size=2252M"},
		},
		guest.LXC: {
			{"rootfs": "vmstore:subvol-101-disk-0,size=30G", "mp0": "/mnt/foo/bar,mp=/storage"},
		},
	}
	for kind, cs := range configs {
		for _, c := range cs {
			for k, v := range c {
				a := action.Action{Op: action.SetConfig, VMID: 555, Kind: kind, Params: p{k: v}}
				if got := Classify(a, c, Provenance{}); got.Class != Benign {
					t.Errorf("%s %s=%q unchanged: got %s (%s); want benign", kind, k, v, got.Class, got.Reason)
				}
				a.Params = p{"delete": k}
				if got := Classify(a, c, Provenance{}); got.Class != Destructive {
					t.Errorf("%s delete %s: got %s (%s); want destructive", kind, k, got.Class, got.Reason)
				}
			}
		}
	}
}
