package sim

import (
	"regexp"
	"sort"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// Pending changes, as qemu-server and pve-container keep them.
//
// A config write first puts every set value into the guest's pending
// section and every deleted key into its pending delete list (new volumes
// are allocated and MACs generated at write time; deleting unusedN frees
// the volume at once); pending values equal to the current ones are
// dropped (cleanup_pending). Then a stopped guest applies everything
// (vmconfig_apply_pending), a running one only what it can change live
// (vmconfig_hotplug_pending, restricted to the keys this write named):
// see hotplugLocked. What stays pending is applied when the guest starts
// (both kinds) and, for QEMU, also when it stops (vm_stop_cleanup), so a
// reboot applies it. `revert` drops pending values and deletes.

// Keys a running QEMU guest takes at once, whatever its hotplug setting:
// qemu-server's $fast_plug_option plus its cloud-init options.
var qemuFastPlug = map[string]bool{
	"description": true, "hookscript": true, "lock": true, "migrate_downtime": true, "migrate_speed": true,
	"name": true, "onboot": true, "protection": true, "shares": true, "startup": true, "tags": true,
	"vmstatestorage": true,
	"cicustom":       true, "cipassword": true, "citype": true, "ciupgrade": true, "ciuser": true,
	"nameserver": true, "searchdomain": true, "sshkeys": true,
}

// Keys a running container takes at once: pve-container's
// $LXC_FASTPLUG_OPTIONS.
var lxcFastPlug = map[string]bool{
	"description": true, "onboot": true, "startup": true, "protection": true, "hostname": true,
	"hookscript": true, "cores": true, "tags": true, "lock": true,
}

var (
	ipconfigRE = regexp.MustCompile(`^ipconfig\d+$`)
	netRE      = regexp.MustCompile(`^net\d+$`)
	usbRE      = regexp.MustCompile(`^usb\d+$`)
	lxcMPRE    = regexp.MustCompile(`^mp\d+$`)
	lxcDevRE   = regexp.MustCompile(`^dev\d+$`)
)

// hotplugFeatures parses a QEMU `hotplug` value as parse_hotplug_features
// does: unset or "1" is network,disk,usb; "0" is none.
func hotplugFeatures(v string, set bool) map[string]bool {
	if !set || v == "1" {
		v = "network,disk,usb"
	}
	out := map[string]bool{}
	if v == "0" {
		return out
	}
	for _, f := range splitList(v) {
		out[f] = true
	}
	return out
}

// hasPending reports whether anything waits in g's pending section.
func (g *guestState) hasPending() bool { return len(g.pending) > 0 || len(g.pendingDel) > 0 }

// view is the config with pending values applied and pending deletes
// removed: what GET …/config returns without current=1.
func (g *guestState) view() map[string]string {
	if !g.hasPending() {
		return g.config
	}
	out := cloneMap(g.config)
	for k, v := range g.pending {
		out[k] = v
	}
	for k := range g.pendingDel {
		delete(out, k)
	}
	return out
}

// cleanupPendingLocked is cleanup_pending: pending values equal to the
// current ones, and pending deletes of keys that are not set, are dropped.
func (g *guestState) cleanupPendingLocked() {
	for k, v := range g.pending {
		if cur, ok := g.config[k]; ok && cur == v {
			delete(g.pending, k)
		}
	}
	for k := range g.pendingDel {
		if _, ok := g.config[k]; !ok {
			delete(g.pendingDel, k)
		}
	}
}

// writePendingLocked records a config write in the pending section and
// returns the keys it modified. Deleting unusedN frees the volume at once;
// a pending volume that a delete or a new value drops becomes unusedN
// (vmconfig_register_unused_drive). force marks deletes as forced (2).
func (g *guestState) writePendingLocked(ch configChange, force bool) map[string]bool {
	modified := map[string]bool{}
	dropPendingVolume := func(key string) {
		pv, ok := g.pending[key]
		if !ok || !isVolumeKey(g.kind, key) {
			return
		}
		if vol := volumeOf(pv); vol != "" && vol != volumeOf(g.config[key]) {
			g.addUnused(vol, volSize(pv))
		}
	}
	for _, key := range ch.delete {
		_, cur := g.config[key]
		_, pend := g.pending[key]
		if !cur && !pend {
			continue // PVE warns "cannot delete '…' - not set in current configuration!"
		}
		modified[key] = true
		dropPendingVolume(key)
		delete(g.pending, key)
		if unusedKeyRE.MatchString(key) {
			delete(g.config, key)
			continue
		}
		d := 1
		if force {
			d = 2
		}
		g.pendingDel[key] = d
	}
	for _, key := range sortedKeys(ch.set) {
		v := ch.set[key]
		if isVolumeKey(g.kind, key) {
			written := v
			v = g.storedDriveValue(key, written, g.allocVolume(key, v))
			if pv, ok := g.pending[key]; ok && volumeOf(pv) != volumeOf(v) {
				dropPendingVolume(key)
			}
		}
		modified[key] = true
		g.pending[key] = v
		delete(g.pendingDel, key)
	}
	g.cleanupPendingLocked()
	return modified
}

// applyPendingLocked is vmconfig_apply_pending: every pending delete and
// value becomes current; a volume that leaves the config becomes unusedN.
func (g *guestState) applyPendingLocked() {
	for _, key := range sortedKeys(g.pendingDel) {
		g.applyDeleteLocked(key)
	}
	for _, key := range sortedKeys(g.pending) {
		g.applySetLocked(key)
	}
}

func (g *guestState) applyDeleteLocked(key string) {
	old, ok := g.config[key]
	force := g.pendingDel[key] == 2
	delete(g.pendingDel, key)
	if !ok {
		return
	}
	delete(g.config, key)
	if isVolumeKey(g.kind, key) && !force {
		if vol := volumeOf(old); vol != "" {
			g.addUnused(vol, volSize(old))
		}
	}
}

func (g *guestState) applySetLocked(key string) {
	v := g.pending[key]
	delete(g.pending, key)
	old := g.config[key]
	g.config[key] = v
	if isVolumeKey(g.kind, key) {
		if ov := volumeOf(old); ov != "" && ov != volumeOf(v) {
			g.addUnused(ov, volSize(old))
		}
	}
}

// hotplugLocked is vmconfig_hotplug_pending for a running guest: of the
// keys this write modified, it applies those the running guest can take
// and leaves the rest pending. QEMU's fast-plug keys apply whatever the
// write named.
//
// QEMU (the current `hotplug` value decides; default network,disk,usb):
// cpulimit, cpuunits and balloon (unless it turns the balloon device on or
// off) always; vcpus with cpu; memory with memory (the limits
// qemu_memory_hotplug enforces are not modelled); netN with network, or
// without it when model and MAC stay the same (bridge, tag, rate, firewall,
// link_down change live); scsiN and virtioN with disk (ide, sata, efidisk0
// and tpmstate0 never); usbN and tablet with usb; hotplug itself unless
// cpu or memory hotplug is involved; agent is left pending. Everything else
// (cores, sockets, cpu, numa, bios, machine, ostype, ...) waits for a
// restart. Deletes follow the same rules.
//
// LXC: the fast-plug keys, and cpulimit, cpuunits, memory, swap, netN, a
// new mpN or devN (not a changed one); deletes of cpulimit, cpuunits,
// swap and netN. Everything else (rootfs, arch, ostype, features, ...)
// waits.
func (g *guestState) hotplugLocked(modified map[string]bool) {
	if g.kind == guest.QEMU {
		for _, key := range sortedKeys(g.pending) {
			if qemuFastPlug[key] || ipconfigRE.MatchString(key) {
				g.applySetLocked(key)
			}
		}
	}
	hv, hset := g.config["hotplug"]
	feat := hotplugFeatures(hv, hset)
	for _, key := range sortedKeys(g.pendingDel) {
		if modified[key] && g.liveDelete(key, feat) {
			g.applyDeleteLocked(key)
		}
	}
	for _, key := range sortedKeys(g.pending) {
		if modified[key] && g.liveSet(key, g.pending[key], feat) {
			g.applySetLocked(key)
		}
	}
}

func (g *guestState) liveDelete(key string, feat map[string]bool) bool {
	if g.kind == guest.LXC {
		return lxcFastPlug[key] || key == "swap" || key == "cpulimit" || key == "cpuunits" || netRE.MatchString(key)
	}
	if live, ok := g.qemuDeviceLive(key, feat); ok {
		return live
	}
	switch {
	case qemuFastPlug[key] || ipconfigRE.MatchString(key):
		return true
	case key == "hotplug":
		return !strings.Contains(g.config["hotplug"], "cpu") && !strings.Contains(g.config["hotplug"], "memory")
	case key == "balloon":
		return g.config["balloon"] != "0"
	case netRE.MatchString(key):
		return feat["network"]
	}
	return false
}

// qemuDeviceLive decides the QEMU keys whose set and delete apply live
// under the same condition; ok is false for every other key.
func (g *guestState) qemuDeviceLive(key string, feat map[string]bool) (live, ok bool) {
	switch {
	case key == "cpuunits" || key == "cpulimit":
		return true, true
	case key == "tablet":
		return feat["usb"], true
	case usbRE.MatchString(key):
		return g.usbHotplug(feat), true
	case key == "vcpus":
		return feat["cpu"], true
	case key == "memory":
		return feat["memory"], true
	case diskKeyRE.MatchString(key):
		return feat["disk"] && !qemuColdDisk(key), true
	}
	return false, false
}

func (g *guestState) liveSet(key, v string, feat map[string]bool) bool {
	if g.kind == guest.LXC {
		switch {
		case lxcFastPlug[key] || key == "cpulimit" || key == "cpuunits" || key == "memory" || key == "swap" || netRE.MatchString(key):
			return true
		case lxcMPRE.MatchString(key) || lxcDevRE.MatchString(key):
			_, exists := g.config[key]
			return !exists
		}
		return false
	}
	if live, ok := g.qemuDeviceLive(key, feat); ok {
		return live
	}
	switch {
	case key == "hotplug":
		involved := func(s string) bool { return strings.Contains(s, "cpu") || strings.Contains(s, "memory") }
		return !involved(v) && !involved(g.config["hotplug"])
	case key == "balloon":
		cur, set := g.config["balloon"]
		return (!set || cur != "0") == (v != "0")
	case netRE.MatchString(key):
		if feat["network"] {
			return true
		}
		cur, ok := g.config[key]
		first := func(s string) string { f, _, _ := strings.Cut(s, ","); return f }
		return ok && first(cur) == first(v)
	}
	return false
}

// qemuColdDisk reports drive keys qemu-server never hotplugs.
func qemuColdDisk(key string) bool {
	return key == "efidisk0" || key == "tpmstate0" || strings.HasPrefix(key, "ide") || strings.HasPrefix(key, "sata")
}

// usbHotplug is qemu-server's $usb_hotplug: usb in the hotplug features
// and a guest OS that supports it (l26, or Windows newer than 7; the
// machine version condition always holds for the simulator's QEMU 10).
func (g *guestState) usbHotplug(feat map[string]bool) bool {
	if !feat["usb"] {
		return false
	}
	switch g.config["ostype"] {
	case "l26", "win8", "win10", "win11":
		return true
	}
	return false
}

// revertLocked drops the pending values and deletes of keys (the config
// API's revert parameter).
func (g *guestState) revertLocked(keys []string) {
	for _, k := range keys {
		if pv, ok := g.pending[k]; ok && isVolumeKey(g.kind, k) {
			if vol := volumeOf(pv); vol != "" && vol != volumeOf(g.config[k]) {
				g.addUnused(vol, volSize(pv))
			}
		}
		delete(g.pending, k)
		delete(g.pendingDel, k)
	}
}

// renderPending writes the [PENDING] section as write_vm_config does:
// pending values, then "delete:" with forced deletes prefixed by '!'.
func (g *guestState) renderPending(b *strings.Builder) {
	if !g.hasPending() {
		return
	}
	b.WriteString("\n[PENDING]\n")
	c := cloneMap(g.pending)
	if len(g.pendingDel) > 0 {
		dels := make([]string, 0, len(g.pendingDel))
		for _, k := range sortedKeys(g.pendingDel) {
			if g.pendingDel[k] == 2 {
				k = "!" + k
			}
			dels = append(dels, k)
		}
		c["delete"] = strings.Join(dels, ",")
	}
	renderSection(b, c)
}

// pendingJSON is the GET …/pending array (config_with_pending_array):
// one item per current key (its value, its pending value if any, delete
// 1 or 2 if a delete is pending), then one per key only pending. The
// loaded config's digest is one of the current keys, as on PVE.
func (g *guestState) pendingJSON() []any {
	cur := configJSON(g.kind, g.config, g.digest())
	pend := configJSON(g.kind, g.pending, "")
	keys := make([]string, 0, len(cur)+len(pend))
	for k := range cur {
		keys = append(keys, k)
	}
	for k := range pend {
		if _, ok := cur[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		item := map[string]any{"key": k}
		if v, ok := cur[k]; ok {
			item["value"] = v
		}
		if v, ok := pend[k]; ok {
			item["pending"] = v
		}
		if d, ok := g.pendingDel[k]; ok {
			item["delete"] = d
		}
		out = append(out, item)
	}
	return out
}

// pendingDeleteList is the pending delete keys, sorted, forced ones
// prefixed by '!', for GuestSnapshot.
func (g *guestState) pendingDeleteList() []string {
	var out []string
	for _, k := range sortedKeys(g.pendingDel) {
		if g.pendingDel[k] == 2 {
			k = "!" + k
		}
		out = append(out, k)
	}
	return out
}
