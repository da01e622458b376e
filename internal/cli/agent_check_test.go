package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/preflight"
)

// checkArgs is `steward agent check` with the fixture's agent flags.
func (f *agentFixture) checkArgs(extra ...string) []string {
	a := f.args(extra...)
	return append([]string{"agent", "check"}, a[1:]...)
}

func TestAgentCheck(t *testing.T) {
	f := newAgentFixture(t)
	doc := f.desired(t, agentDoc)
	out, _, err := runCLI(t, f.checkArgs("--desired", doc)...)
	if err != nil {
		t.Fatalf("agent check with the admin token: %v\n%s", err, out)
	}
	for _, want := range []string{"PASS pve reachable: ", "PASS pve tls: ", "PASS pve token: ", `PASS pve node: node "pve" found`,
		"PASS pve privileges /vms/101: ", "PASS pve privileges /storage: "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 6 {
		t.Errorf("%d lines; want one per check (6):\n%s", n, out)
	}

	// A token without VM.PowerMgmt fails naming it, where, and what for.
	var privs []string
	for _, n := range preflight.GuestNeeds {
		if n.Priv != "VM.PowerMgmt" {
			privs = append(privs, n.Priv)
		}
	}
	f.srv.Sim.AddToken("steward@pve!agent", "restricted-1", map[string][]string{"/vms": privs, "/storage": {"Datastore.AllocateSpace"}})
	if err := os.WriteFile(f.token, []byte("steward@pve!agent=restricted-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, f.checkArgs("--desired", doc)...)
	if ExitCode(err) != ExitFailure || !Silent(err) {
		t.Fatalf("restricted token: %v (exit %d); want a silent exit 1\n%s", err, ExitCode(err), out)
	}
	want := "FAIL pve privileges /vms/101: missing VM.PowerMgmt (to start, shut down, stop and reboot guests); grant them on /vms/101 or a parent path: pveum role add ROLE --privs VM.PowerMgmt; pveum acl modify /vms/101 --tokens 'steward@pve!agent' --roles ROLE"
	if !strings.Contains(out, want) || !strings.Contains(out, "PASS pve privileges /storage") {
		t.Errorf("output lacks %q (and the passing storage check):\n%s", want, out)
	}
	if strings.Contains(out, "restricted-1") {
		t.Errorf("the token secret is in the output:\n%s", out)
	}
	if m := f.srv.Sim.Mutations(); len(m) != 0 {
		t.Errorf("agent check mutated: %+v", m)
	}
	if _, err := os.Stat(f.state); err == nil {
		t.Errorf("agent check created the state directory")
	}
}

func TestAgentCheckFromEnvironmentAndBadSettings(t *testing.T) {
	f := newAgentFixture(t)
	t.Setenv("STEWARD_PVE_TOKEN", f.srv.Token)
	t.Setenv("STEWARD_NODE", "pve")
	t.Setenv("STEWARD_PVE_FINGERPRINT", f.srv.Fingerprint)
	t.Setenv("STEWARD_PVE_URL", f.srv.URL)
	out, _, err := runCLI(t, "agent", "check")
	if err != nil || !strings.Contains(out, "PASS pve privileges /vms:") {
		t.Fatalf("agent check from the environment: %v\n%s", err, out)
	}

	out, _, err = runCLI(t, "agent", "check", "--pve-token-file", filepath.Join(f.dir, "missing"))
	if ExitCode(err) != ExitFailure || !strings.HasPrefix(out, "FAIL agent settings: ") || strings.Count(out, "\n") != 1 {
		t.Errorf("missing token file: %v (exit %d); want one FAIL agent settings line\n%s", err, ExitCode(err), out)
	}

	t.Setenv("STEWARD_NODE", "")
	if _, _, err := runCLI(t, "agent", "check", "--node", ""); ExitCode(err) != ExitUsage {
		t.Errorf("no node: exit %d; want %d", ExitCode(err), ExitUsage)
	}
}

// TestAgentCheckWithHub: before enrollment the check reaches the hub and
// its pinned certificate without spending the join token; once enrolled
// it authenticates with the host token from the state directory alone.
func TestAgentCheckWithHub(t *testing.T) {
	f := newAgentFixture(t)
	h := newCLIHub(t)
	tok := h.joinToken(t, "pve")

	out, _, err := runCLI(t, f.checkArgs("--hub", h.url, "--hub-fingerprint", h.fp, "--join-token", tok)...)
	if err != nil || !strings.Contains(out, "PASS hub reachable: ") || !strings.Contains(out, "PASS hub certificate: matches the pinned fingerprint") ||
		!strings.Contains(out, "PASS hub enrollment: not enrolled yet") {
		t.Fatalf("before enrollment: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(f.state, "hub.json")); err == nil {
		t.Fatal("agent check enrolled")
	}
	wrong := strings.Repeat("AB:", 31) + "AB"
	out, _, err = runCLI(t, f.checkArgs("--hub", h.url, "--hub-fingerprint", wrong, "--join-token", tok)...)
	if ExitCode(err) != ExitFailure || !strings.Contains(out, "FAIL hub certificate: hub certificate fingerprint") {
		t.Errorf("wrong pin: %v\n%s", err, out)
	}

	// The agent enrolls (spending the token the checks left unspent).
	if _, _, err := runCLI(t, f.args("--once", "--hub", h.url, "--hub-fingerprint", h.fp, "--join-token", tok)...); ExitCode(err) == ExitFailure || ExitCode(err) == ExitUsage {
		t.Fatalf("enrolling: %v", err)
	}
	out, _, err = runCLI(t, f.checkArgs()...)
	if err != nil || !strings.Contains(out, "PASS hub authentication: the hub accepts the token of host pve") {
		t.Fatalf("enrolled: %v\n%s", err, out)
	}
	if n := strings.Count(out, "\n"); n != 9 {
		t.Errorf("%d lines; want 6 PVE and 3 hub checks:\n%s", n, out)
	}
	out, _, err = runCLI(t, f.checkArgs("--host", "other")...)
	if ExitCode(err) != ExitFailure || !strings.HasPrefix(out, "FAIL agent settings: ") || !strings.Contains(out, `enrolled this agent as host "pve"`) {
		t.Errorf("--host other than enrolled: %v\n%s", err, out)
	}

	// Hub replicas: every URL is checked on its own, and the check saves
	// nothing; the agent run saves the list.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()
	out, _, err = runCLI(t, f.checkArgs("--hub", h.url, "--hub", dead)...)
	if ExitCode(err) != ExitFailure || !strings.Contains(out, "PASS hub authentication "+h.url+": ") || !strings.Contains(out, "FAIL hub reachable "+dead+": ") {
		t.Fatalf("two replicas, one down: %v\n%s", err, out)
	}
	if e, _ := agent.LoadEnrollment(f.state); e.URL != h.url {
		t.Fatalf("agent check changed the enrollment's URL to %q", e.URL)
	}
	if _, _, err := runCLI(t, f.args("--once", "--hub", h.url+","+dead)...); ExitCode(err) == ExitFailure || ExitCode(err) == ExitUsage {
		t.Fatalf("an agent run with a replica down: %v", err)
	}
	if e, _ := agent.LoadEnrollment(f.state); e.URL != h.url+","+dead {
		t.Fatalf("the agent run left the enrollment's URL at %q; want both replicas", e.URL)
	}
	out, _, _ = runCLI(t, f.checkArgs()...)
	if !strings.Contains(out, "FAIL hub reachable "+dead+": ") {
		t.Fatalf("the saved replicas are not all checked:\n%s", out)
	}
}
