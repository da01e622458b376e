package sim

import (
	"encoding/json"
	"net/url"
	"os"
	"sync"
	"testing"
)

var (
	schemaTreeOnce sync.Once
	schemaTree     []map[string]any
)

// returnsSchema is the "returns" object of method on path in the in-repo
// copy of PVE's API schema.
func returnsSchema(t *testing.T, path, method string) map[string]any {
	t.Helper()
	schemaTreeOnce.Do(func() {
		raw, err := os.ReadFile("../pveschema/apidata.json")
		if err == nil {
			err = json.Unmarshal(raw, &schemaTree)
		}
		if err != nil {
			t.Fatalf("reading the schema: %v", err)
		}
	})
	node := findNode(schemaTree, path)
	if node == nil {
		t.Fatalf("%s not in schema", path)
	}
	info, _ := node["info"].(map[string]any)
	m, _ := info[method].(map[string]any)
	ret, _ := m["returns"].(map[string]any)
	if ret == nil {
		t.Fatalf("%s %s: no returns in schema", method, path)
	}
	return ret
}

// checkObjectAgainst holds obj to an object schema: every property the
// schema does not mark optional is present, and every property the schema
// lists has its JSON type (integers as whole numbers, booleans as 0/1).
// Properties the schema does not list are allowed only when extra is true
// (PVE adds some, see FIDELITY.md §18).
func checkObjectAgainst(t *testing.T, where string, schema map[string]any, obj map[string]any, extra bool) {
	t.Helper()
	props, _ := schema["properties"].(map[string]any)
	for name, p := range props {
		pm := p.(map[string]any)
		v, present := obj[name]
		if !present {
			if o, _ := pm["optional"].(float64); o != 1 {
				t.Errorf("%s: property %q missing; the schema requires it", where, name)
			}
			continue
		}
		typ, _ := pm["type"].(string)
		ok := true
		switch typ {
		case "string":
			_, ok = v.(string)
		case "integer", "boolean":
			n, isNum := v.(json.Number)
			_, err := n.Int64()
			ok = isNum && err == nil
			if ok && typ == "boolean" {
				ok = n == "0" || n == "1"
			}
		case "number":
			_, ok = v.(json.Number)
		case "array":
			_, ok = v.([]any)
		case "object":
			_, ok = v.(map[string]any)
		}
		if !ok {
			t.Errorf("%s: property %q = %#v; the schema says %s", where, name, v, typ)
		}
	}
	if !extra {
		for name := range obj {
			if _, ok := props[name]; !ok {
				t.Errorf("%s: property %q is not in the schema", where, name)
			}
		}
	}
}

// TestVolumeInfo: GET /nodes/{node}/storage/{storage}/content/{volume} as
// pve-storage's Content info answers it.
func TestVolumeInfo(t *testing.T) {
	ts := startSim(t, Options{})
	ts.addGuest(qemuSpec(101, false))
	dirVM := qemuSpec(150, false)
	dirVM.Config["scsi0"] = "local:150/vm-150-disk-0.qcow2,size=2G"
	delete(dirVM.Config, "scsi1")
	ts.addGuest(dirVM)
	ts.s.AddToken("audit@pve!ro", "s3cret", map[string][]string{"/storage": {"Datastore.Audit"}, "/vms": {"VM.Audit"}})
	if err := ts.s.AddSnippet("local:snippets/user.yaml", "#cloud-config\n"); err != nil {
		t.Fatal(err)
	}
	schema := returnsSchema(t, "/nodes/{node}/storage/{storage}/content/{volume}", "GET")

	ok := []struct {
		path string
		want map[string]any
	}{
		{"/nodes/pve/storage/local-lvm/content/local-lvm:vm-101-disk-0",
			map[string]any{"path": "/dev/pve/vm-101-disk-0", "size": json.Number("34359738368"), "used": json.Number("0"), "format": "raw"}},
		// A volume name without the storage prefix is taken on the path's storage.
		{"/nodes/pve/storage/local-lvm/content/vm-101-disk-1",
			map[string]any{"path": "/dev/pve/vm-101-disk-1", "size": json.Number("10737418240"), "used": json.Number("0"), "format": "raw"}},
		// A volume id with '/' is one path fragment, whether sent raw or escaped.
		{"/nodes/pve/storage/local/content/local:150/vm-150-disk-0.qcow2",
			map[string]any{"path": "/var/lib/vz/images/150/vm-150-disk-0.qcow2", "size": json.Number("2147483648"), "used": json.Number("0"), "format": "qcow2"}},
		{"/nodes/pve/storage/local/content/" + url.PathEscape("local:150/vm-150-disk-0.qcow2"),
			map[string]any{"path": "/var/lib/vz/images/150/vm-150-disk-0.qcow2", "size": json.Number("2147483648"), "used": json.Number("0"), "format": "qcow2"}},
		// A cloud-init snippet (the agent checks cicustom's exist).
		{"/nodes/pve/storage/local/content/" + url.PathEscape("local:snippets/user.yaml"),
			map[string]any{"path": "/var/lib/vz/snippets/user.yaml", "size": json.Number("14"), "format": "raw"}},
	}
	for _, tc := range ok {
		r := ts.do("GET", tc.path, nil)
		if r.status != 200 {
			t.Errorf("GET %s: got %d %q; want 200", tc.path, r.status, r.reason)
			continue
		}
		got := r.dataMap(t)
		checkObjectAgainst(t, tc.path, schema, got, false)
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("GET %s: %s = %v; want %v", tc.path, k, got[k], v)
			}
		}
	}

	fails := []struct {
		name, tok, path string
		status          int
		reason          string
		errors          map[string]any
	}{
		{"storage mismatch", "", "/nodes/pve/storage/local/content/local-lvm:vm-101-disk-0", 400, "Parameter verification failed.",
			map[string]any{"volume": "storage ID mismatch (local-lvm != local)\n"}},
		{"unparsable volume id", "", "/nodes/pve/storage/local/content/1x:vm-101-disk-0", 400, "Parameter verification failed.",
			map[string]any{"volume": "unable to parse volume ID '1x:vm-101-disk-0'\n"}},
		{"missing volume", "", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-101-disk-9", 500,
			`can't get size of '/dev/pve/vm-101-disk-9':   Failed to find logical volume "pve/vm-101-disk-9"`, nil},
		{"missing file", "", "/nodes/pve/storage/local/content/local:150/vm-150-disk-7.qcow2", 500,
			"volume_size_info on 'local:150/vm-150-disk-7.qcow2' failed - no format", nil},
		{"unknown storage", "", "/nodes/pve/storage/nfs1/content/nfs1:vm-101-disk-0", 500, "storage 'nfs1' does not exist", nil},
		{"missing snippet", "", "/nodes/pve/storage/local/content/local:snippets/none.yaml", 500,
			"volume_size_info on 'local:snippets/none.yaml' failed - no format", nil},
		{"audit is not enough for snippets", "audit@pve!ro=s3cret", "/nodes/pve/storage/local/content/local:snippets/user.yaml", 403,
			"Permission check failed (/storage/local, Datastore.Allocate)", nil},
		{"not an lvm name", "", "/nodes/pve/storage/local-lvm/content/local-lvm:disk0", 500, "unable to parse lvm volume name 'disk0'", nil},
		{"unknown node", "", "/nodes/pve2/storage/local-lvm/content/local-lvm:vm-101-disk-0", 500,
			"hostname lookup 'pve2' failed - failed to get address info for: pve2: Name or service not known", nil},
		{"audit is not enough for images", "audit@pve!ro=s3cret", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-101-disk-0", 403,
			"Permission check failed (/storage/local-lvm, Datastore.Allocate)", nil},
	}
	for _, tc := range fails {
		t.Run(tc.name, func(t *testing.T) {
			tok := tc.tok
			if tok == "" {
				tok = ts.s.Token()
			}
			r := ts.doTok(tok, "GET", tc.path, nil)
			if r.status != tc.status || r.reason != tc.reason {
				t.Fatalf("got %d %q; want %d %q", r.status, r.reason, tc.status, tc.reason)
			}
			if tc.errors != nil {
				errs, _ := r.body["errors"].(map[string]any)
				if len(errs) != len(tc.errors) {
					t.Fatalf("errors = %v; want %v", errs, tc.errors)
				}
				for k, v := range tc.errors {
					if errs[k] != v {
						t.Errorf("errors[%s] = %q; want %q", k, errs[k], v)
					}
				}
			}
		})
	}

	// A detached disk stays a volume (unused0) with its size; a destroyed
	// guest's volumes are gone.
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/101/config", url.Values{"delete": {"scsi1"}}))
	r := ts.mustOK(ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-101-disk-1", nil))
	if got := r.dataMap(t)["size"]; got != json.Number("10737418240") {
		t.Errorf("detached volume size = %v; want 10737418240", got)
	}
	ts.runTask("DELETE", "/nodes/pve/qemu/101", url.Values{})
	r = ts.do("GET", "/nodes/pve/storage/local-lvm/content/local-lvm:vm-101-disk-0", nil)
	if r.status != 500 {
		t.Errorf("volume of a destroyed guest: got %d %q; want 500", r.status, r.reason)
	}
	if n := len(ts.s.Mutations()); n != 2 {
		t.Errorf("%d mutations recorded; want 2 (the config write and the destroy; reads record nothing)", n)
	}
}
