package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/sim"
)

const gib = int64(1) << 30

func volumeSize(t *testing.T, h *harness, volid string) int64 {
	t.Helper()
	n, ok := h.srv.Sim.VolumeSize(volid)
	if !ok {
		t.Fatalf("the simulator has no volume %s", volid)
	}
	return n
}

func phaseOf(rep engine.Report, vmid int) string {
	for _, g := range rep.Guests {
		if g.VMID == vmid {
			return g.Phase
		}
	}
	return ""
}

// TestDiskGrowsThroughResize: a larger size= in desired state grows the
// volume through PVE's resize task, and the guest is in sync only once
// the volume really is larger; other keys are written in the same tick,
// other options of the grown drive in the next one, after the resize.
func TestDiskGrowsThroughResize(t *testing.T) {
	tests := []struct {
		name    string
		spec    sim.GuestSpec
		config  string
		vols    map[string]int64 // volume → size after convergence
		wantCfg map[string]string
		ops     []string // mutations, in order
	}{
		{
			name:    "qemu grow",
			spec:    qemuGuest(101, true, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,iothread=1,size=32G"}),
			config:  `scsi0: "local-lvm:vm-101-disk-0,iothread=1,size=100G"`,
			vols:    map[string]int64{"local-lvm:vm-101-disk-0": 100 * gib},
			wantCfg: map[string]string{"scsi0": "local-lvm:vm-101-disk-0,iothread=1,size=100G"},
			ops:     []string{"resize 101"},
		},
		{
			// cores and the resize in the first tick, the disk's options
			// (iothread dropped, discard set) in the next, after the resize.
			name: "qemu grow, drop iothread and set cores",
			// Stopped: on a running guest PVE keeps a change it cannot
			// hotplug pending until a restart.
			spec:    qemuGuest(101, false, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,iothread=1,size=32G"}),
			config:  `cores: 4, scsi0: "local-lvm:vm-101-disk-0,discard=on,size=64G"`,
			vols:    map[string]int64{"local-lvm:vm-101-disk-0": 64 * gib},
			wantCfg: map[string]string{"cores": "4", "scsi0": "local-lvm:vm-101-disk-0,discard=on,size=64G"},
			ops:     []string{"config 101", "resize 101", "config 101"},
		},
		{
			name:    "lxc rootfs and mount point grow",
			spec:    lxcGuest(102, true, map[string]string{"mp0": "local-lvm:vm-102-disk-1,mp=/data,size=4G"}),
			config:  `rootfs: "local-lvm:vm-102-disk-0,size=16G", mp0: "local-lvm:vm-102-disk-1,mp=/data,size=10G"`,
			vols:    map[string]int64{"local-lvm:vm-102-disk-0": 16 * gib, "local-lvm:vm-102-disk-1": 10 * gib},
			wantCfg: map[string]string{"rootfs": "local-lvm:vm-102-disk-0,size=16G", "mp0": "local-lvm:vm-102-disk-1,mp=/data,size=10G"},
			ops:     []string{"resize 102", "resize 102"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{}, tt.spec)
			want := mustParse(t, fleet(tt.spec.VMID, tt.spec.Kind, tt.config))
			for range 2 {
				rep := h.tick(want)
				for _, r := range rep.Results {
					if r.Err != nil || r.Skipped != "" {
						t.Fatalf("result %s: err %v skipped %q; want it run", r.Action, r.Err, r.Skipped)
					}
					if r.Action.Op == action.Resize && r.Outcome.UPID == "" {
						t.Errorf("resize %s: no task waited on", r.Action)
					}
				}
			}
			if m := h.mutations(); !slices.Equal(m, tt.ops) {
				t.Fatalf("mutations = %v; want %v", m, tt.ops)
			}
			for vol, size := range tt.vols {
				if got := volumeSize(t, h, vol); got != size {
					t.Errorf("volume %s: %d bytes; want %d", vol, got, size)
				}
			}
			g, _ := h.srv.Sim.Guest(tt.spec.VMID)
			for k, v := range tt.wantCfg {
				if g.Config[k] != v {
					t.Errorf("config %s = %q; want %q", k, g.Config[k], v)
				}
			}
			rep := h.tick(want)
			if p := phaseOf(rep, tt.spec.VMID); p != engine.PhaseInSync || len(rep.Results) != 0 {
				t.Errorf("after converging: phase %s results %+v; want in_sync and nothing to do", p, rep.Results)
			}
		})
	}
}

// TestDiskShrinkHeld: a smaller size= is a resize held for a signature;
// nothing reaches PVE and the volume keeps its size.
func TestDiskShrinkHeld(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	want := mustParse(t, fleet(101, guest.QEMU, `scsi0: "local-lvm:vm-101-disk-0,size=16G"`))
	rep := h.tick(want)
	if p := phaseOf(rep, 101); p != engine.PhasePendingSignature || len(rep.Pending) != 1 || rep.Pending[0].Action.Op != action.Resize {
		t.Fatalf("phase %s pending %+v; want one resize pending_signature", p, rep.Pending)
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("mutations = %v; want none", m)
	}
	if got := volumeSize(t, h, "local-lvm:vm-101-disk-0"); got != 32*gib {
		t.Errorf("volume: %d; want %d", got, 32*gib)
	}
}

// TestInterruptedResizeRecovered: an agent killed while PVE runs its
// resize resolves the op at restart (by the task of type "resize" its
// token started, or, when it may not look tasks up, by the size the
// config now records) and never resizes twice.
func TestInterruptedResizeRecovered(t *testing.T) {
	for _, tc := range []struct {
		name       string
		taskUser   bool
		resolution string
	}{
		{"task found by type", true, ":resize:101:"},
		{"no task lookup: judged by the config", false, "recovered: already applied (scsi0 is 40G, resize to 40G)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{TaskDuration: 20 * time.Millisecond}, qemuGuest(101, true, nil))
			want := mustParse(t, fleet(101, guest.QEMU, `scsi0: "local-lvm:vm-101-disk-0,size=40G"`))
			ctx, cancel := context.WithCancel(t.Context())
			crashAt(t, crashpoint.AfterTaskReturned, cancel)
			h.eng.Tick(ctx, want, nil)
			crashpoint.SetHook(nil)
			if !tc.taskUser {
				h.taskUser = ""
				// Let the task finish: without a task to wait on, the
				// config is all recovery can judge by.
				deadline := time.Now().Add(10 * time.Second)
				for volumeSizeOK(h, 40*gib) == false && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
			}
			h.open()
			if got := h.j.InFlight(); len(got) != 0 {
				t.Fatalf("ops left in flight after recovery: %+v", got)
			}
			b, err := os.ReadFile(filepath.Join(h.dir, "journal"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tc.resolution) {
				t.Errorf("journal has no resolution %q:\n%s", tc.resolution, b)
			}
			rep := h.tick(want)
			if p := phaseOf(rep, 101); p != engine.PhaseInSync {
				t.Errorf("after recovery: phase %s results %+v; want in_sync", p, rep.Results)
			}
			if m := h.mutations(); !slices.Equal(m, []string{"resize 101"}) {
				t.Errorf("mutations = %v; want the resize exactly once", m)
			}
			if got := volumeSize(t, h, "local-lvm:vm-101-disk-0"); got != 40*gib {
				t.Errorf("volume: %d; want %d", got, 40*gib)
			}
		})
	}
}

func volumeSizeOK(h *harness, want int64) bool {
	n, _ := h.srv.Sim.VolumeSize("local-lvm:vm-101-disk-0")
	return n == want
}

// TestPendingDiskResizedOnce: a running container's rootfs change waits
// for a restart; growing that disk resizes it once (from the size the
// container runs with) and then writes the pending value again with the
// new size, instead of resizing again every tick (which PVE refuses for a
// container: "disk is already at specified size").
func TestPendingDiskResizedOnce(t *testing.T) {
	h := newHarness(t, sim.Options{}, lxcGuest(102, true, nil))
	opts := mustParse(t, fleet(102, guest.LXC, `rootfs: "local-lvm:vm-102-disk-0,mountoptions=noatime,size=8G"`))
	if rep := h.tick(opts); phaseOf(rep, 102) != engine.PhasePendingRestart {
		t.Fatalf("after the rootfs write: phase %s results %+v; want pending_restart", phaseOf(rep, 102), rep.Results)
	}
	grown := mustParse(t, fleet(102, guest.LXC, `rootfs: "local-lvm:vm-102-disk-0,mountoptions=noatime,size=16G"`))
	for i := range 3 {
		rep := h.tick(grown)
		for _, r := range rep.Results {
			if r.Err != nil {
				t.Fatalf("tick %d: %s failed: %v", i, r.Action, r.Err)
			}
		}
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 102", "resize 102", "config 102"}) {
		t.Errorf("mutations = %v; want the write, one resize, the pending value written again", m)
	}
	if got := volumeSize(t, h, "local-lvm:vm-102-disk-0"); got != 16*gib {
		t.Errorf("volume: %d; want %d", got, 16*gib)
	}
	if rep := h.tick(grown); phaseOf(rep, 102) != engine.PhasePendingRestart || len(rep.Results) != 0 {
		t.Errorf("converged: phase %s results %+v; want pending_restart and nothing to do", phaseOf(rep, 102), rep.Results)
	}
}
