package classify

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/propstr"
)

// DefaultHeadroom is the storage headroom threshold when none is
// configured: an allocation that would fill a storage past 90% of its size
// is held for a signature.
const DefaultHeadroom = 0.90

// Allocations returns the bytes action a would newly allocate, by storage
// id: a disk grow (resize: the growth), a new volume in a config write or a
// create ("STORAGE:SIZE", SIZE in GiB as PVE reads it, into a slot actual
// does not fill), and a full clone (the size of every disk of source, the
// clone's source guest's config, on the target storage or on the disk's own
// storage), and a migration (every disk of actual, on the target node's
// storage of the same id). actual is the guest's current config (nil when it does not
// exist), source is nil when unknown (then a clone allocates nothing
// known). A linked clone allocates nothing up front. The result is nil
// when a allocates nothing it can size.
func Allocations(a action.Action, actual, source guest.Config) map[string]int64 {
	out := map[string]int64{}
	add := func(vol string, n int64) {
		sid, _, ok := strings.Cut(vol, ":")
		if ok && sid != "" && n > 0 {
			out[sid] += n
		}
	}
	switch a.Op {
	case action.Resize:
		disk, size := a.Params["disk"], a.Params["size"]
		d, err := parseDrive(a.Kind, actual[disk])
		if err != nil || d.cdrom {
			break
		}
		if rel, ok := strings.CutPrefix(size, "+"); ok {
			if n, err := propstr.ParseSize(rel); err == nil {
				add(d.volume, n)
			}
		} else if n, err := propstr.ParseSize(size); err == nil && d.hasSize {
			add(d.volume, n-d.size)
		}
	case action.SetConfig, action.Create:
		for _, k := range slices.Sorted(maps.Keys(a.Params)) {
			if !IsDataBearing(a.Kind, k) {
				continue
			}
			if _, filled := actual[k]; filled && a.Op == action.SetConfig {
				continue
			}
			d, err := parseDrive(a.Kind, a.Params[k])
			if err != nil || d.cdrom || !isAllocation(d.volume) {
				continue
			}
			sid, num, _ := strings.Cut(d.volume, ":")
			var gib float64
			if _, err := fmt.Sscanf(num, "%g", &gib); err == nil {
				add(sid+":", int64(math.Ceil(gib*(1<<30))))
			}
		}
	case action.Clone:
		if a.Params["full"] != "1" && a.Params["full"] != "true" {
			break
		}
		target := a.Params["storage"]
		for _, k := range slices.Sorted(maps.Keys(source)) {
			if !IsDataBearing(a.Kind, k) || unusedFamily.has(k) {
				continue
			}
			d, err := parseDrive(a.Kind, source[k])
			if err != nil || d.cdrom || !d.hasSize || !strings.Contains(d.volume, ":") {
				continue
			}
			if target != "" {
				add(target+":", d.size)
			} else {
				add(d.volume, d.size)
			}
		}
	case action.Migrate:
		// On the target node: every volume of the guest, on the storage
		// of the same id (the planner names no targetstorage). Whether a
		// storage is shared, so nothing is copied, is the caller's to
		// know; unused volumes carry no size and are not counted.
		for _, k := range slices.Sorted(maps.Keys(actual)) {
			if !IsDataBearing(a.Kind, k) || unusedFamily.has(k) {
				continue
			}
			d, err := parseDrive(a.Kind, actual[k])
			if err != nil || d.cdrom || !d.hasSize {
				continue
			}
			add(d.volume, d.size)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// StorageUsage is a storage's size and usage as PVE reports them (GET
// /nodes/{node}/storage/{storage}/status), in bytes.
type StorageUsage struct {
	Storage     string
	Total, Used int64
}

// Headroom decides whether allocating add more bytes on storage u keeps it
// at or under threshold (a fraction of Total, in (0, 1]; anything else
// means DefaultHeadroom). It returns "" when the allocation fits, else why
// it must be held, with the figures, as "would take local-lvm to 93% of
// 100 GiB, above the 90% threshold". A storage that reports no size is
// held: its headroom cannot be judged.
func Headroom(u StorageUsage, add int64, threshold float64) string {
	if !(threshold > 0 && threshold <= 1) {
		threshold = DefaultHeadroom
	}
	if u.Total <= 0 {
		return fmt.Sprintf("%s reports no size (inactive or unreadable), so the headroom for %s more cannot be judged",
			u.Storage, propstr.FormatSize(add))
	}
	after := float64(u.Used) + float64(add)
	if after <= threshold*float64(u.Total) {
		return ""
	}
	return fmt.Sprintf("would take %s to %s of %s, above the %s threshold (%s used, %s more)",
		u.Storage, percentPast(after/float64(u.Total), threshold), humanBytes(u.Total), percent(threshold),
		humanBytes(u.Used), humanBytes(add))
}

// percent prints a fraction as a whole percentage, rounded down so a
// value just past the threshold never prints as the threshold itself
// rounded up.
func percent(f float64) string {
	return fmt.Sprintf("%d%%", int64(math.Floor(f*100+1e-9)))
}

// percentPast prints f, a fraction past threshold, so it reads as past
// it: a whole percentage, or one decimal where the whole one would equal
// the threshold's.
func percentPast(f, threshold float64) string {
	if p := percent(f); p != percent(threshold) {
		return p
	}
	return fmt.Sprintf("%.1f%%", math.Floor(f*1000+1e-9)/10)
}

// humanBytes prints n in binary units with at most one decimal.
func humanBytes(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f, i := float64(n), 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := fmt.Sprintf("%.1f", f)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + units[i]
}
