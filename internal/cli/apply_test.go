package cli

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

const fleetA = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve-a:
    guests:
      101:
        kind: lxc
        state: running
        config:
          cores: 2
      102:
        kind: qemu
        config:
          memory: 4096
`

// reportA is pve-a's report of generation gen: 101 as fleetA wants it,
// 102 with memory 2048 (phase given).
func reportA(gen int64, phase102 string) wire.Report {
	return wire.Report{
		Host: "pve-a", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), DesiredGeneration: gen,
		Facts: wire.Facts{Node: "pve", AgentVersion: "v0.9.0"},
		Guests: []wire.Guest{
			{VMID: 101, Kind: "lxc", Name: "web", Status: "running", Digest: "d101", Config: map[string]string{"cores": "2"}},
			{VMID: 102, Kind: "qemu", Name: "db", Status: "stopped", Digest: "d102", Config: map[string]string{"memory": "2048"}},
		},
		Sync: []wire.Sync{{VMID: 101, Phase: wire.PhaseInSync}, {VMID: 102, Phase: phase102}},
	}
}

// applyEnv is a hub with host pve-a enrolled and reporting, an operator
// logged in, and fleetA in a file.
func applyEnv(t *testing.T) (*testHub, *opEnv, string) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	agent := e.agentClient(h, "pve-a")
	postReport(t, agent, reportA(0, wire.PhaseInSync))
	return h, e, writeFile(t, "fleet.yaml", fleetA)
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func generation(t *testing.T, h *testHub, host string) int64 {
	t.Helper()
	d, err := h.Store.Desired(t.Context(), host)
	if err != nil {
		t.Fatal(err)
	}
	return d.Generation
}

func TestApplyDryRunThenApplyThenNoChange(t *testing.T) {
	h, e, file := applyEnv(t)

	out, _, err := e.run("", "apply", "-f", file, "--dry-run", "-o", "json")
	if ExitCode(err) != ExitChanged {
		t.Fatalf("apply --dry-run: got %v (exit %d); want exit 2", err, ExitCode(err))
	}
	golden(t, "apply-dry-run.json", stableTimes(out))
	if g := generation(t, h, "pve-a"); g != 0 {
		t.Fatalf("after --dry-run the hub holds generation %d; want 0 (nothing stored)", g)
	}

	out, _, err = e.run("", "apply", "-f", file)
	if ExitCode(err) != ExitChanged {
		t.Fatalf("apply: got %v (exit %d); want exit 2\n%s", err, ExitCode(err), out)
	}
	for _, w := range []string{"pve-a: desired state changes (generation 0 → 1)", "+ guest 101 (now managed)", "config.memory: (unset) → 4096", "~ 102 config: memory 2048 → 4096", "stored generation 1"} {
		if !strings.Contains(out, w) {
			t.Errorf("apply output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("colour written to a non-terminal")
	}
	if g := generation(t, h, "pve-a"); g != 1 {
		t.Fatalf("after apply the hub holds generation %d; want 1", g)
	}

	// Same document; the agent still has 102's memory to set: exit 2,
	// nothing stored.
	if _, _, err := e.run("", "apply", "-f", file); ExitCode(err) != ExitChanged {
		t.Fatalf("re-apply with work pending: got exit %d; want 2", ExitCode(err))
	}
	if g := generation(t, h, "pve-a"); g != 1 {
		t.Fatalf("an unchanged document was stored again: generation %d", g)
	}

	// Once the agent reports 102 converged, the same apply changes nothing.
	agent := e.agentClient(h, "pve-a")
	rep := reportA(1, wire.PhaseInSync)
	rep.Guests[1].Config["memory"] = "4096"
	postReport(t, agent, rep)
	out, _, err = e.run("", "apply", "-f", file)
	if err != nil {
		t.Fatalf("apply of an unchanged, converged document: got %v (exit %d); want exit 0\n%s", err, ExitCode(err), out)
	}
	if !strings.Contains(out, "No changes") {
		t.Errorf("no-op apply printed:\n%s", out)
	}
}

func TestApplyInvalidFileStoresNothing(t *testing.T) {
	h, e, good := applyEnv(t)
	bad := writeFile(t, "bad.yaml", strings.Replace(fleetA, "cores: 2", "cores: many", 1))
	_, _, err := e.run("", "apply", "-f", good, "-f", bad)
	if ExitCode(err) != ExitFailure {
		t.Fatalf("apply of an invalid file: got %v (exit %d); want exit 1", err, ExitCode(err))
	}
	for _, w := range []string{bad + ":10:", "hosts.pve-a.guests.101.config.cores", "nothing stored"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
	if g := generation(t, h, "pve-a"); g != 0 {
		t.Fatalf("an invalid apply stored generation %d", g)
	}

	dup := writeFile(t, "dup.yaml", fleetA)
	_, _, err = e.run("", "apply", "-f", good, "-f", dup)
	if err == nil || !strings.Contains(err.Error(), "guest 101 is also named in "+good) {
		t.Fatalf("two files naming one guest: got %v; want an error naming both files", err)
	}

	unknown := writeFile(t, "unknown.yaml", fleetA+"  pve-zz:\n    guests:\n      300: {}\n")
	_, _, err = e.run("", "apply", "-f", unknown)
	if err == nil || !strings.Contains(err.Error(), `no host "pve-zz"`) {
		t.Fatalf("apply naming an unknown host: got %v; want no such host", err)
	}
	if g := generation(t, h, "pve-a"); g != 0 {
		t.Fatalf("an apply naming an unknown host stored pve-a's document (generation %d)", g)
	}
	if _, _, err := e.run("", "apply"); ExitCode(err) != ExitUsage {
		t.Fatalf("apply without -f: exit %d; want 64", ExitCode(err))
	}
}

func TestApplyConcurrentChangeRefused(t *testing.T) {
	h, e, file := applyEnv(t)
	other := []byte(`{"hosts":{"pve-a":{"guests":{"999":{}}}}}`)
	// Another operator stores a document between this apply's read and
	// its write.
	h.intercept(func(r *http.Request) {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/desired") {
			h.intercept(nil)
			if _, err := h.Store.PutDesired(r.Context(), "pve-a", other, store.AnyGeneration, "someone-else"); err != nil {
				t.Errorf("the other operator's PUT: %v", err)
			}
		}
	})
	_, _, err := e.run("", "apply", "-f", file)
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "changed on the hub after this apply read it") {
		t.Fatalf("apply racing another change: got %v (exit %d); want exit 1 and a clear refusal", err, ExitCode(err))
	}
	d, _ := h.Store.Desired(t.Context(), "pve-a")
	if d.Generation != 1 || d.Author != "someone-else" {
		t.Fatalf("the hub holds generation %d by %q; want the other operator's change kept", d.Generation, d.Author)
	}
}

func TestApplyWaitFollowsConvergence(t *testing.T) {
	h, e, file := applyEnv(t)
	agent := e.agentClient(h, "pve-a")
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, _, err := e.run("", "apply", "-f", file, "--wait", "-o", "json")
		done <- result{out, err}
	}()
	// The agent: once generation 1 is stored, it reports converging, then
	// in sync.
	for generation(t, h, "pve-a") < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	postReport(t, agent, reportA(1, wire.PhaseConverging))
	rep := reportA(1, wire.PhaseInSync)
	rep.Guests[1].Config["memory"] = "4096"
	postReport(t, agent, rep)
	r := <-done
	if ExitCode(r.err) != ExitChanged {
		t.Fatalf("apply --wait: got %v (exit %d); want exit 2", r.err, ExitCode(r.err))
	}
	var res ApplyJSON
	if err := json.Unmarshal([]byte(r.out), &res); err != nil {
		t.Fatalf("apply --wait -o json: %v\n%s", err, r.out)
	}
	if len(res.Hosts) != 1 || len(res.Hosts[0].Guests) != 2 || res.Hosts[0].Guests[1].Phase != wire.PhaseInSync || !res.Hosts[0].Stored {
		t.Fatalf("apply --wait result: %+v; want pve-a stored, 101 and 102 in sync", res.Hosts)
	}
}

func TestApplyWaitEndsOnError(t *testing.T) {
	h, e, file := applyEnv(t)
	agent := e.agentClient(h, "pve-a")
	done := make(chan error, 1)
	go func() {
		_, _, err := e.run("", "apply", "-f", file, "--wait")
		done <- err
	}()
	for generation(t, h, "pve-a") < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	rep := reportA(1, wire.PhaseError)
	rep.Sync[1].Reason = "PVE: memory 4096 exceeds the node's"
	postReport(t, agent, rep)
	err := <-done
	if ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "pve-a 102: PVE: memory 4096") {
		t.Fatalf("apply --wait with a guest in error: got %v (exit %d); want exit 1 naming it", err, ExitCode(err))
	}
}

// TestApplyDescriptionQuotedOnce: the diff shows a description with
// spaces quoted once, and an empty description apart from an unmanaged one.
func TestApplyDescriptionQuotedOnce(t *testing.T) {
	text := "cache for the web frontend"
	got := planValue(flattenGuest(&desired.Guest{Description: &text})["description"])
	if want := `"cache for the web frontend"`; got != want {
		t.Errorf("description shown as %s; want %s", got, want)
	}
	empty := ""
	if got := planValue(flattenGuest(&desired.Guest{Description: &empty})["description"]); got == planValue("") {
		t.Errorf("an empty managed description shows as %s, the same as unset", got)
	}
}
