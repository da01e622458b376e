package sim

import (
	"encoding/json"
	"net/url"
	"reflect"
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
