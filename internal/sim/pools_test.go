package sim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// controlPost posts a JSON body to the control API with the admin token.
func (ts *testServer) controlPost(path, body string) (int, string) {
	ts.t.Helper()
	req, _ := http.NewRequest("POST", ts.url+path, strings.NewReader(body))
	r := ts.send(req, ts.s.Token())
	if r.err != nil {
		ts.t.Fatal(r.err)
	}
	msg, _ := r.body["error"].(string)
	return r.status, msg
}

func poolIDs(t *testing.T, r result) []string {
	t.Helper()
	var ids []string
	for _, e := range r.dataList(t) {
		ids = append(ids, e.(map[string]any)["poolid"].(string))
	}
	return ids
}

// TestPoolsEmpty: a node without pools answers GET /pools with an empty
// list, and /cluster/resources has no pool rows.
func TestPoolsEmpty(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, true))
	r := ts.mustOK(ts.do("GET", "/pools", nil))
	if string(r.raw) != `{"data":[]}` {
		t.Errorf("GET /pools: got %s; want {\"data\":[]}", r.raw)
	}
	for _, row := range ts.mustOK(ts.do("GET", "/cluster/resources", nil)).dataList(t) {
		m := row.(map[string]any)
		if m["type"] == "pool" || m["pool"] != nil {
			t.Errorf("resources row %v names a pool; there are none", m)
		}
	}
}

// TestPools: pools seeded through the control API, read as a PVE client
// reads them, membership through create and destroy.
func TestPools(t *testing.T) {
	// A clock the test moves, so the running guest has a whole uptime and
	// every row of one response is computed at the same instant.
	var mu sync.Mutex
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ts := startSim(t, Options{Clock: clock, Templates: true})
	ts.addGuest(qemuSpec(101, true))
	ts.addGuest(lxcSpec(102, false))
	ts.addGuest(qemuSpec(103, false))
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()

	for _, tc := range []struct{ body, want string }{
		{`{"poolid":"prod","comment":"production","vms":[101,102,1000],"storage":["local-lvm"]}`, ""},
		{`{"poolid":"dev"}`, ""},
		{`{"poolid":"prod/web"}`, ""},
		{`{"poolid":"dev"}`, `sim: pool "dev" already exists`},
		{`{"poolid":"qa","vms":[101]}`, `sim: pool qa: VM 101 belongs already to pool 'prod'`},
		{`{"poolid":"qa","storage":["nfs"]}`, `sim: pool qa: storage "nfs" does not exist (the simulator has local and local-lvm)`},
		{`{"poolid":"x/y"}`, `sim: pool x/y: parent pool "x" does not exist`},
		{`{"poolid":"bad name"}`, `sim: pool name "bad name" is not valid (letters, digits, '.', '_', '-', up to 3 levels joined by '/')`},
		{`{"poolid":"qa","vms":"101"}`, "sim: POST /_sim/pools: body is not a PoolSpec object: json: cannot unmarshal string into Go struct field PoolSpec.vms of type []int"},
	} {
		status, msg := ts.controlPost("/_sim/pools", tc.body)
		if tc.want == "" && status != 200 {
			t.Fatalf("POST /_sim/pools %s: %d %s; want 200", tc.body, status, msg)
		}
		if tc.want != "" && (status != 400 || msg != tc.want) {
			t.Errorf("POST /_sim/pools %s: %d %q; want 400 %q", tc.body, status, msg, tc.want)
		}
	}

	listSchema := returnsSchema(t, "/pools", "GET")
	itemSchema, _ := listSchema["items"].(map[string]any)
	memberSchema := itemSchema["properties"].(map[string]any)["members"].(map[string]any)["items"].(map[string]any)

	// The list: sorted, comment only where set, no members.
	r := ts.mustOK(ts.do("GET", "/pools", nil))
	if got := strings.Join(poolIDs(t, r), " "); got != "dev prod prod/web" {
		t.Errorf("GET /pools: pools %q; want \"dev prod prod/web\"", got)
	}
	for _, e := range r.dataList(t) {
		m := e.(map[string]any)
		checkObjectAgainst(t, "GET /pools item", itemSchema, m, false)
		if _, has := m["members"]; has {
			t.Errorf("GET /pools item %v lists members; only poolid= does", m)
		}
		if (m["poolid"] == "prod") != (m["comment"] == "production") || (m["poolid"] != "prod" && m["comment"] != nil) {
			t.Errorf("GET /pools item %v: comment wrong", m)
		}
	}

	members := func(r result) []string {
		t.Helper()
		list := r.dataList(t)
		if len(list) != 1 {
			t.Fatalf("got %d pools; want 1", len(list))
		}
		var ids []string
		for _, e := range list[0].(map[string]any)["members"].([]any) {
			m := e.(map[string]any)
			checkObjectAgainst(t, "member", memberSchema, m, true)
			ids = append(ids, m["id"].(string))
		}
		return ids
	}
	// One pool with its members; a member guest that does not exist is skipped.
	r = ts.mustOK(ts.do("GET", "/pools", url.Values{"poolid": {"prod"}}))
	if got := strings.Join(members(r), " "); got != "qemu/101 lxc/102 storage/pve/local-lvm" {
		t.Errorf("prod members: %q; want \"qemu/101 lxc/102 storage/pve/local-lvm\"", got)
	}
	if p := r.dataList(t)[0].(map[string]any); p["poolid"] != "prod" || p["comment"] != "production" {
		t.Errorf("prod: poolid %v comment %v; want prod, production", p["poolid"], p["comment"])
	}
	for typ, want := range map[string]string{"lxc": "lxc/102", "qemu": "qemu/101", "storage": "storage/pve/local-lvm"} {
		r = ts.mustOK(ts.do("GET", "/pools", url.Values{"poolid": {"prod"}, "type": {typ}}))
		if got := strings.Join(members(r), " "); got != want {
			t.Errorf("prod members of type %s: %q; want %q", typ, got, want)
		}
	}
	// The deprecated form.
	r = ts.mustOK(ts.do("GET", "/pools/prod", nil))
	dep := r.dataMap(t)
	if dep["comment"] != "production" || len(dep["members"].([]any)) != 3 || dep["poolid"] != nil {
		t.Errorf("GET /pools/prod = %v; want comment and 3 members", dep)
	}
	checkObjectAgainst(t, "GET /pools/{poolid}", returnsSchema(t, "/pools/{poolid}", "GET"), dep, false)

	// Errors as PVE gives them.
	for _, tc := range []struct {
		path   string
		params url.Values
		status int
		reason string
	}{
		{"/pools", url.Values{"poolid": {"nosuch"}}, 500, "pool 'nosuch' does not exist"},
		{"/pools/nosuch", nil, 500, "pool 'nosuch' does not exist"},
		{"/pools", url.Values{"type": {"qemu"}}, 400, "Parameter verification failed."},
	} {
		r := ts.do("GET", tc.path, tc.params)
		if r.status != tc.status || r.reason != tc.reason {
			t.Errorf("GET %s %v: got %d %q; want %d %q", tc.path, tc.params, r.status, r.reason, tc.status, tc.reason)
		}
	}

	// A token sees only the pools it may audit.
	ts.s.AddToken("ops@pve!ro", "s3cret", map[string][]string{"/pool/dev": {"Pool.Audit"}, "/vms": {"VM.Audit"}})
	const ops = "ops@pve!ro=s3cret"
	if got := poolIDs(t, ts.mustOK(ts.doTok(ops, "GET", "/pools", nil))); strings.Join(got, " ") != "dev" {
		t.Errorf("GET /pools as ops: %q; want dev", got)
	}
	if r := ts.mustOK(ts.doTok(ops, "GET", "/pools", url.Values{"poolid": {"prod"}})); string(r.raw) != `{"data":[]}` {
		t.Errorf("GET /pools?poolid=prod as ops: %s; want an empty list", r.raw)
	}
	if r := ts.doTok(ops, "GET", "/pools/prod", nil); r.status != 403 || r.reason != "Permission check failed (/pool/prod, Pool.Audit)" {
		t.Errorf("GET /pools/prod as ops: %d %q; want 403", r.status, r.reason)
	}

	// /cluster/resources: pool rows first, then guests naming their pool.
	resSchema := returnsSchema(t, "/cluster/resources", "GET")["items"].(map[string]any)
	rows := ts.mustOK(ts.do("GET", "/cluster/resources", nil)).dataList(t)
	byID := map[string]map[string]any{}
	for i, row := range rows {
		m := row.(map[string]any)
		byID[m["id"].(string)] = m
		if (i < 3) != (m["type"] == "pool") {
			t.Errorf("resources row %d is %v; want the 3 pool rows first", i, m["id"])
		}
		checkObjectAgainst(t, "resources row "+m["id"].(string), resSchema, m, true)
	}
	prod := byID["/pool/prod"]
	if prod == nil || prod["pool"] != "prod" {
		t.Fatalf("resources: pool row /pool/prod = %v", prod)
	}
	vm101 := byID["qemu/101"]
	// Only the running member (101) counts toward the pool's usage.
	if vm101["uptime"] != json.Number("3600") {
		t.Fatalf("guest 101 uptime %v; want 3600", vm101["uptime"])
	}
	if prod["maxcpu"] != vm101["maxcpu"] || prod["maxmem"] != vm101["maxmem"] || prod["mem"] != vm101["mem"] ||
		prod["uptime"] != vm101["uptime"] || prod["cpu"] != vm101["cpu"] {
		t.Errorf("pool row %v; want the usage of its running guest 101 (%v)", prod, vm101)
	}
	if dev := byID["/pool/dev"]; dev == nil || dev["uptime"] != nil {
		t.Errorf("pool row /pool/dev = %v; want one without usage (no running guests)", dev)
	}
	for id, want := range map[string]any{"qemu/101": "prod", "lxc/102": "prod", "qemu/103": nil} {
		if got := byID[id]["pool"]; got != want {
			t.Errorf("resources %s pool = %v; want %v", id, got, want)
		}
	}
	// A member's row has the shape of a captured pool member's row.
	for _, e := range loadFixture(t, "ansible-cluster-resources-vm.data-only.json").([]any) {
		if fx := e.(map[string]any); fx["type"] == "lxc" && fx["status"] == "stopped" && fx["pool"] != nil {
			sameShape(t, "resources lxc/102 (pool member)", byID["lxc/102"], fx, nil)
			break
		}
	}
	opsRows := ts.mustOK(ts.doTok(ops, "GET", "/cluster/resources", url.Values{"type": {"vm"}})).dataList(t)
	for _, row := range opsRows {
		if m := row.(map[string]any); m["pool"] != nil {
			t.Errorf("ops sees pool %v on %v without Pool.Audit on it", m["pool"], m["id"])
		}
	}

	// Create into a pool; a pool that does not exist refuses the create.
	before := len(ts.s.Mutations())
	r = ts.do("POST", "/nodes/pve/qemu", url.Values{"vmid": {"300"}, "pool": {"nosuch"}})
	if r.status != 403 || r.reason != "Permission check failed (pool 'nosuch' does not exist)" {
		t.Errorf("create into a missing pool: %d %q; want 403", r.status, r.reason)
	}
	if _, exists := ts.s.Guest(300); exists || len(ts.s.Mutations()) != before {
		t.Errorf("a refused create changed something")
	}
	if _, st := ts.runTask("POST", "/nodes/pve/qemu", url.Values{"vmid": {"300"}, "pool": {"dev"}, "memory": {"512"}}); st["exitstatus"] != "OK" {
		t.Fatalf("create into dev: %v", st["exitstatus"])
	}
	if _, st := ts.runTask("POST", "/nodes/pve/lxc", url.Values{"vmid": {"301"}, "pool": {"dev"},
		"ostemplate": {TemplateVztmpl}}); st["exitstatus"] != "OK" {
		t.Fatalf("create ct into dev: %v", st["exitstatus"])
	}
	if got := strings.Join(members(ts.mustOK(ts.do("GET", "/pools", url.Values{"poolid": {"dev"}}))), " "); got != "qemu/300 lxc/301" {
		t.Errorf("dev members after create: %q; want \"qemu/300 lxc/301\"", got)
	}
	// Destroying a guest removes it from its pool.
	ts.runTask("DELETE", "/nodes/pve/qemu/300", url.Values{})
	if got := strings.Join(members(ts.mustOK(ts.do("GET", "/pools", url.Values{"poolid": {"dev"}}))), " "); got != "lxc/301" {
		t.Errorf("dev members after destroying 300: %q; want \"lxc/301\"", got)
	}
	ts.mustOK(ts.do("GET", "/cluster/nextid", url.Values{"vmid": {"300"}}))
}

// TestPoolPermissionsReachMembers: a privilege granted on /pool/<id>
// holds on the pool's guests and storages, and on nothing else; joining
// or leaving the pool (create, destroy) moves the permission with it.
func TestPoolPermissionsReachMembers(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	ts.addGuest(qemuSpec(103, false))
	if err := ts.s.AddPool(PoolSpec{PoolID: "prod", VMIDs: []int{101, 102}, Storage: []string{"local-lvm"}}); err != nil {
		t.Fatal(err)
	}
	if err := ts.s.AddPool(PoolSpec{PoolID: "dev"}); err != nil {
		t.Fatal(err)
	}
	ts.s.AddToken("team@pve!tk", "s3cret", map[string][]string{
		"/pool/prod": {"VM.Audit", "VM.PowerMgmt", "Datastore.Audit", "Pool.Audit"},
		"/pool/dev":  {"VM.Allocate", "VM.Audit"},
	})
	const team = "team@pve!tk=s3cret"

	ids := func(path string, q url.Values, key string) string {
		var out []string
		for _, e := range ts.mustOK(ts.doTok(team, "GET", path, q)).dataList(t) {
			out = append(out, fmt.Sprint(e.(map[string]any)[key]))
		}
		return strings.Join(out, " ")
	}
	if got := ids("/cluster/resources", url.Values{"type": {"vm"}}, "id"); got != "qemu/101 lxc/102" {
		t.Errorf("resources seen through the pool: %q; want \"qemu/101 lxc/102\"", got)
	}
	if got := ids("/nodes/pve/storage", nil, "storage"); got != "local-lvm" {
		t.Errorf("storages seen through the pool: %q; want local-lvm", got)
	}
	ts.mustOK(ts.doTok(team, "GET", "/nodes/pve/qemu/101/config", nil))
	if r := ts.doTok(team, "GET", "/nodes/pve/qemu/103/config", nil); r.status != 403 || r.reason != "Permission check failed (/vms/103, VM.Audit)" {
		t.Errorf("config of 103, outside the pool: %d %q; want 403", r.status, r.reason)
	}
	if _, st := ts.runTaskTok(team, "POST", "/nodes/pve/qemu/101/status/start", url.Values{}); st["exitstatus"] != "OK" {
		t.Errorf("start of 101 through the pool's VM.PowerMgmt: %v; want OK", st["exitstatus"])
	}
	if r := ts.doTok(team, "POST", "/nodes/pve/qemu/103/status/start", url.Values{}); r.status != 403 {
		t.Errorf("start of 103, outside the pool: %d %q; want 403", r.status, r.reason)
	}

	// VM.Allocate on the pool is enough to create into it, and the new
	// guest is then visible through the pool.
	if _, st := ts.runTaskTok(team, "POST", "/nodes/pve/qemu", url.Values{"vmid": {"300"}, "pool": {"dev"}}); st["exitstatus"] != "OK" {
		t.Fatalf("create into dev with the pool's VM.Allocate: %v", st["exitstatus"])
	}
	ts.mustOK(ts.doTok(team, "GET", "/nodes/pve/qemu/300/config", nil))
	if r := ts.doTok(team, "POST", "/nodes/pve/qemu", url.Values{"vmid": {"301"}}); r.status != 403 || r.reason != "Permission check failed (/vms/301, VM.Allocate)" {
		t.Errorf("create outside any pool: %d %q; want 403", r.status, r.reason)
	}
	ts.runTask("DELETE", "/nodes/pve/qemu/300", url.Values{})
	ts.addGuest(qemuSpec(300, false)) // a new guest with the old id is in no pool
	if r := ts.doTok(team, "GET", "/nodes/pve/qemu/300/config", nil); r.status != 403 {
		t.Errorf("a new guest 300 after the pool member was destroyed: %d %q; want 403", r.status, r.reason)
	}
}
