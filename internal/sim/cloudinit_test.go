package sim

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhU3iJsKOVObfTlA5cURe8qe0FSgRHqH7RJ4RfiPphE op@example"

// uriEscape is URI::Escape's uri_escape (JavaScript's encodeURIComponent):
// the encoding PVE's "urlencoded" format requires of sshkeys.
func uriEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// ciItems is GET …/cloudinit as key -> "value|pending|delete".
func ciItems(t *testing.T, ts *testServer, vmid string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range ts.mustOK(ts.do("GET", "/nodes/pve/qemu/"+vmid+"/cloudinit", nil)).dataList(t) {
		m := e.(map[string]any)
		field := func(k string) string {
			if v, ok := m[k]; ok {
				return fmt.Sprint(v)
			}
			return ""
		}
		out[m["key"].(string)] = field("value") + "|" + field("pending") + "|" + field("delete")
	}
	return out
}

// TestCloudinitPendingAndRegenerate: GET …/cloudinit compares the config
// with the [special:cloudinit] record of the last generation: nothing is
// generated after a clone (all pending), PUT …/cloudinit and a start
// generate, config writes show as pending until then, a delete as delete.
func TestCloudinitPendingAndRegenerate(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	keys := uriEscape(testSSHKey)
	_, st := ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"120"}, "name": {"web"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("clone: %v", st["exitstatus"])
	}
	g, _ := ts.s.Guest(120)
	mac := "macaddr=" + strings.TrimPrefix(strings.Split(g.Config["net0"], ",")[0], "virtio=")
	check := func(step string, want map[string]string) {
		t.Helper()
		got := ciItems(t, ts, "120")
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s: %s: got %q; want %q (value|pending|delete)", step, k, got[k], w)
			}
		}
		for _, k := range []string{"cicustom", "cipassword", "citype", "ciupgrade", "ciuser", "nameserver", "searchdomain", "sshkeys", "name", "ide2", "net0", "ipconfig0"} {
			if _, ok := got[k]; !ok {
				t.Errorf("%s: no item for %s in %v", step, k, got)
			}
		}
	}
	check("after clone", map[string]string{
		"name": "VM120|web|", "ide2": "|local-lvm:vm-120-cloudinit,media=cdrom,size=4M|", "ipconfig0": "|ip=dhcp|", "net0": "|" + mac + "|", "ciuser": "||",
	})
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil))
	if m := ts.s.Mutations(); m[len(m)-1].Op != "cloudinit" {
		t.Errorf("last mutation %q; want cloudinit", m[len(m)-1].Op)
	}
	check("after regenerate", map[string]string{"name": "web||", "ipconfig0": "ip=dhcp||", "net0": mac + "||", "ciuser": "||"})

	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"ciuser": {"ops"}, "sshkeys": {keys}, "ipconfig0": {"ip=10.0.0.5/24,gw=10.0.0.1"},
		"nameserver": {"10.0.0.53"}, "searchdomain": {"example.com"}, "cipassword": {"s3cret"}}))
	g, _ = ts.s.Guest(120)
	if g.Config["sshkeys"] != keys || g.Config["ciuser"] != "ops" {
		t.Errorf("stored: sshkeys %q ciuser %q; want the URL-encoded keys as sent, ops", g.Config["sshkeys"], g.Config["ciuser"])
	}
	check("after config write", map[string]string{
		"ciuser": "|ops|", "sshkeys": "|" + keys + "|", "nameserver": "|10.0.0.53|", "searchdomain": "|example.com|",
		"cipassword": "|**********|", "ipconfig0": "ip=dhcp|ip=10.0.0.5/24,gw=10.0.0.1|", "name": "web||",
	})
	if !strings.Contains(ts.s.guests[120].render(), "[special:cloudinit]\nide2: local-lvm:vm-120-cloudinit") {
		t.Errorf("the [special:cloudinit] record is not in the config file:\n%s", ts.s.guests[120].render())
	}
	user := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/120/cloudinit/dump", url.Values{"type": {"user"}})).data().(string)
	for _, w := range []string{"#cloud-config\nhostname: web\nmanage_etc_hosts: true\nfqdn: web.example.com\nuser: ops\npassword: s3cret\n",
		"ssh_authorized_keys:\n  - " + testSSHKey + "\n", "users:\n  - default\n"} {
		if !strings.Contains(user, w) {
			t.Errorf("user data %q lacks %q", user, w)
		}
	}
	network := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/120/cloudinit/dump", url.Values{"type": {"network"}})).data().(string)
	for _, w := range []string{"address: '10.0.0.5'\n", "netmask: '255.255.255.0'\n", "gateway: '10.0.0.1'\n", "- '10.0.0.53'\n", "- 'example.com'\n"} {
		if !strings.Contains(network, w) {
			t.Errorf("network data %q lacks %q", network, w)
		}
	}
	meta := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/120/cloudinit/dump", url.Values{"type": {"meta"}})).data().(string)
	if !strings.HasPrefix(meta, "instance-id: ") || len(meta) != len("instance-id: ")+40+1 {
		t.Errorf("meta data %q; want instance-id: <sha1>", meta)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil))
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"delete": {"nameserver"}}))
	check("after regenerate and delete", map[string]string{"ciuser": "ops||", "nameserver": "10.0.0.53||1", "cipassword": "**********||"})
	_, st = ts.runTask("POST", "/nodes/pve/qemu/120/status/start", url.Values{})
	if st["exitstatus"] != "OK" {
		t.Fatalf("start: %v", st["exitstatus"])
	}
	check("after start", map[string]string{"ciuser": "ops||", "nameserver": "||", "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1||"})
}

func TestCloudinitRefusesBadSSHKeys(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	for _, tc := range []struct{ name, method, path string }{
		{"config", "PUT", "/nodes/pve/qemu/9000/config"},
		{"create", "POST", "/nodes/pve/qemu"},
	} {
		params := url.Values{"sshkeys": {uriEscape("ssh-ed25519 notakey")}}
		if tc.method == "POST" {
			params.Set("vmid", "150")
		}
		r := ts.do(tc.method, tc.path, params)
		if r.status != 500 || r.reason != "SSH public key validation error" {
			t.Errorf("%s: got %d %q; want 500 SSH public key validation error", tc.name, r.status, r.reason)
		}
	}
	if _, ok := ts.s.Guest(150); ok || len(ts.s.Mutations()) != 0 {
		t.Errorf("a refused key changed something: %v", ts.s.Mutations())
	}
	_, st := ts.runTask("POST", "/nodes/pve/qemu", url.Values{"vmid": {"151"}, "ide2": {"local-lvm:cloudinit"}, "sshkeys": {uriEscape(testSSHKey)}, "ciuser": {"ops"}})
	g, _ := ts.s.Guest(151)
	if st["exitstatus"] != "OK" || g.Config["ide2"] != "local-lvm:vm-151-cloudinit,media=cdrom" {
		t.Errorf("create with cloud-init drive: exit %v ide2 %q", st["exitstatus"], g.Config["ide2"])
	}
	if got := ciItems(t, ts, "151"); got["ciuser"] != "|ops|" || got["ide2"] != "|local-lvm:vm-151-cloudinit,media=cdrom|" {
		t.Errorf("after create: got %v; want ciuser and ide2 pending (never generated)", got)
	}
}

// TestCloudinitCicustomNeedsSnippets: generating the drive reads the
// cicustom snippets; a missing one fails the start and PUT …/cloudinit as
// PVE fails, an added one lets both through.
func TestCloudinitCicustomNeedsSnippets(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	_, st := ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"120"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("clone: %v", st["exitstatus"])
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"cicustom": {"user=local:snippets/user.yaml"}}))
	const missing = "unable to open file '/var/lib/vz/snippets/user.yaml' - No such file or directory"
	if r := ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil); r.status != 500 || r.reason != missing {
		t.Errorf("regenerate with a missing snippet: got %d %q; want 500 %q", r.status, r.reason, missing)
	}
	_, st = ts.runTask("POST", "/nodes/pve/qemu/120/status/start", url.Values{})
	if g, _ := ts.s.Guest(120); st["exitstatus"] != missing || g.Status != "stopped" {
		t.Errorf("start with a missing snippet: exit %v status %s; want %q, stopped", st["exitstatus"], g.Status, missing)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"cicustom": {"user=local:iso/user.yaml"}}))
	if r := ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil); r.status != 500 || r.reason != "local:iso/user.yaml is not in the snippets directory" {
		t.Errorf("regenerate with a non-snippet: got %d %q", r.status, r.reason)
	}
	if err := ts.s.AddSnippet("local-lvm:snippets/user.yaml", ""); err == nil {
		t.Error("AddSnippet on LVM-thin: no error")
	}
	if err := ts.s.AddSnippet("local:snippets/user.yaml", "#cloud-config\n"); err != nil {
		t.Fatal(err)
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"cicustom": {"user=local:snippets/user.yaml"}}))
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil))
	_, st = ts.runTask("POST", "/nodes/pve/qemu/120/status/start", url.Values{})
	if g, _ := ts.s.Guest(120); st["exitstatus"] != "OK" || g.Status != "running" {
		t.Errorf("start with the snippet: exit %v status %s", st["exitstatus"], g.Status)
	}
}
