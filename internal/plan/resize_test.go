package plan

import (
	"reflect"
	"slices"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/propstr"
)

func resizeOf(vmid int, kind guest.Kind, disk, size, digest, from string) Step {
	return Step{
		Action:  action.Action{Op: action.Resize, VMID: vmid, Kind: kind, Params: map[string]string{"disk": disk, "size": size}, Digest: digest},
		Changes: []Change{{Key: disk, From: from, To: size}},
	}
}

// TestDiffDiskSize: a larger size= on the disk's own volume is a resize
// (PVE ignores size= in a config write); the config write carries only
// the other options, with the size PVE has.
func TestDiffDiskSize(t *testing.T) {
	const Q, L = guest.QEMU, guest.LXC
	const disk0 = "local-lvm:vm-105-disk-0,iothread=1,size=32G"
	vm := func(cfg map[string]string) []guest.Observed { return []guest.Observed{obs(105, Q, "running", cfg)} }
	want := func(cfg map[string]string) *desired.Host {
		return host(map[int]*desired.Guest{105: {Config: cfg}})
	}
	d := digestOf(105)

	tests := []struct {
		name   string
		want   *desired.Host
		actual []guest.Observed
		steps  []Step
		phase  Phase
	}{
		{
			name:   "grow is a resize",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=100G"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps:  []Step{resizeOf(105, Q, "scsi0", "100G", d, "32G")},
			phase:  Converging,
		},
		{
			name:   "shrink is a resize (held for a signature)",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=16G"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps:  []Step{resizeOf(105, Q, "scsi0", "16G", d, "32G")},
			phase:  Converging,
		},
		{
			name:   "grow and another option: the resize now, the options by the next tick",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=100G"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps:  []Step{resizeOf(105, Q, "scsi0", "100G", d, "32G")},
			phase:  Converging,
		},
		{
			name:   "the next tick: the options, with the size PVE now records",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=100G"}),
			actual: vm(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=100G"}),
			steps: []Step{cfgStep(105, Q, map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=100G"},
				Change{"scsi0", "local-lvm:vm-105-disk-0,iothread=1,size=100G", "local-lvm:vm-105-disk-0,discard=on,size=100G"})},
			phase: Converging,
		},
		{
			name:   "shrink and another option: the options are written now, without the size; the shrink is held",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=16G"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps: []Step{
				cfgStep(105, Q, map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=32G"},
					Change{"scsi0", disk0, "local-lvm:vm-105-disk-0,discard=on,size=32G"}),
				resizeOf(105, Q, "scsi0", "16G", d, "32G"),
			},
			phase: Converging,
		},
		{
			name:   "same size in other units is in sync",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=32768M"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			phase:  InSync,
		},
		{
			name: "two disks grow: only the first resize carries the digest",
			want: want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=40G",
				"virtio1": "local-lvm:vm-105-disk-1,size=2T"}),
			actual: vm(map[string]string{"scsi0": disk0, "virtio1": "local-lvm:vm-105-disk-1,size=1T"}),
			steps: []Step{
				resizeOf(105, Q, "scsi0", "40G", d, "32G"),
				resizeOf(105, Q, "virtio1", "2T", "", "1T"),
			},
			phase: Converging,
		},
		{
			name:   "config change of another key, then the resize",
			want:   want(map[string]string{"cores": "4", "scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=40G"}),
			actual: vm(map[string]string{"cores": "2", "scsi0": disk0}),
			steps: []Step{
				cfgStep(105, Q, map[string]string{"cores": "4"}, Change{"cores", "2", "4"}),
				resizeOf(105, Q, "scsi0", "40G", "", "32G"),
			},
			phase: Converging,
		},
		{
			name:   "desired without size: options only, the size PVE has is kept",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-0"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps: []Step{cfgStep(105, Q, map[string]string{"scsi0": "local-lvm:vm-105-disk-0,size=32G"},
				Change{"scsi0", disk0, "local-lvm:vm-105-disk-0"})},
			phase: Converging,
		},
		{
			name:   "another volume is a replacement, not a resize",
			want:   want(map[string]string{"scsi0": "local-lvm:vm-105-disk-7,size=100G"}),
			actual: vm(map[string]string{"scsi0": disk0}),
			steps: []Step{cfgStep(105, Q, map[string]string{"scsi0": "local-lvm:vm-105-disk-7,size=100G"},
				Change{"scsi0", disk0, "local-lvm:vm-105-disk-7,size=100G"})},
			phase: Converging,
		},
		{
			name:   "a cdrom is never resized",
			want:   want(map[string]string{"ide2": "local:iso/a.iso,media=cdrom,size=2G"}),
			actual: vm(map[string]string{"ide2": "local:iso/a.iso,media=cdrom,size=1G"}),
			steps: []Step{cfgStep(105, Q, map[string]string{"ide2": "local:iso/a.iso,media=cdrom,size=2G"},
				Change{"ide2", "local:iso/a.iso,media=cdrom,size=1G", "local:iso/a.iso,media=cdrom,size=2G"})},
			phase: Converging,
		},
		{
			name: "lxc rootfs and mount point grow",
			want: host(map[int]*desired.Guest{106: {Config: map[string]string{
				"rootfs": "local-lvm:vm-106-disk-0,size=16G", "mp0": "local-lvm:vm-106-disk-1,mp=/data,size=64G"}}}),
			actual: []guest.Observed{obs(106, L, "running", map[string]string{
				"rootfs": "local-lvm:vm-106-disk-0,size=8G", "mp0": "local-lvm:vm-106-disk-1,mp=/data,size=32G"})},
			steps: []Step{
				resizeOf(106, L, "mp0", "64G", digestOf(106), "32G"),
				resizeOf(106, L, "rootfs", "16G", "", "8G"),
			},
			phase: Converging,
		},
	}
	// A pending rootfs (an LXC rootfs change waits for a restart): its
	// pending value keeps the size PVE read when it was written.
	pendingCT := func(current, pendingVal string) []guest.Observed {
		o := obs(106, L, "running", map[string]string{"rootfs": pendingVal})
		o.Pending = []string{"rootfs"}
		o.Current = guest.Config{"rootfs": current}
		return []guest.Observed{o}
	}
	ctWant := host(map[int]*desired.Guest{106: {Config: map[string]string{"rootfs": "local-lvm:vm-106-disk-0,mountoptions=noatime,size=16G"}}})
	tests = append(tests, []struct {
		name   string
		want   *desired.Host
		actual []guest.Observed
		steps  []Step
		phase  Phase
	}{
		{
			name:   "pending disk: the resize starts from the size the guest runs with",
			want:   ctWant,
			actual: pendingCT("local-lvm:vm-106-disk-0,size=8G", "local-lvm:vm-106-disk-0,mountoptions=noatime,size=8G"),
			steps:  []Step{resizeOf(106, L, "rootfs", "16G", digestOf(106), "8G")},
			phase:  Converging,
		},
		{
			name:   "pending disk already resized: its pending value is written again, never resized twice",
			want:   ctWant,
			actual: pendingCT("local-lvm:vm-106-disk-0,size=16G", "local-lvm:vm-106-disk-0,mountoptions=noatime,size=8G"),
			steps: []Step{cfgStep(106, L, map[string]string{"rootfs": "local-lvm:vm-106-disk-0,mountoptions=noatime,size=16G"},
				Change{"rootfs", "local-lvm:vm-106-disk-0,mountoptions=noatime,size=8G", "local-lvm:vm-106-disk-0,mountoptions=noatime,size=16G"})},
			phase: Converging,
		},
	}...)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Diff(tt.want, tt.actual, Options{})
			if !reflect.DeepEqual(got.Steps, tt.steps) {
				t.Errorf("steps:\ngot  %+v\nwant %+v", got.Steps, tt.steps)
			}
			if len(got.Guests) != 1 || got.Guests[0].Phase != tt.phase {
				t.Errorf("guests: got %+v; want phase %s", got.Guests, tt.phase)
			}
		})
	}
}

// TestDiskSizeStepsClassify: the steps a size change plans are judged as
// DESIGN.md says: growing is benign, shrinking needs a signature, and the
// config write beside a grow changes only harmless options.
func TestDiskSizeStepsClassify(t *testing.T) {
	cfg := map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=32G"}
	for _, tc := range []struct {
		disk  string
		class []classify.Class
	}{
		{"local-lvm:vm-105-disk-0,iothread=1,size=100G", []classify.Class{classify.Benign}},
		{"local-lvm:vm-105-disk-0,iothread=1,size=16G", []classify.Class{classify.Destructive}},
		{"local-lvm:vm-105-disk-0,discard=on,size=100G", []classify.Class{classify.Benign}},
		{"local-lvm:vm-105-disk-0,discard=on,size=16G", []classify.Class{classify.Benign, classify.Destructive}},
	} {
		p := Diff(host(map[int]*desired.Guest{105: {Config: map[string]string{"scsi0": tc.disk}}}),
			[]guest.Observed{obs(105, guest.QEMU, "stopped", cfg)}, Options{})
		var got []classify.Class
		for _, s := range p.Steps {
			got = append(got, classify.Classify(s.Action, cfg, classify.Provenance{}).Class)
		}
		if !reflect.DeepEqual(got, tc.class) {
			t.Errorf("%s: classes %v; want %v (steps %+v)", tc.disk, got, tc.class, p.Steps)
		}
	}
}

// TestRenderDiskChanges: the plan names a resize as such, and the options
// a drive string loses because desired state omits them.
func TestRenderDiskChanges(t *testing.T) {
	p := Diff(host(map[int]*desired.Guest{
		105: {Config: map[string]string{"scsi0": "local-lvm:vm-105-disk-0,discard=on,size=100G"}},
		106: {Config: map[string]string{"scsi0": "local-lvm:vm-106-disk-0,size=32G"}},
		107: {Config: map[string]string{"scsi0": "local-lvm:vm-107-disk-0,size=16G"}},
	}), []guest.Observed{
		obs(105, guest.QEMU, "running", map[string]string{"scsi0": "local-lvm:vm-105-disk-0,iothread=1,size=32G"}),
		obs(106, guest.QEMU, "running", map[string]string{"scsi0": "local-lvm:vm-106-disk-0,iothread=1,replicate=1,size=32G"}),
		obs(107, guest.QEMU, "running", map[string]string{"scsi0": "local-lvm:vm-107-disk-0,iothread=1,size=32G"}),
	}, Options{})
	want := `~ 105 scsi0: size 32G → 100G (resize)
~ 106 scsi0: local-lvm:vm-106-disk-0,iothread=1,replicate=1,size=32G → local-lvm:vm-106-disk-0,size=32G (drops iothread=1)
~ 107 scsi0: local-lvm:vm-107-disk-0,iothread=1,size=32G → local-lvm:vm-107-disk-0,size=32G (drops iothread=1)
~ 107 scsi0: size 32G → 16G (resize)
`
	if got := p.Render(); got != want {
		t.Errorf("Render:\ngot\n%s\nwant\n%s", got, want)
	}
}

// FuzzSizeChange: splitting a drive value into options and a resize never
// panics on any input and converges: once PVE stores the config write and
// the resize has rewritten size=, the value equals the desired one.
func FuzzSizeChange(f *testing.F) {
	for _, s := range [][2]string{
		{"local-lvm:vm-1-disk-0,iothread=1,size=100G", "local-lvm:vm-1-disk-0,iothread=1,size=32G"},
		{"local-lvm:vm-1-disk-0,discard=on,size=16G", "local-lvm:vm-1-disk-0,size=32G"},
		{"file=local-lvm:vm-1-disk-0,size=40G", "local-lvm:vm-1-disk-0"},
		{"local-lvm:vm-1-disk-0,mp=/data,size=8G", "local-lvm:vm-1-disk-0,mp=/data,backup=1,size=4G"},
		{"local:iso/a.iso,media=cdrom,size=1G", "local:iso/a.iso,media=cdrom"},
		{"none,size=1G", "none"}, {"/srv,mp=/srv,size=1G", "/srv,mp=/srv"}, {",,size=", "a=b=c"},
	} {
		f.Add(false, "scsi0", s[0], s[1])
		f.Add(true, "mp0", s[0], s[1])
		f.Add(true, "rootfs", s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, lxc bool, key, desiredV, actualV string) {
		kind := guest.QEMU
		if lxc {
			kind = guest.LXC
		}
		_ = normalize.Dropped(kind, key, desiredV, actualV)
		opts, want, have, hasHave, ok := sizeChange(kind, key, desiredV, actualV)
		if !ok {
			return
		}
		if hasHave && have == want {
			t.Fatalf("sizeChange(%q, %q): a resize to the size it has", desiredV, actualV)
		}
		dk := defaultKey(kind)
		stored, err := propstr.Parse(normalize.Param(kind, key, opts, actualV), dk)
		if err != nil {
			t.Fatalf("sizeChange(%q, %q): options %q write an unparsable value: %v", desiredV, actualV, opts, err)
		}
		stored = slices.DeleteFunc(stored, func(p propstr.Prop) bool { return p.Key == "size" })
		stored = append(stored, propstr.Prop{Key: "size", Value: propstr.FormatSize(want)})
		if final := propstr.FormatWithDefault(stored, dk); !normalize.Equal(kind, key, desiredV, final) {
			t.Fatalf("sizeChange(%q, %q): after the write and the resize PVE holds %q, which is not the desired value", desiredV, actualV, final)
		}
	})
}
