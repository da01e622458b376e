package sim

import (
	"fmt"
	"net/url"
	"reflect"
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

// TestCloudinitPendingAndRegenerate: after a clone nothing is pending;
// config writes of cloud-init keys show as pending in GET …/cloudinit (and
// in the digest) until PUT …/cloudinit or a start regenerates the drive;
// a value set back to what was generated is not pending.
func TestCloudinitPendingAndRegenerate(t *testing.T) {
	ts := startSim(t, Options{Templates: true})
	keys := uriEscape(testSSHKey)
	_, st := ts.runTask("POST", "/nodes/pve/qemu/9000/clone", url.Values{"newid": {"120"}, "name": {"web"}})
	if st["exitstatus"] != "OK" {
		t.Fatalf("clone: %v", st["exitstatus"])
	}
	if got, want := ciItems(t, ts, "120"), map[string]string{"ipconfig0": "ip=dhcp||"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after clone: got %v; want %v", got, want)
	}
	before, _ := ts.s.Guest(120)
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"ciuser": {"ops"}, "sshkeys": {keys}, "ipconfig0": {"ip=10.0.0.5/24,gw=10.0.0.1"},
		"nameserver": {"10.0.0.53"}, "searchdomain": {"example.com"}, "cipassword": {"s3cret"}}))
	g, _ := ts.s.Guest(120)
	if g.Config["sshkeys"] != keys || g.Config["ciuser"] != "ops" {
		t.Errorf("stored: sshkeys %q ciuser %q; want the URL-encoded keys as sent, ops", g.Config["sshkeys"], g.Config["ciuser"])
	}
	want := map[string]string{
		"ciuser": "|ops|", "sshkeys": "|" + keys + "|", "nameserver": "|10.0.0.53|", "searchdomain": "|example.com|",
		"cipassword": "|**********|", "ipconfig0": "ip=dhcp|ip=10.0.0.5/24,gw=10.0.0.1|",
	}
	if got := ciItems(t, ts, "120"); !reflect.DeepEqual(got, want) {
		t.Errorf("after config write: got %v; want %v", got, want)
	}
	if g.Digest == before.Digest || !strings.Contains(ts.s.guests[120].render(), "[special:cloudinit]") {
		t.Errorf("the cloud-init section is not in the config file / digest")
	}
	user := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/120/cloudinit/dump", url.Values{"type": {"user"}})).data().(string)
	for _, w := range []string{"#cloud-config\n", "hostname: web\n", "fqdn: web.example.com\n", "user: ops\n", "  - " + testSSHKey + "\n"} {
		if !strings.Contains(user, w) {
			t.Errorf("user data %q lacks %q", user, w)
		}
	}
	network := ts.mustOK(ts.do("GET", "/nodes/pve/qemu/120/cloudinit/dump", url.Values{"type": {"network"}})).data().(string)
	for _, w := range []string{"address: '10.0.0.5'\n", "netmask: '255.255.255.0'\n", "gateway: '10.0.0.1'\n", "- '10.0.0.53'\n"} {
		if !strings.Contains(network, w) {
			t.Errorf("network data %q lacks %q", network, w)
		}
	}
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/cloudinit", nil))
	after := map[string]string{
		"ciuser": "ops||", "sshkeys": keys + "||", "nameserver": "10.0.0.53||", "searchdomain": "example.com||",
		"cipassword": "**********||", "ipconfig0": "ip=10.0.0.5/24,gw=10.0.0.1||",
	}
	if got := ciItems(t, ts, "120"); !reflect.DeepEqual(got, after) {
		t.Errorf("after PUT cloudinit: got %v; want %v", got, after)
	}
	if m := ts.s.Mutations(); m[len(m)-1].Op != "cloudinit" {
		t.Errorf("last mutation %q; want cloudinit", m[len(m)-1].Op)
	}
	// Back to the generated value: nothing pending; a delete is listed.
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"ciuser": {"root"}}))
	ts.mustOK(ts.do("PUT", "/nodes/pve/qemu/120/config", url.Values{"ciuser": {"ops"}, "delete": {"nameserver"}}))
	after["nameserver"] = "||1"
	if got := ciItems(t, ts, "120"); !reflect.DeepEqual(got, after) {
		t.Errorf("after set back and delete: got %v; want %v", got, after)
	}
	_, st = ts.runTask("POST", "/nodes/pve/qemu/120/status/start", url.Values{})
	delete(after, "nameserver")
	if got := ciItems(t, ts, "120"); st["exitstatus"] != "OK" || !reflect.DeepEqual(got, after) {
		t.Errorf("after start: exit %v got %v; want %v", st["exitstatus"], got, after)
	}
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
	if got, want := ciItems(t, ts, "151"), map[string]string{"ciuser": "ops||", "sshkeys": uriEscape(testSSHKey) + "||"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after create: got %v; want %v (nothing pending)", got, want)
	}
}
