package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/wire"
)

func TestPlanSeparatesBenignFromNeedsSignature(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	agent := e.agentClient(h, "pve-a")
	rep := reportA(0, wire.PhaseInSync)
	rep.Guests[1].Config["scsi1"] = "local-lvm:vm-102-disk-1,size=8G"
	postReport(t, agent, rep)
	if _, _, err := e.run("", "hosts", "add", "pve-b"); err != nil { // never reports
		t.Fatal(err)
	}

	// Nothing desired yet: nothing to do, exit 0.
	if out, _, err := e.run("", "plan"); err != nil || !strings.Contains(out, "pve-a: no desired state") || !strings.Contains(out, "pve-b: has not reported yet") {
		t.Fatalf("plan before any desired state: %v\n%s", err, out)
	}

	fleet := strings.NewReplacer("cores: 2", "cores: 4", "          memory: 4096\n", "          memory: 2048\n          scsi1: local-lvm:vm-102-disk-9,size=8G\n").Replace(fleetA)
	if _, _, err := e.run("", "apply", "-f", writeFile(t, "fleet.yaml", fleet)); ExitCode(err) != ExitChanged {
		t.Fatalf("apply: %v", err)
	}

	out, _, err := e.run("", "plan", "pve-a", "-o", "json")
	if ExitCode(err) != ExitChanged {
		t.Fatalf("plan with steps: got %v (exit %d); want exit 2", err, ExitCode(err))
	}
	golden(t, "plan.json", stableTimes(out))
	var p PlanOutJSON
	if err := json.Unmarshal([]byte(out), &p); err != nil || len(p.Hosts) != 1 {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	ph := p.Hosts[0]
	if len(ph.Benign) != 1 || ph.Benign[0].Action.Op != "config" || ph.Benign[0].Action.Params["cores"] != "4" {
		t.Errorf("benign steps: %+v; want 101's cores change", ph.Benign)
	}
	if len(ph.NeedsSignature) != 1 || strings.Join(ph.NeedsSignature[0].Destroys, ",") != "scsi1" {
		t.Errorf("steps needing a signature: %+v; want the scsi1 replacement, destroying scsi1", ph.NeedsSignature)
	}

	text, _, _ := e.run("", "plan", "pve-a")
	bi, di := strings.Index(text, "Will run (benign):"), strings.Index(text, "Needs a signature")
	if bi < 0 || di < bi || !strings.Contains(text[di:], "[destroys scsi1]") || strings.Contains(text[di:], "cores") {
		t.Errorf("plan text does not separate benign from destructive steps:\n%s", text)
	}
	if _, _, err := e.run("", "plan", "ghost"); err == nil || !strings.Contains(err.Error(), `no host "ghost"`) {
		t.Errorf("plan ghost: got %v", err)
	}
}

func TestStatusFleetHostAndGuest(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	agent := e.agentClient(h, "pve-b")
	postReport(t, agent, sampleReport("pve-b", 0))
	if _, _, err := e.run("", "hosts", "add", "pve-c"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.run("", "block", "pve-b", "--reason", "maintenance"); err != nil {
		t.Fatal(err)
	}

	out, _, err := e.run("", "status", "-o", "json")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	golden(t, "status.json", stableTimes(out))
	text, _, _ := e.run("", "status")
	lines := strings.Split(text, "\n")
	if !strings.HasPrefix(lines[0], "HOST") || !strings.Contains(lines[0], "PENDING SIGNATURE") || !strings.Contains(lines[0], "BLOCKED") {
		t.Fatalf("status header: %q", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 11 || f[0] != "pve-b" || f[3] != "1/4" || f[len(f)-1] != "yes" {
		t.Errorf("status row of pve-b: %q; want 1/4 in sync and blocked", lines[1])
	}
	if !strings.Contains(lines[2], "pve-c") || !strings.Contains(lines[2], "awaiting enrollment") {
		t.Errorf("status row of pve-c: %q", lines[2])
	}

	text, _, err = e.run("", "status", "pve-b/104")
	if err != nil {
		t.Fatalf("status pve-b/104: %v", err)
	}
	for _, w := range []string{"Guest:", "pve-b/104", "not on the host", "Last error:", "guest 104 is not on this host", "Next retry:"} {
		if !strings.Contains(text, w) {
			t.Errorf("status pve-b/104 lacks %q:\n%s", w, text)
		}
	}
	text, _, _ = e.run("", "status", "pve-b/103")
	if !strings.Contains(text, "Needs signature:") || !strings.Contains(text, "[destroys scsi1]") {
		t.Errorf("status pve-b/103:\n%s\nwant the held action and what it destroys", text)
	}
	out, _, err = e.run("", "status", "pve-b/102", "-o", "json")
	var d HostDetailJSON
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || len(d.Guests) != 1 || d.Guests[0].VMID != 102 || !d.Host.Blocked {
		t.Errorf("status pve-b/102 -o json: %v\n%s", err, out)
	}
	if _, _, err := e.run("", "status", "pve-b/999"); err == nil || !strings.Contains(err.Error(), "no guest 999") {
		t.Errorf("status pve-b/999: got %v", err)
	}
	if _, _, err := e.run("", "status", "pve-b/x"); ExitCode(err) != ExitUsage {
		t.Errorf("status pve-b/x: got exit %d; want 64", ExitCode(err))
	}
}
