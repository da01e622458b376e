package classify

import (
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
)

// TestClearingProtectionIsDestructive: PVE's protection flag is what stops
// a guest and its disks being removed; clearing it (protection: 0 or
// deleting the key) on an existing guest needs a signature.
func TestClearingProtectionIsDestructive(t *testing.T) {
	for _, kind := range []guest.Kind{guest.QEMU, guest.LXC} {
		actual := guest.Config{"protection": "1"}
		for _, p := range []map[string]string{{"protection": "0"}, {"delete": "protection"}} {
			a := action.Action{Op: action.SetConfig, Kind: kind, VMID: 101, Params: p}
			if v := Classify(a, actual, Provenance{}); v.Class != Destructive {
				t.Errorf("%s %v on a protected guest: got %s (%s); want destructive", kind, p, v.Class, v.Reason)
			}
		}
	}
}
