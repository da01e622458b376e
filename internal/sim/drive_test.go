package sim

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// TestExplicitDefaultKeyAllocates: "file" is the default key of a QEMU
// drive and "volume" that of an LXC rootfs/mpN, so "file=local-lvm:8"
// means exactly what "local-lvm:8" means: allocate an 8 GiB volume. The
// stored config names the new volume, first and bare, as PVE's
// print_drive writes it.
func TestExplicitDefaultKeyAllocates(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	const tmpl = TemplateVztmpl

	tests := []struct {
		name   string
		method string
		path   string
		params url.Values
		vmid   int
		key    string
		want   string
	}{
		{"qemu create, bare", "POST", "/nodes/pve/qemu", url.Values{"vmid": {"200"}, "scsi0": {"local-lvm:8,iothread=1"}},
			200, "scsi0", "local-lvm:vm-200-disk-0,iothread=1,size=8G"},
		{"qemu create, file= first", "POST", "/nodes/pve/qemu", url.Values{"vmid": {"201"}, "scsi0": {"file=local-lvm:8,size=8G,iothread=1"}},
			201, "scsi0", "local-lvm:vm-201-disk-0,size=8G,iothread=1"},
		{"qemu create, file= last", "POST", "/nodes/pve/qemu", url.Values{"vmid": {"202"}, "virtio0": {"iothread=1,file=local-lvm:2"}},
			202, "virtio0", "local-lvm:vm-202-disk-0,iothread=1,size=2G"},
		{"qemu config, file=", "PUT", "/nodes/pve/qemu/101/config", url.Values{"scsi2": {"file=local-lvm:4,discard=on"}},
			101, "scsi2", "local-lvm:vm-101-disk-2,discard=on,size=4G"},
		{"qemu config, file= naming an existing volume", "PUT", "/nodes/pve/qemu/101/config", url.Values{"scsi3": {"cache=none,file=local-lvm:vm-101-disk-9,size=1G"}},
			101, "scsi3", "local-lvm:vm-101-disk-9,cache=none,size=1G"},
		{"lxc create, volume=", "POST", "/nodes/pve/lxc", url.Values{"vmid": {"203"}, "ostemplate": {tmpl}, "rootfs": {"volume=local-lvm:8"}},
			203, "rootfs", "local-lvm:vm-203-disk-0,size=8G"},
		{"lxc config, volume= mount point", "PUT", "/nodes/pve/lxc/102/config", url.Values{"mp1": {"volume=local-lvm:2,mp=/srv"}},
			102, "mp1", "local-lvm:vm-102-disk-2,mp=/srv,size=2G"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.mustOK(ts.do(tc.method, tc.path, tc.params))
			if upid, isTask := r.data().(string); isTask {
				if st := ts.waitTask(upid); st["exitstatus"] != "OK" {
					t.Fatalf("task ended %v; want OK", st["exitstatus"])
				}
			}
			g, ok := ts.s.Guest(tc.vmid)
			if !ok {
				t.Fatalf("guest %d does not exist", tc.vmid)
			}
			if got := g.Config[tc.key]; got != tc.want {
				t.Errorf("%s = %q; want %q", tc.key, got, tc.want)
			}
		})
	}
	// The allocated volume is a real volume of its size.
	r := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-201-disk-0", nil))
	if got := r.dataMap(t)["size"]; got != jsonInt(8<<30) {
		t.Errorf("volume size = %v; want %d", got, 8<<30)
	}
}

// TestSplitVolume covers the property-string split on its own.
func TestSplitVolume(t *testing.T) {
	tests := []struct {
		kind guest.Kind
		in   string
		vol  string
		opts int
	}{
		{guest.QEMU, "local-lvm:8", "local-lvm:8", 0},
		{guest.QEMU, "file=local-lvm:8,size=8G", "local-lvm:8", 1},
		{guest.QEMU, "size=8G,file=local-lvm:8,iothread=1", "local-lvm:8", 2},
		{guest.QEMU, "none,media=cdrom", "none", 1},
		{guest.QEMU, "volume=local-lvm:8", "", 1}, // not a drive key: stays an option
		{guest.LXC, "volume=local-lvm:8,mp=/srv", "local-lvm:8", 1},
		{guest.LXC, "mp=/srv,local-lvm:8", "local-lvm:8", 1},
		{guest.LXC, "/mnt/bindmounts/shared,mp=/shared", "/mnt/bindmounts/shared", 1},
	}
	for _, tc := range tests {
		vol, opts := splitVolume(tc.kind, tc.in)
		if vol != tc.vol || len(opts) != tc.opts {
			t.Errorf("splitVolume(%s, %q) = %q, %q; want %q and %d options", tc.kind, tc.in, vol, opts, tc.vol, tc.opts)
		}
	}
}

func jsonInt(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }
