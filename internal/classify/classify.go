// Package classify decides whether an action may run on the hub's word
// alone (benign) or needs an operator's signature (destructive), by what the
// action does to guest data rather than by its verb: an ordinary config
// write that replaces, detaches or shrinks a disk is destructive, growing a
// disk is benign. It implements the classification table of DESIGN.md and
// issue 4 §1.
//
// The rules, in short:
//
//   - start, shutdown, stop: benign (with only their known parameters).
//   - config: every key set or deleted is judged and the action is
//     destructive if any key is. Keys on the allow-list (cores, sockets,
//     memory, balloon, name/hostname, description, tags, onboot, startup,
//     cpulimit, cpuunits, swap, netN) are benign to set or delete.
//     Data-bearing keys (see IsDataBearing) are judged by value: a new
//     allocation (STORAGE:SIZE) into an empty slot, the same volume with no
//     smaller size and only harmless options changed, or cdrom media with
//     no data (none, a physical drive, an ISO image, a cloud-init drive) are
//     benign; replacing, attaching an existing volume or host path,
//     importing, shrinking, or deleting a data-bearing key is destructive.
//     Any other key is destructive.
//   - resize: benign only when it provably grows the disk (a config write
//     naming a larger size= is benign too, but grows nothing: PVE treats
//     size= as informational, so the planner resizes instead).
//   - create: benign when the guest does not exist, force is not set and
//     every parameter is known and harmless (data-bearing parameters must
//     allocate new volumes; cicustom only names snippets).
//   - clone: benign when the new guest does not exist and every parameter
//     is one of PVE's clone parameters.
//   - config keys a create takes (cloud-init, boot, ...) but that are not
//     on the config allow-list: benign only on the agent's own new guest
//     that has not run yet (Provenance.Fresh); destructive otherwise.
//   - destroy: destructive, except the agent's own failed provision, which
//     only the Provenance argument (the agent's journal) can attest. A
//     guest with PVE's protection flag set is destroyed only by a signed
//     destroy that says so (ProtectedParam, ProtectionMismatch).
//   - snapshot (take one): benign with only its known parameters
//     (snapname in PVE's format, description, vmstate on QEMU): a
//     snapshot adds a point to return to and changes no data.
//   - snapshot_delete: benign only for the snapshot Provenance.Snapshot
//     names (the agent's own scheduled snapshot, unchanged since it took
//     it); any other snapshot, whatever its name, is destructive.
//   - migrate (to another node of the cluster): benign with only its
//     known parameters (target; QEMU online and with-local-disks; LXC
//     restart and timeout): it moves the guest and destroys nothing (see
//     migrate.go for local disks and restart mode).
//   - snapshot_rollback, and any unknown op: destructive.
//   - storage headroom: a resize, config write, create, clone or migration that would
//     otherwise be benign is held for a signature when the agent found it
//     would fill a storage past its threshold (Provenance.Headroom; see
//     Allocations and Headroom).
//
// Unknown means destructive: an op, key, parameter or value the classifier
// cannot judge is destructive. Reasons name keys and volumes but never the
// values of other keys (a password must not reach a log).
//
// The package is pure (no I/O) and Classify is safe for concurrent use.
package classify

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/propstr"
)

// Class is the safety class of an action.
type Class string

const (
	// Benign actions run on the hub's word alone.
	Benign Class = "benign"
	// Destructive actions run only with a verified operator signature.
	Destructive Class = "destructive"
)

// Verdict is the classifier's decision. Reason is a precise human sentence
// (or several joined by "; ") naming the keys that decided it; for a
// destructive verdict it lists every destructive finding. Keys lists the
// data-bearing config keys the action involves, sorted and unique; it is
// nil when there are none.
type Verdict struct {
	Class  Class
	Reason string
	Keys   []string
}

// Provenance is what the agent's own journal proves about the guest. It must
// never be derived from anything the hub sends: it is the only way an
// otherwise destructive action (destroying a guest) becomes benign.
type Provenance struct {
	// CreatedByAgent: this agent created the guest (journaled create).
	CreatedByAgent bool
	// CreateFailed: that create, or the provision it belongs to, failed.
	CreateFailed bool
	// Fresh: that create (or clone) succeeded and the guest has not run
	// since, so it holds no one's data but what its creation put there.
	// Setting it up as a create would (cloud-init, boot order, ...) is
	// then benign on its config too: a clone takes its config on the
	// tick after the clone task.
	Fresh bool
	// Headroom, when not empty, is the agent's own finding (from the
	// storage usage it read from PVE, never from the hub) that the
	// allocation the action makes would fill a storage past its headroom
	// threshold, with the figures (see Headroom). An allocation that is
	// otherwise benign is then held for a signature like a destructive
	// action, with this as its reason.
	Headroom string
	// Snapshot, when not empty, names a snapshot of the guest that the
	// agent's own journal shows it took under the guest's snapshot
	// schedule and that PVE still lists unchanged (same name, snaptime
	// and description as journaled). Deleting exactly that snapshot (a
	// prune) is then benign; deleting any other needs a signature.
	Snapshot string
}

// Classify judges action a against the guest's current config actual (nil
// when the guest does not exist) and the agent's provenance record. It never
// panics and never returns an empty Reason.
func Classify(a action.Action, actual guest.Config, prov Provenance) Verdict {
	j := &judge{a: a, actual: actual}
	switch a.Op {
	case action.Start:
		j.runState("timeout")
	case action.Shutdown:
		j.runState("timeout", "forceStop", "keepActive")
	case action.Stop:
		j.runState("timeout", "keepActive", "overrule-shutdown")
	case action.Reboot:
		j.runState("timeout")
	case action.SetConfig:
		j.config(prov)
	case action.Resize:
		j.resize()
	case action.Create:
		j.create()
	case action.Clone:
		j.clone()
	case action.Destroy:
		j.destroy(prov)
	case action.SnapshotCreate:
		j.snapshotCreate()
	case action.SnapshotRollback:
		j.addKeys(dataKeys(a.Kind, actual)...)
		j.bad(fmt.Sprintf("rolls back guest %d to snapshot %q, discarding every change since", a.VMID, a.Params["snapname"]))
	case action.SnapshotDelete:
		j.snapshotDelete(prov)
	case action.Migrate:
		j.migrate()
	default:
		j.bad(fmt.Sprintf("unknown op %q", a.Op))
	}
	if prov.Headroom != "" && len(j.bads) == 0 && (a.Op == action.Clone || Allocations(a, actual, nil) != nil) {
		// A clone's allocation depends on its source, which only the
		// caller that found it knows; any other op must allocate itself
		// (a config write split from its new disk does not).
		j.bad("storage headroom: " + prov.Headroom + "; held until signed")
	}
	return j.verdict()
}

// judge accumulates findings for one action.
type judge struct {
	a      action.Action
	actual guest.Config
	good   []string // benign findings, used when nothing is destructive
	bads   []string // destructive findings
	keys   []string
}

func (j *judge) ok(reason string)  { j.good = append(j.good, reason) }
func (j *judge) bad(reason string) { j.bads = append(j.bads, reason) }
func (j *judge) addKeys(keys ...string) {
	j.keys = append(j.keys, keys...)
}

func (j *judge) verdict() Verdict {
	slices.Sort(j.keys)
	keys := slices.Compact(j.keys)
	if len(keys) == 0 {
		keys = nil
	}
	if len(j.bads) > 0 {
		return Verdict{Class: Destructive, Reason: strings.Join(j.bads, "; "), Keys: keys}
	}
	reason := strings.Join(j.good, "; ")
	if reason == "" {
		reason = fmt.Sprintf("%s %d changes no data", j.a.Op, j.a.VMID)
	}
	return Verdict{Class: Benign, Reason: reason, Keys: keys}
}

// sortedParams returns the action's parameter names in order, so reasons
// are deterministic.
func (j *judge) sortedParams() []string {
	names := make([]string, 0, len(j.a.Params))
	for k := range j.a.Params {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

func (j *judge) runState(allowed ...string) {
	for _, k := range j.sortedParams() {
		switch {
		case k == "skiplock":
			j.bad(fmt.Sprintf("%s %d: skiplock bypasses the guest's lock (an operation such as a backup or rollback may be running)", j.a.Op, j.a.VMID))
		case !slices.Contains(allowed, k):
			j.bad(fmt.Sprintf("%s %d: unknown parameter %q", j.a.Op, j.a.VMID, k))
		}
	}
	j.ok(fmt.Sprintf("%s %d changes run state only", j.a.Op, j.a.VMID))
}

func (j *judge) config(prov Provenance) {
	kind := j.a.Kind
	if kind != guest.QEMU && kind != guest.LXC {
		j.bad(fmt.Sprintf("unknown guest kind %q: config keys cannot be judged", kind))
		return
	}
	var benign []string
	for _, k := range j.sortedParams() {
		switch {
		case k == "digest" || k == "delete":
			// Meta parameters, not keys: digest only makes a write fail
			// on a stale config; delete is judged below.
		case IsDataBearing(kind, k):
			j.addKeys(k)
			j.judgeDriveSet(k, j.a.Params[k])
		case isBenignKey(kind, k):
			benign = append(benign, k)
		case prov.Fresh && prov.CreatedByAgent && (isCreateKey(kind, k) || k == "cicustom" && kind == guest.QEMU):
			if k == "cicustom" {
				if msg := checkCicustom(j.a.Params[k]); msg != "" {
					j.bad(msg)
					continue
				}
			}
			benign = append(benign, k+" (the agent's own new guest, not yet started)")
		default:
			j.bad(unknownKey(kind, k))
		}
	}
	for _, k := range splitList(j.a.Params["delete"]) {
		switch {
		case IsDataBearing(kind, k):
			j.addKeys(k)
			j.bad(j.deleteReason(k))
		case isBenignKey(kind, k):
			benign = append(benign, "delete "+k)
		default:
			j.bad(fmt.Sprintf("delete %q: %s", k, unknownKey(kind, k)))
		}
	}
	if len(benign) > 0 {
		j.ok("allow-listed keys: " + strings.Join(benign, ", "))
	}
}

func unknownKey(kind guest.Kind, k string) string {
	return fmt.Sprintf("unknown config key %q (not on the %s allow-list)", k, kind)
}

func (j *judge) deleteReason(k string) string {
	cur, has := j.actual[k]
	what := ""
	if has {
		if vol, _, _, err := propstr.Volume(cur, defaultKey(j.a.Kind)); err == nil {
			what = " " + vol
		}
	}
	switch {
	case unusedFamily.has(k):
		return fmt.Sprintf("delete %s: destroys unused volume%s", k, what)
	case k == "rootfs":
		return fmt.Sprintf("delete rootfs: removes the container's root filesystem%s", what)
	case lxcMPFamily.has(k):
		return fmt.Sprintf("delete %s: detaches a mount point%s", k, what)
	default:
		if j.a.Params["force"] != "" && j.a.Params["force"] != "0" {
			return fmt.Sprintf("delete %s: removes disk%s with force (destroys it)", k, what)
		}
		return fmt.Sprintf("delete %s: detaches disk%s (to an unusedN entry, from which it can be destroyed)", k, what)
	}
}

func defaultKey(kind guest.Kind) string {
	if kind == guest.LXC {
		return "volume"
	}
	return "file"
}

// drive is a parsed data-bearing value.
type drive struct {
	props   []propstr.Prop
	volume  string
	size    int64
	hasSize bool
	cdrom   bool
}

func parseDrive(kind guest.Kind, value string) (drive, error) {
	props, err := propstr.Parse(value, defaultKey(kind))
	if err != nil {
		return drive{}, err
	}
	vol, size, hasSize, err := propstr.Volume(value, defaultKey(kind))
	if err != nil {
		return drive{}, err
	}
	media, _ := propstr.Get(props, "media")
	return drive{props: props, volume: vol, size: size, hasSize: hasSize, cdrom: kind == guest.QEMU && media == "cdrom"}, nil
}

// judgeDriveSet judges setting data-bearing key k to value v.
func (j *judge) judgeDriveSet(k, v string) {
	kind := j.a.Kind
	slot := k
	if k == "cdrom" {
		slot = "ide2" // qemu-server writes the cdrom parameter to ide2
		j.addKeys(slot)
	}
	if unusedFamily.has(k) {
		j.bad(fmt.Sprintf("%s: sets an unused-volume reference (only PVE writes unusedN; deleting it later destroys the volume)", k))
		return
	}
	nd, err := parseDrive(kind, v)
	if err != nil {
		j.bad(fmt.Sprintf("%s: cannot parse new value: %v", k, err))
		return
	}
	if src, ok := propstr.Get(nd.props, "import-from"); ok {
		j.bad(fmt.Sprintf("%s: imports from existing volume %s (it may belong to another guest)", k, src))
		return
	}
	if k == "cdrom" && !nd.cdrom {
		nd.cdrom = true // the cdrom alias always makes a cdrom drive
	}
	cur, had := j.actual[slot]
	if !had {
		j.judgeAttach(k, nd, "")
		return
	}
	od, err := parseDrive(kind, cur)
	if err != nil {
		j.bad(fmt.Sprintf("%s: cannot parse current value: %v", k, err))
		return
	}
	if od.cdrom {
		// A cdrom drive holds no guest data and PVE does not move it to
		// unusedN on replace: the slot is as good as empty.
		j.judgeAttach(k, nd, " (replacing cdrom "+od.volume+")")
		return
	}
	switch {
	case nd.cdrom:
		j.bad(fmt.Sprintf("%s: replaces disk %s with a cdrom", k, od.volume))
		return
	case nd.volume != od.volume:
		if isAllocation(nd.volume) {
			j.bad(fmt.Sprintf("%s: replaces volume %s with a new allocation %s", k, od.volume, nd.volume))
		} else {
			j.bad(fmt.Sprintf("%s: replaces volume %s with %s", k, od.volume, nd.volume))
		}
		return
	}
	destructive := false
	if nd.hasSize {
		switch {
		case !od.hasSize:
			j.bad(fmt.Sprintf("%s: sets size %s but the current size is unknown", k, propstr.FormatSize(nd.size)))
			destructive = true
		case nd.size < od.size:
			j.bad(fmt.Sprintf("%s: shrinks %s → %s", k, propstr.FormatSize(od.size), propstr.FormatSize(nd.size)))
			destructive = true
		}
	}
	var changed []string
	for _, opt := range optionNames(od.props, nd.props) {
		ov, oHas := propstr.Get(od.props, opt)
		nv, nHas := propstr.Get(nd.props, opt)
		if oHas == nHas && ov == nv {
			continue
		}
		if !harmlessDriveOptions[kind][opt] || (opt == "cache" && nv == "unsafe") {
			j.bad(fmt.Sprintf("%s: changes option %s of volume %s (%s → %s)", k, opt, od.volume, optText(ov, oHas), optText(nv, nHas)))
			destructive = true
			continue
		}
		changed = append(changed, opt)
	}
	if destructive {
		return
	}
	if len(changed) == 0 {
		j.ok(fmt.Sprintf("%s: keeps volume %s", k, od.volume))
	} else {
		j.ok(fmt.Sprintf("%s: keeps volume %s, changes harmless options %s", k, od.volume, strings.Join(changed, ", ")))
	}
	if nd.hasSize && od.hasSize && nd.size > od.size {
		// Benign because nothing happens to the data: PVE's size= is
		// informational and only resize grows a volume.
		j.ok(fmt.Sprintf("%s: size %s → %s is informational (a config write does not grow the volume; resize does)",
			k, propstr.FormatSize(od.size), propstr.FormatSize(nd.size)))
	}
}

func optText(v string, has bool) string {
	if !has {
		return "unset"
	}
	return v
}

// optionNames is the sorted union of option keys of two drives, without the
// volume (file/volume) and size.
func optionNames(a, b []propstr.Prop) []string {
	var names []string
	for _, ps := range [][]propstr.Prop{a, b} {
		for _, p := range ps {
			switch p.Key {
			case "file", "volume", "size":
				continue
			}
			names = append(names, p.Key)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// judgeAttach judges putting drive nd into slot k that holds no data.
func (j *judge) judgeAttach(k string, nd drive, note string) {
	switch {
	case nd.cdrom:
		if j.safeCdrom(nd.volume) {
			j.ok(fmt.Sprintf("%s: cdrom %s holds no guest data%s", k, nd.volume, note))
			return
		}
		j.bad(fmt.Sprintf("%s: attaches existing volume %s as a cdrom (it may belong to another guest)%s", k, nd.volume, note))
	case isAllocation(nd.volume):
		j.ok(fmt.Sprintf("%s: allocates a new volume %s%s", k, nd.volume, note))
	case j.a.Kind == guest.QEMU && isCloudinitAllocation(nd.volume):
		// qemu-server's create_disks allocates vm-<vmid>-cloudinit for
		// STORAGE:cloudinit and makes it a cdrom, media= or not.
		j.ok(fmt.Sprintf("%s: allocates a new cloud-init drive on %s%s", k, strings.TrimSuffix(nd.volume, ":cloudinit"), note))
	case nd.volume == "none" && j.a.Kind == guest.QEMU:
		j.ok(fmt.Sprintf("%s: adds a drive without a volume%s", k, note))
	case strings.HasPrefix(nd.volume, "/"):
		j.bad(fmt.Sprintf("%s: attaches host path %s (existing host data)%s", k, nd.volume, note))
	default:
		j.bad(fmt.Sprintf("%s: attaches existing volume %s (it may belong to another guest)%s", k, nd.volume, note))
	}
}

// safeCdrom reports whether a cdrom source carries no guest data: no media,
// the host's physical drive, an ISO image, or a cloud-init drive that is
// new or this guest's own.
func (j *judge) safeCdrom(vol string) bool {
	if vol == "none" || vol == "cdrom" {
		return true
	}
	storage, name, ok := strings.Cut(vol, ":")
	if !ok || storage == "" || strings.ContainsAny(storage, " \t/") {
		return false
	}
	if strings.HasPrefix(name, "iso/") && !strings.Contains(name, "..") {
		return true
	}
	return name == "cloudinit" || name == fmt.Sprintf("vm-%d-cloudinit", j.a.VMID)
}

// isCloudinitAllocation reports whether vol is STORAGE:cloudinit, QEMU's
// syntax for a new cloud-init drive.
func isCloudinitAllocation(vol string) bool {
	storage, name, ok := strings.Cut(vol, ":")
	return ok && name == "cloudinit" && storage != "" && !strings.ContainsAny(storage, " \t\n\r\f\v/")
}

// isAllocation reports whether vol is PVE's new-volume syntax
// [STORAGE:]SIZE_IN_GiB (qemu-server and pve-container:
// ^(?:([^:\s]+):)?(\d+(\.\d+)?)$).
func isAllocation(vol string) bool {
	num := vol
	if storage, rest, ok := strings.Cut(vol, ":"); ok {
		if storage == "" || strings.ContainsAny(storage, " \t\n\r\f\v") {
			return false
		}
		num = rest
	}
	i, f, hasDot := strings.Cut(num, ".")
	return digits(i) && (!hasDot || digits(f))
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (j *judge) resize() {
	kind := j.a.Kind
	disk, size := j.a.Params["disk"], j.a.Params["size"]
	for _, k := range j.sortedParams() {
		switch k {
		case "disk", "size", "digest":
		default:
			j.bad(fmt.Sprintf("resize: unexpected parameter %q", k))
		}
	}
	if !IsDataBearing(kind, disk) || unusedFamily.has(disk) || disk == "cdrom" {
		j.bad(fmt.Sprintf("resize: %q is not a resizable disk of a %s guest", disk, kind))
		return
	}
	j.addKeys(disk)
	if rel, ok := strings.CutPrefix(size, "+"); ok {
		n, err := propstr.ParseSize(rel)
		switch {
		case err != nil:
			j.bad(fmt.Sprintf("%s: cannot parse resize size %q: %v", disk, size, err))
		case n == 0:
			j.bad(fmt.Sprintf("%s: resize by +0 does not grow the disk", disk))
		default:
			j.ok(fmt.Sprintf("%s: grows by %s", disk, propstr.FormatSize(n)))
		}
		return
	}
	n, err := propstr.ParseSize(size)
	if err != nil {
		j.bad(fmt.Sprintf("%s: cannot parse resize size %q: %v", disk, size, err))
		return
	}
	cur, had := j.actual[disk]
	if !had {
		j.bad(fmt.Sprintf("%s: resize to %s, but the guest has no such disk, so growth cannot be verified", disk, propstr.FormatSize(n)))
		return
	}
	od, err := parseDrive(kind, cur)
	switch {
	case err != nil:
		j.bad(fmt.Sprintf("%s: cannot parse current value: %v", disk, err))
	case od.cdrom:
		j.bad(fmt.Sprintf("%s: is a cdrom, not a resizable disk", disk))
	case !od.hasSize:
		j.bad(fmt.Sprintf("%s: current size of %s is unknown, so growth to %s cannot be verified", disk, od.volume, propstr.FormatSize(n)))
	case n < od.size:
		j.bad(fmt.Sprintf("%s: shrinks %s → %s", disk, propstr.FormatSize(od.size), propstr.FormatSize(n)))
	case n == od.size:
		j.bad(fmt.Sprintf("%s: resize to the current size %s does not grow the disk", disk, propstr.FormatSize(n)))
	default:
		j.ok(fmt.Sprintf("%s: grows %s → %s", disk, propstr.FormatSize(od.size), propstr.FormatSize(n)))
	}
}

func (j *judge) create() {
	kind := j.a.Kind
	if kind != guest.QEMU && kind != guest.LXC {
		j.bad(fmt.Sprintf("create: unknown guest kind %q", kind))
		return
	}
	if j.actual != nil {
		j.addKeys(dataKeys(kind, j.actual)...)
		if _, ok := j.a.Params["archive"]; ok || j.a.Params["restore"] == "1" {
			j.bad(fmt.Sprintf("create: restores a backup over existing guest %d, overwriting its data", j.a.VMID))
		} else {
			j.bad(fmt.Sprintf("create: guest %d exists; creating it again would overwrite it", j.a.VMID))
		}
	}
	if f, ok := j.a.Params["force"]; ok && f != "0" {
		j.bad(fmt.Sprintf("create: force=%s allows overwriting an existing guest %d", f, j.a.VMID))
	}
	for _, k := range j.sortedParams() {
		switch {
		case k == "force":
		case k == "unprivileged" && kind == guest.LXC:
			// judged below, present or not
		case IsDataBearing(kind, k):
			j.addKeys(k)
			if unusedFamily.has(k) {
				j.bad(fmt.Sprintf("%s: create references an existing unused volume", k))
				continue
			}
			nd, err := parseDrive(kind, j.a.Params[k])
			if err != nil {
				j.bad(fmt.Sprintf("%s: cannot parse value: %v", k, err))
				continue
			}
			if src, ok := propstr.Get(nd.props, "import-from"); ok {
				j.bad(fmt.Sprintf("%s: imports from existing volume %s (it may belong to another guest)", k, src))
				continue
			}
			if k == "cdrom" {
				nd.cdrom = true
			}
			j.judgeAttach(k, nd, "")
		case isBenignKey(kind, k) || isCreateKey(kind, k):
		case k == "cicustom" && kind == guest.QEMU:
			if msg := checkCicustom(j.a.Params[k]); msg != "" {
				j.bad("create: " + msg)
			}
		default:
			j.bad(fmt.Sprintf("create: parameter %q is not on the %s create allow-list", k, kind))
		}
	}
	if kind == guest.LXC && j.a.Params["unprivileged"] != "1" {
		// pve-container's default is unprivileged=0: root in a privileged
		// container is root on the host, with every guest's data in reach.
		j.bad("create: a privileged container (unprivileged not 1, PVE's default) needs a signature")
	}
	if _, ok := j.a.Params["archive"]; ok {
		j.ok(fmt.Sprintf("create: restores a backup into new guest %d", j.a.VMID))
	} else {
		j.ok(fmt.Sprintf("create: new guest %d", j.a.VMID))
	}
}

// cloneParams are the parameters of PVE's clone call a clone action may
// carry, by guest kind, besides "source" (the vmid cloned, in the call's
// path); a container's clone also carries UnprivilegedParam.
var cloneParams = map[guest.Kind]map[string]bool{
	guest.QEMU: setOf("full", "storage", "name", "pool", "format", "description", "snapname", "bwlimit"),
	guest.LXC:  setOf("full", "storage", "hostname", "pool", "description", "snapname", "bwlimit", UnprivilegedParam),
}

// UnprivilegedParam is the parameter of a container's clone action that
// says whether the new container is unprivileged, as its source's config
// says (a clone inherits it; PVE's clone takes no such parameter): "1"
// unprivileged, anything else or absent privileged or unknown. The agent
// checks it against the source before it clones.
const UnprivilegedParam = "unprivileged"

// clone judges a clone of guest Params["source"] into new guest VMID: it
// destroys nothing when VMID does not exist (PVE refuses an existing
// newid, but a clone onto an existing guest is never judged benign). A
// container clone that is not provably unprivileged (UnprivilegedParam
// "1") needs a signature, as a privileged create does.
func (j *judge) clone() {
	kind := j.a.Kind
	allowed, ok := cloneParams[kind]
	if !ok {
		j.bad(fmt.Sprintf("clone: unsupported guest kind %q", kind))
		return
	}
	src, err := strconv.Atoi(j.a.Params["source"])
	if err != nil || src < 100 || src == j.a.VMID || strconv.Itoa(src) != j.a.Params["source"] {
		j.bad(fmt.Sprintf("clone: source %q is not another guest's vmid", j.a.Params["source"]))
	}
	if j.actual != nil {
		j.addKeys(dataKeys(kind, j.actual)...)
		j.bad(fmt.Sprintf("clone: guest %d exists; cloning onto it would overwrite it", j.a.VMID))
	}
	for _, k := range j.sortedParams() {
		if k != "source" && !allowed[k] {
			j.bad(fmt.Sprintf("clone: parameter %q is not on the %s clone allow-list", k, kind))
		}
	}
	if kind == guest.LXC {
		switch v, ok := j.a.Params[UnprivilegedParam]; {
		case !ok:
			j.bad(fmt.Sprintf("clone: whether container %s is unprivileged is not known (its config was not read), so the clone may be a privileged container; needs a signature", j.a.Params["source"]))
		case v != "1":
			// The clone inherits its source's unprivileged: root in a
			// privileged container is root on the host.
			j.bad(fmt.Sprintf("clone: container %s is privileged (unprivileged not 1), and so would be its clone; a privileged container needs a signature", j.a.Params["source"]))
		}
	}
	j.ok(fmt.Sprintf("clone: new guest %d from %s", j.a.VMID, j.a.Params["source"]))
}

// checkCicustom says why a cicustom value is not only references to
// snippets (user=, network=, meta=, vendor= naming STORAGE:snippets/FILE
// volumes), or "". A snippet reaches only the new guest's cloud-init
// drive; anything else is not judged.
func checkCicustom(v string) string {
	props, err := propstr.Parse(v, "")
	if err != nil || len(props) == 0 {
		return fmt.Sprintf("cicustom: cannot parse %q", v)
	}
	for _, p := range props {
		switch p.Key {
		case "user", "network", "meta", "vendor":
		default:
			return fmt.Sprintf("cicustom: unknown item %q", p.Key)
		}
		sid, file, ok := strings.Cut(p.Value, ":")
		if !ok || sid == "" || !strings.HasPrefix(file, "snippets/") || strings.Contains(file, "..") || len(file) == len("snippets/") {
			return fmt.Sprintf("cicustom: %s=%s is not a snippets volume (STORAGE:snippets/FILE)", p.Key, p.Value)
		}
	}
	return ""
}

func (j *judge) destroy(prov Provenance) {
	j.addKeys(dataKeys(j.a.Kind, j.actual)...)
	if prov.CreatedByAgent && prov.CreateFailed {
		safe := true
		for _, k := range j.sortedParams() {
			switch {
			case k == "purge":
			case k == "destroy-unreferenced-disks" && j.a.Params[k] == "0":
			case k == "destroy-unreferenced-disks":
				j.bad(fmt.Sprintf("destroy %d: destroy-unreferenced-disks would also destroy orphaned volumes of an earlier guest %d that the failed provision did not create", j.a.VMID, j.a.VMID))
				safe = false
			default:
				j.bad(fmt.Sprintf("destroy %d: unexpected parameter %q", j.a.VMID, k))
				safe = false
			}
		}
		if safe {
			j.ok("the agent's own failed provision")
		}
		return
	}
	disks := dataKeys(j.a.Kind, j.actual)
	if len(disks) > 0 {
		j.bad(fmt.Sprintf("destroys guest %d and its disks (%s)", j.a.VMID, strings.Join(disks, ", ")))
	} else {
		j.bad(fmt.Sprintf("destroys guest %d", j.a.VMID))
	}
	if Protected(j.actual) {
		j.bad(fmt.Sprintf("guest %d is protected (PVE's protection flag): the destroy clears the flag, then destroys it", j.a.VMID))
	}
}

// ProtectedParam is the parameter of a destroy action that states the
// guest is protected (PVE's protection flag, protection: 1). PVE refuses
// to destroy a protected guest ("can't remove VM N - protection mode
// enabled") and has no override, so a destroy that carries
// ProtectedParam=1 clears the flag (a config write bound to the signed
// digest) and then destroys. The gate refuses a signed destroy whose
// ProtectedParam does not match the guest (ProtectionMismatch), so the
// signer has always seen "this guest is protected" when it is.
const ProtectedParam = "protected"

// Protected reports whether config c has PVE's protection flag set.
func Protected(c guest.Config) bool {
	v := strings.TrimSpace(c["protection"])
	return v != "" && v != "0"
}

// ProtectionMismatch says why destroy action a does not match the
// protection of the guest whose config is actual ("" when it matches, or
// a is not a destroy): a protected guest's destroy must carry
// ProtectedParam=1, and an unprotected guest's must not carry it.
func ProtectionMismatch(a action.Action, actual guest.Config) string {
	if a.Op != action.Destroy {
		return ""
	}
	said, has := a.Params[ProtectedParam]
	switch {
	case Protected(actual) && said != "1":
		return fmt.Sprintf("guest %d is protected (PVE's protection flag is set) but the payload does not say so: a destroy of a protected guest must be signed with %s=1, which the signer sees as \"this guest is protected\"", a.VMID, ProtectedParam)
	case !Protected(actual) && has:
		return fmt.Sprintf("the payload says guest %d is protected (%s=%s) but PVE's protection flag is not set on it; sign a payload without %s", a.VMID, ProtectedParam, said, ProtectedParam)
	}
	return ""
}

// dataKeys returns the data-bearing keys of a config, sorted.
func dataKeys(kind guest.Kind, c guest.Config) []string {
	var keys []string
	for k := range c {
		if IsDataBearing(kind, k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// snapNameRE is PVE's pve-snapshot-name format (pve-common
// PVE::JSONSchema::parse_snapshot_name): a letter, then 1 to 39 letters,
// digits, '-' or '_'.
var snapNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_\-]{1,39}$`)

// snapshotCreate judges taking a snapshot. It is benign: PVE's snapshot
// freezes the guest's disks (and, with vmstate, its memory) at a point the
// guest can return to, and changes nothing the guest holds. What it costs
// is space, on the storage's own terms; the schedule bounds it with keep.
func (j *judge) snapshotCreate() {
	name := j.a.Params["snapname"]
	for _, k := range j.sortedParams() {
		v := j.a.Params[k]
		switch {
		case k == "snapname":
			if !snapNameRE.MatchString(v) || v == "current" {
				j.bad(fmt.Sprintf("snapshot: name %q is not a PVE snapshot name", v))
			}
		case k == "description":
		case k == "vmstate" && j.a.Kind == guest.QEMU && (v == "0" || v == "1"):
		default:
			j.bad(fmt.Sprintf("snapshot: unknown parameter %q", k))
		}
	}
	if _, ok := j.a.Params["snapname"]; !ok {
		j.bad("snapshot: no snapname")
	}
	j.ok(fmt.Sprintf("snapshot %q of guest %d adds a point to return to and changes no data", name, j.a.VMID))
}

// snapshotDelete judges deleting a snapshot: the data it holds is gone,
// so only the agent's own scheduled snapshot, proven by its journal and
// unchanged since, is benign to prune.
func (j *judge) snapshotDelete(prov Provenance) {
	name := j.a.Params["snapname"]
	own := prov.Snapshot != "" && prov.Snapshot == name
	for _, k := range j.sortedParams() {
		if k != "snapname" {
			j.bad(fmt.Sprintf("snapshot_delete: parameter %q (force removes a snapshot PVE could not cleanly delete)", k))
			own = false
		}
	}
	if own {
		j.ok(fmt.Sprintf("prunes snapshot %q of guest %d, which the agent's journal shows it took under the guest's snapshot schedule, unchanged since", name, j.a.VMID))
		return
	}
	j.addKeys(dataKeys(j.a.Kind, j.actual)...)
	j.bad(fmt.Sprintf("deletes snapshot %q of guest %d", name, j.a.VMID))
}
