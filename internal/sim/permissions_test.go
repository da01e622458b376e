package sim

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// TestAccessPermissions holds GET /access/permissions to
// pve-access-control: the whole tree walks the top-level paths, every
// ACL path and every pool member, leaving out paths without privileges;
// inherited privileges show on child paths; a pool passes privileges on
// without the propagate flag; one path comes back under the key asked.
func TestAccessPermissions(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	if err := ts.s.AddPool(PoolSpec{PoolID: "web", VMIDs: []int{101}}); err != nil {
		t.Fatal(err)
	}
	ts.s.AddToken("ops@pve!tk", "x", map[string][]string{
		"/vms":      {"VM.Audit"},
		"/pool/web": {"VM.PowerMgmt"},
	})
	ts.s.AddToken("other@pve!tk", "y", map[string][]string{"/vms/105": {"VM.Snapshot"}})
	tok := "ops@pve!tk=x"

	want := map[string]map[string]any{
		"/vms":      {"VM.Audit": json.Number("1")},
		"/vms/105":  {"VM.Audit": json.Number("1")}, // another token's ACL path: still in the tree
		"/vms/101":  {"VM.Audit": json.Number("1"), "VM.PowerMgmt": json.Number("0")},
		"/pool/web": {"VM.PowerMgmt": json.Number("1")},
	}
	got := ts.mustOK(ts.doTok(tok, "GET", "/access/permissions", nil)).dataMap(t)
	if len(got) != len(want) {
		t.Errorf("whole tree: %v; want the paths %v", got, want)
	}
	for p, privs := range want {
		g, _ := got[p].(map[string]any)
		if !reflect.DeepEqual(g, map[string]any(privs)) {
			t.Errorf("whole tree %s: %v; want %v", p, g, privs)
		}
	}

	one := ts.mustOK(ts.doTok(tok, "GET", "/access/permissions", url.Values{"path": {"/vms/101/"}})).dataMap(t)
	if g, _ := one["/vms/101/"].(map[string]any); len(one) != 1 || !reflect.DeepEqual(g, map[string]any{"VM.Audit": json.Number("1"), "VM.PowerMgmt": json.Number("0")}) {
		t.Errorf("path=/vms/101/: %v; want the key as asked with VM.Audit (1) and VM.PowerMgmt (0)", one)
	}
	none := ts.mustOK(ts.doTok(tok, "GET", "/access/permissions", url.Values{"path": {"/storage/local"}})).dataMap(t)
	if g, ok := none["/storage/local"].(map[string]any); !ok || len(g) != 0 {
		t.Errorf("path without privileges: %v; want {\"/storage/local\": {}}", none)
	}

	r := ts.doTok(tok, "GET", "/access/permissions", url.Values{"userid": {"other@pve!tk"}})
	if r.status != 403 || r.reason != "Permission check failed (/access, Sys.Audit)" {
		t.Errorf("another token's permissions without Sys.Audit: %d %q; want 403 (/access, Sys.Audit)", r.status, r.reason)
	}
	self := ts.mustOK(ts.doTok(tok, "GET", "/access/permissions", url.Values{"userid": {"ops@pve!tk"}})).dataMap(t)
	if len(self) != len(want) {
		t.Errorf("own permissions by userid: %v; want the same as without", self)
	}
	admin := ts.mustOK(ts.do("GET", "/access/permissions", url.Values{"userid": {"other@pve!tk"}})).dataMap(t)
	if g, _ := admin["/vms/105"].(map[string]any); len(admin) != 1 || !reflect.DeepEqual(g, map[string]any{"VM.Snapshot": json.Number("1")}) {
		t.Errorf("admin asking for other@pve!tk: %v; want only /vms/105 VM.Snapshot", admin)
	}
	all := ts.mustOK(ts.do("GET", "/access/permissions", nil)).dataMap(t)
	for _, p := range []string{"/", "/access", "/nodes", "/storage", "/vms", "/vms/101", "/pool/web"} {
		if g, _ := all[p].(map[string]any); g["VM.Allocate"] != json.Number("1") {
			t.Errorf("admin whole tree %s: %v; want every privilege, propagated", p, all[p])
		}
	}
}

// TestDatastoreAllocateSpace: allocating or growing a volume needs
// Datastore.AllocateSpace on its storage, as qemu-server's
// check_storage_access and both resize_vm handlers check: a 403 before
// anything runs for create, config writes and an LXC resize; a failed
// task for a QEMU resize (qemu-server checks inside its worker).
func TestDatastoreAllocateSpace(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, false))
	vm := []string{"VM.Audit", "VM.Allocate", "VM.Config.Disk", "VM.Config.Memory", "VM.Config.CPU"}
	ts.s.AddToken("ops@pve!tk", "x", map[string][]string{"/vms": vm, "/storage/local": {"Datastore.AllocateSpace"}})
	tok := "ops@pve!tk=x"
	const denied = "Permission check failed (/storage/local-lvm, Datastore.AllocateSpace)"
	for _, c := range []struct {
		name, method, path string
		params             url.Values
	}{
		{"create qemu", "POST", "/nodes/pve/qemu", url.Values{"vmid": {"110"}, "scsi0": {"local-lvm:4"}}},
		{"create lxc", "POST", "/nodes/pve/lxc", url.Values{"vmid": {"111"}, "ostemplate": {"local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}, "rootfs": {"local-lvm:4"}}},
		{"add a disk", "PUT", "/nodes/pve/qemu/101/config", url.Values{"scsi2": {"local-lvm:4,discard=on"}}},
		{"add a mount point", "PUT", "/nodes/pve/lxc/102/config", url.Values{"mp1": {"local-lvm:2,mp=/srv"}}},
		{"grow a mount point", "PUT", "/nodes/pve/lxc/102/resize", url.Values{"disk": {"rootfs"}, "size": {"+1G"}}},
	} {
		r := ts.doTok(tok, c.method, c.path, c.params)
		if r.status != 403 || r.reason != denied {
			t.Errorf("%s without the privilege: %d %q; want 403 %q", c.name, r.status, r.reason, denied)
		}
	}
	_, st := ts.runTaskTok(tok, "PUT", "/nodes/pve/qemu/101/resize", url.Values{"disk": {"scsi0"}, "size": {"+1G"}})
	if st["exitstatus"] != denied {
		t.Errorf("QEMU resize without the privilege: task exit %v; want %q", st["exitstatus"], denied)
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("%d mutations ran without the privilege; want none", n)
	}
	// On a storage the token may allocate on, the same calls run.
	ts.mustOK(ts.doTok(tok, "PUT", "/nodes/pve/qemu/101/config", url.Values{"scsi2": {"local:4"}}))
}

func TestControlTokens(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	post := func(body string) result {
		req, _ := http.NewRequest("POST", ts.url+"/_sim/tokens", strings.NewReader(body))
		return ts.send(req, ts.s.Token())
	}
	for _, bad := range []string{`{"id":"nouser!tk","secret":"x"}`, `{"id":"a@pve!tk","secret":""}`, `{"id":"a@pve!tk","secret":"a=b"}`, `[]`,
		`{"id":"` + strings.SplitN(ts.s.Token(), "=", 2)[0] + `","secret":"x"}`} {
		if r := post(bad); r.status != 400 {
			t.Errorf("POST /_sim/tokens %s: %d; want 400", bad, r.status)
		}
	}
	if r := post(`{"id":"a@pve!tk","secret":"s1","privs":{"/vms/101":["VM.Audit"]}}`); r.status != 200 {
		t.Fatalf("POST /_sim/tokens: %d %s", r.status, r.raw)
	}
	ts.mustOK(ts.doTok("a@pve!tk=s1", "GET", "/nodes/pve/qemu/101/config", nil))
	if r := ts.doTok("a@pve!tk=s1", "POST", "/nodes/pve/qemu/101/status/start", nil); r.status != 403 {
		t.Errorf("start with VM.Audit only: %d; want 403", r.status)
	}
	// The admin token keeps its privileges.
	ts.mustOK(ts.do("GET", "/nodes/pve/qemu/101/config", nil))
}
