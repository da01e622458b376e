package sim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/pve"
)

func TestStatusLinesAndBodies(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.s.AddToken("audit@pve!ro", "s3cret", map[string][]string{"/vms": {"VM.Audit"}})

	getWithBody := func() result {
		req, _ := http.NewRequest("GET", ts.url+"/api2/json/nodes/pve/qemu/101/config", strings.NewReader("cores=2"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return ts.send(req, ts.s.Token())
	}
	tests := []struct {
		name       string
		r          func() result
		status     int
		reason     string
		body       string // exact body; "" = empty
		wantCTNone bool
	}{
		{"bad token", func() result { return ts.doTok("root@pam!steward=wrong", "GET", "/version", nil) }, 401, "Authentication failed!", "", true},
		{"no token", func() result { return ts.doTok("", "GET", "/version", nil) }, 401, "Authentication failed!", "", true},
		{"unknown token", func() result { return ts.doTok("nobody@pve!x=y", "GET", "/version", nil) }, 401, "Authentication failed!", "", true},
		{"missing privilege", func() result {
			return ts.doTok("audit@pve!ro=s3cret", "POST", "/nodes/pve/qemu/101/status/start", url.Values{})
		}, 403, "Permission check failed (/vms/101, VM.PowerMgmt)", `{"data":null,"message":"Permission check failed (/vms/101, VM.PowerMgmt)\n"}`, false},
		{"unknown vmid", func() result { return ts.do("GET", "/nodes/pve/qemu/999/config", nil) }, 500,
			"Configuration file 'nodes/pve/qemu-server/999.conf' does not exist",
			`{"data":null,"message":"Configuration file 'nodes/pve/qemu-server/999.conf' does not exist\n"}`, false},
		{"wrong kind", func() result { return ts.do("GET", "/nodes/pve/lxc/101/config", nil) }, 500,
			"Configuration file 'nodes/pve/lxc/101.conf' does not exist",
			`{"data":null,"message":"Configuration file 'nodes/pve/lxc/101.conf' does not exist\n"}`, false},
		{"unknown path", func() result { return ts.do("GET", "/nodes/pve2//12/config", nil) }, 501,
			"Method 'GET /nodes/pve2//12/config' not implemented",
			`{"data":null,"message":"Method 'GET /nodes/pve2//12/config' not implemented\n"}`, false},
		{"body on GET", getWithBody, 501, "Unexpected content for method 'GET'",
			`{"data":null,"message":"Unexpected content for method 'GET'\n"}`, false},
		{"unknown parameter", func() result {
			return ts.do("POST", "/nodes/pve/qemu/101/status/stop", url.Values{"bogus": {"1"}})
		}, 400, "Parameter verification failed.",
			`{"data":null,"errors":{"bogus":"property is not defined in schema and the schema does not allow additional properties"},"message":"Parameter verification failed.\n"}`, false},
		{"form boolean must be 0/1", func() result {
			return ts.do("POST", "/nodes/pve/qemu/101/status/shutdown", url.Values{"forceStop": {"true"}})
		}, 400, "Parameter verification failed.",
			`{"data":null,"errors":{"forceStop":"type check ('boolean') failed - got 'true'"},"message":"Parameter verification failed.\n"}`, false},
		{"nextid taken", func() result { return ts.do("GET", "/cluster/nextid", url.Values{"vmid": {"101"}}) }, 400,
			"Parameter verification failed.", `{"data":null,"errors":{"vmid":"VM 101 already exists"},"message":"Parameter verification failed.\n"}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r()
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tc.status || r.reason != tc.reason {
				t.Errorf("status line: got %d %q; want %d %q", r.status, r.reason, tc.status, tc.reason)
			}
			if string(r.raw) != tc.body {
				t.Errorf("body: got %s; want %s", r.raw, tc.body)
			}
			if !r.close {
				t.Errorf("error response does not close the connection (Connection: close)")
			}
			for k, want := range map[string]string{"Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0", "Pragma": "no-cache"} {
				if got := r.header.Get(k); got != want {
					t.Errorf("header %s: got %q; want %q", k, got, want)
				}
			}
			if r.header.Get("Expires") == "" || r.header.Get("Expires") != r.header.Get("Date") {
				t.Errorf("Expires %q; want = Date %q", r.header.Get("Expires"), r.header.Get("Date"))
			}
			ct := r.header.Get("Content-Type")
			if tc.wantCTNone && ct != "" {
				t.Errorf("Content-Type: got %q; want none", ct)
			}
			if !tc.wantCTNone && ct != "application/json;charset=UTF-8" {
				t.Errorf("Content-Type: got %q; want application/json;charset=UTF-8", ct)
			}
		})
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("rejected requests recorded %d mutations; want 0", n)
	}
}

func TestSuccessHeaders(t *testing.T) {
	ts := startSim(t, Options{})
	r := ts.mustOK(ts.do("GET", "/version", nil))
	for k, want := range map[string]string{"Server": "pve-api-daemon/3.0", "Cache-Control": "max-age=0", "Pragma": "no-cache", "Content-Type": "application/json;charset=UTF-8"} {
		if got := r.header.Get(k); got != want {
			t.Errorf("header %s: got %q; want %q", k, got, want)
		}
	}
	if r.close {
		t.Errorf("200 response closes the connection; want keep-alive")
	}
}

func TestLegacyErrorsOmitMessage(t *testing.T) {
	ts := startSim(t, Options{LegacyErrors: true})
	r := ts.do("GET", "/nodes/pve/qemu/999/config", nil)
	if string(r.raw) != `{"data":null}` {
		t.Errorf("got %s; want {\"data\":null}", r.raw)
	}
}

func TestQueryOverridesBodyAndJSONBody(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	req, _ := http.NewRequest("PUT", ts.url+"/api2/json/nodes/pve/qemu/101/config?cores=6", strings.NewReader("cores=3"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	ts.mustOK(ts.send(req, ts.s.Token()))
	if g, _ := ts.s.Guest(101); g.Config["cores"] != "6" {
		t.Errorf("cores: got %q; want 6 (query overrides body)", g.Config["cores"])
	}
	ts.mustOK(ts.doJSON("PUT", "/nodes/pve/qemu/101/config", map[string]any{"cores": 4, "onboot": true, "name": "json"}))
	g, _ := ts.s.Guest(101)
	if g.Config["cores"] != "4" || g.Config["onboot"] != "1" || g.Config["name"] != "json" {
		t.Errorf("after JSON PUT: cores=%q onboot=%q name=%q; want 4, 1, json", g.Config["cores"], g.Config["onboot"], g.Config["name"])
	}
	r := ts.doJSON("PUT", "/nodes/pve/qemu/101/config", map[string]any{"vmid": 102, "cores": 1})
	if r.status != 400 || r.reason != "duplicate parameter (already defined in URI) with conflicting values!" {
		t.Errorf("conflicting vmid: got %d %q; want 400 duplicate parameter", r.status, r.reason)
	}
}

func TestConfigLockTimeoutSync(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	for _, tc := range []struct {
		vmid int
		path string
		want string
	}{
		{101, "/nodes/pve/qemu/101/config", "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"},
		{102, "/nodes/pve/lxc/102/config", "can't lock file '/run/lock/lxc/pve-config-102.lock' - got timeout"},
	} {
		g := ts.s.guests[tc.vmid]
		g.flock <- struct{}{} // another writer holds the config lock
		r := ts.do("PUT", tc.path, url.Values{"cores": {"3"}})
		<-g.flock
		if r.status != 500 || r.reason != tc.want {
			t.Errorf("PUT %s under lock: got %d %q; want 500 %q", tc.path, r.status, r.reason, tc.want)
		}
		if cur, _ := ts.s.Guest(tc.vmid); cur.Config["cores"] == "3" {
			t.Errorf("PUT %s under lock changed cores", tc.path)
		}
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("got %d mutations; want 0", n)
	}
}

func TestConfigLockTimeoutAsync(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	g := ts.s.guests[101]
	g.flock <- struct{}{}
	upid := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/config", url.Values{"cores": {"3"}})).data().(string)
	st := ts.waitTask(upid)
	<-g.flock
	if want := "can't lock file '/var/lock/qemu-server/lock-101.conf' - got timeout"; st["exitstatus"] != want {
		t.Errorf("exitstatus: got %q; want %q", st["exitstatus"], want)
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("got %d mutations; want 0", n)
	}
}

func TestLockFieldRefusesWrites(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	for _, vmid := range []int{101, 102} {
		if err := ts.s.SetLock(vmid, "backup"); err != nil {
			t.Fatal(err)
		}
	}
	r := ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"3"}})
	if r.status != 500 || r.reason != "VM is locked (backup)" {
		t.Errorf("qemu PUT: got %d %q; want 500 VM is locked (backup)", r.status, r.reason)
	}
	r = ts.do("PUT", "/nodes/pve/lxc/102/config", url.Values{"cores": {"3"}})
	if r.status != 500 || r.reason != "CT is locked (backup)" {
		t.Errorf("lxc PUT: got %d %q; want 500 CT is locked (backup)", r.status, r.reason)
	}
	_, st := ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})
	if st["exitstatus"] != "VM is locked (backup)" {
		t.Errorf("start task: got %q; want VM is locked (backup)", st["exitstatus"])
	}
	r = ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"3"}, "skiplock": {"1"}})
	if r.status != 400 || !strings.Contains(string(r.raw), "Only root may use this option.") {
		t.Errorf("skiplock by token: got %d %s; want 400 Only root may use this option.", r.status, r.raw)
	}
	cfg := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/config", nil)).dataMap(t)
	if cfg["lock"] != "backup" {
		t.Errorf("config lock: got %v; want backup", cfg["lock"])
	}
	st0 := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/status/current", nil)).dataMap(t)
	if st0["lock"] != "backup" {
		t.Errorf("status lock: got %v; want backup", st0["lock"])
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("got %d mutations; want 0", n)
	}
}

func TestDigest(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	for _, tc := range []struct{ path, mismatch string }{
		{"/nodes/pve/qemu/101/config", "checksum mismatch (file change by other user?)"},
		{"/nodes/pve/lxc/102/config", "detected modified configuration - file changed by other user? Try again."},
	} {
		d1 := ts.mustOK(ts.do("GET", tc.path, nil)).dataMap(t)["digest"].(string)
		if len(d1) != 40 {
			t.Errorf("digest %q; want 40 hex digits", d1)
		}
		r := ts.do("PUT", tc.path, url.Values{"cores": {"3"}, "digest": {strings.Repeat("0", 40)}})
		if r.status != 500 || r.reason != tc.mismatch {
			t.Errorf("stale digest: got %d %q; want 500 %q", r.status, r.reason, tc.mismatch)
		}
		ts.mustOK(ts.do("PUT", tc.path, url.Values{"cores": {"3"}, "digest": {d1}}))
		d2 := ts.mustOK(ts.do("GET", tc.path, nil)).dataMap(t)["digest"].(string)
		if d2 == d1 {
			t.Errorf("digest unchanged after a write: %s", d2)
		}
	}
	d := ts.s.guests[101].digest()
	ts.s.SetLock(101, "backup")
	if ts.s.guests[101].digest() == d {
		t.Errorf("setting lock did not change the digest")
	}
}

func TestDescriptionAndMemoryPerKind(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"description": {"web frontend\nowner: ops"}, "memory": {"4096"}}))
	ts.mustOK(ts.do("PUT", "/nodes/pve/lxc/102/config", url.Values{"description": {"web frontend\nowner: ops"}, "memory": {"1024"}}))

	q := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/config", nil))
	l := ts.mustOK(ts.do("GET", "/nodes/pve/lxc/102/config", nil))
	if got := q.dataMap(t)["description"]; got != "web frontend\nowner: ops" {
		t.Errorf("qemu description: got %q; want no trailing newline", got)
	}
	if got := l.dataMap(t)["description"]; got != "web frontend\nowner: ops\n" {
		t.Errorf("lxc description: got %q; want trailing newline", got)
	}
	if !strings.Contains(string(q.raw), `"memory":"4096"`) {
		t.Errorf("qemu config memory: %s; want JSON string \"4096\"", q.raw)
	}
	if !strings.Contains(string(l.raw), `"memory":1024`) {
		t.Errorf("lxc config memory: %s; want JSON number 1024", l.raw)
	}
	for _, tc := range []struct {
		path string
		want int64
	}{{"/nodes/pve/qemu/101/status/current", 4096 << 20}, {"/nodes/pve/lxc/102/status/current", 1024 << 20}} {
		m := ts.mustOK(ts.do("GET", tc.path, nil)).dataMap(t)
		if got, _ := m["maxmem"].(json.Number).Int64(); got != tc.want {
			t.Errorf("%s maxmem: got %d; want %d bytes", tc.path, got, tc.want)
		}
	}
	if !strings.Contains(ts.s.guests[101].render(), "#owner%3A ops\n") {
		t.Errorf("rendered config does not percent-encode the description:\n%s", ts.s.guests[101].render())
	}
}

func TestDeleteDiskBecomesUnused(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"delete": {"scsi1"}}))
	ts.mustOK(ts.do("PUT", "/nodes/pve/lxc/102/config", url.Values{"delete": {"mp0"}}))
	g, _ := ts.s.Guest(101)
	if _, ok := g.Config["scsi1"]; ok || g.Config["unused0"] != "local-lvm:vm-101-disk-1" {
		t.Errorf("qemu after delete scsi1: scsi1 present=%v unused0=%q; want moved to unused0", ok, g.Config["unused0"])
	}
	c, _ := ts.s.Guest(102)
	if c.Config["unused0"] != "local-lvm:vm-102-disk-1" {
		t.Errorf("lxc after delete mp0: unused0=%q; want local-lvm:vm-102-disk-1", c.Config["unused0"])
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"delete": {"unused0"}}))
	if g, _ := ts.s.Guest(101); g.Config["unused0"] != "" {
		t.Errorf("unused0 still present after delete")
	}
	r := ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"delete": {"nosuchkey"}})
	if r.status != 400 || !strings.Contains(string(r.raw), `"delete":"unknown option 'nosuchkey'"`) {
		t.Errorf("delete unknown: got %d %s; want 400 unknown option", r.status, r.raw)
	}
	r = ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{})
	if r.status != 500 || r.reason != "no options specified" {
		t.Errorf("empty PUT: got %d %q; want 500 no options specified", r.status, r.reason)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"scsi2": {"local-lvm:20"}, "net1": {"virtio,bridge=vmbr1"}}))
	g, _ = ts.s.Guest(101)
	if g.Config["scsi2"] != "local-lvm:vm-101-disk-1,size=20G" {
		t.Errorf("new disk: got %q; want local-lvm:vm-101-disk-1,size=20G", g.Config["scsi2"])
	}
	if !strings.HasPrefix(g.Config["net1"], "virtio=BC:24:11:") || !strings.HasSuffix(g.Config["net1"], ",bridge=vmbr1") {
		t.Errorf("new nic: got %q; want a generated MAC", g.Config["net1"])
	}
}

func TestTaskLifecycle(t *testing.T) {
	// The test holds a config lock across requests and releases it itself:
	// a lock timeout as short as the default test one (20ms) would expire
	// under load and fail the start it waits for.
	ts := startSim(t, Options{LockTimeout: time.Minute})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(func() GuestSpec { g := qemuSpec(103, true); g.IgnoreShutdown = true; return g }())

	// Running: the task waits for the config lock we hold.
	g := ts.s.guests[101]
	g.flock <- struct{}{}
	upid := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/status/start", url.Values{})).data().(string)
	u, err := pve.ParseUPID(upid)
	if err != nil || u.Type != "qmstart" || u.ID != "101" || u.User != "root@pam!steward" || u.Node != "pve" || u.String() != upid {
		t.Fatalf("UPID %q parsed as %+v, %v; want qmstart 101 root@pam!steward on pve", upid, u, err)
	}
	st := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+upid+"/status", nil)).dataMap(t)
	if st["status"] != "running" {
		t.Errorf("status: got %v; want running", st["status"])
	}
	if _, has := st["exitstatus"]; has {
		t.Errorf("running task has exitstatus")
	}
	if _, has := st["endtime"]; has {
		t.Errorf("task status has endtime")
	}
	if st["user"] != "root@pam" || st["tokenid"] != "steward" {
		t.Errorf("user/tokenid: got %v/%v; want root@pam/steward", st["user"], st["tokenid"])
	}
	<-g.flock
	st = ts.waitTask(upid)
	if st["exitstatus"] != "OK" {
		t.Errorf("exitstatus: got %v; want OK", st["exitstatus"])
	}
	if gs, _ := ts.s.Guest(101); gs.Status != "running" {
		t.Errorf("guest status after start: %s; want running", gs.Status)
	}
	checkLastLog(t, ts, upid, "TASK OK")

	// Error: starting a running VM.
	upid, st = ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})
	if st["exitstatus"] != "VM 101 already running" {
		t.Errorf("exitstatus: got %v; want VM 101 already running", st["exitstatus"])
	}
	checkLastLog(t, ts, upid, "TASK ERROR: VM 101 already running")

	// Warnings: a guest ignoring ACPI shutdown, forceStop=1.
	upid, st = ts.runTask("POST", "/nodes/pve/qemu/103/status/shutdown", url.Values{"forceStop": {"1"}, "timeout": {"5"}})
	if st["exitstatus"] != "WARNINGS: 1" {
		t.Errorf("exitstatus: got %v; want WARNINGS: 1", st["exitstatus"])
	}
	checkLastLog(t, ts, upid, "TASK WARNINGS: 1")
	if gs, _ := ts.s.Guest(103); gs.Status != "stopped" {
		t.Errorf("forced shutdown left guest %s", gs.Status)
	}
	// Without forceStop the shutdown times out and the guest keeps running.
	ts.s.guests[103].running = true
	_, st = ts.runTask("POST", "/nodes/pve/qemu/103/status/shutdown", url.Values{})
	if st["exitstatus"] != "VM quit/powerdown failed - got timeout" {
		t.Errorf("exitstatus: got %v; want VM quit/powerdown failed - got timeout", st["exitstatus"])
	}

	list := ts.mustOK(ts.do("GET", "/nodes/pve/tasks", url.Values{"errors": {"1"}}))
	if got := list.body["total"]; got != json.Number("3") { // errors=1 drops only OK tasks
		t.Errorf("error task total: got %v; want 3", got)
	}
	r := ts.do("GET", "/nodes/pve/tasks/UPID:pve:00000001:00000001:00000001:qmstart:1:root@pam:/status", nil)
	if r.status != 400 || !strings.Contains(string(r.raw), `"upid":"no such task"`) {
		t.Errorf("unknown task: got %d %s; want 400 no such task", r.status, r.raw)
	}
	muts := ts.s.Mutations()
	if len(muts) != 2 || muts[0].Op != "start" || muts[1].Op != "shutdown" || muts[0].UPID == "" {
		t.Errorf("mutations: got %+v; want start then shutdown", muts)
	}
}

func checkLastLog(t *testing.T, ts *testServer, upid, want string) {
	t.Helper()
	r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+upid+"/log", nil))
	lines := r.dataList(t)
	last := lines[len(lines)-1].(map[string]any)
	if last["t"] != want || last["n"] != json.Number(itoa(len(lines))) {
		t.Errorf("last log line: got %v; want n=%d t=%q", last, len(lines), want)
	}
	if r.body["total"] != json.Number(itoa(len(lines))) {
		t.Errorf("log total: got %v; want %d", r.body["total"], len(lines))
	}
}

func TestResizeSnapshotsCreateDestroy(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	ts.addGuest(qemuSpec(101, true))
	ts.addGuest(lxcSpec(102, false))

	_, st := ts.runTask("PUT", "/nodes/pve/qemu/101/resize", url.Values{"disk": {"scsi0"}, "size": {"+8G"}})
	if g, _ := ts.s.Guest(101); st["exitstatus"] != "OK" || g.Config["scsi0"] != "local-lvm:vm-101-disk-0,size=40G" {
		t.Errorf("grow: exit %v scsi0 %q; want OK and size=40G", st["exitstatus"], g.Config["scsi0"])
	}
	_, st = ts.runTask("PUT", "/nodes/pve/qemu/101/resize", url.Values{"disk": {"scsi0"}, "size": {"20G"}})
	if st["exitstatus"] != "shrinking disks is not supported" {
		t.Errorf("shrink qemu: got %v", st["exitstatus"])
	}
	// pve-container checks before it forks: the refusal is the HTTP answer.
	if r := ts.do("PUT", "/nodes/pve/lxc/102/resize", url.Values{"disk": {"rootfs"}, "size": {"4G"}}); r.status != 500 || r.reason != "unable to shrink disk size" {
		t.Errorf("shrink lxc: got %d %q; want 500 unable to shrink disk size", r.status, r.reason)
	}

	_, st = ts.runTask("POST", "/nodes/pve/qemu/101/snapshot", url.Values{"snapname": {"before"}, "description": {"pre-upgrade"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("snapshot: %v", st["exitstatus"])
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"8"}}))
	snaps := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/snapshot", nil)).dataList(t)
	if len(snaps) != 2 || snaps[0].(map[string]any)["name"] != "before" || snaps[1].(map[string]any)["name"] != "current" || snaps[1].(map[string]any)["parent"] != "before" {
		t.Errorf("snapshot list: %v; want before + current(parent before)", snaps)
	}
	_, st = ts.runTask("POST", "/nodes/pve/qemu/101/snapshot/before/rollback", url.Values{})
	if g, _ := ts.s.Guest(101); st["exitstatus"] != "OK" || g.Config["cores"] != "2" || g.Status != "stopped" {
		t.Errorf("rollback: exit %v cores %q status %s; want OK, 2, stopped", st["exitstatus"], g.Config["cores"], g.Status)
	}
	r := ts.do("POST", "/nodes/pve/qemu/101/snapshot/nope/rollback", url.Values{})
	if r.status != 500 || r.reason != "snapshot 'nope' does not exist" {
		t.Errorf("rollback unknown: got %d %q", r.status, r.reason)
	}
	_, st = ts.runTask("DELETE", "/nodes/pve/qemu/101/snapshot/before", nil)
	if g, _ := ts.s.Guest(101); st["exitstatus"] != "OK" || g.Config["parent"] != "" {
		t.Errorf("delsnapshot: exit %v parent %q", st["exitstatus"], g.Config["parent"])
	}

	r = ts.do("POST", "/nodes/pve/lxc", url.Values{"vmid": {"101"}, "ostemplate": {"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}})
	if r.status != 500 || r.reason != "unable to create CT 101 - VM 101 already exists on node 'pve'" {
		t.Errorf("create existing: got %d %q", r.status, r.reason)
	}
	_, st = ts.runTask("POST", "/nodes/pve/lxc", url.Values{"vmid": {"200"}, "ostemplate": {"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"},
		"rootfs": {"local-lvm:8"}, "net0": {"name=eth0,bridge=vmbr0,ip=dhcp"}, "hostname": {"new"}, "start": {"1"}})
	c, found := ts.s.Guest(200)
	if st["exitstatus"] != "OK" || !found || c.Config["rootfs"] != "local-lvm:vm-200-disk-0,size=8G" || c.Config["ostype"] != "debian" || c.Status != "running" || c.Lock != "" {
		t.Errorf("create: exit %v guest %+v", st["exitstatus"], c)
	}
	r = ts.do("DELETE", "/nodes/pve/lxc/200", nil)
	if r.status != 500 || r.reason != "unable to destroy CT 200 - container is running" {
		t.Errorf("destroy running: got %d %q", r.status, r.reason)
	}
	_, st = ts.runTask("DELETE", "/nodes/pve/lxc/200", url.Values{"force": {"1"}, "purge": {"1"}})
	if _, found := ts.s.Guest(200); st["exitstatus"] != "OK" || found {
		t.Errorf("destroy: exit %v, still present %v", st["exitstatus"], found)
	}
	var ops []string
	for _, m := range ts.s.Mutations() {
		ops = append(ops, m.Op)
	}
	if got, want := strings.Join(ops, ","), "resize,snapshot,config,rollback,delsnapshot,create,destroy"; got != want {
		t.Errorf("mutations: got %s; want %s", got, want)
	}
}

func TestDropAfterExecRecordsExactlyOnce(t *testing.T) {
	ts := startSim(t, Options{Faults: Faults{DropAfterExecRate: 1}})
	ts.addGuest(qemuSpec(101, false))
	r := ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"5"}})
	if r.err == nil {
		t.Fatalf("got %d %s; want the connection dropped", r.status, r.raw)
	}
	ts.s.SetFaults(Faults{})
	if g, _ := ts.s.Guest(101); g.Config["cores"] != "5" {
		t.Errorf("cores: got %q; want 5 (executed before the drop)", g.Config["cores"])
	}
	muts := ts.s.Mutations()
	if len(muts) != 1 || muts[0].Op != "config" || muts[0].Params["cores"] != "5" || muts[0].TokenID != "root@pam!steward" || muts[0].Seq != 1 {
		t.Errorf("mutations: got %+v; want exactly one config", muts)
	}
	// Reads are never dropped.
	ts.s.SetFaults(Faults{DropAfterExecRate: 1})
	ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/config", nil))
}

func TestFaultsDeterministicUnderSeed(t *testing.T) {
	run := func() string {
		ts := startSim(t, Options{Seed: 42, Faults: Faults{ErrorRate: 0.3, Status596Rate: 0.2}})
		var b strings.Builder
		for i := 0; i < 40; i++ {
			r := ts.do("GET", "/version", nil)
			b.WriteString(itoa(r.status) + " ")
		}
		return b.String()
	}
	a, b := run(), run()
	if a != b {
		t.Errorf("same seed, different faults:\n%s\n%s", a, b)
	}
	for _, code := range []string{"200 ", "500 ", "596 "} {
		if !strings.Contains(a, code) {
			t.Errorf("fault sequence %q has no %s", a, code)
		}
	}
}

func TestTaskFailFault(t *testing.T) {
	ts := startSim(t, Options{Faults: Faults{TaskFailRate: 1}})
	ts.addGuest(qemuSpec(101, false))
	_, st := ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})
	if st["exitstatus"] == "OK" || st["exitstatus"] == "" {
		t.Errorf("exitstatus: got %v; want an error", st["exitstatus"])
	}
	if g, _ := ts.s.Guest(101); g.Status != "stopped" || len(ts.s.Mutations()) != 0 {
		t.Errorf("failed task changed state: %s, %d mutations", g.Status, len(ts.s.Mutations()))
	}
}

func TestTokenPrivilegesFilterLists(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(qemuSpec(102, false))
	ts.s.AddToken("ops@pve!tk", "x", map[string][]string{"/vms/102": {"VM.Audit", "VM.Config.Options"}})
	ts.s.AddToken("none@pve!tk", "x", nil)
	tok := "ops@pve!tk=x"
	list := ts.mustOK(ts.doTok(tok, "GET", "/nodes/pve/qemu", nil)).dataList(t)
	if len(list) != 1 || list[0].(map[string]any)["vmid"] != json.Number("102") {
		t.Errorf("filtered list: %v; want only 102", list)
	}
	if l := ts.mustOK(ts.doTok("none@pve!tk=x", "GET", "/cluster/resources", nil)).dataList(t); len(l) != 0 {
		t.Errorf("zero-privilege resources: %v; want []", l)
	}
	r := ts.doTok(tok, "PUT", "/nodes/pve/qemu/102/config", url.Values{"cores": {"4"}})
	if r.status != 403 || r.reason != "Permission check failed (/vms/102, VM.Config.CPU)" {
		t.Errorf("cores without VM.Config.CPU: got %d %q", r.status, r.reason)
	}
	ts.mustOK(ts.doTok(tok, "PUT", "/nodes/pve/qemu/102/config", url.Values{"description": {"ok"}}))
	perms := ts.mustOK(ts.doTok(tok, "GET", "/access/permissions", nil)).dataMap(t)
	if _, ok := perms["/vms/102"]; !ok {
		t.Errorf("permissions: %v; want /vms/102", perms)
	}
}

func TestControlAPI(t *testing.T) {
	ts := startSim(t, Options{})
	do := func(method, path, body, tok string) int {
		req, _ := http.NewRequest(method, ts.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "PVEAPIToken="+tok)
		resp, err := ts.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := do("POST", "/_sim/guests", `{"vmid":150,"kind":"lxc","name":"c","config":{"rootfs":"local-lvm:vm-150-disk-0,size=8G"}}`, ts.s.Token()); c != 200 {
		t.Errorf("POST guests: %d", c)
	}
	if c := do("PUT", "/_sim/guests/150/lock", `{"lock":"backup"}`, ts.s.Token()); c != 200 {
		t.Errorf("PUT lock: %d", c)
	}
	if g, _ := ts.s.Guest(150); g.Lock != "backup" {
		t.Errorf("lock: %q; want backup", g.Lock)
	}
	if c := do("PUT", "/_sim/faults", `{"task_fail_rate":1}`, ts.s.Token()); c != 200 || ts.currentFaultsForTest().TaskFailRate != 1 {
		t.Errorf("PUT faults: %d", c)
	}
	if c := do("GET", "/_sim/mutations", "", "bad@pve!x=y"); c != 401 {
		t.Errorf("unauthenticated control: %d; want 401", c)
	}
}

func (ts *testServer) currentFaultsForTest() Faults { return ts.s.currentFaults() }

func TestPostConfigBackgroundDelay(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	r := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/config", url.Values{"cores": {"7"}, "background_delay": {"5"}}))
	if string(r.raw) != `{"data":null}` {
		t.Errorf("finished within background_delay: got %s; want {\"data\":null}", r.raw)
	}
	if g, _ := ts.s.Guest(101); g.Config["cores"] != "7" {
		t.Errorf("cores: got %q; want 7", g.Config["cores"])
	}
	ts.s.SetLock(101, "backup")
	r = ts.do("POST", "/nodes/pve/qemu/101/config", url.Values{"cores": {"8"}, "background_delay": {"5"}})
	if r.status != 500 || r.reason != "failed to update VM 101: VM is locked (backup)" {
		t.Errorf("failed within background_delay: got %d %q", r.status, r.reason)
	}
}

func TestStopTask(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	g := ts.s.guests[101]
	g.flock <- struct{}{} // keep the task waiting
	defer func() { <-g.flock }()
	upid := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/101/status/start", url.Values{})).data().(string)
	ts.mustOK(ts.do("DELETE", "/nodes/pve/tasks/"+upid, nil))
	st := ts.waitTask(upid)
	if st["exitstatus"] != "interrupted by signal" {
		t.Errorf("exitstatus: got %v; want interrupted by signal", st["exitstatus"])
	}
	if gs, _ := ts.s.Guest(101); gs.Status != "stopped" || len(ts.s.Mutations()) != 0 {
		t.Errorf("stopped task changed state: %s, %d mutations", gs.Status, len(ts.s.Mutations()))
	}
}
