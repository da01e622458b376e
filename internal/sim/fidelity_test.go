package sim

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// The tests in this file each check one statement of FIDELITY.md (§ cited
// in the test's comment) by real requests over loopback TLS.

// fakeClock is an injected wall clock that only moves when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

var upidRE = regexp.MustCompile(`^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:qmstop:101:root@pam!steward:$`)

func num(t *testing.T, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v is %T; want a JSON number", v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatalf("%v: %v", v, err)
	}
	return i
}

// §3.1 UPID: pid and pstart hex fields, starttime = task start; pid grows,
// pstart is the start in 1/100 s since boot and grows with time;
// GET …/status repeats them as integers.
func TestFidelityUPIDFields(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1_750_000_000, 0)}
	ts := startSim(t, Options{Clock: clk.Now})
	ts.addGuest(qemuSpec(101, false))
	boot := clk.Now().Add(-72 * time.Hour)

	var prev pve.UPID
	for i := 0; i < 3; i++ {
		clk.Add(90 * time.Second)
		start := clk.Now()
		upid, st := ts.runTask("POST", "/nodes/pve/qemu/101/status/stop", url.Values{})
		u, err := pve.ParseUPID(upid)
		if err != nil {
			t.Fatalf("UPID %q: %v", upid, err)
		}
		if u.StartTime != start.Unix() {
			t.Errorf("starttime: got %d; want the task start %d", u.StartTime, start.Unix())
		}
		if want := uint64(start.Sub(boot) / (10 * time.Millisecond)); u.PStart != want {
			t.Errorf("pstart: got %d; want %d (1/100 s since boot)", u.PStart, want)
		}
		if i > 0 && (u.PID <= prev.PID || u.PStart <= prev.PStart || u.StartTime <= prev.StartTime) {
			t.Errorf("UPID %s does not grow after %s", upid, prev.String())
		}
		if !upidRE.MatchString(upid) {
			t.Errorf("UPID %q does not match %s (upper-case hex, trailing colon)", upid, upidRE)
		}
		for k, want := range map[string]uint64{"pid": u.PID, "pstart": u.PStart, "starttime": uint64(u.StartTime)} {
			if got := num(t, st[k]); uint64(got) != want {
				t.Errorf("status %s: got %d; want %d", k, got, want)
			}
		}
		prev = u
	}
}

// §1.1 Tasks: source=archive (default) lists finished tasks with endtime
// and exit status, active lists running ones as RUNNING without endtime,
// all lists both (active first); total is in the envelope; token tasks
// show user and tokenid; userfilter matches the user case-insensitively;
// errors=1 drops only OK tasks; typefilter is exact.
func TestFidelityTaskList(t *testing.T) {
	ts := startSim(t, Options{LockTimeout: time.Minute})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(qemuSpec(102, true))
	ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})                            // OK
	ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})                            // error: already running
	ts.runTask("PUT", "/nodes/pve/qemu/101/resize", url.Values{"disk": {"scsi0"}, "size": {"+1G"}}) // OK
	g := ts.s.guests[102]
	g.flock <- struct{}{} // the next task waits: running
	running := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/102/status/stop", url.Values{})).data().(string)
	defer func() { <-g.flock; ts.waitTask(running) }()

	list := func(p url.Values) ([]map[string]any, int64) {
		t.Helper()
		r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks", p))
		var out []map[string]any
		for _, e := range r.dataList(t) {
			out = append(out, e.(map[string]any))
		}
		return out, num(t, r.body["total"])
	}
	rows, total := list(nil)
	if len(rows) != 3 || total != 3 {
		t.Fatalf("archive: got %d rows, total %d; want 3 finished tasks", len(rows), total)
	}
	for _, r := range rows {
		if _, ok := r["endtime"]; !ok || r["status"] == "RUNNING" {
			t.Errorf("archive row %v: want endtime and an exit status", r)
		}
		if r["user"] != "root@pam" || r["tokenid"] != "steward" {
			t.Errorf("row user/tokenid: got %v/%v; want root@pam/steward", r["user"], r["tokenid"])
		}
	}
	if rows[0]["type"] != "resize" || rows[1]["status"] != "VM 101 already running" || rows[2]["status"] != "OK" {
		t.Errorf("archive order/status: got %v, %v, %v; want newest first", rows[0]["type"], rows[1]["status"], rows[2]["status"])
	}
	rows, total = list(url.Values{"source": {"active"}})
	if len(rows) != 1 || total != 1 || rows[0]["upid"] != running || rows[0]["status"] != "RUNNING" {
		t.Fatalf("active: got %v (total %d); want only %s as RUNNING", rows, total, running)
	}
	if _, ok := rows[0]["endtime"]; ok {
		t.Errorf("running task row has endtime")
	}
	rows, total = list(url.Values{"source": {"all"}, "start": {"1"}, "limit": {"2"}})
	if total != 4 || len(rows) != 2 || rows[0]["type"] != "resize" {
		t.Errorf("all start=1 limit=2: got %d rows (first %v), total %d; want 2 rows after the running one, total 4", len(rows), rows[0]["type"], total)
	}
	for _, tc := range []struct {
		name  string
		p     url.Values
		total int64
	}{
		{"errors keeps running and failed", url.Values{"source": {"all"}, "errors": {"1"}}, 2},
		{"errors overrides statusfilter", url.Values{"errors": {"1"}, "statusfilter": {"ok"}}, 1},
		{"statusfilter ok", url.Values{"statusfilter": {"OK"}}, 2},
		{"statusfilter list", url.Values{"statusfilter": {"ok,error"}}, 3},
		{"userfilter case-insensitive", url.Values{"userfilter": {"ROOT@"}}, 3},
		{"userfilter is the user, not the token", url.Values{"userfilter": {"steward"}}, 0},
		{"typefilter exact", url.Values{"typefilter": {"qm"}}, 0},
		{"typefilter", url.Values{"typefilter": {"qmstart"}}, 2},
		{"vmid", url.Values{"source": {"all"}, "vmid": {"102"}}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, total := list(tc.p); total != tc.total {
				t.Errorf("total: got %d; want %d", total, tc.total)
			}
		})
	}
	// Task status of a running task: no exitstatus, no endtime.
	st := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+running+"/status", nil)).dataMap(t)
	if _, ok := st["exitstatus"]; ok || st["status"] != "running" {
		t.Errorf("running status: %v; want status running without exitstatus", st)
	}
}

// §1.1 task log: n counts from 1, start/limit (limit 0 = all), total in
// the envelope; an empty log is [{"n":1,"t":"no content"}] whatever start.
func TestFidelityTaskLog(t *testing.T) {
	ts := startSim(t, Options{LockTimeout: time.Minute})
	ts.addGuest(qemuSpec(101, false))
	upid, _ := ts.runTask("DELETE", "/nodes/pve/qemu/101", url.Values{}) // logs one line per volume + TASK OK
	log := func(p url.Values) ([]any, int64) {
		r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+upid+"/log", p))
		return r.dataList(t), num(t, r.body["total"])
	}
	all, total := log(url.Values{"limit": {"0"}})
	if total != 3 || len(all) != 3 {
		t.Fatalf("limit=0: got %d lines, total %d; want all 3", len(all), total)
	}
	lines, total := log(url.Values{"start": {"1"}, "limit": {"1"}})
	if total != 3 || len(lines) != 1 {
		t.Fatalf("start=1 limit=1: got %d lines, total %d; want 1, total 3", len(lines), total)
	}
	if l := lines[0].(map[string]any); num(t, l["n"]) != 2 || l["t"] != all[1].(map[string]any)["t"] {
		t.Errorf("start=1: got %v; want line n=2", l)
	}
	if lines, total = log(url.Values{"start": {"10"}}); len(lines) != 0 || total != 3 {
		t.Errorf("start past the end: got %v, total %d; want [] and total 3", lines, total)
	}

	ts.addGuest(qemuSpec(102, false))
	g := ts.s.guests[102]
	g.flock <- struct{}{}
	waiting := ts.mustOK(ts.do("POST", "/nodes/pve/qemu/102/status/start", url.Values{})).data().(string)
	defer func() { <-g.flock; ts.waitTask(waiting) }()
	for _, p := range []url.Values{nil, {"start": {"5"}}} {
		r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+waiting+"/log", p))
		if got := string(r.raw); got != `{"data":[{"n":1,"t":"no content"}],"total":1}` {
			t.Errorf("empty log %v: got %s; want one \"no content\" line, total 1", p, got)
		}
	}
}

// rawClient returns a client that trusts ts and does not negotiate
// compression by itself, so Content-Encoding reaches the test untouched.
func rawClient(ts *testServer) *http.Client {
	cert, _ := x509.ParseCertificate(ts.s.Certificate())
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableCompression: true}
	ts.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// §2 headers: body gzip-compressed when > 1024 bytes and the client sent
// Accept-Encoding: gzip (errors too), never otherwise; Content-Length is
// the compressed length; a 200 on a kept connection says Keep-Alive.
func TestFidelityGzipAndKeepAlive(t *testing.T) {
	ts := startSim(t, Options{Guests: 20})
	c := rawClient(ts)
	get := func(path, accept string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.url+"/api2/json"+path, nil)
		req.Header.Set("Authorization", "PVEAPIToken="+ts.s.Token())
		if accept != "" {
			req.Header.Set("Accept-Encoding", accept)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if cl := resp.Header.Get("Content-Length"); cl != fmt.Sprint(len(b)) {
			t.Errorf("%s: Content-Length %s; body has %d bytes", path, cl, len(b))
		}
		return resp, b
	}
	gunzip := func(b []byte) []byte {
		t.Helper()
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("body is not gzip: %v", err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	resp, plain := get("/cluster/resources", "")
	if resp.Header.Get("Content-Encoding") != "" || len(plain) <= 1024 {
		t.Fatalf("no Accept-Encoding: Content-Encoding %q, %d bytes; want plain and > 1024 bytes", resp.Header.Get("Content-Encoding"), len(plain))
	}
	if got := resp.Header.Get("Connection"); got != "Keep-Alive" {
		t.Errorf("200 Connection: got %q; want Keep-Alive", got)
	}
	resp, z := get("/cluster/resources", "gzip, deflate")
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Accept-Encoding gzip, %d-byte body: Content-Encoding %q; want gzip", len(plain), resp.Header.Get("Content-Encoding"))
	}
	var env map[string]any
	if err := json.Unmarshal(gunzip(z), &env); err != nil || len(env["data"].([]any)) != 23 {
		t.Errorf("decompressed body: %v, %d rows; want 20 guests + node + 2 storages", err, len(env["data"].([]any)))
	}
	if resp, small := get("/version", "gzip"); resp.Header.Get("Content-Encoding") != "" || !json.Valid(small) {
		t.Errorf("small body: Content-Encoding %q; want none (<= 1024 bytes)", resp.Header.Get("Content-Encoding"))
	}

	// A large error body (many unknown parameters) is compressed as well.
	q := url.Values{}
	for i := 0; i < 40; i++ {
		q.Set(fmt.Sprintf("unknown-parameter-%02d", i), "1")
	}
	resp, eb := get("/version?"+q.Encode(), "gzip")
	if resp.StatusCode != 400 || resp.Header.Get("Content-Encoding") != "gzip" || resp.Header.Get("Connection") != "" && !resp.Close {
		t.Fatalf("large 400: got %d, Content-Encoding %q, close %v; want 400 gzip close", resp.StatusCode, resp.Header.Get("Content-Encoding"), resp.Close)
	}
	if !strings.Contains(string(gunzip(eb)), `"unknown-parameter-39":"property is not defined`) {
		t.Errorf("large 400 body does not carry the errors")
	}
}

// §2/§1.1 order (pve-manager rest_handler): permission check before the
// node's proxy lookup, and both before parameter validation.
func TestFidelityCheckOrder(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.s.AddToken("zero@pve!zero", "x", nil)
	for _, tc := range []struct {
		name, tok, method, path string
		p                       url.Values
		status                  int
		reason                  string
	}{
		{"permission before validation", "zero@pve!zero=x", "POST", "/nodes/pve/qemu/101/status/start", url.Values{"bogus": {"1"}},
			403, "Permission check failed (/vms/101, VM.PowerMgmt)"},
		{"permission before unknown node", "zero@pve!zero=x", "POST", "/nodes/other/qemu/101/status/start", nil,
			403, "Permission check failed (/vms/101, VM.PowerMgmt)"},
		{"unknown node before validation", ts.s.Token(), "POST", "/nodes/other/qemu/101/status/start", url.Values{"bogus": {"1"}},
			500, "hostname lookup 'other' failed - failed to get address info for: other: Name or service not known"},
		{"unknown node on a user=all endpoint", "zero@pve!zero=x", "GET", "/nodes/other/tasks", nil,
			500, "hostname lookup 'other' failed - failed to get address info for: other: Name or service not known"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.doTok(tc.tok, tc.method, tc.path, tc.p)
			if r.status != tc.status || r.reason != tc.reason {
				t.Errorf("got %d %q; want %d %q", r.status, r.reason, tc.status, tc.reason)
			}
		})
	}
	// DELETE with a body is refused like GET (HTTPD extract_params).
	req, _ := http.NewRequest("DELETE", ts.url+"/api2/json/nodes/pve/qemu/101", strings.NewReader("purge=1"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := ts.send(req, ts.s.Token()); r.status != 501 || r.reason != "Unexpected content for method 'DELETE'" {
		t.Errorf("DELETE with body: got %d %q; want 501 Unexpected content for method 'DELETE'", r.status, r.reason)
	}
	if _, ok := ts.s.Guest(101); !ok || len(ts.s.Mutations()) != 0 {
		t.Errorf("a refused request changed something")
	}
}

// §1.1 start/stop and §3.10: start checks template first, resumes a running
// QEMU guest under lock "backup", ignores lock "suspended" (QEMU, and
// removes it) and "mounted" (LXC); LXC's template message names a CT.
func TestFidelityStartLockSemantics(t *testing.T) {
	ts := startSim(t, Options{})
	tmpl := qemuSpec(101, false)
	tmpl.Config["template"] = "1"
	tmpl.Lock = "backup"
	ts.addGuest(tmpl)
	ct := lxcSpec(102, false)
	ct.Config["template"] = "1"
	ts.addGuest(ct)
	backup := qemuSpec(103, true)
	backup.Lock = "backup"
	ts.addGuest(backup)
	susp := qemuSpec(104, false)
	susp.Lock = "suspended"
	ts.addGuest(susp)
	mounted := lxcSpec(105, false)
	mounted.Lock = "mounted"
	ts.addGuest(mounted)
	stoppedBackup := qemuSpec(106, false)
	stoppedBackup.Lock = "backup"
	ts.addGuest(stoppedBackup)

	for _, tc := range []struct {
		path, exit, lock string
		running          bool
		vmid             int
	}{
		{"/nodes/pve/qemu/101/status/start", "you can't start a vm if it's a template", "backup", false, 101},
		{"/nodes/pve/lxc/102/status/start", "you can't start a CT if it's a template", "", false, 102},
		{"/nodes/pve/qemu/103/status/start", "OK", "backup", true, 103},
		{"/nodes/pve/qemu/104/status/start", "OK", "", true, 104},
		{"/nodes/pve/lxc/105/status/start", "OK", "mounted", true, 105},
		{"/nodes/pve/qemu/106/status/start", "VM is locked (backup)", "backup", false, 106},
	} {
		t.Run(tc.path, func(t *testing.T) {
			_, st := ts.runTask("POST", tc.path, url.Values{})
			if st["exitstatus"] != tc.exit {
				t.Errorf("exitstatus: got %q; want %q", st["exitstatus"], tc.exit)
			}
			g, _ := ts.s.Guest(tc.vmid)
			if (g.Status == "running") != tc.running || g.Lock != tc.lock {
				t.Errorf("after start: status %s lock %q; want running=%v lock %q", g.Status, g.Lock, tc.running, tc.lock)
			}
		})
	}
}

// §1 stop `overrule-shutdown`: a stop waits for the config lock a running
// shutdown holds (and times out); with overrule-shutdown=1 it aborts the
// shutdown task first and logs which.
func TestFidelityOverruleShutdown(t *testing.T) {
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		t.Run(string(k), func(t *testing.T) {
			ts := startSim(t, Options{})
			spec := qemuSpec(101, true)
			if k == guest.LXC {
				spec = lxcSpec(101, true)
			}
			spec.IgnoreShutdown = true
			ts.addGuest(spec)
			base := "/nodes/pve/" + string(k) + "/101/status/"
			// The shutdown task runs practically forever (slow-task fault on every task).
			ts.s.SetFaults(Faults{SlowTaskRate: 1, SlowTaskFactor: 100000})
			shut := ts.mustOK(ts.do("POST", base+"shutdown", url.Values{})).data().(string)
			ts.s.SetFaults(Faults{})

			_, st := ts.runTask("POST", base+"stop", url.Values{})
			if want := lockTimeoutError(k, 101); st["exitstatus"] != want {
				t.Errorf("stop during shutdown: got %q; want %q", st["exitstatus"], want)
			}
			stop, st := ts.runTask("POST", base+"stop", url.Values{"overrule-shutdown": {"1"}})
			if st["exitstatus"] != "OK" {
				t.Errorf("overruling stop: got %q; want OK", st["exitstatus"])
			}
			if sst := ts.waitTask(shut); sst["exitstatus"] != "interrupted by signal" {
				t.Errorf("overruled shutdown: got %q; want interrupted by signal", sst["exitstatus"])
			}
			r := ts.mustOK(ts.do("GET", "/nodes/pve/tasks/"+stop+"/log", nil))
			first := r.dataList(t)[0].(map[string]any)["t"]
			if want := "overruled " + prefix(k) + "shutdown tasks: " + shut; first != want {
				t.Errorf("stop log: got %q; want %q", first, want)
			}
			if g, _ := ts.s.Guest(101); g.Status != "stopped" {
				t.Errorf("guest %s after overruling stop; want stopped", g.Status)
			}
		})
	}
}

// §1.1 pending: [{key, value}] for every config scalar including digest
// (the loaded config carries it); no pending/delete keys without a pending
// section (TestHotplugVersusPending covers guests with one).
func TestFidelityPending(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	for _, path := range []string{"/nodes/pve/qemu/101", "/nodes/pve/lxc/102"} {
		cfg := ts.mustOK(ts.do("GET", path+"/config", nil)).dataMap(t)
		rows := ts.mustOK(ts.do("GET", path+"/pending", nil)).dataList(t)
		if len(rows) != len(cfg) {
			t.Errorf("%s: %d pending rows; want one per config key (%d)", path, len(rows), len(cfg))
		}
		for _, e := range rows {
			row := e.(map[string]any)
			key, _ := row["key"].(string)
			if len(row) != 2 || row["value"] != cfg[key] {
				t.Errorf("%s pending row %v; want {key, value} equal to config %q=%v", path, row, key, cfg[key])
			}
		}
	}
}

// §3.7 and §1.1 snapshots: LXC snapshot descriptions keep the trailing
// newline in the snapshot list, QEMU's do not; the list ends with the
// "current" entry carrying digest and running.
func TestFidelitySnapshotList(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, true))
	ts.addGuest(lxcSpec(102, false))
	for _, tc := range []struct {
		path, want string
		running    int64
	}{{"/nodes/pve/qemu/101", "before upgrade", 1}, {"/nodes/pve/lxc/102", "before upgrade\n", 0}} {
		_, st := ts.runTask("POST", tc.path+"/snapshot", url.Values{"snapname": {"s1"}, "description": {"before upgrade"}})
		if st["exitstatus"] != "OK" {
			t.Fatalf("snapshot: %v", st["exitstatus"])
		}
		list := ts.mustOK(ts.do("GET", tc.path+"/snapshot", nil)).dataList(t)
		if len(list) != 2 {
			t.Fatalf("%s: %d entries; want s1 and current", tc.path, len(list))
		}
		s1, cur := list[0].(map[string]any), list[1].(map[string]any)
		if s1["description"] != tc.want {
			t.Errorf("%s s1 description: got %q; want %q", tc.path, s1["description"], tc.want)
		}
		digest := ts.mustOK(ts.do("GET", tc.path+"/config", nil)).dataMap(t)["digest"]
		if cur["name"] != "current" || cur["description"] != "You are here!" || cur["digest"] != digest || num(t, cur["running"]) != tc.running || cur["parent"] != "s1" {
			t.Errorf("%s current entry: %v; want name current, digest %v, running %d, parent s1", tc.path, cur, digest, tc.running)
		}
	}
}

// §1.1 tasks: an unparseable UPID is a 400 on status and log; an unknown
// one is 400 "no such task" on status, but the log (which does not check
// existence) answers 200 with dump_logfile's single bare object, total 1.
func TestFidelityUnknownTask(t *testing.T) {
	ts := startSim(t, Options{})
	const unknown = "UPID:pve:00000001:00000001:00000001:qmstart:1:root@pam!steward:"
	for _, tc := range []struct {
		path, body string
		status     int
	}{
		{"/nodes/pve/tasks/UPID:garbage/status", `{"data":null,"errors":{"upid":"unable to parse worker upid"},"message":"Parameter verification failed.\n"}`, 400},
		{"/nodes/pve/tasks/UPID:garbage/log", `{"data":null,"errors":{"upid":"unable to parse worker upid"},"message":"Parameter verification failed.\n"}`, 400},
		{"/nodes/pve/tasks/" + unknown + "/status", `{"data":null,"errors":{"upid":"no such task"},"message":"Parameter verification failed.\n"}`, 400},
		{"/nodes/pve/tasks/" + unknown + "/log", `{"data":{"n":1,"t":"unable to open file - No such file or directory"},"total":1}`, 200},
	} {
		r := ts.do("GET", tc.path, nil)
		if r.status != tc.status || string(r.raw) != tc.body {
			t.Errorf("GET %s: got %d %s; want %d %s", tc.path, r.status, r.raw, tc.status, tc.body)
		}
	}
	ts.s.AddToken("zero@pve!zero", "x", nil)
	if r := ts.doTok("zero@pve!zero=x", "GET", "/nodes/pve/tasks/"+unknown+"/log", nil); r.status != 403 {
		t.Errorf("someone else's task log without Sys.Audit: got %d; want 403", r.status)
	}
}

// §3.14 digest: SHA-1 of the whole file, so a write that leaves the file
// text unchanged keeps the digest, any real change (including a snapshot
// section) changes it.
func TestFidelityDigestFollowsFileText(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	digest := func() string {
		return ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/config", nil)).dataMap(t)["digest"].(string)
	}
	d0 := digest()
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"cores": {"2"}, "digest": {d0}}))
	if d := digest(); d != d0 {
		t.Errorf("rewriting cores=2 changed the digest %s -> %s; want unchanged", d0, d)
	}
	ts.runTask("POST", "/nodes/pve/qemu/101/snapshot", url.Values{"snapname": {"s1"}})
	if d := digest(); d == d0 {
		t.Errorf("a new snapshot section left the digest unchanged")
	}
}

// §2 request encoding (pve-http-server process_header and
// authenticate_and_handle_request): unknown method, chunked bodies, bodies
// on GET/DELETE, oversized bodies and other content types are refused
// with PVE's codes and texts; nothing executes.
func TestFidelityRequestEncoding(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	send := func(method, path, ctype string, body io.Reader) result {
		t.Helper()
		req, err := http.NewRequest(method, ts.url+"/api2/json"+path, body)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		return ts.send(req, ts.s.Token())
	}
	// An io.Reader of unknown length makes net/http send the body chunked.
	chunked := io.MultiReader(strings.NewReader("cores=3"))
	big := strings.Repeat("a", maxPostBody+1)
	for _, tc := range []struct {
		name   string
		r      func() result
		status int
		reason string
	}{
		{"PATCH", func() result { return send("PATCH", "/version", "", nil) }, 501, "method 'PATCH' not available"},
		{"chunked body", func() result {
			return send("PUT", "/nodes/pve/qemu/101/config", "application/x-www-form-urlencoded", chunked)
		}, 501, "chunked transfer encoding not supported"},
		{"body on DELETE", func() result {
			return send("DELETE", "/nodes/pve/qemu/101", "application/x-www-form-urlencoded", strings.NewReader("purge=1"))
		}, 501, "Unexpected content for method 'DELETE'"},
		{"body over 512 KiB", func() result {
			// Without a connection: the server answers before the client
			// has written the body, so a real client sees a reset.
			req := httptest.NewRequest("PUT", "/api2/json/nodes/pve/qemu/101/config", strings.NewReader("description="+big))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.Header.Set("Authorization", "PVEAPIToken="+ts.s.Token())
			resp := ts.s.handle(req)
			return result{status: resp.status, reason: resp.msg}
		}, 501, "for data too large"},
		{"text/plain body", func() result {
			return send("PUT", "/nodes/pve/qemu/101/config", "text/plain", strings.NewReader("cores=3"))
		}, 506, "upload 'Content-Type 'text/plain' not implemented"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r()
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.status != tc.status || r.reason != tc.reason {
				t.Errorf("got %d %q; want %d %q", r.status, r.reason, tc.status, tc.reason)
			}
		})
	}
	// Accepted encodings: a form with a charset parameter, and JSON.
	ts.mustOK(send("PUT", "/nodes/pve/qemu/101/config", "application/x-www-form-urlencoded; charset=UTF-8", strings.NewReader("cores=3")))
	ts.mustOK(send("PUT", "/nodes/pve/qemu/101/config", "application/json", strings.NewReader(`{"cores":4}`)))
	if g, _ := ts.s.Guest(101); g.Config["cores"] != "4" || len(ts.s.Mutations()) != 2 {
		t.Errorf("cores %q after %d mutations; want 4 after exactly the 2 accepted writes", g.Config["cores"], len(ts.s.Mutations()))
	}
}
