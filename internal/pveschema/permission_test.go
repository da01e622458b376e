package pveschema

import "testing"

// grants is a test ACL: path -> privileges held there.
type grants map[string][]string

func (g grants) has(path, priv string) bool {
	for _, p := range g[path] {
		if p == priv {
			return true
		}
	}
	return false
}

func TestPermissionEval(t *testing.T) {
	s := mustLoad(t)
	vm := map[string]string{"node": "pve", "vmid": "101"}
	tests := []struct {
		name, method, template string
		params                 map[string]string
		granted                grants
		ok                     bool
		denial                 string
	}{
		{"power needs VM.PowerMgmt", "POST", "/nodes/{node}/qemu/{vmid}/status/start", vm,
			grants{"/vms/101": {"VM.Audit"}}, false, "Permission check failed (/vms/101, VM.PowerMgmt)"},
		{"power granted", "POST", "/nodes/{node}/qemu/{vmid}/status/start", vm,
			grants{"/vms/101": {"VM.PowerMgmt"}}, true, ""},
		{"grant on another VM does not count", "POST", "/nodes/{node}/lxc/{vmid}/status/stop", vm,
			grants{"/vms/102": {"VM.PowerMgmt"}}, false, "Permission check failed (/vms/101, VM.PowerMgmt)"},
		{"any-of config privileges, none held", "PUT", "/nodes/{node}/lxc/{vmid}/config", vm,
			grants{}, false, "Permission check failed (/vms/101, VM.Config.Disk|VM.Config.CPU|VM.Config.Memory|VM.Config.Network|VM.Config.Options)"},
		{"any-of config privileges, one held", "PUT", "/nodes/{node}/qemu/{vmid}/config", vm,
			grants{"/vms/101": {"VM.Config.Options"}}, true, ""},
		{"rollback any-of", "POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback", vm,
			grants{"/vms/101": {"VM.Snapshot.Rollback"}}, true, ""},
		{"node status on node path", "GET", "/nodes/{node}/status", vm,
			grants{"/nodes/pve": {"Sys.Audit"}}, true, ""},
		{"user all", "GET", "/nodes/{node}/qemu", vm, grants{}, true, ""},
		{"clone: and/or with require_param", "POST", "/nodes/{node}/qemu/{vmid}/clone",
			map[string]string{"node": "pve", "vmid": "101", "newid": "102"},
			grants{"/vms/101": {"VM.Clone"}, "/vms/102": {"VM.Allocate"}}, true, ""},
		{"clone: pool branch needs the pool param", "POST", "/nodes/{node}/qemu/{vmid}/clone",
			map[string]string{"node": "pve", "vmid": "101", "newid": "102"},
			grants{"/vms/101": {"VM.Clone"}, "/pool/": {"VM.Allocate"}}, false, "Permission check failed"},
		{"clone: first operand fails with its own message", "POST", "/nodes/{node}/qemu/{vmid}/clone",
			map[string]string{"node": "pve", "vmid": "101", "newid": "102"},
			grants{"/vms/102": {"VM.Allocate"}}, false, "Permission check failed (/vms/101, VM.Clone)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, ok := s.Method(tc.method, tc.template)
			if !ok {
				t.Fatalf("no %s %s", tc.method, tc.template)
			}
			ok, denial := m.Permission().Eval(tc.params, true, tc.granted.has)
			if ok != tc.ok || denial != tc.denial {
				t.Errorf("Eval = %v, %q; want %v, %q", ok, denial, tc.ok, tc.denial)
			}
		})
	}
}

func TestPermissionShape(t *testing.T) {
	m := mustMethod(t, "PUT", "/nodes/{node}/qemu/{vmid}/config")
	c := m.Permission().Check
	if c == nil || c.Op != "perm" || c.Path != "/vms/{vmid}" || !c.Any || len(c.Privs) != 8 {
		t.Fatalf("Check = %+v; want perm /vms/{vmid} any with 8 privileges", c)
	}
	if got := c.ResolvePath(map[string]string{"vmid": "101"}); got != "/vms/101" {
		t.Errorf("ResolvePath = %q; want /vms/101", got)
	}
	if p := mustMethod(t, "GET", "/version").Permission(); p.User != "all" || p.Check != nil {
		t.Errorf("GET /version Permission() = %+v; want user=all, no check", p)
	}
	if ok, d := mustMethod(t, "GET", "/version").Permission().Eval(nil, false, grants{}.has); ok || d == "" {
		t.Errorf("unauthenticated user=all: Eval = %v, %q; want denied", ok, d)
	}
}
