package pveschema

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzValidate feeds arbitrary parameter names and values, form-encoded and
// as JSON bodies, to the richest methods; Validate must never panic and must
// report the unknown key it was given.
func FuzzValidate(f *testing.F) {
	seeds := []struct{ key, val string }{
		{"net0", "virtio=BC:24:11:2E:5A:01,bridge=vmbr0"},
		{"memory", "current=4096"},
		{"memory", "4096,4096"},
		{"delete", "net0,unused0\x00scsi1"},
		{"scsi0", "local-lvm:32,iothread=1,discard=on"},
		{"net1", ",,=,==,a=,=b"},
		{"vmid", "1e3"},
		{"cores", "+4\n"},
		{"size", "+10G"},
		{"startup", "order=1,up=\u00e9"},
		{"ipconfig0", "ip=10.0.0.2/24,gw=10.0.0.1"},
		{"tags", "a;b c,d"},
		{"json", `{"vmid":101,"cores":2.0,"onboot":true,"net0":["x"],"memory":{"a":1},"name":null}`},
	}
	for _, s := range seeds {
		f.Add(s.key, s.val)
	}
	s, err := Load()
	if err != nil {
		f.Fatal(err)
	}
	var methods []*Method
	for _, ep := range [][2]string{
		{"PUT", "/nodes/{node}/qemu/{vmid}/config"},
		{"POST", "/nodes/{node}/lxc"},
		{"PUT", "/nodes/{node}/qemu/{vmid}/resize"},
		{"GET", "/nodes/{node}/tasks"},
	} {
		m, ok := s.Method(ep[0], ep[1])
		if !ok {
			f.Fatalf("no %s %s", ep[0], ep[1])
		}
		methods = append(methods, m)
	}
	f.Fuzz(func(t *testing.T, key, val string) {
		for _, m := range methods {
			params := map[string]any{"node": "pve", "vmid": "101", key: val}
			m.Validate(params)
			dec := json.NewDecoder(strings.NewReader(val))
			dec.UseNumber()
			var body map[string]any
			if dec.Decode(&body) == nil && body != nil {
				m.Validate(body)
			}
			var one any
			dec = json.NewDecoder(strings.NewReader(val))
			dec.UseNumber()
			if dec.Decode(&one) == nil {
				m.Validate(map[string]any{key: one})
			}
			unknown := "zz\x00" + key
			if errs := m.Validate(map[string]any{unknown: val}); errs[unknown] == "" {
				t.Errorf("unknown key %q not reported: %q", unknown, errs)
			}
		}
	})
}

// FuzzGuestConfigCheck feeds arbitrary config keys and values to both
// kinds' config schemas: Check never panics, never ends its message in a
// newline, refuses what is not a config key, and agrees
// with the config PUT's Validate whenever it accepts a value (its exact
// bounds only ever refuse more).
func FuzzGuestConfigCheck(f *testing.F) {
	for _, s := range [][2]string{
		{"cores", "99999999999999999999"}, {"memory", "1e308"}, {"cpulimit", "128.00000000000000000001"},
		{"cpulimit", "1e99999"}, {"net0", "virtio,bridge=vmbr0,tag=5000"}, {"rootfs", "local:8,size=1e3G"},
		{"mp255", "local:1,mp=/x"}, {"delete", "cores"}, {"onboot", "yes"}, {"balloon", "-0.0e-99999"},
	} {
		f.Add(s[0], s[1])
	}
	s, err := Load()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, key, val string) {
		for _, kind := range []string{"qemu", "lxc"} {
			c, err := s.GuestConfig(kind)
			if err != nil {
				t.Fatal(err)
			}
			msg := c.Check(key, val)
			if c.Key(key) == nil {
				if msg == "" {
					t.Fatalf("%s: Check(%q) accepted a key that is not a config key", kind, key)
				}
				continue
			}
			if strings.HasSuffix(msg, "\n") {
				t.Fatalf("%s: Check(%q, %q) = %q ends in a newline", kind, key, val, msg)
			}
			m, _ := s.Method("PUT", guestConfigPaths[kind])
			if msg == "" && len(m.Validate(map[string]any{"node": "pve", "vmid": "100", key: val})) != 0 {
				t.Fatalf("%s: Check(%q, %q) accepted what Validate refuses: %v", kind, key, val, m.Validate(map[string]any{"node": "pve", "vmid": "100", key: val}))
			}
		}
	})
}
