package sim

import (
	"net/http"
	"net/url"
	"testing"
)

// TestRoutingSkipsEmptySegments: PVE's handler lookup (pve-common
// RESTHandler find_handler) splits the path on runs of '/' and skips empty
// fragments, so a trailing slash or a doubled slash reaches the same
// handler, path variables included. A path that still names no handler
// keeps PVE's 501 with the path as sent.
func TestRoutingSkipsEmptySegments(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	for _, path := range []string{
		"/nodes/pve/qemu/101/config",
		"/nodes/pve/qemu/101/config/",
		"//nodes/pve/qemu/101/config",
		"/nodes//pve/qemu//101/config",
		"/nodes/pve/qemu/101///config//",
	} {
		r := ts.do("GET", path, nil)
		if r.status != 200 {
			t.Errorf("GET %s: got %d %q; want 200", path, r.status, r.reason)
			continue
		}
		if got := r.dataMap(t)["name"]; got != "vm101" {
			t.Errorf("GET %s: name = %v; want vm101 (the handler of /nodes/{node}/qemu/{vmid}/config)", path, got)
		}
	}
	// The API root itself may be followed by any run of slashes.
	for _, raw := range []string{"/api2/json/version/", "/api2//json//version"} {
		r := ts.send(mustRequest(t, "GET", ts.url+raw), ts.s.Token())
		if r.status != 200 || r.dataMap(t)["version"] != pveVersion {
			t.Errorf("GET %s: got %d %q %s; want 200 with the version", raw, r.status, r.reason, r.raw)
		}
	}
	// A mutation through an unclean path runs once, on the right guest.
	upid, st := ts.runTask("POST", "/nodes/pve/qemu//101/status/start/", url.Values{})
	if st["exitstatus"] != "OK" {
		t.Fatalf("start via unclean path: task %s ended %v; want OK", upid, st["exitstatus"])
	}
	if g, _ := ts.s.Guest(101); g.Status != "running" {
		t.Errorf("guest 101 is %s after start; want running", g.Status)
	}
	// Still unknown after skipping empty fragments: 501 naming the path as sent.
	r := ts.do("GET", "/nodes/pve//qemu", url.Values{"full": {"1"}})
	if r.status != 200 {
		t.Errorf("GET /nodes/pve//qemu: got %d %q; want 200", r.status, r.reason)
	}
	r = ts.do("GET", "/nodes/pve/qemu/101//nosuch/", nil)
	if r.status != 501 || r.reason != "Method 'GET /nodes/pve/qemu/101//nosuch/' not implemented" {
		t.Errorf("unknown path: got %d %q; want 501 naming the path as sent", r.status, r.reason)
	}
}

// TestRouteSegments checks the splitting itself, including the storage
// content subtree where the rest of the path is one volume id.
func TestRouteSegments(t *testing.T) {
	tests := []struct {
		path string
		want []string
	}{
		{"/", nil},
		{"/version", []string{"version"}},
		{"//nodes//pve/", []string{"nodes", "pve"}},
		{"/nodes/pve/storage/local/content", []string{"nodes", "pve", "storage", "local", "content"}},
		{"/nodes/pve/storage/local/content/local:iso/debian.iso", []string{"nodes", "pve", "storage", "local", "content", "local:iso/debian.iso"}},
		{"/nodes/pve/storage/local/content//local:iso//debian.iso/", []string{"nodes", "pve", "storage", "local", "content", "local:iso/debian.iso"}},
		{"/nodes/pve/qemu/101/snapshot/a/rollback", []string{"nodes", "pve", "qemu", "101", "snapshot", "a", "rollback"}},
	}
	for _, tc := range tests {
		got := routeSegments(tc.path)
		if len(got) != len(tc.want) {
			t.Errorf("routeSegments(%q) = %q; want %q", tc.path, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("routeSegments(%q) = %q; want %q", tc.path, got, tc.want)
				break
			}
		}
	}
}

func mustRequest(t *testing.T, method, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
