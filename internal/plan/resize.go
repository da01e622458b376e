package plan

import (
	"slices"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/propstr"
)

// A drive's size= is informational to PVE (its schema says so): a config
// write naming a larger size does not grow the volume (qemu-server stores
// the volume's real size instead, pve-container stores a rootfs string as
// written), so the guest would read as converged while its disk never
// grew. Growing a disk is PUT …/resize. sizeChange finds the drive keys
// whose desired value names the volume they hold now with another size;
// Diff then plans the size as a resize step and the rest of the value (its
// other options) as a config write.
//
// When a disk grows and its options change too, the resize runs first and
// the options wait for the next tick. Written before the resize, they
// would record the old size where PVE keeps the value: an LXC rootfs
// stores the string as written, and on a running guest a change PVE
// cannot hotplug (iothread, discard, cache, ...) waits in the pending
// section with the size PVE read at the write, which then hides the
// resize (GET …/config shows pending values) and, applied at the next
// start, records the old size again; a QEMU resize to the size the volume
// already has rewrites nothing, so the guest would never converge.
// Written after the resize, against the config it left (and its digest),
// they carry the new size.

// sizeChange reports, for a managed key whose desired value differs from
// its actual one, whether the difference includes the size of the volume
// the key holds now. It is false for keys that hold no resizable volume
// (unusedN, cdrom drives, bind mounts, "none"), for a desired value that
// names no size or another volume, and for values that do not parse (the
// config write then carries them as they are, and the classifier judges
// them). opts is the desired value without its size= (the options part);
// want is the desired size in bytes; have the actual one, known unless
// hasHave is false.
func sizeChange(kind guest.Kind, key, desired, actual string) (opts string, want, have int64, hasHave, ok bool) {
	if !resizable(kind, key) || desired == "" || actual == "" {
		return "", 0, 0, false, false
	}
	dk := defaultKey(kind)
	dProps, err := propstr.Parse(desired, dk)
	if err != nil {
		return "", 0, 0, false, false
	}
	dVol, dSize, dHas, err := propstr.Volume(desired, dk)
	if err != nil || !dHas {
		return "", 0, 0, false, false
	}
	aVol, aSize, aHas, err := propstr.Volume(actual, dk)
	if err != nil || aVol != dVol || !storageVolume(dVol) || isCdrom(kind, desired) || isCdrom(kind, actual) {
		return "", 0, 0, false, false
	}
	if aHas && aSize == dSize {
		return "", 0, 0, false, false // only the options differ
	}
	kept := make([]propstr.Prop, 0, len(dProps))
	for _, p := range dProps {
		if p.Key != "size" {
			kept = append(kept, p)
		}
	}
	return propstr.FormatWithDefault(kept, dk), dSize, aSize, aHas, true
}

// sizeRef is the value whose size= a resize of key starts from: the
// value the guest runs with when key is pending, else actual (the value as
// written). PVE's resize rewrites the size= of the current value only, so
// a pending value of a resized disk keeps the size PVE read when it was
// written; judged by it, the disk would be resized again every tick (a
// QEMU resize to the size the volume has changes nothing, an LXC one is
// refused). Once the current size is the desired one, the pending value
// is a plain config write, which records the size the volume now has.
func sizeRef(a *guest.Observed, key, actual string) string {
	if cur, ok := a.Current[key]; ok && slices.Contains(a.Pending, key) {
		return cur
	}
	return actual
}

// resizable reports whether key is a disk or mount point of kind that PUT
// …/resize accepts (PVE's enums: qemu's drive names, lxc's rootfs and
// mpN).
func resizable(kind guest.Kind, key string) bool {
	if !classify.IsDataBearing(kind, key) || key == "cdrom" || strings.HasPrefix(key, "unused") {
		return false
	}
	return true
}

func defaultKey(kind guest.Kind) string {
	if kind == guest.LXC {
		return "volume"
	}
	return "file"
}

// storageVolume reports whether vol names a volume on a storage
// ("local-lvm:vm-101-disk-0"), not "none", a host path or a device.
func storageVolume(vol string) bool {
	storage, name, ok := strings.Cut(vol, ":")
	return ok && storage != "" && name != "" && !strings.HasPrefix(vol, "/")
}

func isCdrom(kind guest.Kind, v string) bool {
	if kind != guest.QEMU {
		return false
	}
	props, err := propstr.Parse(v, "file")
	if err != nil {
		return false
	}
	media, _ := propstr.Get(props, "media")
	return media == "cdrom"
}

// sizeStep is a planned resize and whether it provably grows the disk.
type sizeStep struct {
	Step
	grows bool
}

// resizeStep plans resizing disk of a to want bytes (absolute, as PVE's
// size parameter without "+"), from have (unknown when !hasHave). Its
// Digest is the guest's; Diff clears it where an earlier write of the same
// plan changes the digest first.
func resizeStep(a *guest.Observed, disk string, want, have int64, hasHave bool) sizeStep {
	from := ""
	if hasHave {
		from = propstr.FormatSize(have)
	}
	to := propstr.FormatSize(want)
	return sizeStep{
		Step: Step{
			Action:  action.Action{Op: action.Resize, VMID: a.VMID, Kind: a.Kind, Params: map[string]string{"disk": disk, "size": to}, Digest: a.Digest},
			Changes: []Change{{Key: disk, From: from, To: to}},
		},
		grows: hasHave && want > have,
	}
}
