package crashtest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/proctest"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

// TestEndToEndTwoSigners runs the four-eyes flow on the built binaries:
// the agent's policy asks two operators for a destroy; two fresh keys
// made by ssh-keygen sign one payload (made by `steward op payload`) with
// ssh-keygen -Y sign, one after the other. After the first upload the
// agent holds the job for one more signer and the simulator's mutation
// record shows no destroy, tick after tick; the second signature joins
// the job on the hub and the destroy runs exactly once.
func TestEndToEndTwoSigners(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	e := &e2e{t: t, dir: t.TempDir(), hubAddr: "127.0.0.1:0"}
	e.startSim()
	for _, g := range []sim.GuestSpec{
		{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "memory": "1024"}},
		{VMID: 103, Kind: guest.QEMU, Name: "scratch", Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=8G"}},
	} {
		e.simControl("/_sim/guests", g)
	}
	joinToken := e.startOperatorHub()

	// Two fresh operator keys, both trusted; the policy asks both.
	keys, allowedFile := e.trustedKeys("alice", "bob")
	tokenFile := e.pveTokenFile()
	policyFile := filepath.Join(e.dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte("require:\n  destroy: {role: operator, count: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(e.dir, "state")
	e.agentArgs = []string{"agent", "--node", "pve", "--state-dir", state, "--pve-url", e.simURL, "--pve-fingerprint", e.simFP,
		"--pve-token-file", tokenFile, "--allowed-signers", allowedFile, "--policy", policyFile, "--task-poll", "5ms", "--task-poll-max", "20ms"}
	e.agent = start(t, "agent", nil, append(e.agentArgs, "--hub", "https://"+e.hubAddr, "--hub-fingerprint", e.hubFP, "--join-token", joinToken)...)
	e.putDesired("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      101: {kind: qemu, config: {cores: 2}}\n")
	proctest.Eventually(t, "101 converged", func() bool { return e.config(guest.QEMU, 101, "cores") == "2" }, e.logs)

	// The destroy's payload, bound to 103's digest as the hub's last
	// report shows it.
	var h hub.HostJSON
	digest := ""
	proctest.Eventually(t, "a report of guest 103 with its digest", func() bool {
		if err := e.op.JSON(t.Context(), http.MethodGet, "/v1/hosts/pve", nil, nil, &h); err != nil || len(h.Report) == 0 {
			return false
		}
		rep, err := wire.DecodeReport(h.Report)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rep.Guests {
			if g.VMID == 103 {
				digest = g.Digest
			}
		}
		return digest != ""
	}, e.logs)
	payload, err := exec.Command(agentBin, "op", "payload", "--host", "pve", "--vmid", "103", "--kind", "qemu", "--op", "destroy",
		"--param", "purge=1", "--digest", digest, "--ttl", "1h", "--reason", "four eyes").Output()
	if err != nil {
		t.Fatalf("steward op payload: %v", err)
	}
	sign := func(name string) []byte {
		t.Helper()
		f := filepath.Join(e.dir, "payload-"+name)
		if err := os.WriteFile(f, payload, 0o600); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-f", keys[name], "-n", "steward-op@steward", f).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
		}
		sig, err := os.ReadFile(f + ".sig")
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	upload := func(sig []byte) hub.UploadJSON {
		t.Helper()
		var up hub.UploadJSON
		if err := e.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/jobs", nil, hub.JobJSON{Payload: payload, Signatures: [][]byte{sig}}, &up); err != nil {
			t.Fatal(err)
		}
		return up
	}
	job := func() hub.JobJSON {
		t.Helper()
		var out struct{ Jobs []hub.JobJSON }
		if err := e.op.JSON(t.Context(), http.MethodGet, "/v1/hosts/pve/jobs", nil, nil, &out); err != nil || len(out.Jobs) != 1 {
			t.Fatalf("jobs: %+v, %v; want one", out.Jobs, err)
		}
		return out.Jobs[0]
	}
	ticks := func() int { return strings.Count(e.agent.Out.String(), "msg=tick") }

	if up := upload(sign("alice")); !up.Created || up.Signatures != 1 {
		t.Fatalf("alice's upload: %+v; want a new job with one signature", up)
	}
	proctest.Eventually(t, "the agent holding alice's job for one more signer", func() bool {
		r := job().Result
		return r != nil && r.State == wire.JobHeld && r.Quorum != nil && slices.Equal(r.Quorum.Signed, []string{"alice@example.com"}) && r.Quorum.Need == 2
	}, e.logs)
	from := ticks()
	proctest.Eventually(t, "two more agent ticks", func() bool { return ticks() >= from+2 }, e.logs)
	if n := e.count("destroy", 103); n != 0 {
		t.Fatalf("the destroy ran %d time(s) with 1 of 2 signatures\n%s", n, e.logs())
	}
	if j := job(); j.State != "waiting" {
		t.Fatalf("alice's job is %s; want waiting for bob", j.State)
	}

	if up := upload(sign("bob")); up.Created || up.Added != 1 || up.Signatures != 2 {
		t.Fatalf("bob's upload: %+v; want his signature added to alice's job", up)
	}
	proctest.Eventually(t, "the co-signed destroy done", func() bool { return job().State == wire.JobDone }, e.logs)
	from = ticks()
	proctest.Eventually(t, "two more agent ticks", func() bool { return ticks() >= from+2 }, e.logs)
	for _, m := range e.mutations() {
		if m.Op == "destroy" && m.VMID != 103 {
			t.Errorf("destroyed %d; want only 103", m.VMID)
		}
	}
	if n := e.count("destroy", 103); n != 1 {
		t.Fatalf("the simulator destroyed 103 %d time(s); want exactly once\n%s", n, e.logs())
	}
	if _, err := e.pve.GuestConfig(t.Context(), "pve", guest.QEMU, 103); err == nil {
		t.Fatal("guest 103 still has a config after its destroy ran")
	}
}
