package pveschema

import (
	"slices"
	"testing"
)

func TestConfigPrivilege(t *testing.T) {
	tests := []struct{ kind, key, want string }{
		{"qemu", "cores", "VM.Config.CPU"},
		{"lxc", "cpulimit", "VM.Config.CPU"},
		{"qemu", "memory", "VM.Config.Memory"},
		{"lxc", "swap", "VM.Config.Memory"},
		{"qemu", "net0", "VM.Config.Network"},
		{"lxc", "net3", "VM.Config.Network"},
		{"qemu", "scsi0", "VM.Config.Disk"},
		{"qemu", "unused2", "VM.Config.Disk"},
		{"lxc", "rootfs", "VM.Config.Disk"},
		{"lxc", "mp1", "VM.Config.Disk"},
		{"qemu", "ipconfig0", "VM.Config.Cloudinit"},
		{"qemu", "sshkeys", "VM.Config.Cloudinit"},
		{"qemu", "name", "VM.Config.Options"},
		{"qemu", "tags", "VM.Config.Options"},
		{"lxc", "hostname", "VM.Config.Options"},
		{"lxc", "description", "VM.Config.Options"},
		{"qemu", "machine", "VM.Config.HWType"},
	}
	for _, tc := range tests {
		if got := ConfigPrivilege(tc.kind, tc.key); got != tc.want {
			t.Errorf("ConfigPrivilege(%s, %s) = %s; want %s", tc.kind, tc.key, got, tc.want)
		}
	}
}

// TestConfigPrivilegeInSchema: every per-key privilege is one the config
// write's schema check accepts, so a token holding it passes both checks.
func TestConfigPrivilegeInSchema(t *testing.T) {
	keys := map[string][]string{
		"qemu": {"cores", "memory", "net0", "scsi0", "name", "description", "ipconfig0", "sshkeys", "machine"},
		"lxc":  {"cores", "memory", "swap", "net0", "rootfs", "mp0", "hostname", "description", "features"},
	}
	for kind, tmpl := range map[string]string{"qemu": "/nodes/{node}/qemu/{vmid}/config", "lxc": "/nodes/{node}/lxc/{vmid}/config"} {
		c := mustMethod(t, "PUT", tmpl).Permission().Check
		for _, key := range keys[kind] {
			p := ConfigPrivilege(kind, key)
			if !slices.Contains(c.Privs, p) {
				t.Errorf("%s %s: %s is not among the schema's %v", kind, key, p, c.Privs)
			}
		}
	}
}
