package cli

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/classify"
)

// headroomFlag is --headroom: storage headroom thresholds by PVE storage
// id, as STORAGE=PERCENT entries (PERCENT in (0, 100], decimals allowed),
// given as repeated flags or comma-separated (so STEWARD_HEADROOM can hold
// several). STORAGE "*" sets the threshold of every storage not named;
// without it, classify.DefaultHeadroom applies. A storage named twice is
// an error: the threshold is a safety limit and must not depend on
// which of two values wins.
type headroomFlag map[string]float64

// storageIDRE is PVE's pve-storage-id format (pve-common
// PVE::JSONSchema::parse_storage_id).
var storageIDRE = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)

func (h headroomFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil // an empty STEWARD_HEADROOM sets nothing
	}
	for entry := range strings.SplitSeq(v, ",") {
		entry = strings.TrimSpace(entry)
		sid, pct, ok := strings.Cut(entry, "=")
		if !ok || sid == "" || pct == "" {
			return fmt.Errorf("%q: want STORAGE=PERCENT, e.g. local-lvm=85 (or *=85 for every storage not named)", entry)
		}
		if sid != "*" && !storageIDRE.MatchString(sid) {
			return fmt.Errorf("%q: %q is not a PVE storage id (a letter, then letters, digits, '-', '_' or '.', ending in a letter or digit) nor *", entry, sid)
		}
		f, err := strconv.ParseFloat(strings.TrimSuffix(pct, "%"), 64)
		if err != nil || !(f > 0 && f <= 100) {
			return fmt.Errorf("%q: the threshold must be a percentage above 0 and at most 100", entry)
		}
		if _, dup := h[sid]; dup {
			return fmt.Errorf("%q: storage %s is given twice", entry, sid)
		}
		h[sid] = f / 100
	}
	return nil
}

func (h headroomFlag) String() string {
	var parts []string
	for _, sid := range slices.Sorted(maps.Keys(h)) {
		parts = append(parts, sid+"="+strconv.FormatFloat(h[sid]*100, 'f', -1, 64))
	}
	return strings.Join(parts, ",")
}

func (h headroomFlag) Type() string { return "STORAGE=PERCENT" }

// headroomUsage is --headroom's help.
var headroomUsage = fmt.Sprintf("storage headroom threshold: hold a disk grow, new disk, create or full clone that would fill STORAGE past PERCENT of its size until signed; repeat or comma-separate, * for every storage not named (default *=%g)",
	classify.DefaultHeadroom*100)
