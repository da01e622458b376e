package sim

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCloneCTLinkedFromTemplate(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	src, _ := ts.s.Guest(TemplateCTVMID)
	upid, st := ts.runTask("POST", "/nodes/pve/lxc/9001/clone", url.Values{"newid": {"120"}, "description": {"from template"}})
	if st["exitstatus"] != "OK" || !strings.Contains(upid, ":vzclone:9001:") {
		t.Fatalf("clone: upid %s exit %v; want a vzclone task of 9001 ending OK", upid, st["exitstatus"])
	}
	g, ok := ts.s.Guest(120)
	if !ok || g.Kind != "lxc" {
		t.Fatalf("clone 120: %+v (found %v); want a container", g, ok)
	}
	c := g.Config
	for key, want := range map[string]string{
		"rootfs":   "local-lvm:vm-120-disk-0,size=8G",
		"hostname": "debian-12-ct", "description": "from template", "template": "", "lock": "",
		"unprivileged": "1", "memory": "512", "features": "nesting=1",
	} {
		if c[key] != want {
			t.Errorf("clone %s: got %q; want %q", key, c[key], want)
		}
	}
	if c["net0"] == src.Config["net0"] || !strings.HasPrefix(c["net0"], "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:") || !strings.HasSuffix(c["net0"], ",ip=dhcp,type=veth") {
		t.Errorf("clone net0 %q: want a new hwaddr, the rest kept (template %q)", c["net0"], src.Config["net0"])
	}
	if tg, _ := ts.s.Guest(TemplateCTVMID); !reflect.DeepEqual(tg.Config, src.Config) || tg.Lock != "" {
		t.Errorf("template after the clone: %v lock %q; want it unchanged and unlocked", tg.Config, tg.Lock)
	}
	muts := ts.s.Mutations()
	if len(muts) != 1 || muts[0].Op != "clone" || muts[0].VMID != TemplateCTVMID || muts[0].Params["newid"] != "120" {
		t.Errorf("mutations: %+v; want one clone of 9001 to 120", muts)
	}
	ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-120-disk-0", nil))

	// hostname, a full clone onto a storage, a pool.
	if err := ts.s.AddPool(PoolSpec{PoolID: "prod"}); err != nil {
		t.Fatal(err)
	}
	_, st = ts.runTask("POST", "/nodes/pve/lxc/9001/clone", url.Values{"newid": {"121"}, "hostname": {"ct-1"}, "full": {"1"}, "storage": {"local-lvm"}, "pool": {"prod"}})
	g, _ = ts.s.Guest(121)
	if st["exitstatus"] != "OK" || g.Config["hostname"] != "ct-1" || g.Config["rootfs"] != "local-lvm:vm-121-disk-0,size=8G" {
		t.Errorf("full clone: exit %v config %v", st["exitstatus"], g.Config)
	}
	pool := ts.mustOK(ts.do("GET", "/pools/prod", nil)).dataMap(t)
	if m, _ := json.Marshal(pool["members"]); !strings.Contains(string(m), `"lxc/121"`) {
		t.Errorf("pool prod members %v; want 121", pool["members"])
	}
	// A normal container is cloned full by default; mount points too, in
	// order, unusedN not.
	ts.addGuest(GuestSpec{VMID: 130, Kind: "lxc", Name: "db", Config: map[string]string{
		"rootfs": "local-lvm:vm-130-disk-0,size=4G", "mp0": "local-lvm:vm-130-disk-1,mp=/srv,size=10G",
		"unused0": "local-lvm:vm-130-disk-2", "unprivileged": "1"}})
	_, st = ts.runTask("POST", "/nodes/pve/lxc/130/clone", url.Values{"newid": {"131"}})
	g, _ = ts.s.Guest(131)
	if st["exitstatus"] != "OK" || g.Config["rootfs"] != "local-lvm:vm-131-disk-0,size=4G" || g.Config["mp0"] != "local-lvm:vm-131-disk-1,mp=/srv,size=10G" ||
		g.Config["unused0"] != "" || g.Config["hostname"] != "db" {
		t.Errorf("full clone of 130: exit %v config %v", st["exitstatus"], g.Config)
	}
}

// TestCloneCTLocksSource: the source is locked (disk) from the call to the
// end of the task, so another clone of it is refused meanwhile; the new
// container exists with lock create; a stopped task frees both.
func TestCloneCTLocksSource(t *testing.T) {
	ts := startSim(t, Options{Templates: true, CloneDuration: time.Hour})
	upid := ts.mustOK(ts.do("POST", "/nodes/pve/lxc/9001/clone", url.Values{"newid": {"120"}})).data().(string)
	if g, ok := ts.s.Guest(120); !ok || g.Lock != "create" {
		t.Fatalf("during clone: guest 120 %+v (found %v); want lock create", g, ok)
	}
	if g, _ := ts.s.Guest(TemplateCTVMID); g.Lock != "disk" {
		t.Fatalf("during clone: template lock %q; want disk", g.Lock)
	}
	if r := ts.do("POST", "/nodes/pve/lxc/9001/clone", url.Values{"newid": {"121"}}); r.status != 500 || r.reason != "CT is locked (disk)" {
		t.Errorf("second clone while the first runs: got %d %q; want 500 CT is locked (disk)", r.status, r.reason)
	}
	if _, ok := ts.s.Guest(121); ok {
		t.Error("the refused clone left guest 121")
	}
	ts.mustOK(ts.do("DELETE", "/nodes/pve/tasks/"+upid, nil))
	st := ts.waitTask(upid)
	if _, ok := ts.s.Guest(120); st["exitstatus"] == "OK" || ok {
		t.Errorf("stopped clone: exit %v, guest 120 still there %v", st["exitstatus"], ok)
	}
	if g, _ := ts.s.Guest(TemplateCTVMID); g.Lock != "" {
		t.Errorf("after the stopped clone: template lock %q; want none", g.Lock)
	}
}

func TestCloneCTRefusals(t *testing.T) {
	ts := startSim(t, Options{Templates: true, Nodes: []string{"pve", "pve-b"}})
	ts.addGuest(GuestSpec{VMID: 101, Kind: "lxc", Config: map[string]string{"rootfs": "local-lvm:vm-101-disk-0,size=8G"}})
	ts.addGuest(GuestSpec{VMID: 102, Kind: "lxc", Lock: "backup", Config: map[string]string{"rootfs": "local-lvm:vm-102-disk-0,size=8G"}})
	ts.addGuest(GuestSpec{VMID: 103, Kind: "lxc", Config: map[string]string{"rootfs": "local-lvm:vm-103-disk-0,size=8G", "mp0": "/mnt/shared,mp=/shared"}})
	ts.addGuest(GuestSpec{VMID: 104, Kind: "lxc", Running: true, Config: map[string]string{"rootfs": "local-lvm:vm-104-disk-0,size=8G"}})
	ts.addGuest(GuestSpec{VMID: 105, Kind: "qemu", Config: map[string]string{"scsi0": "local-lvm:vm-105-disk-0,size=8G"}})
	for _, tc := range []struct {
		name, vmid string
		params     url.Values
		status     int
		want       string
	}{
		{"newid a container", "9001", url.Values{"newid": {"101"}}, 500, "CT 101 already exists on node 'pve'"},
		{"newid a VM", "9001", url.Values{"newid": {"105"}}, 500, "VM 105 already exists on node 'pve'"},
		{"linked from a normal CT", "101", url.Values{"newid": {"140"}, "full": {"0"}}, 500, "Linked clone feature for 'local-lvm:vm-101-disk-0' is not available"},
		{"storage on linked", "9001", url.Values{"newid": {"140"}, "storage": {"local-lvm"}}, 500, "parameter 'storage' not allowed for linked clones"},
		{"storage that does not exist", "9001", url.Values{"newid": {"140"}, "full": {"1"}, "storage": {"nope"}}, 500, "storage 'nope' does not exist"},
		{"locked source", "102", url.Values{"newid": {"140"}}, 500, "CT is locked (backup)"},
		{"bind mount", "103", url.Values{"newid": {"140"}}, 500, "unable to clone mountpoint 'mp0' (type bind)"},
		{"full clone of a running CT", "104", url.Values{"newid": {"140"}}, 500, "Cannot do full clones on a running container without snapshots"},
		{"unknown snapshot", "101", url.Values{"newid": {"140"}, "snapname": {"nope"}}, 500, "snapshot 'nope' does not exist"},
		{"no such node", "9001", url.Values{"newid": {"140"}, "target": {"pve-z"}}, 500, "no such cluster node 'pve-z'"},
		{"local storage to another node", "9001", url.Values{"newid": {"140"}, "target": {"pve-b"}}, 500, "can't clone CT to node 'pve-b' (CT uses local storage)"},
		{"a VM through the container call", "105", url.Values{"newid": {"140"}}, 500, "Configuration file 'nodes/pve/lxc/105.conf' does not exist"},
		{"missing pool", "9001", url.Values{"newid": {"140"}, "pool": {"nope"}}, 403, "Permission check failed (pool 'nope' does not exist)"},
		{"hostname not a dns name", "9001", url.Values{"newid": {"140"}, "hostname": {"web_1"}}, 400, ""},
	} {
		r := ts.do("POST", "/nodes/pve/lxc/"+tc.vmid+"/clone", tc.params)
		if r.status != tc.status || (tc.want != "" && r.reason != tc.want) {
			t.Errorf("%s: got %d %q; want %d %q", tc.name, r.status, r.reason, tc.status, tc.want)
		}
	}
	if _, ok := ts.s.Guest(140); ok {
		t.Error("a refused clone left guest 140")
	}
	for _, id := range []int{TemplateCTVMID, 101, 103, 104} {
		if g, _ := ts.s.Guest(id); g.Lock != "" {
			t.Errorf("a refused clone left source %d locked %q", id, g.Lock)
		}
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("refused clones executed %d mutations", n)
	}
}

// TestCloneHoldsSourceLock: a QEMU clone holds its source's config file
// lock for its whole task, shared for a template (other clones of it run
// at once, a config write to it waits and times out), exclusive for a
// running VM (a second clone of it fails on the lock).
func TestCloneHoldsSourceLock(t *testing.T) {
	ts := startSim(t, Options{Templates: true, CloneDuration: time.Hour, LockTimeout: 200 * time.Millisecond})
	ts.addGuest(GuestSpec{VMID: 101, Kind: "qemu", Running: true, Config: map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=8G"}})
	var upids []string
	for _, id := range []string{"120", "121"} {
		upids = append(upids, ts.mustOK(ts.do("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {id}})).data().(string))
	}
	// A config write to the template waits for the lock (LockTimeout)
	// and fails; by then a clone that could not share the lock would
	// have failed too (it waits a tenth of that).
	if r := ts.do("PUT", "/nodes/pve/qemu/9000/config", url.Values{"description": {"x"}}); r.status != 500 || r.reason != "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout" {
		t.Errorf("config write to the template during its clones: got %d %q; want the lock timeout", r.status, r.reason)
	}
	for _, u := range upids {
		if st := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+u+"/status", nil)).dataMap(t); st["status"] != "running" {
			t.Errorf("clone %s: %v; want both clones of the template running", u, st)
		}
	}
	// Two clones of a running VM: one holds the lock, the other fails.
	a := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/clone", url.Values{"newid": {"130"}})).data().(string)
	b := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/clone", url.Values{"newid": {"131"}})).data().(string)
	var failed, first string
	for give := time.Now().Add(time.Minute); failed == ""; {
		if time.Now().After(give) {
			t.Fatal("neither clone of the running VM failed on the lock in a minute (the source is not locked exclusively)")
		}
		for _, u := range []string{a, b} {
			if st := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+u+"/status", nil)).dataMap(t); st["status"] == "stopped" {
				if failed != "" || st["exitstatus"] != "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout" {
					t.Fatalf("clone %s of a running VM stopped: %v; want exactly one to fail on the lock", u, st)
				}
				failed = u
			}
		}
	}
	first, gone := a, 131
	if failed == a {
		first, gone = b, 130
	}
	if _, ok := ts.s.Guest(gone); ok {
		t.Errorf("the clone that could not lock its source left guest %d", gone)
	}
	for _, u := range append(upids, first) {
		ts.mustOK(ts.do("DELETE", "/nodes/pve/tasks/"+u, nil))
		ts.waitTask(u)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/9000/config", url.Values{"description": {"x"}}))
}

// A full container clone copies a volume at its real size (copy_volume
// reads it from the storage), not the size= the source's config claims.
func TestCloneCTFullCopiesRealSize(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.addGuest(GuestSpec{VMID: 130, Kind: "lxc", Config: map[string]string{"rootfs": "local-lvm:vm-130-disk-0,size=4G"}})
	if _, st := ts.runTask("PUT", "/nodes/pve/lxc/130/resize", url.Values{"disk": {"rootfs"}, "size": {"6G"}}); st["exitstatus"] != "OK" {
		t.Fatalf("resize: %v", st)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/lxc/130/config", url.Values{"rootfs": {"local-lvm:vm-130-disk-0,size=4G"}}))
	if g, _ := ts.s.Guest(130); g.Config["rootfs"] != "local-lvm:vm-130-disk-0,size=4G" {
		t.Fatalf("source rootfs %q; want its config claiming 4G", g.Config["rootfs"])
	}
	_, st := ts.runTask("POST", "/nodes/pve/lxc/130/clone", url.Values{"newid": {"131"}})
	if g, _ := ts.s.Guest(131); st["exitstatus"] != "OK" || g.Config["rootfs"] != "local-lvm:vm-131-disk-0,size=6G" {
		t.Errorf("full clone: exit %v rootfs %q; want the real 6G", st["exitstatus"], g.Config["rootfs"])
	}
}
