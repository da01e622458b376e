package pveschema

import "regexp"

// cloudinitKeys are QEMU's cloud-init options (besides ipconfigN).
var cloudinitKeys = map[string]bool{"cicustom": true, "cipassword": true, "citype": true, "ciupgrade": true, "ciuser": true, "nameserver": true, "searchdomain": true, "sshkeys": true}

var numberedKeyRE = regexp.MustCompile(`^([a-z_\-]+?)(\d+)$`)

// ConfigPrivilege is the privilege on /vms/{vmid} that PVE's
// check_vm_modify_config_perm (qemu-server) or check_ct_modify_config_perm
// (pve-container) requires to set or delete the config key of a guest of
// kind "qemu" or "lxc" — a config write's schema check only asks for any
// one of the VM.Config.* privileges; the handler then checks each key.
// Abridged: keys PVE reserves to root@pam fall under VM.Config.HWType
// (QEMU) or VM.Config.Options (LXC) here.
func ConfigPrivilege(kind, key string) string {
	base := key
	if sm := numberedKeyRE.FindStringSubmatch(key); sm != nil {
		base = sm[1]
	}
	switch base {
	case "cores", "sockets", "cpu", "vcpus", "cpulimit", "cpuunits", "affinity", "numa":
		return "VM.Config.CPU"
	case "memory", "balloon", "shares", "swap":
		return "VM.Config.Memory"
	case "net":
		return "VM.Config.Network"
	case "scsi", "virtio", "sata", "ide", "efidisk", "tpmstate", "unused", "rootfs", "mp":
		return "VM.Config.Disk"
	case "ipconfig":
		return "VM.Config.Cloudinit"
	}
	if cloudinitKeys[key] && kind == "qemu" {
		return "VM.Config.Cloudinit"
	}
	if kind == "lxc" {
		return "VM.Config.Options"
	}
	switch key {
	case "agent", "autostart", "bios", "boot", "bootdisk", "description", "freeze", "keyboard", "localtime",
		"name", "onboot", "ostype", "protection", "reboot", "startdate", "startup", "tablet", "tags", "vmstatestorage", "hookscript":
		return "VM.Config.Options"
	}
	return "VM.Config.HWType"
}
