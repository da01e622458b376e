package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// TestStatusShowsSnapshotSchedule: a real agent (over the simulator,
// enrolled with a real hub) takes the scheduled snapshot, reports the
// schedule's state, and `steward status HOST/VMID` shows it.
func TestStatusShowsSnapshotSchedule(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	f := newAgentFixture(t)
	e.enrollAgent(f, "pve")
	doc := strings.Replace(agentDoc, "101: {state: running, config: {cores: 2}}", "101: {kind: qemu, snapshots: {every: 24h, keep: 7}}", 1)
	if _, _, err := e.run("", "apply", "-f", writeFile(t, "fleet.yaml", doc)); ExitCode(err) != ExitChanged {
		t.Fatalf("apply: %v", err)
	}
	for range 2 { // the first fetches the document, the take may be on either
		if _, stderr, err := runCLI(t, f.args("--once")...); ExitCode(err) == ExitFailure {
			t.Fatalf("agent tick: %v\n%s", err, stderr)
		}
	}
	text, _, err := e.run("", "status", "pve/101")
	if err != nil {
		t.Fatalf("status pve/101: %v", err)
	}
	for _, w := range []string{"Snapshots:", "every 24h, keep 7: 1 kept", "last taken", "next due in", "Snapshot:", "steward-"} {
		if !strings.Contains(text, w) {
			t.Errorf("status pve/101 lacks %q:\n%s", w, text)
		}
	}
	out, _, err := e.run("", "status", "pve/101", "-o", "json")
	var d HostDetailJSON
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || len(d.Guests) != 1 {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	sc := d.Guests[0].Snapshots
	if sc == nil || sc.Keep != 7 || len(sc.Snapshots) != 1 || !strings.HasPrefix(sc.Snapshots[0].Name, "steward-") {
		t.Fatalf("snapshots in status -o json: %+v", sc)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 1 || m[0].Op != "snapshot" {
		t.Errorf("mutations %+v; want the one take", m)
	}
}

func TestWriteSnapshotSchedule(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	sc := &wire.SnapshotSchedule{Every: "24h0m0s", Keep: 7, LastTaken: now.Add(-3 * time.Hour), NextDue: now.Add(21 * time.Hour),
		Snapshots: []wire.ScheduledSnapshot{{Name: "steward-20261129-090000", Taken: now.Add(-6*24*time.Hour - 3*time.Hour)}},
		Held:      []string{"steward-20261120-090000: changed since the agent took it"}}
	var b strings.Builder
	writeSnapshotSchedule(&b, &wire.SnapshotSchedule{Every: "1h30m0s", Keep: 2}, now)
	if !strings.Contains(b.String(), "every 1h30m, keep 2: 0 kept") {
		t.Errorf("output: %q; want every 1h30m", b.String())
	}
	b.Reset()
	writeSnapshotSchedule(&b, sc, now)
	for _, w := range []string{"every 24h, keep 7: 1 kept, last taken 3h0m ago, next due in 21h0m", "steward-20261129-090000 (6d3h0m old)", "Held prune:\tsteward-20261120-090000: changed"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, b.String())
		}
	}
}
