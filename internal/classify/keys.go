package classify

import (
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// indexed is a family of numbered config keys, prefix0..prefixMax, as PVE's
// schema spells them (e.g. "scsi[n]", n is 0 to 30).
type indexed struct {
	prefix string
	max    int
}

// The data-bearing keys, from the PVE API schema (apidata.json) and
// qemu-server / pve-container: a key whose value names a volume, directory
// or device holding guest data.
var (
	qemuDiskFamilies = []indexed{{"scsi", 30}, {"virtio", 15}, {"sata", 5}, {"ide", 3}}
	unusedFamily     = indexed{"unused", 255} // MAX_UNUSED_DISKS = 256 in both qemu-server and pve-container
	lxcMPFamily      = indexed{"mp", 255}     // MAX_MOUNT_POINTS = 256
	netFamily        = indexed{"net", 31}     // MAX_NETS = 32 (qemu), MAX_LXC_NETWORKS = 32
)

// index reports the number n when key is prefix followed by n in canonical
// decimal form (no sign, no leading zero, no spaces) and n <= max.
func (f indexed) index(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, f.prefix)
	if !ok || rest == "" || len(rest) > 3 || (len(rest) > 1 && rest[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n > f.max {
		return 0, false
	}
	return n, true
}

func (f indexed) has(key string) bool {
	_, ok := f.index(key)
	return ok
}

// IsDataBearing reports whether key, exactly as spelled (PVE keys are case
// sensitive), is a config key of kind whose value holds or references guest
// data: for qemu scsi0-30, virtio0-15, sata0-5, ide0-3, efidisk0, tpmstate0,
// unused0-255 and "cdrom" (PVE's alias for ide2); for lxc rootfs, mp0-255
// and unused0-255. Any other key, or an unknown kind, gives false; note that
// false does not mean benign, since the classifier treats keys it does not
// know as destructive.
func IsDataBearing(kind guest.Kind, key string) bool {
	switch kind {
	case guest.QEMU:
		switch key {
		case "efidisk0", "tpmstate0", "cdrom":
			return true
		}
		for _, f := range qemuDiskFamilies {
			if f.has(key) {
				return true
			}
		}
		return unusedFamily.has(key)
	case guest.LXC:
		return key == "rootfs" || lxcMPFamily.has(key) || unusedFamily.has(key)
	}
	return false
}

// isBenignKey reports whether setting or deleting key on an existing guest
// of kind is harmless: the DESIGN.md allow-list. Everything else is either
// data-bearing (judged by value) or unknown (destructive).
func isBenignKey(kind guest.Kind, key string) bool {
	switch key {
	case "cores", "memory", "description", "tags", "onboot", "startup", "cpulimit", "cpuunits":
		return kind == guest.QEMU || kind == guest.LXC
	}
	switch kind {
	case guest.QEMU:
		switch key {
		case "sockets", "balloon", "name":
			return true
		}
	case guest.LXC:
		switch key {
		case "hostname", "swap":
			return true
		}
	default:
		return false
	}
	return netFamily.has(key)
}

// createOnlyKeys are create parameters that set up a new guest without
// touching existing data: they are benign on create (when the guest does
// not exist), though most are not on the config allow-list. Keys that can
// reach host data or bypass safeguards (args, hookscript, hostpci, usb,
// dev, virtiofs, features, lock, force, cicustom, import-working-storage)
// are deliberately absent.
var createOnlyKeys = map[guest.Kind]map[string]bool{
	guest.QEMU: setOf("vmid", "node", "ostype", "scsihw", "boot", "bootdisk", "cpu", "numa", "agent",
		"bios", "machine", "vga", "kvm", "acpi", "tablet", "hotplug", "smbios1", "vmgenid",
		"ciuser", "cipassword", "sshkeys", "nameserver", "searchdomain", "citype", "ciupgrade",
		"start", "pool", "storage", "unique", "archive", "bwlimit", "localtime", "keyboard",
		"protection", "template", "arch", "vcpus", "shares", "autostart", "serial0", "serial1",
		"serial2", "serial3"),
	guest.LXC: setOf("vmid", "node", "ostemplate", "ostype", "arch", "storage", "pool", "start",
		"unique", "password", "ssh-public-keys", "nameserver", "searchdomain", "timezone",
		"console", "cmode", "tty", "protection", "template", "restore", "bwlimit"),
}

func isCreateKey(kind guest.Kind, key string) bool {
	if createOnlyKeys[kind][key] {
		return true
	}
	return kind == guest.QEMU && (indexed{"ipconfig", 31}).has(key)
}

func setOf(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// harmlessDriveOptions are the drive options whose change on an existing
// disk (same volume, no shrink) loses no data: performance and
// backup/replication selection. Conservatively absent: format (would
// reinterpret the data), snapshot (discards writes), media, shared,
// ro, werror/rerror, serial/wwn/vendor/product (guest-visible identity),
// efitype/pre-enrolled-keys/ms-cert/version (firmware state). cache is
// harmless except "unsafe", checked separately.
var harmlessDriveOptions = map[guest.Kind]map[string]bool{
	guest.QEMU: setOf("aio", "backup", "replicate", "cache", "discard", "iothread", "ssd", "detect_zeroes",
		"bps", "bps_rd", "bps_wr", "bps_max_length", "bps_rd_max_length", "bps_wr_max_length",
		"bps_rd_length", "bps_wr_length",
		"iops", "iops_rd", "iops_wr", "iops_max", "iops_rd_max", "iops_wr_max",
		"iops_max_length", "iops_rd_max_length", "iops_wr_max_length", "iops_rd_length", "iops_wr_length",
		"mbps", "mbps_rd", "mbps_wr", "mbps_max", "mbps_rd_max", "mbps_wr_max"),
	guest.LXC: setOf("backup", "replicate", "mountoptions"),
}

// splitList splits a "delete" value as PVE::Tools::split_list does: on NUL
// bytes if there are any, else on commas, semicolons and whitespace.
func splitList(s string) []string { return action.SplitList(s) }
