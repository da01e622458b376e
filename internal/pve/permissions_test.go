package pve

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestPermissionsDecodesPerlBooleans(t *testing.T) {
	var gotQuery string
	_, c := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery = r.URL.RawQuery
		w.Write([]byte(`{"data":{"/vms":{"VM.Audit":1,"VM.PowerMgmt":0,"VM.Snapshot":"1"}}}`))
	}))
	p, err := c.Permissions(t.Context(), "/vms")
	if err != nil {
		t.Fatal(err)
	}
	if gotQuery != "path=%2Fvms" {
		t.Errorf("query %q; want path=%%2Fvms", gotQuery)
	}
	for _, priv := range []string{"VM.Audit", "VM.PowerMgmt", "VM.Snapshot"} {
		if !p.Has("/vms", priv) {
			t.Errorf("Has(/vms, %s) = false; a privilege with propagate 0 is still held", priv)
		}
	}
	if p.Has("/vms", "VM.Allocate") || p.Has("/", "VM.Audit") {
		t.Errorf("Has reports a privilege PVE did not list: %v", p)
	}
	if p["/vms"]["VM.PowerMgmt"] || !p["/vms"]["VM.Audit"] {
		t.Errorf("propagate flags %v; want VM.Audit true, VM.PowerMgmt false", p["/vms"])
	}
	if got := p.Names("/vms"); len(got) != 3 || got[0] != "VM.Audit" {
		t.Errorf("Names = %v; want the three, sorted", got)
	}
}

func TestRoute(t *testing.T) {
	for path, want := range map[string]string{
		"/version":                         "/version",
		"/access/permissions":              "/access/permissions",
		"/nodes/pve/qemu":                  "/nodes/{node}/qemu",
		"/nodes/pve/qemu/101/status/start": "/nodes/{node}/qemu/{vmid}/status/start",
		"/nodes/pve-2/lxc/100000/config":   "/nodes/{node}/lxc/{vmid}/config",
		"/nodes/pve/qemu/101/snapshot/before-upgrade/rollback":            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
		"/nodes/pve/qemu/101/snapshot":                                    "/nodes/{node}/qemu/{vmid}/snapshot",
		"/nodes/pve/tasks/UPID:pve:0000:0:0:qmstart:101:root@pam:/status": "/nodes/{node}/tasks/{upid}/status",
		"/nodes/pve/storage/local-lvm/content":                            "/nodes/{node}/storage/{storage}/content",
		"/nodes/pve/storage":                                              "/nodes/{node}/storage",
		"/cluster/resources":                                              "/cluster/resources",
	} {
		if got := Route(path); got != want {
			t.Errorf("Route(%q) = %q; want %q", path, got, want)
		}
	}
}

func TestObserveSeesEveryRequest(t *testing.T) {
	type obs struct {
		method, route string
		status        int
	}
	var mu sync.Mutex
	var got []obs
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			http.Error(w, "Permission check failed (/vms/101, VM.PowerMgmt)", 403)
			return
		}
		w.Write([]byte(`{"data":{"version":"9.1.1","release":"9.1","repoid":"x"}}`))
	}))
	t.Cleanup(srv.Close)
	c, err := New(Options{URL: srv.URL, Token: testToken, Fingerprint: CertFingerprint(srv.Certificate().Raw),
		Observe: func(method, route string, status int, d time.Duration) {
			mu.Lock()
			got = append(got, obs{method, route, status})
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(t.Context(), "pve", "qemu", 101); err == nil {
		t.Fatal("start: want the 403")
	}
	srv.Close()
	if _, err := c.Version(t.Context()); err == nil {
		t.Fatal("version on a closed server: want an error")
	}
	want := []obs{{"GET", "/version", 200}, {"POST", "/nodes/{node}/qemu/{vmid}/status/start", 403}, {"GET", "/version", 0}}
	if len(got) != len(want) {
		t.Fatalf("observed %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("observation %d = %v; want %v", i, got[i], want[i])
		}
	}
}
