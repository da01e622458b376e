package classify

import (
	"strings"
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

// TestProtectionMismatch: a destroy must state PVE's protection flag
// exactly as the guest has it; other ops are not concerned.
func TestProtectionMismatch(t *testing.T) {
	prot, plain := guest.Config{"protection": "1"}, guest.Config{"protection": "0"}
	for _, tc := range []struct {
		params map[string]string
		actual guest.Config
		op     action.Op
		bad    bool
	}{
		{map[string]string{"purge": "1"}, prot, action.Destroy, true},
		{map[string]string{ProtectedParam: "0"}, prot, action.Destroy, true},
		{map[string]string{ProtectedParam: "1"}, prot, action.Destroy, false},
		{map[string]string{ProtectedParam: "1"}, plain, action.Destroy, true},
		{map[string]string{ProtectedParam: "1"}, nil, action.Destroy, true},
		{nil, plain, action.Destroy, false},
		{nil, nil, action.Destroy, false},
		{map[string]string{"cores": "2"}, prot, action.SetConfig, false},
	} {
		a := action.Action{Op: tc.op, Kind: guest.QEMU, VMID: 101, Params: tc.params}
		if got := ProtectionMismatch(a, tc.actual); (got != "") != tc.bad {
			t.Errorf("%s %v on %v: mismatch %q; want mismatch %v", tc.op, tc.params, tc.actual, got, tc.bad)
		}
	}
	v := Classify(action.Action{Op: action.Destroy, Kind: guest.LXC, VMID: 101, Params: map[string]string{ProtectedParam: "1"}}, prot, Provenance{})
	if v.Class != Destructive || !strings.Contains(v.Reason, "is protected") {
		t.Errorf("destroy of a protected guest: %s %q; want destructive, saying it is protected", v.Class, v.Reason)
	}
}
