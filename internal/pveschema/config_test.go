package pveschema

import (
	"slices"
	"strings"
	"testing"
)

func TestGuestConfigKeys(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kind, key string
		want      bool
	}{
		{"qemu", "cores", true},
		{"qemu", "memory", true},
		{"qemu", "net0", true},
		{"qemu", "net31", true},
		{"qemu", "net32", false},
		{"qemu", "scsi30", true},
		{"qemu", "scsi31", false},
		{"qemu", "unused255", true},
		{"qemu", "net01", false},
		{"qemu", "swap", false}, // an LXC key
		{"qemu", "rootfs", false},
		{"qemu", "corse", false},
		// API call parameters of the config PUT are not config keys.
		{"qemu", "delete", false},
		{"qemu", "revert", false},
		{"qemu", "skiplock", false},
		{"qemu", "force", false},
		{"qemu", "background_delay", false},
		{"qemu", "node", false},
		{"qemu", "vmid", false},
		{"qemu", "import-working-storage", false},
		{"lxc", "cores", true},
		{"lxc", "swap", true},
		{"lxc", "rootfs", true},
		{"lxc", "mp255", true},
		{"lxc", "mp256", false},
		{"lxc", "dev0", true},
		{"lxc", "scsi0", false},
		{"lxc", "delete", false},
		{"lxc", "vmid", false},
	}
	for _, tt := range tests {
		c, err := s.GuestConfig(tt.kind)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Key(tt.key) != nil; got != tt.want {
			t.Errorf("%s Key(%q) != nil = %v; want %v", tt.kind, tt.key, got, tt.want)
		}
	}
	if _, err := s.GuestConfig("vm"); err == nil || !strings.Contains(err.Error(), "qemu or lxc") {
		t.Errorf("GuestConfig(vm) err = %v; want an unknown-kind error", err)
	}
	c, _ := s.GuestConfig("lxc")
	if keys := c.Keys(); !slices.Contains(keys, "mp[n]") || slices.Contains(keys, "delete") || !slices.IsSorted(keys) {
		t.Errorf("lxc Keys() = %v; want sorted, with mp[n], without delete", keys)
	}
}

func TestGuestConfigCheck(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kind, key, value string
		want             string // substring of the message; "" = valid
	}{
		{"qemu", "cores", "2", ""},
		{"qemu", "cores", "two", "type check ('integer') failed - got 'two'"},
		{"qemu", "cores", "2.0", "type check ('integer') failed"},
		{"qemu", "cores", "0", "minimum value of 1"},
		{"qemu", "cores", "99999999999999999999", ""}, // no maximum in PVE's schema
		{"lxc", "cores", "99999999999999999999", "maximum value of 8192"},
		{"lxc", "cores", "8193", "maximum value of 8192"},
		{"qemu", "memory", "2048", ""},
		{"qemu", "memory", "current=2048", ""},
		{"qemu", "memory", "2G", "current: type check ('integer') failed - got '2G'"},
		{"qemu", "memory", "1e308", "type check ('integer') failed - got '1e308'"},
		{"lxc", "memory", "2G", "type check ('integer') failed - got '2G'"},
		{"lxc", "memory", "8", "minimum value of 16"},
		{"qemu", "onboot", "1", ""},
		{"qemu", "onboot", "yes", "type check ('boolean') failed"},
		{"qemu", "cpulimit", "1.5", ""},
		{"qemu", "cpulimit", "128", ""},
		{"qemu", "cpulimit", "128.5", "maximum value of 128"},
		// Rounds to 128 in floating point; exactly it is above.
		{"qemu", "cpulimit", "128.00000000000000000001", "maximum value of 128"},
		{"lxc", "cpulimit", "-0.00000000000000000000001", "minimum value of 0"},
		{"qemu", "cpulimit", "1e99999", "maximum value of 128"},
		{"qemu", "net0", "virtio,bridge=vmbr0", ""},
		{"qemu", "net0", "virtio,bridge=vmbr0,tag=5000", "tag: value must have a maximum value of 4094"},
		{"qemu", "net0", "virtio,brigde=vmbr0", "invalid key in comma-separated list property: brigde"},
		{"lxc", "net0", "name=eth0,bridge=vmbr0,ip=dhcp", ""},
		{"lxc", "net0", "bridge=vmbr0", "name: property is missing"},
		{"lxc", "rootfs", "local-lvm:vm-101-disk-0,size=8G", ""},
		{"lxc", "rootfs", "local-lvm:vm-101-disk-0,size=big", "size"},
		{"qemu", "scsi0", "local-lvm:vm-105-disk-0,size=100G", ""},
		{"qemu", "corse", "2", "not defined in schema"},
	}
	for _, tt := range tests {
		c, err := s.GuestConfig(tt.kind)
		if err != nil {
			t.Fatal(err)
		}
		got := c.Check(tt.key, tt.value)
		if tt.want == "" && got != "" || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s Check(%q, %q) = %q; want %q", tt.kind, tt.key, tt.value, got, tt.want)
		}
		if strings.HasSuffix(got, "\n") {
			t.Errorf("%s Check(%q, %q) = %q ends in a newline", tt.kind, tt.key, tt.value, got)
		}
	}
}
