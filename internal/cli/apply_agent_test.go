package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/wire"
)

// TestApplyWaitWithRealAgent: the join command `hosts add` prints enrolls
// a real agent (over the simulator); `apply --wait` stores desired state
// and follows the agent's ticks until the guest is in sync; PVE holds the
// change; then apply of the same file and plan have nothing to do (exit 0).
func TestApplyWaitWithRealAgent(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	f := newAgentFixture(t)
	e.enrollAgent(f, "pve")

	file := writeFile(t, "fleet.yaml", agentDoc)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, _, err := e.run("", "apply", "-f", file, "--wait")
		done <- result{out, err}
	}()
	var r result
	for ticks := 0; ; ticks++ {
		select {
		case r = <-done:
		default:
			if ticks > 1000 {
				t.Fatal("apply --wait did not return while the agent ticked")
			}
			if _, stderr, err := runCLI(t, f.args("--once")...); ExitCode(err) == ExitFailure {
				t.Fatalf("agent tick: %v\n%s", err, stderr)
			}
			continue
		}
		break
	}
	if ExitCode(r.err) != ExitChanged {
		t.Fatalf("apply --wait: got %v (exit %d); want exit 2\n%s", r.err, ExitCode(r.err), r.out)
	}
	if !strings.Contains(r.out, "pve 101: in sync") || !strings.Contains(r.out, "Every named guest has settled.") {
		t.Errorf("apply --wait progress:\n%s\nwant 101 followed to in sync", r.out)
	}
	g, ok := f.srv.Sim.Guest(101)
	if !ok || g.Config["cores"] != "2" || g.Status != "running" {
		t.Fatalf("PVE after apply --wait: %+v; want 101 running with cores 2", g)
	}

	if out, _, err := e.run("", "apply", "-f", file); err != nil {
		t.Errorf("apply of the converged file: got %v (exit %d); want exit 0\n%s", err, ExitCode(err), out)
	}
	if out, _, err := e.run("", "plan"); err != nil {
		t.Errorf("plan after convergence: got %v (exit %d); want exit 0\n%s", err, ExitCode(err), out)
	}
	out, _, err := e.run("", "status", "-o", "json")
	var st HostsJSON
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || len(st.Hosts) != 1 || st.Hosts[0].Sync[wire.PhaseInSync] != 1 || st.Hosts[0].Managed != 1 {
		t.Errorf("status after convergence: %v\n%s\nwant pve with 1/1 in sync", err, out)
	}
}
