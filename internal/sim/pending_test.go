package sim

import (
	"encoding/json"
	"net/url"
	"reflect"
	"slices"
	"testing"
)

// pendingRows reads GET …/pending into key → row, checking that every row
// has only the fields PVE's schema names (key, value, pending, delete).
func (ts *testServer) pendingRows(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	rows := ts.mustOK(ts.do("GET", path+"/pending", nil)).dataList(t)
	out := map[string]map[string]any{}
	for _, r := range rows {
		row := r.(map[string]any)
		for f := range row {
			if f != "key" && f != "value" && f != "pending" && f != "delete" {
				t.Errorf("%s pending row %v has field %q; the schema has key, value, pending, delete", path, row, f)
			}
		}
		out[row["key"].(string)] = row
	}
	return out
}

func (ts *testServer) configOf(t *testing.T, path string, current bool) map[string]any {
	t.Helper()
	var q url.Values
	if current {
		q = url.Values{"current": {"1"}}
	}
	return ts.mustOK(ts.do("GET", path+"/config", q)).dataMap(t)
}

func str(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return "?"
}

// TestHotplugVersusPending: per kind and run state, which keys a config
// write applies at once and which wait in the pending section, as
// qemu-server's and pve-container's vmconfig_hotplug_pending decide.
func TestHotplugVersusPending(t *testing.T) {
	type tc struct {
		name    string
		spec    GuestSpec
		set     url.Values
		live    []string // keys whose new value is current at once
		pending []string // keys whose new value waits
		delPend []string // keys whose delete waits
	}
	withHotplug := func(g GuestSpec, v string) GuestSpec {
		g.Config = cloneMap(g.Config)
		g.Config["hotplug"] = v
		return g
	}
	cases := []tc{
		{name: "qemu running: fast-plug keys live, cores and memory pending", spec: qemuSpec(101, true),
			set:     url.Values{"name": {"web2"}, "description": {"x"}, "onboot": {"0"}, "tags": {"c"}, "cores": {"4"}, "memory": {"4096"}, "cpulimit": {"2"}},
			live:    []string{"name", "description", "onboot", "tags", "cpulimit"},
			pending: []string{"cores", "memory"}},
		{name: "qemu running: sockets, cpu type, bios, numa pending", spec: qemuSpec(101, true),
			set:     url.Values{"sockets": {"2"}, "cpu": {"host"}, "bios": {"ovmf"}, "numa": {"1"}},
			pending: []string{"sockets", "cpu", "bios", "numa"}},
		{name: "qemu running: memory and vcpus live with memory,cpu hotplug", spec: withHotplug(qemuSpec(101, true), "network,disk,usb,memory,cpu"),
			set:     url.Values{"memory": {"4096"}, "vcpus": {"2"}, "cores": {"4"}},
			live:    []string{"memory", "vcpus"},
			pending: []string{"cores"}},
		{name: "qemu running: network and scsi disk live, sata disk pending", spec: qemuSpec(101, true),
			set:     url.Values{"net0": {"virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1"}, "net1": {"virtio,bridge=vmbr0"}, "sata1": {"local-lvm:1"}},
			live:    []string{"net0", "net1"},
			pending: []string{"sata1"}},
		{name: "qemu running, hotplug 0: new NIC pending, bridge change live", spec: withHotplug(qemuSpec(101, true), "0"),
			set:     url.Values{"net0": {"virtio=BC:24:11:00:00:01,bridge=vmbr1,firewall=1"}, "net1": {"virtio=BC:24:11:00:00:09,bridge=vmbr0"}},
			live:    []string{"net0"},
			pending: []string{"net1"}},
		{name: "qemu running: deletes of fast-plug live, of cores pending", spec: qemuSpec(101, true),
			set:     url.Values{"delete": {"onboot,cores"}},
			delPend: []string{"cores"}},
		{name: "qemu stopped: everything at once", spec: qemuSpec(101, false),
			set:  url.Values{"cores": {"4"}, "memory": {"4096"}, "bios": {"ovmf"}},
			live: []string{"cores", "memory", "bios"}},
		{name: "lxc running: memory, swap, cores, cpulimit, hostname live; features pending", spec: lxcSpec(201, true),
			set:     url.Values{"memory": {"1024"}, "swap": {"0"}, "cores": {"2"}, "cpulimit": {"1"}, "hostname": {"ct2"}, "features": {"nesting=1"}},
			live:    []string{"memory", "swap", "cores", "cpulimit", "hostname"},
			pending: []string{"features"}},
		{name: "lxc running: a new mount point live, a changed one pending", spec: lxcSpec(201, true),
			set:     url.Values{"mp1": {"local-lvm:2,mp=/srv"}, "mp0": {"local-lvm:vm-201-disk-1,mp=/data2,size=4G"}},
			live:    []string{"mp1"},
			pending: []string{"mp0"}},
		{name: "lxc running: delete swap live, delete nameserver pending", spec: func() GuestSpec {
			g := lxcSpec(201, true)
			g.Config["nameserver"] = "1.1.1.1"
			return g
		}(),
			set:     url.Values{"delete": {"swap,nameserver"}},
			delPend: []string{"nameserver"}},
		{name: "lxc stopped: everything at once", spec: lxcSpec(201, false),
			set:  url.Values{"features": {"nesting=1"}, "memory": {"1024"}},
			live: []string{"features", "memory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := startSim(t, Options{})
			ts.addGuest(c.spec)
			path := "/nodes/pve/" + string(c.spec.Kind) + "/" + itoa(c.spec.VMID)
			before := ts.configOf(t, path, true)
			ts.mustOK(ts.do("PUT", path+"/config", c.set))
			cur := ts.configOf(t, path, true)
			view := ts.configOf(t, path, false)
			rows := ts.pendingRows(t, path)
			for _, k := range c.live {
				if _, has := rows[k]["pending"]; has {
					t.Errorf("%s: pending row %v; want applied live", k, rows[k])
				}
				if str(cur[k]) == str(before[k]) {
					t.Errorf("%s: current value %v unchanged; want applied live", k, cur[k])
				}
				if str(view[k]) != str(cur[k]) {
					t.Errorf("%s: config %v, current %v; want equal", k, view[k], cur[k])
				}
			}
			for _, k := range c.pending {
				if str(cur[k]) != str(before[k]) {
					t.Errorf("%s: current=1 shows %v, was %v; want the running value", k, cur[k], before[k])
				}
				if str(view[k]) == str(before[k]) {
					t.Errorf("%s: config shows %v; want the pending value", k, view[k])
				}
				if got := str(rows[k]["pending"]); got != str(view[k]) {
					t.Errorf("%s: pending row %v; want pending %v", k, rows[k], view[k])
				}
				if str(rows[k]["value"]) != str(before[k]) {
					t.Errorf("%s: pending row %v; want value %v", k, rows[k], before[k])
				}
			}
			for _, k := range c.delPend {
				if str(rows[k]["delete"]) != "1" || str(rows[k]["value"]) != str(before[k]) {
					t.Errorf("%s: pending row %v; want delete 1 with the current value", k, rows[k])
				}
				if _, has := view[k]; has {
					t.Errorf("%s: config still shows %v; want it gone from the pending view", k, view[k])
				}
				if _, has := cur[k]; !has {
					t.Errorf("%s: current=1 lost it; want it until restart", k)
				}
			}
			for k, row := range rows {
				want := slices.Contains(c.pending, k) || slices.Contains(c.delPend, k)
				_, p := row["pending"]
				_, d := row["delete"]
				if (p || d) != want {
					t.Errorf("%s: pending row %v; pending or delete expected: %v", k, row, want)
				}
			}
			if _, ok := rows["digest"]; !ok {
				t.Errorf("pending rows lack the digest row PVE lists")
			}
		})
	}
}

// A restart applies what waits: a QEMU guest on stop (and start), a
// container on start, both on reboot; revert drops it; writing the current
// value back cancels it; the digest covers the pending section.
func TestPendingLifecycle(t *testing.T) {
	t.Run("qemu reboot applies", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(qemuSpec(101, true))
		path := "/nodes/pve/qemu/101"
		d0 := ts.configOf(t, path, false)["digest"]
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"cores": {"4"}, "delete": {"agent"}}))
		g, _ := ts.s.Guest(101)
		if !reflect.DeepEqual(g.Pending, map[string]string{"cores": "4"}) || !reflect.DeepEqual(g.PendingDelete, []string{"agent"}) {
			t.Fatalf("pending %v delete %v; want cores=4 and delete agent", g.Pending, g.PendingDelete)
		}
		if d1 := ts.configOf(t, path, false)["digest"]; d1 == d0 {
			t.Errorf("digest unchanged by a pending write")
		}
		_, st := ts.runTask("POST", path+"/status/reboot", url.Values{"timeout": {"30"}})
		if st["exitstatus"] != "OK" || !slices.Contains([]string{"qmreboot"}, str(st["type"])) {
			t.Fatalf("reboot task %v; want qmreboot OK", st)
		}
		g, _ = ts.s.Guest(101)
		if g.Status != "running" || g.Config["cores"] != "4" || g.Config["agent"] != "" || len(g.Pending)+len(g.PendingDelete) != 0 {
			t.Errorf("after reboot: %s cores=%q agent=%q pending %v %v; want running, cores 4, agent gone, nothing pending",
				g.Status, g.Config["cores"], g.Config["agent"], g.Pending, g.PendingDelete)
		}
		if m := ts.s.Mutations(); m[len(m)-1].Op != "reboot" {
			t.Errorf("last mutation %+v; want reboot", m[len(m)-1])
		}
	})
	t.Run("qemu shutdown applies", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(qemuSpec(101, true))
		ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"4"}}))
		ts.runTask("POST", "/nodes/pve/qemu/101/status/shutdown", nil)
		if g, _ := ts.s.Guest(101); g.Config["cores"] != "4" || len(g.Pending) != 0 {
			t.Errorf("after shutdown: cores %q pending %v; want 4 applied on stop", g.Config["cores"], g.Pending)
		}
	})
	t.Run("lxc keeps pending while stopped, start applies", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(lxcSpec(201, true))
		path := "/nodes/pve/lxc/201"
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"features": {"nesting=1"}}))
		ts.runTask("POST", path+"/status/shutdown", nil)
		if g, _ := ts.s.Guest(201); g.Pending["features"] != "nesting=1" {
			t.Errorf("stopped CT pending %v; want features still pending", g.Pending)
		}
		ts.runTask("POST", path+"/status/start", nil)
		if g, _ := ts.s.Guest(201); g.Config["features"] != "nesting=1" || len(g.Pending) != 0 {
			t.Errorf("after start: features %q pending %v; want applied", g.Config["features"], g.Pending)
		}
	})
	t.Run("lxc reboot applies", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(lxcSpec(201, true))
		path := "/nodes/pve/lxc/201"
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"features": {"nesting=1"}}))
		_, st := ts.runTask("POST", path+"/status/reboot", nil)
		if st["type"] != "vzreboot" || st["exitstatus"] != "OK" {
			t.Fatalf("reboot task %v; want vzreboot OK", st)
		}
		if g, _ := ts.s.Guest(201); g.Status != "running" || g.Config["features"] != "nesting=1" {
			t.Errorf("after reboot: %s features %q; want running with features applied", g.Status, g.Config["features"])
		}
	})
	t.Run("reboot of a stopped guest is refused", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(qemuSpec(101, false))
		r := ts.do("POST", "/nodes/pve/qemu/101/status/reboot", nil)
		if r.status != 500 || r.reason != "VM 101 not running" {
			t.Errorf("got %d %q; want 500 VM 101 not running", r.status, r.reason)
		}
	})
	t.Run("reboot of a guest ignoring ACPI fails and leaves it pending", func(t *testing.T) {
		ts := startSim(t, Options{})
		g := qemuSpec(101, true)
		g.IgnoreShutdown = true
		ts.addGuest(g)
		ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"4"}}))
		_, st := ts.runTask("POST", "/nodes/pve/qemu/101/status/reboot", url.Values{"timeout": {"5"}})
		if st["exitstatus"] != "VM quit/powerdown failed - got timeout" {
			t.Errorf("exitstatus %v; want the shutdown timeout", st["exitstatus"])
		}
		if s, _ := ts.s.Guest(101); s.Status != "running" || s.Pending["cores"] != "4" {
			t.Errorf("after failed reboot: %s pending %v; want running, cores still pending", s.Status, s.Pending)
		}
	})
	t.Run("revert and write-back drop pending", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(qemuSpec(101, true))
		path := "/nodes/pve/qemu/101"
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"cores": {"4"}, "bios": {"ovmf"}}))
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"revert": {"bios"}}))
		ts.mustOK(ts.do("PUT", path+"/config", url.Values{"cores": {"2"}}))
		g, _ := ts.s.Guest(101)
		if len(g.Pending) != 0 {
			t.Errorf("pending %v; want none after revert and writing the current value", g.Pending)
		}
		if rows := ts.pendingRows(t, path); rows["cores"]["pending"] != nil {
			t.Errorf("cores row %v; want no pending", rows["cores"])
		}
	})
	t.Run("a pending new disk is allocated at write time", func(t *testing.T) {
		ts := startSim(t, Options{})
		ts.addGuest(qemuSpec(101, true))
		ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"sata1": {"local-lvm:1"}}))
		g, _ := ts.s.Guest(101)
		if got := g.Pending["sata1"]; got != "local-lvm:vm-101-disk-2,size=1G" {
			t.Errorf("pending sata1 %q; want the allocated volume", got)
		}
	})
}
