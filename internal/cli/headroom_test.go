package cli

import (
	"errors"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/sim"
)

func TestHeadroomFlagParses(t *testing.T) {
	h := headroomFlag{}
	for _, v := range []string{"local-lvm=85", "tank.fast=72.5%, *=80"} {
		if err := h.Set(v); err != nil {
			t.Fatalf("Set(%q): %v", v, err)
		}
	}
	want := map[string]float64{"local-lvm": 0.85, "tank.fast": 0.725, "*": 0.80}
	if len(h) != len(want) {
		t.Fatalf("got %v; want %v", h, want)
	}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("%s = %v; want %v", k, h[k], v)
		}
	}
	if got := h.String(); got != "*=80,local-lvm=85,tank.fast=72.5" {
		t.Errorf("String() = %q", got)
	}
	for _, tc := range []struct{ v, want string }{
		{"local-lvm", "want STORAGE=PERCENT"},
		{"local-lvm=", "want STORAGE=PERCENT"},
		{"=85", "want STORAGE=PERCENT"},
		{"local-lvm=0", "above 0 and at most 100"},
		{"local-lvm=101", "above 0 and at most 100"},
		{"local-lvm=NaN", "above 0 and at most 100"},
		{"local-lvm=eighty", "above 0 and at most 100"},
		{"9lvm=80", "not a PVE storage id"},
		{"local lvm=80", "not a PVE storage id"},
		{"ab=80,ab=90", "given twice"},
	} {
		if err := (headroomFlag{}).Set(tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Set(%q) = %v; want an error containing %q", tc.v, err, tc.want)
		}
	}
}

// TestAgentHeadroomFlag: --headroom (and STEWARD_HEADROOM) sets the
// threshold a disk grow is held at; the default 90% lets the same grow run.
func TestAgentHeadroomFlag(t *testing.T) {
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "data",
		Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G"}}); err != nil {
		t.Fatal(err)
	}
	doc := f.desired(t, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      103: {config: {scsi0: "local-lvm:vm-103-disk-0,size=64G"}}
`)
	// local-lvm starts about 14% used: growing by 32 GiB passes 15%.
	out, _, err := runCLI(t, f.args("--once", "--desired", doc, "--headroom", "local=50", "--headroom", "local-lvm=15")...)
	if ExitCode(err) != ExitChanged || !strings.Contains(out, "PENDING SIGNATURE") || !strings.Contains(out, "above the 15% threshold") {
		t.Fatalf("--headroom local-lvm=15: err %v (exit %d); want the grow held with the figures\n%s", err, ExitCode(err), out)
	}
	t.Setenv("STEWARD_HEADROOM", "*=15")
	out, _, _ = runCLI(t, f.args("--once", "--desired", doc)...)
	if !strings.Contains(out, "above the 15% threshold") {
		t.Fatalf("STEWARD_HEADROOM=*=15: want the grow held\n%s", out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Fatalf("held grow mutated: %+v", m)
	}
	t.Setenv("STEWARD_HEADROOM", "local-lvm=fifteen")
	_, _, err = runCLI(t, f.args("--once", "--desired", doc)...)
	var ue *UsageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "STEWARD_HEADROOM") {
		t.Fatalf("bad STEWARD_HEADROOM: err = %v; want a usage error naming it", err)
	}
	_, _, err = runCLI(t, f.args("--once", "--desired", doc, "--headroom", "local-lvm=0")...)
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "local-lvm=0") {
		t.Fatalf("--headroom local-lvm=0: err = %v; want a usage error naming the entry", err)
	}
	t.Setenv("STEWARD_HEADROOM", "")
	out, _, err = runCLI(t, f.args("--once", "--desired", doc)...)
	if ExitCode(err) != ExitChanged || strings.Contains(out, "PENDING") {
		t.Fatalf("default threshold: err %v; want the grow run\n%s", err, out)
	}
	if g, _ := f.srv.Sim.Guest(103); !strings.Contains(g.Config["scsi0"], "size=64G") {
		t.Errorf("scsi0 = %q; want grown to 64G", g.Config["scsi0"])
	}
}
