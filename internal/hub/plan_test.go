package hub

import (
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/wire"
)

// TestPlanReportUnmanagedObserved: a document that starts managing a
// guest plans against what the agent observed of it while unmanaged
// (wire version 2): only the keys that differ are changes.
func TestPlanReportUnmanagedObserved(t *testing.T) {
	rep := wire.Report{Host: "pve", Time: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Facts: wire.Facts{Node: "pve"},
		Guests: []wire.Guest{{VMID: 130, Kind: "qemu", Name: "app", Status: "running", Digest: "d130",
			Observed: map[string]string{"cores": "2", "memory": "1024", "name": "app"}}}}
	doc, err := desired.Parse([]byte(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      130: {kind: qemu, state: running, config: {cores: 2, memory: 2048}}
`))
	if err != nil {
		t.Fatal(err)
	}
	p := PlanReport("pve", 1, doc.ForHost("pve"), rep)
	if len(p.Steps) != 1 || p.Steps[0].Action.Op != "config" || len(p.Steps[0].Changes) != 1 ||
		p.Steps[0].Changes[0] != (wire.Change{Key: "memory", From: "1024", To: "2048"}) || p.Steps[0].Class != "benign" {
		t.Fatalf("plan steps = %+v; want one benign config step changing memory 1024→2048 only", p.Steps)
	}
}
