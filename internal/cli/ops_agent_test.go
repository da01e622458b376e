package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

// putDesiredFile stores a desired document on the hub as apply does.
func (o *opsHub) putDesiredFile(host, path string) {
	o.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		o.t.Fatal(err)
	}
	resp, err := o.op.Do(o.t.Context(), hubclient.Request{Method: "PUT", Path: "/v1/hosts/" + host + "/desired", Body: b})
	if err == nil {
		err = resp.Err("PUT", "desired")
	}
	if err != nil {
		o.t.Fatalf("storing %s: %v", path, err)
	}
}

// plan returns the hub's plan for host.
func (o *opsHub) plan(host string) hub.PlanJSON {
	o.t.Helper()
	var p hub.PlanJSON
	if err := o.op.JSON(o.t.Context(), "GET", "/v1/hosts/"+host+"/plan", nil, nil, &p); err != nil {
		o.t.Fatal(err)
	}
	return p
}

// TestImportThenApplyIsNoOp: a real agent over the simulator reports to a
// real hub; steward import writes desired state from that report (the
// managed guest's keys, and the unmanaged guests' observed configs);
// applied, the hub's plan has no step and the agent's next tick changes
// nothing.
func TestImportThenApplyIsNoOp(t *testing.T) {
	o := newOpsHub(t)
	e := newOpEnv(t)
	e.login(o.testHub, "lab")
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db", Running: true,
		Config: map[string]string{"cores": "4", "memory": "8192", "onboot": "1", "description": "database\n", "tags": "prod;db",
			"net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0", "scsi0": "local-lvm:vm-103-disk-0,size=32G"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 104, Kind: guest.LXC, Name: "cache", Running: true,
		Config: map[string]string{"hostname": "cache", "cores": "2", "memory": "1024", "swap": "256", "onboot": "1",
			"description": "cache\nsecond line\n", "tags": "cache", "ostype": "debian", "unprivileged": "1",
			"net0":   "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:04,ip=dhcp,type=veth",
			"rootfs": "local-lvm:vm-104-disk-0,size=8G", "mp0": "local-lvm:vm-104-disk-1,mp=/srv,size=4G"}}); err != nil {
		t.Fatal(err)
	}
	// 103 is managed already (its config keys are reported); 101 and 102 are not.
	first := filepath.Join(t.TempDir(), "first.yaml")
	os.WriteFile(first, []byte(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      103:
        description: database
        tags: [db, prod]
        config: {cores: 4, memory: 8192, onboot: 1, net0: "virtio=BC:24:11:00:00:01,bridge=vmbr0", scsi0: "local-lvm:vm-103-disk-0,size=32G"}
`), 0o600)
	jt := o.joinTokenFor("pve")
	o.putDesiredFile("pve", first)
	if _, stderr, err := runCLI(t, f.args("--once", "--hub", o.URL, "--hub-fingerprint", o.Fingerprint, "--join-token", jt)...); err != nil {
		t.Fatalf("first agent tick: %v (exit %d)\n%s", err, ExitCode(err), stderr)
	}

	file := filepath.Join(t.TempDir(), "imported.yaml")
	if _, stderr, err := e.run("", "import", "pve", "-f", file); err != nil {
		t.Fatalf("import: %v\n%s", err, stderr)
	}
	b, _ := os.ReadFile(file)
	doc, err := desired.Parse(b)
	if err != nil {
		t.Fatalf("the imported file does not parse: %v\n%s", err, b)
	}
	gs := doc.ForHost("pve").Guests
	if len(gs) != 4 || gs[101].State != desired.Stopped || gs[102].State != desired.Running || gs[102].Kind != guest.LXC {
		t.Fatalf("imported guests: got %s; want 101 stopped, 102 (lxc) running, 103", b)
	}
	// 101 and 102 are unmanaged: their configs come from the agent's
	// report of unmanaged guests (wire version 2), picked keys managed.
	for _, id := range []int{101, 102, 104} {
		if gs[id].Config["cores"] == "" || gs[id].Config["memory"] == "" {
			t.Fatalf("imported %d: config %v; want its cores and memory from the report\n%s", id, gs[id].Config, b)
		}
	}
	if g := gs[104]; g.Config["swap"] != "256" || g.Config["net0"] == "" || g.Config["hostname"] != "cache" ||
		g.Description == nil || len(g.Tags) != 1 || !strings.Contains(string(b), "# rootfs: ") || !strings.Contains(string(b), "# mp0: ") {
		t.Fatalf("imported 104 (lxc): got %+v %v; want swap, net0, hostname, description, tags managed and rootfs, mp0 as comments:\n%s", g, g.Config, b)
	}
	g := gs[103]
	if g.Config["cores"] != "4" || g.Config["memory"] != "8192" || g.Config["net0"] == "" || *g.Description != "database" || len(g.Tags) != 2 {
		t.Fatalf("imported 103: got %+v %v; want its managed keys as reported", g, g.Config)
	}
	if _, ok := g.Config["scsi0"]; ok || !strings.Contains(string(b), "# scsi0: file=local-lvm:vm-103-disk-0,size=32G") {
		t.Fatalf("imported 103: want scsi0 as a comment, not managed:\n%s", b)
	}
	if _, _, err := e.run("", "import", "pve", "-f", file); ExitCode(err) != ExitUsage {
		t.Errorf("import over an existing file without --force: got %v; want a usage error", err)
	}
	if _, _, err := e.run("", "import", "pve", "999"); ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "no guest 999") {
		t.Errorf("import of a vmid the report lacks: got %v; want a usage error naming it", err)
	}

	out, stderr, err := e.run("", "apply", "-f", file, "-o", "json")
	if ExitCode(err) != ExitChanged || !strings.Contains(out, `"steps": []`) {
		t.Fatalf("apply of the import: %v (exit %d); want exit 2 (the document changed) and a plan without steps\n%s\n%s", err, ExitCode(err), out, stderr)
	}
	n := len(f.srv.Sim.Mutations())
	out, stderr, err = runCLI(t, f.args("--once")...)
	if err != nil {
		t.Fatalf("agent tick after applying the import: %v (exit %d; 0 is nothing changed)\n%s\n%s", err, ExitCode(err), out, stderr)
	}
	if m := f.srv.Sim.Mutations(); len(m) != n {
		t.Fatalf("applying the import changed PVE: %+v", m[n:])
	}
	p := o.plan("pve")
	if len(p.Steps) != 0 {
		t.Fatalf("the hub's plan after applying the import: got %+v; want no step", p.Steps)
	}
	for _, g := range p.Guests {
		if g.Phase != wire.PhaseInSync {
			t.Errorf("guest %d: phase %s; want in_sync", g.VMID, g.Phase)
		}
	}
	if out, stderr, err := e.run("", "apply", "-f", file); err != nil || !strings.Contains(out, "No changes") {
		t.Fatalf("apply of the import again: %v (exit %d); want exit 0, no changes\n%s\n%s", err, ExitCode(err), out, stderr)
	}
}

// TestSignWithRealAgent: a destructive change the agent holds reaches the
// hub as pending; steward sign signs it with ssh-keygen and uploads it;
// the agent's next tick runs it exactly once and the hub records it done.
func TestSignWithRealAgent(t *testing.T) {
	o := newOpsHub(t)
	e := newOpEnv(t)
	e.login(o.testHub, "lab")
	ops := newOpFixture(t, "alice")
	f := newAgentFixture(t)
	if err := f.srv.Sim.AddGuest(sim.GuestSpec{VMID: 103, Kind: guest.QEMU, Name: "db",
		Config: map[string]string{"scsi0": "local-lvm:vm-103-disk-0,size=32G", "scsi1": "local-lvm:vm-103-disk-1,size=10G"}}); err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "fleet.yaml")
	os.WriteFile(doc, []byte("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      103: {config: {scsi1: \"local-lvm:vm-103-disk-7,size=10G\"}}\n"), 0o600)
	jt := o.joinTokenFor("pve")
	o.putDesiredFile("pve", doc)
	args := f.args("--once", "--allowed-signers", ops.allowed)
	if _, stderr, err := runCLI(t, append(args, "--hub", o.URL, "--hub-fingerprint", o.Fingerprint, "--join-token", jt)...); ExitCode(err) != ExitChanged {
		t.Fatalf("first tick: %v; want exit 2 (held for a signature)\n%s", err, stderr)
	}
	out, stderr, err := e.run("n\n", "sign", "--host", "pve", "--key", ops.keys["alice"], "--wait", "0")
	if err != nil || !strings.Contains(stderr, "config qemu 103 \"db\" on pve") || !strings.Contains(stderr, "destroys:  scsi1") || !strings.Contains(out, "declined") {
		t.Fatalf("sign, declined: %v\n%s\n%s", err, out, stderr)
	}
	if len(o.jobs("pve")) != 0 {
		t.Fatal("a declined operation was uploaded")
	}
	out, stderr, err = e.run("y\n", "sign", "--host", "pve", "--key", ops.keys["alice"], "--wait", "0", "-o", "json")
	if err != nil || !strings.Contains(out, `"state": "waiting"`) {
		t.Fatalf("sign: %v\n%s\n%s", err, out, stderr)
	}
	if _, stderr, err := runCLI(t, args...); ExitCode(err) != ExitChanged {
		t.Fatalf("signed tick: %v; want exit 2 (ran the signed job)\n%s", err, stderr)
	}
	jobs := o.jobs("pve")
	if len(jobs) != 1 || jobs[0].State != wire.JobDone {
		t.Fatalf("hub's jobs after the agent ran it: %+v; want one done", jobs)
	}
	if g, _ := f.srv.Sim.Guest(103); g.Config["scsi1"] != "local-lvm:vm-103-disk-7,size=10G" {
		t.Fatalf("scsi1 on PVE: %q; want the signed replacement", g.Config["scsi1"])
	}
	// Nothing is pending any more: sign has nothing to do.
	out, stderr, err = e.run("", "sign", "--host", "pve", "--key", ops.keys["alice"], "-o", "json")
	if err != nil || strings.TrimSpace(out) != "{\n  \"results\": []\n}" {
		t.Fatalf("sign with nothing pending: %v\n%q\n%s", err, out, stderr)
	}
}
