package pveschema

import (
	"encoding/json"
	"strings"
	"testing"
)

func mustMethod(t *testing.T, method, template string) *Method {
	t.Helper()
	m, ok := mustLoad(t).Method(method, template)
	if !ok {
		t.Fatalf("schema has no %s %s", method, template)
	}
	return m
}

// TestRealWorld pins messages and cases seen on real PVE (fixtures and
// FIDELITY.md) or read in PVE's code.
func TestRealWorld(t *testing.T) {
	const (
		qemuCfg = "/nodes/{node}/qemu/{vmid}/config"
		lxcCfg  = "/nodes/{node}/lxc/{vmid}/config"
	)
	base := func(extra map[string]any) map[string]any {
		p := map[string]any{"node": "pve", "vmid": "101"}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	tests := []struct {
		name     string
		method   string
		template string
		params   map[string]any
		want     Errors // nil: valid
	}{
		{"lxc stop takes overrule-shutdown (9.1)", "POST", "/nodes/{node}/lxc/{vmid}/status/stop",
			base(map[string]any{"overrule-shutdown": "1"}), nil},
		{"qemu stop takes overrule-shutdown (9.1)", "POST", "/nodes/{node}/qemu/{vmid}/status/stop",
			base(map[string]any{"overrule-shutdown": "1"}), nil},
		{"form boolean true is rejected", "POST", "/nodes/{node}/qemu/{vmid}/status/shutdown",
			base(map[string]any{"forceStop": "true"}), Errors{"forceStop": "type check ('boolean') failed - got 'true'"}},
		{"JSON boolean true is accepted", "POST", "/nodes/{node}/qemu/{vmid}/status/shutdown",
			base(map[string]any{"forceStop": true}), nil},
		{"JSON number 1 as boolean", "POST", "/nodes/{node}/qemu/{vmid}/status/shutdown",
			base(map[string]any{"forceStop": json.Number("1")}), nil},
		{"memory plain integer (default key)", "PUT", qemuCfg, base(map[string]any{"memory": "4096"}), nil},
		{"memory current=", "PUT", qemuCfg, base(map[string]any{"memory": "current=4096"}), nil},
		{"memory as JSON number", "PUT", qemuCfg, base(map[string]any{"memory": json.Number("4096")}), nil},
		{"memory below minimum", "PUT", qemuCfg, base(map[string]any{"memory": "8"}),
			Errors{"memory": "invalid format - format error\nmemory.current: value must have a minimum value of 16\n"}},
		{"memory not an integer", "PUT", qemuCfg, base(map[string]any{"memory": "current=4G"}),
			Errors{"memory": "invalid format - format error\nmemory.current: type check ('integer') failed - got '4G'\n"}},
		{"memory unknown key", "PUT", qemuCfg, base(map[string]any{"memory": "max=4096"}),
			Errors{"memory": "invalid format - invalid key in comma-separated list property: max\n"}},
		{"memory default key twice", "PUT", qemuCfg, base(map[string]any{"memory": "4096,current=2048"}),
			Errors{"memory": "invalid format - duplicate key in comma-separated list property: current\n"}},
		{"lxc memory is a plain integer", "PUT", lxcCfg, base(map[string]any{"memory": "current=512"}),
			Errors{"memory": "type check ('integer') failed - got 'current=512'"}},
		{"delete list with comma", "PUT", qemuCfg, base(map[string]any{"delete": "net0,unused0"}), nil},
		{"delete list with ; and space", "PUT", qemuCfg, base(map[string]any{"delete": "net0;unused0 scsi1"}), nil},
		{"delete bad id", "PUT", qemuCfg, base(map[string]any{"delete": "net0,bad!"}),
			Errors{"delete": "invalid format - invalid configuration ID 'bad!'\n"}},
		{"force requires delete", "PUT", qemuCfg, base(map[string]any{"force": "1"}),
			Errors{"delete": "missing property - 'force' requires this property"}},
		{"vmid below range fails the format first (WHMCS#92)", "GET", qemuCfg, base(map[string]any{"vmid": "99"}),
			Errors{"vmid": "invalid format - value does not look like a valid VM ID\n"}},
		{"vmid not an integer", "GET", qemuCfg, base(map[string]any{"vmid": "abc"}),
			Errors{"vmid": "type check ('integer') failed - got 'abc'"}},
		{"vmid JSON float that is integral (Perl NV 101)", "GET", qemuCfg, base(map[string]any{"vmid": json.Number("101.0")}), nil},
		{"vmid JSON fraction", "GET", qemuCfg, base(map[string]any{"vmid": json.Number("101.5")}),
			Errors{"vmid": "type check ('integer') failed - got '101.5'"}},
		{"vmid JSON boolean", "GET", qemuCfg, base(map[string]any{"vmid": true}),
			Errors{"vmid": "type check ('integer') failed - got JSON::PP::Boolean"}},
		{"node name with underscore", "GET", qemuCfg, base(map[string]any{"node": "pve_1"}),
			Errors{"node": "invalid format - value does not look like a valid node name\n"}},
		{"cores below minimum", "PUT", qemuCfg, base(map[string]any{"cores": "0"}),
			Errors{"cores": "value must have a minimum value of 1"}},
		{"net with model shorthand and bridge", "PUT", qemuCfg,
			base(map[string]any{"net0": "virtio=BC:24:11:2E:5A:01,bridge=vmbr0,firewall=1"}), nil},
		{"net firewall=true is parse_boolean'd", "PUT", qemuCfg,
			base(map[string]any{"net0": "virtio=BC:24:11:2E:5A:01,bridge=vmbr0,firewall=true"}), nil},
		{"net without model", "PUT", qemuCfg, base(map[string]any{"net0": "bridge=vmbr0"}),
			Errors{"net0": "invalid format - format error\nnet0.model: property is missing and it is not optional\n"}},
		{"net bad bridge and MAC nest messages", "PUT", qemuCfg, base(map[string]any{"net1": "virtio=01:24:11:2E:5A:01,bridge=vm br0"}),
			Errors{"net1": "invalid format - format error\nnet1.bridge: invalid format - invalid bridge ID 'vm br0'\n\nnet1.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n"}},
		{"net model enum", "PUT", qemuCfg, base(map[string]any{"net0": "model=bogus"}),
			Errors{"net0": "invalid format - format error\nnet0.model: value 'bogus' does not have a value in the enumeration 'e1000, e1000-82540em, e1000-82544gc, e1000-82545em, e1000e, i82551, i82557b, i82559er, ne2k_isa, ne2k_pci, pcnet, rtl8139, virtio, vmxnet3'\n"}},
		{"scsi30 is the last scsi", "PUT", qemuCfg, base(map[string]any{"scsi30": "local-lvm:vm-101-disk-1"}), nil},
		{"scsi31 does not exist", "PUT", qemuCfg, base(map[string]any{"scsi31": "local-lvm:vm-101-disk-1"}),
			Errors{"scsi31": "property is not defined in schema and the schema does not allow additional properties"}},
		{"net32 does not exist", "PUT", qemuCfg, base(map[string]any{"net32": "virtio,bridge=vmbr0"}),
			Errors{"net32": "property is not defined in schema and the schema does not allow additional properties"}},
		{"unused255 exists", "PUT", lxcCfg, base(map[string]any{"unused255": "local:subvol-101-disk-1"}), nil},
		{"mp255 exists, mp256 does not", "PUT", lxcCfg, base(map[string]any{"mp255": "local:8,mp=/srv", "mp256": "local:8,mp=/x"}),
			Errors{"mp256": "property is not defined in schema and the schema does not allow additional properties"}},
		{"leading zero index is another key", "PUT", qemuCfg, base(map[string]any{"net01": "virtio,bridge=vmbr0"}),
			Errors{"net01": "property is not defined in schema and the schema does not allow additional properties"}},
		{"resize relative size", "PUT", "/nodes/{node}/qemu/{vmid}/resize", base(map[string]any{"disk": "scsi0", "size": "+10G"}), nil},
		{"resize pattern is anchored with Perl's $", "PUT", "/nodes/{node}/qemu/{vmid}/resize", base(map[string]any{"disk": "scsi0", "size": "10G\n"}), nil},
		{"resize bad size", "PUT", "/nodes/{node}/qemu/{vmid}/resize", base(map[string]any{"disk": "scsi0", "size": "10X"}),
			Errors{"size": "value does not match the regex pattern"}},
		{"resize missing size", "PUT", "/nodes/{node}/lxc/{vmid}/resize", base(map[string]any{"disk": "rootfs"}),
			Errors{"size": "property is missing and it is not optional"}},
		{"snapshot name too long", "POST", "/nodes/{node}/qemu/{vmid}/snapshot", base(map[string]any{"snapname": "s" + strings.Repeat("a", 40)}),
			Errors{"snapname": "value may only be 40 characters long"}},
		{"snapshot name format", "POST", "/nodes/{node}/lxc/{vmid}/snapshot", base(map[string]any{"snapname": "1st"}),
			Errors{"snapname": "invalid format - invalid configuration ID '1st'\n"}},
		{"cluster resources type enum", "GET", "/cluster/resources", map[string]any{"type": "pool"},
			Errors{"type": "value 'pool' does not have a value in the enumeration 'vm, storage, node, sdn'"}},
		{"nextid vmid", "GET", "/cluster/nextid", map[string]any{"vmid": "100"}, nil},
		{"tasks source enum", "GET", "/nodes/{node}/tasks", map[string]any{"node": "pve", "source": "active", "limit": "10"}, nil},
		{"task status upid", "GET", "/nodes/{node}/tasks/{upid}/status",
			map[string]any{"node": "pve", "upid": "UPID:pve:000FF1FD:10F9374C:630D702C:qmstart:101:root@pam:"}, nil},
		{"lxc create needs ostemplate", "POST", "/nodes/{node}/lxc", base(nil),
			Errors{"ostemplate": "property is missing and it is not optional"}},
		{"tags list", "PUT", qemuCfg, base(map[string]any{"tags": "prod;web"}), nil},
		{"tags bad", "PUT", qemuCfg, base(map[string]any{"tags": "prod;-web"}),
			Errors{"tags": "invalid format - invalid characters in tag\n"}},
		{"startup 0 is rejected as PVE does", "PUT", qemuCfg, base(map[string]any{"startup": "0"}),
			Errors{"startup": "invalid format - unable to parse startup options\n"}},
		{"digest too long (schema: 40)", "PUT", lxcCfg, base(map[string]any{"digest": strings.Repeat("a", 41)}),
			Errors{"digest": "value may only be 40 characters long"}},
		{"permissions userid pattern", "GET", "/access/permissions", map[string]any{"userid": "steward@pve!agent"}, nil},
		{"permissions bad userid", "GET", "/access/permissions", map[string]any{"userid": "nobody"},
			Errors{"userid": "value does not match the regex pattern"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := mustMethod(t, tc.method, tc.template)
			got := m.Validate(tc.params)
			if len(got) != len(tc.want) {
				t.Fatalf("got %q; want %q", got, tc.want)
			}
			for k, w := range tc.want {
				if got[k] != w {
					t.Errorf("errors[%q] = %q; want %q", k, got[k], w)
				}
			}
		})
	}
}

func TestValidateDoesNotModifyParams(t *testing.T) {
	m := mustMethod(t, "PUT", "/nodes/{node}/qemu/{vmid}/config")
	p := map[string]any{"node": "pve", "vmid": "101", "force": "1"}
	m.Validate(p)
	if len(p) != 3 || p["force"] != "1" {
		t.Errorf("params after Validate = %v; want unchanged", p)
	}
}

func TestAdditionalPropertiesAllowed(t *testing.T) {
	s := mustLoad(t)
	m, _, ok := s.Lookup("GET", "/nodes/pve/qemu/101/agent")
	if !ok {
		t.Fatal("Lookup(GET /nodes/pve/qemu/101/agent) failed")
	}
	if !m.AdditionalProperties {
		t.Fatalf("AdditionalProperties = false; want true (schema says 1)")
	}
	if errs := m.Validate(map[string]any{"node": "pve", "vmid": "101", "anything": "x"}); len(errs) != 0 {
		t.Errorf("got %q; want valid", errs)
	}
}

func TestNumberedRanges(t *testing.T) {
	m := mustMethod(t, "PUT", "/nodes/{node}/qemu/{vmid}/config")
	want := map[string]int{
		"ide[n]": 3, "sata[n]": 5, "scsi[n]": 30, "virtio[n]": 15, "net[n]": 31,
		"unused[n]": 255, "usb[n]": 13, "serial[n]": 3, "parallel[n]": 2,
		"hostpci[n]": 15, "numa[n]": 7, "ipconfig[n]": 31, "virtiofs[n]": 9,
	}
	for name, max := range want {
		p := m.Params[name]
		if p == nil || !p.Numbered {
			t.Errorf("%s: not a numbered parameter", name)
			continue
		}
		if p.IndexMax != max {
			t.Errorf("%s: IndexMax = %d; want %d", name, p.IndexMax, max)
		}
	}
	for _, name := range m.ParamNames() {
		if strings.HasSuffix(name, "[n]") {
			if _, ok := want[name]; !ok {
				t.Errorf("numbered %s has no expected range in this test", name)
			}
		}
	}
}

func TestReturnsAndAllowToken(t *testing.T) {
	s := mustLoad(t)
	tests := []struct {
		method, template, typ string
		optional, token       bool
	}{
		{"PUT", "/nodes/{node}/qemu/{vmid}/config", "null", false, true},
		{"POST", "/nodes/{node}/qemu/{vmid}/config", "string", true, true},
		{"GET", "/nodes/{node}/qemu/{vmid}/config", "object", false, true},
		{"GET", "/nodes/{node}/qemu", "array", false, true},
		{"GET", "/cluster/nextid", "integer", false, true},
		{"POST", "/nodes/{node}/lxc/{vmid}/status/start", "string", false, true},
		{"POST", "/access/ticket", "object", false, false},
	}
	for _, tc := range tests {
		m, ok := s.Method(tc.method, tc.template)
		if !ok {
			t.Fatalf("no %s %s", tc.method, tc.template)
		}
		r := m.Returns()
		if r.Type != tc.typ || r.Optional != tc.optional {
			t.Errorf("%s %s Returns() = %+v; want type %q optional %v", tc.method, tc.template, r, tc.typ, tc.optional)
		}
		if m.AllowToken() != tc.token {
			t.Errorf("%s %s AllowToken() = %v; want %v", tc.method, tc.template, m.AllowToken(), tc.token)
		}
	}
}

func TestParamNames(t *testing.T) {
	m := mustMethod(t, "POST", "/nodes/{node}/lxc/{vmid}/status/stop")
	got := strings.Join(m.ParamNames(), " ")
	want := "node overrule-shutdown skiplock vmid"
	if got != want {
		t.Errorf("ParamNames() = %q; want %q", got, want)
	}
	q := mustMethod(t, "PUT", "/nodes/{node}/qemu/{vmid}/config")
	names := q.ParamNames()
	for _, n := range []string{"net[n]", "scsi[n]", "unused[n]", "delete", "digest", "memory"} {
		found := false
		for _, x := range names {
			found = found || x == n
		}
		if !found {
			t.Errorf("ParamNames() lacks %q", n)
		}
	}
}

func TestLookup(t *testing.T) {
	s := mustLoad(t)
	tests := []struct {
		method, path, template string
		vars                   map[string]string
	}{
		{"GET", "/nodes/pve/qemu/101/config", "/nodes/{node}/qemu/{vmid}/config", map[string]string{"node": "pve", "vmid": "101"}},
		{"GET", "//nodes//pve/qemu/101/config/", "/nodes/{node}/qemu/{vmid}/config", map[string]string{"node": "pve", "vmid": "101"}},
		{"DELETE", "/nodes/pve/lxc/200/snapshot/before-upgrade", "/nodes/{node}/lxc/{vmid}/snapshot/{snapname}",
			map[string]string{"node": "pve", "vmid": "200", "snapname": "before-upgrade"}},
		{"GET", "/nodes/pve/tasks/UPID:pve:000FF1FD:10F9374C:630D702C:qmstart:101:root@pam:/log", "/nodes/{node}/tasks/{upid}/log",
			map[string]string{"node": "pve", "upid": "UPID:pve:000FF1FD:10F9374C:630D702C:qmstart:101:root@pam:"}},
		{"GET", "/version", "/version", map[string]string{}},
	}
	for _, tc := range tests {
		m, vars, ok := s.Lookup(tc.method, tc.path)
		if !ok || m.Path != tc.template || m.HTTPMethod != tc.method {
			t.Errorf("Lookup(%s %s) = %v, %v; want %s", tc.method, tc.path, m, ok, tc.template)
			continue
		}
		if len(vars) != len(tc.vars) {
			t.Errorf("Lookup(%s) vars = %v; want %v", tc.path, vars, tc.vars)
		}
		for k, v := range tc.vars {
			if vars[k] != v {
				t.Errorf("Lookup(%s) var %s = %q; want %q", tc.path, k, vars[k], v)
			}
		}
	}
	for _, bad := range []struct{ method, path string }{
		{"POST", "/version"},
		{"GET", "/nodes/pve2/12/config"},
		{"GET", "/nope"},
		{"PATCH", "/nodes/pve/qemu/101/config"},
		{"GET", "/nodes/pve/qemu/101/config/extra"},
	} {
		if m, _, ok := s.Lookup(bad.method, bad.path); ok {
			t.Errorf("Lookup(%s %s) = %s; want no method (501)", bad.method, bad.path, m.Path)
		}
	}
}

// TestLookupLiteralWins uses a small schema since the embedded one has no
// literal segment beside a {var} at the same level.
func TestLookupLiteralWins(t *testing.T) {
	s, err := parse([]byte(`[{"path":"/a","info":{},"children":[
		{"path":"/a/{id}","info":{"GET":{"name":"var","parameters":{"additionalProperties":0,"properties":{}},"returns":{}}},"children":[]},
		{"path":"/a/fixed","info":{"GET":{"name":"lit","parameters":{"additionalProperties":0,"properties":{}},"returns":{}}},"children":[]}]}]`))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	m, vars, ok := s.Lookup("GET", "/a/fixed")
	if !ok || m.Name != "lit" || len(vars) != 0 {
		t.Errorf("Lookup(/a/fixed) = %v %v %v; want the literal method", m, vars, ok)
	}
	m, vars, ok = s.Lookup("GET", "/a/other")
	if !ok || m.Name != "var" || vars["id"] != "other" {
		t.Errorf("Lookup(/a/other) = %v %v %v; want the {id} method with id=other", m, vars, ok)
	}
}

// TestParseRejectsCorruptSchema: a corrupt tree fails parse; a corrupt
// method fails its build (methods are built on first use, and
// TestEveryMethodBuilds builds every embedded one).
func TestParseRejectsCorruptSchema(t *testing.T) {
	for _, in := range []string{``, `{`, `[]`, `[{"path":"/a","info":{"GET":{"parameters":{"properties":{"x":{"minimum":"abc"}}}}}}]`} {
		err := parseAndBuild([]byte(in))
		if err == nil || !strings.HasPrefix(err.Error(), "pveschema: ") {
			t.Errorf("parse(%q) error = %v; want a pveschema: error", in, err)
		}
	}
}

// parseAndBuild parses data and builds every method, returning the first
// error.
func parseAndBuild(data []byte) error {
	s, err := parse(data)
	if err != nil {
		return err
	}
	var pc patternCache
	for _, e := range s.methods {
		if _, err := e.build(&pc); err != nil {
			return err
		}
	}
	return nil
}
