package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

func startCluster(t *testing.T) *testServer {
	t.Helper()
	return startSim(t, Options{Nodes: []string{"pve-a", "pve-b", "pve-c"}, ClusterName: "lab"})
}

// waitTaskOn polls a task on the node its UPID names until it stops.
func (ts *testServer) waitTaskOn(upid string) map[string]any {
	ts.t.Helper()
	u, err := pve.ParseUPID(upid)
	if err != nil {
		ts.t.Fatalf("%q: %v", upid, err)
	}
	for i := 0; i < 2000; i++ {
		st := ts.mustOK(ts.do("GET", "/nodes/"+u.Node+"/tasks/"+upid+"/status", nil)).dataMap(ts.t)
		if st["status"] == "stopped" {
			return st
		}
		time.Sleep(2 * time.Millisecond)
	}
	ts.t.Fatalf("task %s did not stop", upid)
	return nil
}

func (ts *testServer) migrate(node string, k guest.Kind, vmid int, params url.Values) (string, map[string]any) {
	ts.t.Helper()
	r := ts.mustOK(ts.do("POST", "/nodes/"+node+"/"+string(k)+"/"+itoa(vmid)+"/migrate", params))
	upid := r.data().(string)
	return upid, ts.waitTaskOn(upid)
}

// schemaProps is the property names the schema lists for the items (or
// the object) GET path returns.
func schemaProps(t *testing.T, path string) map[string]bool {
	t.Helper()
	raw, err := os.ReadFile("../pveschema/apidata.json")
	if err != nil {
		t.Fatal(err)
	}
	var tree []map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	ret := findNode(tree, path)["info"].(map[string]any)["GET"].(map[string]any)["returns"].(map[string]any)
	if it, ok := ret["items"].(map[string]any); ok {
		ret = it
	}
	out := map[string]bool{}
	for k := range ret["properties"].(map[string]any) {
		out[k] = true
	}
	return out
}

func resourceRow(t *testing.T, ts *testServer, id string) map[string]any {
	t.Helper()
	for _, e := range ts.mustOK(ts.do("GET", "/cluster/resources", nil)).dataList(t) {
		if m := e.(map[string]any); m["id"] == id {
			return m
		}
	}
	return nil
}

func TestClusterStatusNodesResources(t *testing.T) {
	ts := startCluster(t)
	ts.addGuest(GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Node: "pve-a", Running: true, Config: qemuSpec(101, true).Config})
	ts.addGuest(GuestSpec{VMID: 201, Kind: guest.LXC, Name: "db", Node: "pve-b", Config: lxcSpec(201, false).Config})

	st := ts.mustOK(ts.do("GET", "/cluster/status", nil)).dataList(t)
	if len(st) != 4 {
		t.Fatalf("cluster status has %d rows; want the cluster row and 3 node rows: %v", len(st), st)
	}
	fx := loadFixture(t, "gp-pve7-cluster-status.json").([]any)
	props := schemaProps(t, "/cluster/status")
	cl := st[0].(map[string]any)
	sameShape(t, "cluster row", cl, fx[0].(map[string]any), nil)
	if cl["type"] != "cluster" || cl["name"] != "lab" || cl["quorate"] != json.Number("1") || cl["nodes"] != json.Number("3") {
		t.Errorf("cluster row %v; want type cluster, name lab, quorate 1, nodes 3", cl)
	}
	locals := 0
	for i, e := range st {
		m := e.(map[string]any)
		for k := range m {
			if !props[k] {
				t.Errorf("cluster status row %d: key %q is not in the schema", i, k)
			}
		}
		if i == 0 {
			continue
		}
		sameShape(t, "node row", m, fx[1].(map[string]any), nil)
		if m["local"] == json.Number("1") {
			locals++
			if m["name"] != "pve-a" {
				t.Errorf("local node %v; want pve-a (Options.Node defaults to the first node)", m["name"])
			}
		}
	}
	if locals != 1 {
		t.Errorf("%d local node rows; want 1", locals)
	}

	nodes := ts.mustOK(ts.do("GET", "/nodes", nil)).dataList(t)
	if len(nodes) != 3 {
		t.Errorf("GET /nodes lists %d nodes; want 3", len(nodes))
	}

	resProps := schemaProps(t, "/cluster/resources")
	nodeRows, storageRows := 0, 0
	for _, e := range ts.mustOK(ts.do("GET", "/cluster/resources", nil)).dataList(t) {
		m := e.(map[string]any)
		for k := range m {
			if !resProps[k] {
				t.Errorf("resource %v: key %q is not in the schema", m["id"], k)
			}
		}
		switch m["type"] {
		case "node":
			nodeRows++
		case "storage":
			storageRows++
		}
	}
	if nodeRows != 3 || storageRows != 3*len(storages) {
		t.Errorf("resources: %d node rows, %d storage rows; want 3 and %d", nodeRows, storageRows, 3*len(storages))
	}
	if r := resourceRow(t, ts, "qemu/101"); r == nil || r["node"] != "pve-a" {
		t.Errorf("qemu/101 row %v; want node pve-a", r)
	}
	if r := resourceRow(t, ts, "lxc/201"); r == nil || r["node"] != "pve-b" {
		t.Errorf("lxc/201 row %v; want node pve-b", r)
	}
}

// TestGuestOnAnotherNode: a node's guest endpoints see only its own
// guests; the answer for a guest on another node is PVE's "does not exist"
// naming the asked node's directory; the vmid space is shared.
func TestGuestOnAnotherNode(t *testing.T) {
	ts := startCluster(t)
	ts.addGuest(GuestSpec{VMID: 101, Kind: guest.QEMU, Node: "pve-a", Config: qemuSpec(101, false).Config})
	r := ts.do("GET", "/nodes/pve-b/qemu/101/config", nil)
	if r.status != 500 || r.reason != "Configuration file 'nodes/pve-b/qemu-server/101.conf' does not exist" {
		t.Errorf("config of a guest on pve-a asked on pve-b: %d %q; want 500 does not exist", r.status, r.reason)
	}
	if l := ts.mustOK(ts.do("GET", "/nodes/pve-b/qemu", nil)).dataList(t); len(l) != 0 {
		t.Errorf("pve-b lists %v; want no guests", l)
	}
	if l := ts.mustOK(ts.do("GET", "/nodes/pve-a/qemu", nil)).dataList(t); len(l) != 1 {
		t.Errorf("pve-a lists %v; want guest 101", l)
	}
	r = ts.do("POST", "/nodes/pve-b/lxc", url.Values{"vmid": {"101"}, "ostemplate": {"-"}, "rootfs": {"local-lvm:1"}})
	if r.status != 500 || !strings.Contains(r.reason, "already exists on node 'pve-a'") {
		t.Errorf("create over a vmid on another node: %d %q; want 500 naming pve-a", r.status, r.reason)
	}
	r = ts.do("GET", "/nodes/pve-z/qemu", nil)
	if r.status != 500 || !strings.Contains(r.reason, "hostname lookup 'pve-z' failed") {
		t.Errorf("unknown node: %d %q", r.status, r.reason)
	}
	if l := ts.mustOK(ts.do("GET", "/cluster/nextid", nil)).data(); l != "100" {
		t.Errorf("nextid %v; want 100", l)
	}
	if r := ts.do("GET", "/cluster/nextid", url.Values{"vmid": {"101"}}); r.status != 400 {
		t.Errorf("nextid of a vmid on another node: %d; want 400", r.status)
	}
}

func TestMigrateStoppedVM(t *testing.T) {
	ts := startCluster(t)
	ts.s.opts.TaskDuration = 100 * time.Millisecond
	ts.addGuest(GuestSpec{VMID: 101, Kind: guest.QEMU, Node: "pve-a", Config: qemuSpec(101, false).Config})
	before, _ := ts.s.Guest(101)
	r := ts.mustOK(ts.do("POST", "/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-b"}}))
	upid := r.data().(string)
	u, _ := pve.ParseUPID(upid)
	if u.Node != "pve-a" || u.Type != "qmigrate" || u.ID != "101" {
		t.Errorf("UPID %+v; want a qmigrate of 101 on pve-a", u)
	}
	// While the task runs the guest is locked "migrate" on its node.
	for i := 0; ; i++ {
		if g, _ := ts.s.Guest(101); g.Lock == "migrate" {
			break
		}
		if i > 1000 {
			t.Fatal("the guest never showed lock migrate")
		}
		time.Sleep(time.Millisecond)
	}
	if row := resourceRow(t, ts, "qemu/101"); row["lock"] != "migrate" {
		t.Errorf("resources row during migration: lock %v; want migrate", row["lock"])
	}
	st := ts.waitTaskOn(upid)
	if st["exitstatus"] != "OK" {
		t.Fatalf("migration: %v", st)
	}
	g, _ := ts.s.Guest(101)
	if g.Node != "pve-b" || g.Lock != "" || g.Status != "stopped" || g.Config["scsi0"] != before.Config["scsi0"] {
		t.Errorf("after migration: node %s lock %q status %s scsi0 %q; want pve-b, no lock, stopped, disks kept", g.Node, g.Lock, g.Status, g.Config["scsi0"])
	}
	ts.mustOK(ts.do("GET", "/nodes/pve-b/qemu/101/config", nil))
	if r := ts.do("GET", "/nodes/pve-a/qemu/101/config", nil); r.status != 500 {
		t.Errorf("config on the source after migration: %d; want 500", r.status)
	}
	if row := resourceRow(t, ts, "qemu/101"); row["node"] != "pve-b" {
		t.Errorf("resources after migration: node %v; want pve-b", row["node"])
	}
	// The task lives on the node that ran it.
	if r := ts.do("GET", "/nodes/pve-b/tasks/"+upid+"/status", nil); r.status != 400 || r.body["errors"].(map[string]any)["upid"] != "no such task" {
		t.Errorf("task status on another node: %d %v; want 400 no such task", r.status, r.body)
	}
	muts := ts.s.Mutations()
	if m := muts[len(muts)-1]; m.Op != "migrate" || m.VMID != 101 || m.Params["target"] != "pve-b" {
		t.Errorf("mutation %+v; want migrate of 101 to pve-b", m)
	}
}

func TestMigrateRules(t *testing.T) {
	ts := startCluster(t)
	vm := func(vmid int, running bool, extra map[string]string) {
		c := qemuSpec(vmid, running).Config
		for k, v := range extra {
			c[k] = v
		}
		ts.addGuest(GuestSpec{VMID: vmid, Kind: guest.QEMU, Node: "pve-a", Running: running, Config: c})
	}
	vm(101, true, nil)
	vm(102, false, map[string]string{"hostpci0": "0000:01:00.0"})
	vm(103, false, nil)
	vm(104, false, map[string]string{"ide2": "cdrom,media=cdrom"})
	vm(105, false, map[string]string{"ide2": "local:iso/debian.iso,media=cdrom"})
	vm(106, false, map[string]string{"sata0": "/dev/sde"})
	ts.addGuest(GuestSpec{VMID: 201, Kind: guest.LXC, Node: "pve-a", Running: true, Config: lxcSpec(201, true).Config})
	ts.addGuest(GuestSpec{VMID: 202, Kind: guest.LXC, Node: "pve-a", Config: map[string]string{
		"rootfs": "local-lvm:vm-202-disk-0,size=8G", "mp0": "/srv/data,mp=/data", "ostype": "debian", "arch": "amd64"}})
	if err := ts.s.SetLock(103, "backup"); err != nil {
		t.Fatal(err)
	}

	t.Run("refused at once", func(t *testing.T) {
		for _, tc := range []struct {
			path   string
			params url.Values
			status int
			reason string
			errKey string
		}{
			{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-a"}}, 400, "Parameter verification failed.", "target"},
			{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-z"}}, 500, "no such cluster node 'pve-z'", ""},
			{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-b"}}, 500, "can't migrate running VM without --online", ""},
			{"/nodes/pve-b/qemu/101/migrate", url.Values{"target": {"pve-c"}}, 500, "Configuration file 'nodes/pve-b/qemu-server/101.conf' does not exist", ""},
			{"/nodes/pve-a/qemu/103/migrate", url.Values{"target": {"pve-b"}}, 500, "VM is locked (backup)", ""},
			{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-b"}, "online": {"1"}, "force": {"1"}}, 400, "Parameter verification failed.", "force"},
			{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-b"}, "online": {"1"}, "targetstorage": {"nosuch"}}, 400, "Parameter verification failed.", "targetstorage"},
			{"/nodes/pve-a/lxc/201/migrate", url.Values{"target": {"pve-b"}}, 500, "can't migrate running container without --online or --restart", ""},
		} {
			r := ts.do("POST", tc.path, tc.params)
			if r.status != tc.status || r.reason != tc.reason {
				t.Errorf("%s %v: %d %q; want %d %q", tc.path, tc.params, r.status, r.reason, tc.status, tc.reason)
			}
			if tc.errKey != "" {
				if errs, _ := r.body["errors"].(map[string]any); errs[tc.errKey] == nil {
					t.Errorf("%s %v: errors %v; want one for %s", tc.path, tc.params, r.body["errors"], tc.errKey)
				}
			}
		}
	})
	t.Run("refused by the task", func(t *testing.T) {
		for _, tc := range []struct {
			node   string
			kind   guest.Kind
			vmid   int
			params url.Values
			exit   string
		}{
			{"pve-a", guest.QEMU, 101, url.Values{"target": {"pve-b"}, "online": {"1"}}, "can't live migrate attached local disks without with-local-disks option"},
			{"pve-a", guest.QEMU, 102, url.Values{"target": {"pve-b"}}, "can't migrate VM which uses local devices: hostpci0"},
			{"pve-a", guest.QEMU, 104, url.Values{"target": {"pve-b"}}, "Problem found while scanning volumes - can't migrate local cdrom drive"},
			{"pve-a", guest.QEMU, 105, url.Values{"target": {"pve-b"}}, "Problem found while scanning volumes - can't migrate local cdrom 'local:iso/debian.iso'"},
			{"pve-a", guest.QEMU, 106, url.Values{"target": {"pve-b"}}, "Problem found while scanning volumes - can't migrate local disk '/dev/sde': local file/device"},
			{"pve-a", guest.LXC, 201, url.Values{"target": {"pve-b"}, "online": {"1"}}, "lxc live migration is currently not implemented"},
			{"pve-a", guest.LXC, 202, url.Values{"target": {"pve-b"}}, "cannot migrate local bind mount point 'mp0'"},
		} {
			// AbstractMigrate: the reason is in the log, the exit status
			// says the migration was aborted.
			upid, st := ts.migrate(tc.node, tc.kind, tc.vmid, tc.params)
			if st["exitstatus"] != "migration aborted" {
				t.Errorf("%s %d %v: exit %q; want \"migration aborted\"", tc.kind, tc.vmid, tc.params, st["exitstatus"])
			}
			var log []string
			for _, l := range ts.mustOK(ts.do("GET", "/nodes/pve-a/tasks/"+upid+"/log", nil)).dataList(t) {
				log = append(log, fmt.Sprint(l.(map[string]any)["t"]))
			}
			if want := "ERROR: migration aborted (duration 00:00:00): " + tc.exit; !slices.Contains(log, want) {
				t.Errorf("%s %d: log %q; want the line %q", tc.kind, tc.vmid, log, want)
			}
			if g, _ := ts.s.Guest(tc.vmid); g.Node != "pve-a" || g.Lock != "" && tc.vmid != 103 {
				t.Errorf("%d after a refused migration: node %s lock %q; want pve-a, unlocked", tc.vmid, g.Node, g.Lock)
			}
		}
	})
	t.Run("live VM with local disks", func(t *testing.T) {
		_, st := ts.migrate("pve-a", guest.QEMU, 101, url.Values{"target": {"pve-c"}, "online": {"1"}, "with-local-disks": {"1"}})
		if st["exitstatus"] != "OK" {
			t.Fatalf("exit %v", st["exitstatus"])
		}
		if g, _ := ts.s.Guest(101); g.Node != "pve-c" || g.Status != "running" {
			t.Errorf("after live migration: %s %s; want running on pve-c", g.Node, g.Status)
		}
	})
	t.Run("container restart mode", func(t *testing.T) {
		_, st := ts.migrate("pve-a", guest.LXC, 201, url.Values{"target": {"pve-b"}, "restart": {"1"}})
		if st["exitstatus"] != "OK" {
			t.Fatalf("exit %v", st["exitstatus"])
		}
		if g, _ := ts.s.Guest(201); g.Node != "pve-b" || g.Status != "running" {
			t.Errorf("after restart migration: %s %s; want running on pve-b", g.Node, g.Status)
		}
	})
}

// TestHAMigration: a guest under HA shows hastate; HA moves it with its
// own task (hastate migrate, lock migrate meanwhile); a migrate request
// for it is handed to HA.
func TestHAMigration(t *testing.T) {
	ts := startCluster(t)
	ts.s.opts.TaskDuration = 50 * time.Millisecond
	ts.addGuest(GuestSpec{VMID: 101, Kind: guest.QEMU, Node: "pve-a", Running: true, Config: qemuSpec(101, true).Config})
	ts.addGuest(GuestSpec{VMID: 102, Kind: guest.QEMU, Node: "pve-a", Config: qemuSpec(102, false).Config})
	if row := resourceRow(t, ts, "qemu/101"); row["hastate"] != nil {
		t.Errorf("hastate %v on a guest outside HA; want none", row["hastate"])
	}
	if _, err := ts.s.HAMigrate(101, "pve-b"); err == nil {
		t.Error("HAMigrate of a guest outside HA succeeded")
	}
	if err := ts.s.SetHA(101, "started"); err != nil {
		t.Fatal(err)
	}
	// The control API does the same.
	req, _ := http.NewRequest("PUT", ts.url+"/_sim/guests/102/ha", strings.NewReader(`{"state":"started"}`))
	if r := ts.send(req, ts.s.Token()); r.status != 200 {
		t.Fatalf("PUT /_sim/guests/102/ha: %d %s", r.status, r.raw)
	}
	if row := resourceRow(t, ts, "qemu/101"); row["hastate"] != "started" {
		t.Errorf("hastate %v; want started", row["hastate"])
	}
	upid, err := ts.s.HAMigrate(101, "pve-b")
	if err != nil {
		t.Fatal(err)
	}
	if row := resourceRow(t, ts, "qemu/101"); row["hastate"] != "migrate" {
		t.Errorf("hastate while HA migrates: %v; want migrate", row["hastate"])
	}
	st := ts.waitTaskOn(upid)
	if st["exitstatus"] != "OK" || st["user"] != "root@pam" || st["type"] != "qmigrate" {
		t.Fatalf("HA's migration task: %v", st)
	}
	if g, _ := ts.s.Guest(101); g.Node != "pve-b" || g.Status != "running" {
		t.Errorf("after HA migration: %s %s; want running on pve-b", g.Node, g.Status)
	}
	if row := resourceRow(t, ts, "qemu/101"); row["hastate"] != "started" || row["node"] != "pve-b" {
		t.Errorf("row after HA migration: %v", row)
	}

	// A migrate request for an HA guest: an hamigrate task, then HA moves it.
	hupid, hst := ts.migrate("pve-a", guest.QEMU, 102, url.Values{"target": {"pve-c"}})
	if u, _ := pve.ParseUPID(hupid); u.Type != "hamigrate" || hst["exitstatus"] != "OK" {
		t.Fatalf("migrate of an HA guest: %s %v; want an hamigrate task ending OK", hupid, hst)
	}
	for i := 0; ; i++ {
		if g, _ := ts.s.Guest(102); g.Node == "pve-c" && g.Lock == "" {
			break
		}
		if i > 2000 {
			t.Fatal("HA never moved guest 102 to pve-c")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMigratePrecondition: GET …/migrate answers as migrate_vm_precondition,
// with the fields the schema lists.
func TestMigratePrecondition(t *testing.T) {
	ts := startCluster(t)
	c := qemuSpec(101, true).Config
	c["hostpci0"] = "0000:01:00.0"
	c["ide2"] = "local:iso/debian.iso,media=cdrom"
	c["unused0"] = "local-lvm:vm-101-disk-7"
	ts.addGuest(GuestSpec{VMID: 101, Kind: guest.QEMU, Node: "pve-a", Running: true, Config: c})
	ts.addGuest(GuestSpec{VMID: 201, Kind: guest.LXC, Node: "pve-b", Config: lxcSpec(201, false).Config})
	ts.addGuest(GuestSpec{VMID: 102, Kind: guest.QEMU, Node: "pve-a", Config: qemuSpec(102, false).Config})
	if err := ts.s.SetLock(102, "backup"); err != nil {
		t.Fatal(err)
	}

	r := ts.mustOK(ts.do("GET", "/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"pve-b"}})).dataMap(t)
	props := schemaProps(t, "/nodes/{node}/qemu/{vmid}/migrate")
	for k := range r {
		if !props[k] {
			t.Errorf("qemu precondition field %q is not in the schema", k)
		}
	}
	if fmt.Sprint(r["running"]) != "1" || fmt.Sprint(r["allowed_nodes"]) != "[pve-b pve-c]" || fmt.Sprint(r["local_resources"]) != "[hostpci0]" {
		t.Errorf("qemu precondition %v; want running, pve-b and pve-c allowed, hostpci0 local", r)
	}
	var disks []string
	for _, d := range r["local_disks"].([]any) {
		m := d.(map[string]any)
		disks = append(disks, fmt.Sprintf("%v size=%v cdrom=%v unused=%v", m["volid"], m["size"], m["cdrom"], m["is_unused"]))
	}
	want := []string{
		"local:iso/debian.iso size=<nil> cdrom=1 unused=<nil>",
		"local-lvm:vm-101-disk-0 size=34359738368 cdrom=<nil> unused=<nil>",
		"local-lvm:vm-101-disk-1 size=10737418240 cdrom=<nil> unused=<nil>",
		"local-lvm:vm-101-disk-7 size=<nil> cdrom=<nil> unused=1",
	}
	if !slices.Equal(disks, want) {
		t.Errorf("local disks %q; want %q", disks, want)
	}

	l := ts.mustOK(ts.do("GET", "/nodes/pve-b/lxc/201/migrate", nil)).dataMap(t)
	lprops := schemaProps(t, "/nodes/{node}/lxc/{vmid}/migrate")
	for k := range l {
		if !lprops[k] {
			t.Errorf("lxc precondition field %q is not in the schema", k)
		}
	}
	if fmt.Sprint(l["running"]) != "0" || fmt.Sprint(l["allowed-nodes"]) != "[pve-a pve-c]" {
		t.Errorf("lxc precondition %v; want stopped, pve-a and pve-c allowed", l)
	}

	for _, tc := range []struct {
		path   string
		q      url.Values
		status int
		reason string
	}{
		{"/nodes/pve-a/qemu/102/migrate", nil, 500, "VM is locked (backup)"},
		{"/nodes/pve-a/lxc/201/migrate", nil, 500, "Configuration file 'nodes/pve-a/lxc/201.conf' does not exist"},
		{"/nodes/pve-a/qemu/101/migrate", url.Values{"target": {"bad_node"}}, 400, "Parameter verification failed."},
	} {
		if r := ts.do("GET", tc.path, tc.q); r.status != tc.status || r.reason != tc.reason {
			t.Errorf("GET %s %v: %d %q; want %d %q", tc.path, tc.q, r.status, r.reason, tc.status, tc.reason)
		}
	}
}
