package sim

import (
	"encoding/json"
	"io"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/pveschema"
)

const notInSchema = "property is not defined in schema and the schema does not allow additional properties"

// TestAcceptsExactlySchemaParams proves, for every implemented endpoint,
// that each parameter the schema lists is not rejected as unknown and that
// a parameter it does not list is. The admin token passes every permission
// check (PVE checks permissions before it validates); nothing executes
// because guest 999 does not exist and create lacks a valid vmid.
func TestAcceptsExactlySchemaParams(t *testing.T) {
	ts := startSim(t, Options{})
	tok := ts.s.Token()
	sch, err := pveschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	pathVals := map[string]string{"node": "pve", "vmid": "999", "snapname": "snap1", "upid": "UPID:pve:00000001:00000001:00000001:qmstart:999:root@pam:",
		"storage": "local-lvm", "volume": "local-lvm:vm-999-disk-0", "poolid": "nosuchpool"}
	for _, rt := range ts.s.routes {
		m, ok := sch.Method(rt.method, rt.tmpl)
		if !ok {
			t.Errorf("route %s %s is not in the schema", rt.method, rt.tmpl)
			continue
		}
		path := rt.tmpl
		for k, v := range pathVals {
			path = strings.ReplaceAll(path, "{"+k+"}", url.PathEscape(v))
		}
		t.Run(rt.method+" "+rt.tmpl, func(t *testing.T) {
			for _, name := range m.ParamNames() {
				if _, isPathVar := pathVals[name]; isPathVar && strings.Contains(rt.tmpl, "{"+name+"}") {
					continue
				}
				key := strings.Replace(name, "[n]", "0", 1)
				r := handleDirect(ts.s, tok, rt.method, path, url.Values{key: {"1"}})
				if r.errors[key] == notInSchema {
					t.Errorf("schema parameter %q rejected as unknown", key)
				}
			}
			r := handleDirect(ts.s, tok, rt.method, path, url.Values{"zz-not-a-param": {"1"}})
			if r.status != 400 || r.errors["zz-not-a-param"] != notInSchema {
				t.Errorf("unknown parameter: got %d %q %v; want 400 with %q", r.status, r.msg, r.errors, notInSchema)
			}
		})
	}
	if n := len(ts.s.Mutations()); n != 0 {
		t.Errorf("parameter probes executed %d mutations", n)
	}
}

// handleDirect runs the request pipeline without a connection (fast: error
// responses would otherwise close the TLS connection every time).
func handleDirect(s *Sim, tok, method, path string, params url.Values) response {
	var body io.Reader
	target := "/api2/json" + path
	if method == "GET" || method == "DELETE" {
		target += "?" + params.Encode()
	} else {
		body = strings.NewReader(params.Encode())
	}
	req := httptest.NewRequest(method, target, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Authorization", "PVEAPIToken="+tok)
	return s.handle(req)
}

// TestConfigKeyTypesMatchSchema holds the hand-kept numeric-key tables to the
// GET …/config return properties of the in-repo schema.
func TestConfigKeyTypesMatchSchema(t *testing.T) {
	raw, err := os.ReadFile("../pveschema/apidata.json")
	if err != nil {
		t.Fatal(err)
	}
	var tree []map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		tbl  map[string]string
	}{
		{"/nodes/{node}/qemu/{vmid}/config", qemuNumericKeys},
		{"/nodes/{node}/lxc/{vmid}/config", lxcNumericKeys},
	} {
		node := findNode(tree, tc.path)
		if node == nil {
			t.Fatalf("%s not in schema", tc.path)
		}
		props := node["info"].(map[string]any)["GET"].(map[string]any)["returns"].(map[string]any)["properties"].(map[string]any)
		want := map[string]string{}
		for k, v := range props {
			typ, _ := v.(map[string]any)["type"].(string)
			if typ == "integer" || typ == "number" || typ == "boolean" {
				want[k] = typ
			}
		}
		for k, typ := range want {
			if tc.tbl[k] != typ {
				t.Errorf("%s: key %q: table has %q; schema says %q", tc.path, k, tc.tbl[k], typ)
			}
		}
		for k := range tc.tbl {
			if _, ok := want[k]; !ok {
				t.Errorf("%s: key %q in table but not numeric in schema", tc.path, k)
			}
		}
	}
}

func findNode(nodes []map[string]any, path string) map[string]any {
	for _, n := range nodes {
		if n["path"] == path {
			return n
		}
		if ch, ok := n["children"].([]any); ok {
			var kids []map[string]any
			for _, c := range ch {
				kids = append(kids, c.(map[string]any))
			}
			if f := findNode(kids, path); f != nil {
				return f
			}
		}
	}
	return nil
}
