package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/wire"
)

// sampleReport is a host with one guest in each interesting state.
func sampleReport(host string, gen int64) wire.Report {
	return wire.Report{
		Host: host, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), DesiredGeneration: gen,
		Facts: wire.Facts{Node: "pve", AgentVersion: "v0.9.0"},
		Guests: []wire.Guest{
			{VMID: 101, Kind: "lxc", Name: "web", Status: "running", Config: map[string]string{"cores": "2"}},
			{VMID: 102, Kind: "qemu", Name: "db", Status: "running", Config: map[string]string{"memory": "2048"}},
			{VMID: 103, Kind: "qemu", Name: "old", Status: "stopped"},
			{VMID: 200, Kind: "qemu", Name: "unmanaged", Status: "running"},
		},
		Sync: []wire.Sync{
			{VMID: 101, Phase: wire.PhaseInSync},
			{VMID: 102, Phase: wire.PhaseDriftObserved, Drift: []wire.Change{{Key: "memory", From: "2048", To: "4096"}}},
			{VMID: 103, Phase: wire.PhasePendingSignature, Reason: "destructive: deletes scsi1"},
			{VMID: 104, Phase: wire.PhaseError, Reason: "guest 104 is not on this host", NextRetry: time.Date(2026, 1, 2, 3, 5, 5, 0, time.UTC)},
		},
		Pending: []wire.Pending{{
			Action: wire.Action{Op: "config", VMID: 103, Kind: "qemu", Params: map[string]string{"delete": "scsi1"}},
			Reason: "destructive", Destroys: []string{"scsi1"},
		}},
	}
}

func TestHostsAddListShowRm(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")

	out, _, err := e.run("", "hosts", "add", "pve-a")
	if err != nil {
		t.Fatalf("hosts add: %v", err)
	}
	want := "steward agent --hub " + h.URL + " --hub-fingerprint " + h.Fingerprint + " --join-token stwj_"
	if !strings.Contains(out, want) {
		t.Fatalf("hosts add printed:\n%s\nwant the join command %q…", out, want)
	}
	if _, _, err := e.run("", "hosts", "add", "bad/name"); ExitCode(err) != ExitUsage {
		t.Fatalf("hosts add bad/name: got %v; want a usage error", err)
	}

	agent := e.agentClient(h, "pve-b")
	postReport(t, agent, sampleReport("pve-b", 0))

	out, _, err = e.run("", "hosts", "list", "-o", "json")
	if err != nil {
		t.Fatalf("hosts list: %v", err)
	}
	golden(t, "hosts-list.json", stableTimes(out))
	var list HostsJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Hosts) != 2 {
		t.Fatalf("hosts list -o json: %v, %d hosts; want 2", err, len(list.Hosts))
	}
	text, _, _ := e.run("", "hosts", "list")
	for _, w := range []string{"pve-a", "awaiting enrollment", "never", "pve-b", "v0.9.0", "1/4 in sync, 1 drift observed, 1 pending signature, 1 error"} {
		if !strings.Contains(text, w) {
			t.Errorf("hosts list text lacks %q:\n%s", w, text)
		}
	}

	out, _, err = e.run("", "hosts", "show", "pve-b", "-o", "json")
	if err != nil {
		t.Fatalf("hosts show: %v", err)
	}
	golden(t, "hosts-show.json", stableTimes(out))
	text, _, _ = e.run("", "hosts", "show", "pve-b")
	for _, w := range []string{"memory 2048→4096", "needs signature: config (destroys scsi1)", "not on the host", "unmanaged"} {
		if !strings.Contains(text, w) {
			t.Errorf("hosts show text lacks %q:\n%s", w, text)
		}
	}
	if _, _, err := e.run("", "hosts", "show", "nope"); err == nil || !strings.Contains(err.Error(), `no host "nope"`) {
		t.Fatalf("hosts show nope: got %v; want no such host", err)
	}

	if _, _, err := e.run("", "hosts", "rm", "pve-b"); err != nil {
		t.Fatalf("hosts rm: %v", err)
	}
	err = agent.JSON(t.Context(), "POST", "/v1/agent/hosts/pve-b/report", nil, sampleReport("pve-b", 0), nil)
	if err == nil {
		t.Fatal("a revoked host's report was accepted")
	}
	if v, _, _ := e.run("", "hosts", "list", "-o", "json"); !strings.Contains(v, `"state": "revoked"`) {
		t.Fatalf("after rm, hosts list:\n%s\nwant pve-b revoked", v)
	}
}

func TestBlockUnblock(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	agent := e.agentClient(h, "pve-a")
	if _, _, err := e.run("", "block", "pve-a"); ExitCode(err) != ExitUsage {
		t.Fatalf("block without --reason: got %v; want a usage error", err)
	}
	if _, _, err := e.run("", "block", "pve-a", "--reason", "disk swap"); err != nil {
		t.Fatalf("block: %v", err)
	}
	var ctl wire.Control
	if err := agent.JSON(t.Context(), "POST", "/v1/agent/hosts/pve-a/report", nil, sampleReport("pve-a", 0), &ctl); err != nil {
		t.Fatal(err)
	}
	if !ctl.Blocked || ctl.BlockedReason != "disk swap" {
		t.Fatalf("control after block: %+v; want blocked, reason disk swap", ctl)
	}
	if _, _, err := e.run("", "unblock", "pve-a"); err != nil {
		t.Fatalf("unblock: %v", err)
	}
	if err := agent.JSON(t.Context(), "POST", "/v1/agent/hosts/pve-a/report", nil, sampleReport("pve-a", 0), &ctl); err != nil || ctl.Blocked {
		t.Fatalf("control after unblock: %+v, %v; want not blocked", ctl, err)
	}
	if _, _, err := e.run("", "block", "ghost", "--reason", "x"); err == nil || !strings.Contains(err.Error(), `no host "ghost"`) {
		t.Fatalf("block ghost: got %v", err)
	}
}
