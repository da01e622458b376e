package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

const fixtureDir = "../pve/testdata/fixtures"

// loadFixture returns a fixture's data (unwrapping {"data":...} if present).
func loadFixture(t *testing.T, name string) any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if m, ok := v.(map[string]any); ok {
		if d, ok := m["data"]; ok && len(m) == 1 {
			return d
		}
	}
	return v
}

func jsonKind(v any) string {
	switch v.(type) {
	case json.Number:
		return "number"
	case string:
		return "string"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// sameShape checks that every key of want exists in got with the same JSON
// type (one level into nested objects), except documented differences.
func sameShape(t *testing.T, what string, got, want map[string]any, except map[string]string) {
	t.Helper()
	for k, wv := range want {
		gv, ok := got[k]
		if ex, isEx := except[k]; isEx {
			if ex != "" && ok && jsonKind(gv) != ex {
				t.Errorf("%s: key %q: got %s; want %s (documented version difference)", what, k, jsonKind(gv), ex)
			}
			continue
		}
		if !ok {
			t.Errorf("%s: key %q missing (fixture has %s)", what, k, jsonKind(wv))
			continue
		}
		if jsonKind(gv) != jsonKind(wv) {
			t.Errorf("%s: key %q: got %s; want %s", what, k, jsonKind(gv), jsonKind(wv))
			continue
		}
		if wm, ok := wv.(map[string]any); ok {
			sameShape(t, what+"."+k, gv.(map[string]any), wm, nil)
		}
		if wa, ok := wv.([]any); ok && len(wa) > 0 {
			ga := gv.([]any)
			if len(ga) > 0 && jsonKind(ga[0]) != jsonKind(wa[0]) {
				t.Errorf("%s: key %q elements: got %s; want %s", what, k, jsonKind(ga[0]), jsonKind(wa[0]))
			}
		}
	}
}

// byStatus picks the first list entry with the given status.
func byStatus(t *testing.T, list []any, status string) map[string]any {
	t.Helper()
	for _, e := range list {
		if m := e.(map[string]any); m["status"] == status {
			return m
		}
	}
	t.Fatalf("no %s entry in %v", status, list)
	return nil
}

func TestResponseShapesMatchFixtures(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(100, true))
	ts.addGuest(qemuSpec(101, false))
	ts.addGuest(lxcSpec(102, true))
	ts.addGuest(lxcSpec(103, false))

	get := func(path string, q url.Values) any { return ts.mustOK(ts.do("GET", path, q)).data() }
	list := func(path string, q url.Values) []any { return get(path, q).([]any) }

	t.Run("qemu list", func(t *testing.T) {
		fx := loadFixture(t, "ansible-qemu-list.data-only.json").([]any)
		got := list("/nodes/pve/qemu", nil)
		for _, st := range []string{"running", "stopped"} {
			sameShape(t, "qemu list "+st, byStatus(t, got, st), byStatus(t, fx, st), nil)
		}
	})
	t.Run("lxc list", func(t *testing.T) {
		// vmid: a string before pve-container 5.0.10 (the fixtures), an integer on 9.x (FIDELITY §3.5).
		for _, name := range []string{"gp-pve7-lxc-list.vmid-as-string.json", "ansible-lxc-list.vmid-as-string.data-only.json"} {
			fx := loadFixture(t, name).([]any)
			got := list("/nodes/pve/lxc", nil)
			for _, st := range []string{"running", "stopped"} {
				want := byStatus(t, fx, st)
				delete(want, "template") // present only for templates
				sameShape(t, name+" "+st, byStatus(t, got, st), want, map[string]string{"vmid": "number"})
			}
		}
	})
	t.Run("cluster resources", func(t *testing.T) {
		fx := loadFixture(t, "ansible-cluster-resources-vm.data-only.json").([]any)
		got := list("/cluster/resources", url.Values{"type": {"vm"}})
		for _, e := range got {
			if m := e.(map[string]any); m["type"] == "node" || m["type"] == "storage" {
				t.Errorf("type=vm returned %v", m["type"])
			}
		}
		sameShape(t, "resources vm", byStatus(t, got, "running"), byStatus(t, fx, "running"), map[string]string{"pool": ""})
		all := list("/cluster/resources", nil)
		fxAll := loadFixture(t, "gp-pve7-cluster-resources.json").([]any)
		for _, typ := range []string{"node", "storage"} {
			var g, w map[string]any
			for _, e := range all {
				if m := e.(map[string]any); m["type"] == typ {
					g = m
				}
			}
			for _, e := range fxAll {
				if m := e.(map[string]any); m["type"] == typ {
					w = m
				}
			}
			if g == nil {
				t.Fatalf("no %s row", typ)
			}
			sameShape(t, "resources "+typ, g, w, nil)
		}
	})
	t.Run("nodes", func(t *testing.T) {
		fx := loadFixture(t, "gp-pve7-nodes.json").([]any)
		got := list("/nodes", nil)
		sameShape(t, "nodes", got[0].(map[string]any), fx[0].(map[string]any), nil)
		if fp := got[0].(map[string]any)["ssl_fingerprint"]; fp != ts.s.Fingerprint() || len(ts.s.Fingerprint()) != 95 {
			t.Errorf("ssl_fingerprint %v; want %s (32 colon-separated bytes)", fp, ts.s.Fingerprint())
		}
	})
	t.Run("node status", func(t *testing.T) {
		fx := loadFixture(t, "gp-pve7-node-status.json").(map[string]any)
		sameShape(t, "node status", get("/nodes/pve/status", nil).(map[string]any), fx, nil)
	})
	t.Run("qemu status current", func(t *testing.T) {
		fx := loadFixture(t, "gp-pve8-qemu-status-current.full.json").(map[string]any)
		// QMP detail the simulator does not model.
		for _, k := range []string{"blockstat", "ballooninfo", "nics", "proxmox-support", "spice", "balloon_min"} {
			delete(fx, k)
		}
		sameShape(t, "qemu status/current", get("/nodes/pve/qemu/100/status/current", nil).(map[string]any), fx, nil)
	})
	t.Run("qemu config round trip", func(t *testing.T) {
		for _, name := range []string{"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json", "unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json"} {
			fx := loadFixture(t, name).(map[string]any)
			roundTrip(t, ts, name, guest.QEMU, 200, fx)
		}
	})
	t.Run("lxc config round trip", func(t *testing.T) {
		fx := loadFixture(t, "gp-pve7-lxc-config.json").(map[string]any)
		delete(fx, "lxc") // raw lxc.* keys are not modelled
		roundTrip(t, ts, "lxc config", guest.LXC, 202, fx)
	})
	t.Run("tasks", func(t *testing.T) {
		upid, _ := ts.runTask("POST", "/nodes/pve/qemu/101/status/start", url.Values{})
		st := get("/nodes/pve/tasks/"+upid+"/status", nil).(map[string]any)
		sameShape(t, "task status", st, loadFixture(t, "proxmoxer-task-status.stopped-ok.json").(map[string]any), nil)
		logs := list("/nodes/pve/tasks/"+upid+"/log", nil)
		sameShape(t, "task log", logs[0].(map[string]any), loadFixture(t, "gp-task-log.imgcopy-upload.data-only.json").([]any)[0].(map[string]any), nil)
		tl := list("/nodes/pve/tasks", nil)
		sameShape(t, "task list", tl[0].(map[string]any), loadFixture(t, "ansible-pve6.4-node-tasks-list.data-only.json").([]any)[0].(map[string]any), nil)
	})
	t.Run("nextid 400", func(t *testing.T) {
		r := ts.do("GET", "/cluster/nextid", url.Values{"vmid": {"200"}})
		fx := loadFixture(t, "gp-mock-nextid-400-vm-exists.json").(map[string]any)
		if r.status != 400 {
			t.Fatalf("status %d; want 400", r.status)
		}
		delete(r.body, "message")
		if g, w := mustJSON(r.body), mustJSON(fx); g != w {
			t.Errorf("got %s; want %s", g, w)
		}
		if n := get("/cluster/nextid", nil); jsonKind(n) != "string" {
			t.Errorf("nextid: %v is %s; want a string", n, jsonKind(n))
		}
	})
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// roundTrip stores a captured config in a guest and checks GET …/config
// returns every key with the captured value and JSON type.
func roundTrip(t *testing.T, ts *testServer, what string, k guest.Kind, vmid int, fx map[string]any) {
	t.Helper()
	cfg := map[string]string{}
	for key, v := range fx {
		if key != "digest" {
			cfg[key] = stringify(v)
		}
	}
	ts.s.mu.Lock()
	delete(ts.s.guests, vmid)
	ts.s.mu.Unlock()
	ts.addGuest(GuestSpec{VMID: vmid, Kind: k, Config: cfg})
	got := ts.mustOK(ts.do("GET", "/nodes/pve/"+string(k)+"/"+itoa(vmid)+"/config", nil)).dataMap(t)
	for key, wv := range fx {
		gv := got[key]
		if jsonKind(gv) != jsonKind(wv) {
			t.Errorf("%s: %q: got %s %v; want %s %v", what, key, jsonKind(gv), gv, jsonKind(wv), wv)
		} else if key != "digest" && mustJSON(gv) != mustJSON(wv) {
			t.Errorf("%s: %q: got %v; want %v", what, key, gv, wv)
		}
	}
	if len(got) != len(fx) {
		t.Errorf("%s: got %d keys; want %d", what, len(got), len(fx))
	}
}
