package cli

import (
	"strings"
	"testing"
)

// `steward agent --dry-run` shows what PVE's schema refuses: at parse time
// with the file, line and the schema's description, and for a guest whose
// kind is not pinned, against the kind the host reports. Nothing changes.
func TestAgentDryRunShowsSchemaErrors(t *testing.T) {
	f := newAgentFixture(t)
	pinned := `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        config: {cores: two}
`
	path := f.desired(t, pinned)
	_, _, err := runCLI(t, f.args("--dry-run", "--desired", path)...)
	if err == nil || !strings.Contains(err.Error(), path+":8: hosts.pve.guests.101.config.cores: invalid value for a qemu guest: type check ('integer') failed - got 'two'; PVE's schema: cores <integer> (1 - N)") {
		t.Errorf("pinned kind: err = %v; want the file, line and schema description", err)
	}

	unpinned := `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {state: running, config: {cores: 2, swap: 256}}
      102: {config: {cores: 2}}
`
	path = f.desired(t, unpinned)
	out, _, err := runCLI(t, f.args("--dry-run", "--desired", path)...)
	if err != nil {
		t.Fatalf("agent --dry-run: %v", err)
	}
	for _, w := range []string{path + ":6: hosts.pve.guests.101.config.swap: unknown config key for a qemu guest", "~ 102 cores: 1 → 2"} {
		if !strings.Contains(out, w) {
			t.Errorf("dry run output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "101 start") {
		t.Errorf("dry run plans guest 101 although its config is invalid for qemu:\n%s", out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("dry run mutated: %+v", m)
	}
}
