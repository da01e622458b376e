package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
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

// TestFleetViewsOneRequest: `hosts list` and `status` show a fleet of
// many hosts in one request to the hub, and a host's new report shows in
// the next view (the hub's summaries follow the report hash).
func TestFleetViewsOneRequest(t *testing.T) {
	h := newTestHub(t)
	e := newOpEnv(t)
	e.login(h, "lab")
	const n = 300
	ctx := t.Context()
	put := func(host string, r wire.Report) {
		t.Helper()
		body, err := wire.EncodeReport(r)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Store.PutReport(ctx, host, body, hub.ReportHash(body)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		host := fmt.Sprintf("pve-%03d", i)
		if err := h.Store.CreateJoinToken(ctx, host, store.HashToken("join-"+host), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Store.Enroll(ctx, store.HashToken("join-"+host), store.HashToken("tok-"+host)); err != nil {
			t.Fatal(err)
		}
		if i%10 != 0 { // every tenth host never reported
			put(host, sampleReport(host, 0))
		}
	}
	var requests atomic.Int64
	h.intercept(func(r *http.Request) { requests.Add(1) })
	check := func(args ...string) []HostSummaryJSON {
		t.Helper()
		requests.Store(0)
		out, stderr, err := e.run("", append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		if got := requests.Load(); got != 1 {
			t.Errorf("%v with %d hosts made %d requests to the hub; want 1", args, n, got)
		}
		var v struct {
			Hosts []HostSummaryJSON `json:"hosts"`
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Hosts) != n {
			t.Fatalf("%v -o json: %v, %d hosts; want %d", args, err, len(v.Hosts), n)
		}
		return v.Hosts
	}
	for _, args := range [][]string{{"hosts", "list"}, {"status"}} {
		hosts := check(args...)
		for i, s := range hosts {
			if i%10 == 0 {
				if s.ReportTime != nil || s.Guests != 0 {
					t.Errorf("%v: %s never reported but shows %+v", args, s.Host, s)
				}
				continue
			}
			if s.Guests != 4 || s.Managed != 4 || s.Sync[wire.PhaseInSync] != 1 || s.Sync[wire.PhaseError] != 1 ||
				s.PendingSignatures != 1 || s.AgentVersion != "v0.9.0" || s.Node != "pve" {
				t.Fatalf("%v: %s summary %+v; want sampleReport's counts", args, s.Host, s)
			}
		}
	}
	// A new report of one host shows at once; the others are unchanged.
	r := sampleReport("pve-001", 3)
	r.Sync = r.Sync[:1]
	r.Pending = nil
	put("pve-001", r)
	hosts := check("status")
	if s := hosts[1]; s.Host != "pve-001" || s.Managed != 1 || s.PendingSignatures != 0 || s.ReportedGeneration != 3 {
		t.Errorf("status after pve-001's new report: %+v; want 1 managed, 0 pending, generation 3", s)
	}
	if s := hosts[2]; s.Managed != 4 {
		t.Errorf("status: pve-002 %+v; want its report unchanged", s)
	}
}
