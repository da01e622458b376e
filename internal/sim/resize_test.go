package sim

import (
	"encoding/json"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

const gib = int64(1) << 30

func (ts *testServer) volumeSize(volid string) int64 {
	ts.t.Helper()
	n, ok := ts.s.VolumeSize(volid)
	if !ok {
		ts.t.Fatalf("VolumeSize(%s): unknown volume", volid)
	}
	return n
}

// TestConfigWriteDoesNotResize: a config write never grows a volume; what
// PVE stores for the drive then depends on the kind and key.
func TestConfigWriteDoesNotResize(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))

	tests := []struct {
		name, path, key, value string
		vol                    string
		wantStored             string
		wantSize               int64
	}{
		// qemu-server create_disks stores the volume's real size.
		{"qemu larger size", "/nodes/pve/qemu/101/config", "scsi0", "local-lvm:vm-101-disk-0,iothread=1,size=100G",
			"local-lvm:vm-101-disk-0", "local-lvm:vm-101-disk-0,iothread=1,size=32G", 32 * gib},
		{"qemu without size", "/nodes/pve/qemu/101/config", "scsi1", "local-lvm:vm-101-disk-1,discard=on",
			"local-lvm:vm-101-disk-1", "local-lvm:vm-101-disk-1,discard=on,size=10G", 10 * gib},
		// pve-container rescans a mount point's size.
		{"lxc mp larger size", "/nodes/pve/lxc/102/config", "mp0", "local-lvm:vm-102-disk-1,mp=/data,backup=1,size=40G",
			"local-lvm:vm-102-disk-1", "local-lvm:vm-102-disk-1,mp=/data,backup=1,size=4G", 4 * gib},
		// ... but stores rootfs as written: the config then claims 40G.
		{"lxc rootfs larger size", "/nodes/pve/lxc/102/config", "rootfs", "local-lvm:vm-102-disk-0,size=40G",
			"local-lvm:vm-102-disk-0", "local-lvm:vm-102-disk-0,size=40G", 8 * gib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts.mustOK(ts.do("PUT", tc.path, url.Values{tc.key: {tc.value}}))
			g, _ := ts.s.Guest(vmidOf(tc.path))
			if got := g.Config[tc.key]; got != tc.wantStored {
				t.Errorf("stored %s: got %q; want %q", tc.key, got, tc.wantStored)
			}
			if got := ts.volumeSize(tc.vol); got != tc.wantSize {
				t.Errorf("volume %s: got %d bytes; want %d (a config write never resizes)", tc.vol, got, tc.wantSize)
			}
		})
	}

	// The storage reports the real size too.
	info := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-102-disk-0", nil)).dataMap(t)
	if info["size"] != json.Number(strconv.FormatInt(8*gib, 10)) {
		t.Errorf("storage content size of the rootfs: got %v; want %d", info["size"], 8*gib)
	}

	// The real size, not the config's claim, decides what resize does: the
	// rootfs is 8G although its config says 40G, so 10G grows it.
	if _, st := ts.runTask("PUT", "/nodes/pve/lxc/102/resize", url.Values{"disk": {"rootfs"}, "size": {"10G"}}); st["exitstatus"] != "OK" {
		t.Fatalf("resize rootfs to 10G: exit %v; want OK", st["exitstatus"])
	}
	g, _ := ts.s.Guest(102)
	if got, want := g.Config["rootfs"], "local-lvm:vm-102-disk-0,size=10G"; got != want {
		t.Errorf("rootfs after resize: got %q; want %q", got, want)
	}
	if got := ts.volumeSize("local-lvm:vm-102-disk-0"); got != 10*gib {
		t.Errorf("rootfs volume after resize: got %d; want %d", got, 10*gib)
	}
}

func vmidOf(path string) int {
	f := strings.Split(path, "/")
	n, _ := strconv.Atoi(f[4])
	return n
}

// TestResizeGrows: resize grows the volume and rewrites the drive's size=,
// keeping its other options; sizes are absolute or +relative.
func TestResizeGrows(t *testing.T) {
	ts := startSim(t, Options{})
	spec := qemuSpec(101, true)
	spec.Config["scsi0"] = "local-lvm:vm-101-disk-0,iothread=1,size=32G"
	ts.addGuest(spec)
	ts.addGuest(lxcSpec(102, true))

	steps := []struct {
		path, disk, size, vol, wantVal string
		want                           int64
	}{
		{"/nodes/pve/qemu/101/resize", "scsi0", "100G", "local-lvm:vm-101-disk-0", "local-lvm:vm-101-disk-0,iothread=1,size=100G", 100 * gib},
		{"/nodes/pve/qemu/101/resize", "scsi0", "+512M", "local-lvm:vm-101-disk-0", "local-lvm:vm-101-disk-0,iothread=1,size=102912M", 100*gib + 512<<20},
		// QEMU: the current size again is a task that changes nothing.
		{"/nodes/pve/qemu/101/resize", "scsi0", "102912M", "local-lvm:vm-101-disk-0", "local-lvm:vm-101-disk-0,iothread=1,size=102912M", 100*gib + 512<<20},
		{"/nodes/pve/lxc/102/resize", "mp0", "16G", "local-lvm:vm-102-disk-1", "local-lvm:vm-102-disk-1,mp=/data,size=16G", 16 * gib},
	}
	for _, st := range steps {
		upid, status := ts.runTask("PUT", st.path, url.Values{"disk": {st.disk}, "size": {st.size}})
		if status["exitstatus"] != "OK" || !strings.Contains(upid, ":resize:") {
			t.Fatalf("%s %s=%s: upid %s exit %v; want a resize task ending OK", st.path, st.disk, st.size, upid, status["exitstatus"])
		}
		g, _ := ts.s.Guest(vmidOf(st.path))
		if got := g.Config[st.disk]; got != st.wantVal {
			t.Errorf("%s after %s: got %q; want %q", st.disk, st.size, got, st.wantVal)
		}
		if got := ts.volumeSize(st.vol); got != st.want {
			t.Errorf("volume %s after %s: got %d; want %d", st.vol, st.size, got, st.want)
		}
	}
}

// TestResizeRefusals: PVE's refusals, per kind: QEMU fails the task, LXC
// answers the request; nothing changes either way.
func TestResizeRefusals(t *testing.T) {
	ts := startSim(t, Options{})
	q := qemuSpec(101, false)
	q.Config["ide2"] = "local:iso/debian-12.iso,media=cdrom"
	q.Config["ide0"] = "none,media=cdrom"
	ts.addGuest(q)
	ts.addGuest(lxcSpec(102, false))
	locked := qemuSpec(103, false)
	locked.Lock = "backup"
	ts.addGuest(locked)
	lockedCT := lxcSpec(104, false)
	lockedCT.Lock = "backup"
	ts.addGuest(lockedCT)

	tests := []struct {
		name, path, disk, size, digest string
		wantTask                       string // QEMU: the task's exit status
		wantStatus                     int    // LXC: the HTTP answer
		wantReason                     string
		wantErrors                     []string
	}{
		{name: "qemu shrink", path: "/nodes/pve/qemu/101/resize", disk: "scsi0", size: "16G", wantTask: "shrinking disks is not supported"},
		{name: "qemu unknown disk", path: "/nodes/pve/qemu/101/resize", disk: "scsi5", size: "+1G", wantTask: "disk 'scsi5' does not exist"},
		{name: "qemu cdrom", path: "/nodes/pve/qemu/101/resize", disk: "ide2", size: "+1G", wantTask: "you can't resize a cdrom"},
		{name: "qemu empty cdrom", path: "/nodes/pve/qemu/101/resize", disk: "ide0", size: "+1G", wantTask: "unable to parse volume ID 'none'"},
		{name: "qemu stale digest", path: "/nodes/pve/qemu/101/resize", disk: "scsi0", size: "+1G", digest: strings.Repeat("0", 40), wantTask: "checksum mismatch (file change by other user?)"},
		{name: "qemu locked", path: "/nodes/pve/qemu/103/resize", disk: "scsi0", size: "+1G", wantTask: "VM is locked (backup)"},
		{name: "lxc shrink", path: "/nodes/pve/lxc/102/resize", disk: "rootfs", size: "4G", wantStatus: 500, wantReason: "unable to shrink disk size"},
		{name: "lxc same size", path: "/nodes/pve/lxc/102/resize", disk: "rootfs", size: "8192M", wantStatus: 500, wantReason: "disk is already at specified size"},
		{name: "lxc unknown mount point", path: "/nodes/pve/lxc/102/resize", disk: "mp3", size: "+1G", wantStatus: 500, wantReason: "format error", wantErrors: []string{"mp", "volume"}},
		{name: "lxc stale digest", path: "/nodes/pve/lxc/102/resize", disk: "rootfs", size: "+1G", digest: strings.Repeat("0", 40), wantStatus: 500, wantReason: "detected modified configuration - file changed by other user? Try again."},
		{name: "lxc locked", path: "/nodes/pve/lxc/104/resize", disk: "rootfs", size: "+1G", wantStatus: 500, wantReason: "CT is locked (backup)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := ts.s.Guest(vmidOf(tc.path))
			p := url.Values{"disk": {tc.disk}, "size": {tc.size}}
			if tc.digest != "" {
				p.Set("digest", tc.digest)
			}
			if tc.wantTask != "" {
				_, st := ts.runTask("PUT", tc.path, p)
				if st["exitstatus"] != tc.wantTask {
					t.Errorf("task exit: got %v; want %q", st["exitstatus"], tc.wantTask)
				}
			} else {
				r := ts.do("PUT", tc.path, p)
				if r.status != tc.wantStatus || r.reason != tc.wantReason {
					t.Errorf("got %d %q; want %d %q", r.status, r.reason, tc.wantStatus, tc.wantReason)
				}
				for _, k := range tc.wantErrors {
					errs, _ := r.body["errors"].(map[string]any)
					if _, ok := errs[k]; !ok {
						t.Errorf("errors: got %v; want an entry for %q", r.body["errors"], k)
					}
				}
			}
			after, _ := ts.s.Guest(vmidOf(tc.path))
			if after.Digest != before.Digest {
				t.Errorf("config changed by a refused resize: %v → %v", before.Config, after.Config)
			}
		})
	}
	if got := ts.volumeSize("local-lvm:vm-101-disk-0"); got != 32*gib {
		t.Errorf("qemu volume after refusals: got %d; want %d", got, 32*gib)
	}
	if got := ts.volumeSize("local-lvm:vm-102-disk-0"); got != 8*gib {
		t.Errorf("lxc volume after refusals: got %d; want %d", got, 8*gib)
	}
}

// TestRollbackRestoresVolumeSize: rolling back to a snapshot taken before a
// resize returns the volume to the size the snapshot recorded (as an
// LVM-thin rollback does), so config and volume agree again.
func TestRollbackRestoresVolumeSize(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	if _, st := ts.runTask("POST", "/nodes/pve/qemu/101/snapshot", url.Values{"snapname": {"before"}}); st["exitstatus"] != "OK" {
		t.Fatalf("snapshot: %v", st["exitstatus"])
	}
	if _, st := ts.runTask("PUT", "/nodes/pve/qemu/101/resize", url.Values{"disk": {"scsi0"}, "size": {"40G"}}); st["exitstatus"] != "OK" {
		t.Fatalf("resize: %v", st["exitstatus"])
	}
	if got := ts.volumeSize("local-lvm:vm-101-disk-0"); got != 40*gib {
		t.Fatalf("after resize: %d; want %d", got, 40*gib)
	}
	if _, st := ts.runTask("POST", "/nodes/pve/qemu/101/snapshot/before/rollback", url.Values{}); st["exitstatus"] != "OK" {
		t.Fatalf("rollback: %v", st["exitstatus"])
	}
	g, _ := ts.s.Guest(101)
	if got := ts.volumeSize("local-lvm:vm-101-disk-0"); got != 32*gib || g.Config["scsi0"] != "local-lvm:vm-101-disk-0,size=32G" {
		t.Errorf("after rollback: volume %d, scsi0 %q; want 32G both", got, g.Config["scsi0"])
	}
}
