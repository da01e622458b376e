package engine_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

const testSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0 op@ws"

// cloneDoc clones template 9000 into 120, sets it up with cloud-init and
// starts it.
const cloneDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      120:
        kind: qemu
        state: running
        tags: [web]
        create: {clone: 9000, full: true, storage: local-lvm}
        config:
          name: web-1
          cores: 4
          memory: 4096
          ciuser: admin
          sshkeys: "` + testSSHKey + `"
          ipconfig0: ip=10.0.0.20/24,gw=10.0.0.1
          nameserver: 1.1.1.1 8.8.8.8
          searchdomain: example.com
`

// converge ticks until a tick changes nothing (at most max ticks) and
// returns how many ticks changed something and the last report.
func converge(t *testing.T, h *harness, doc string, max int) (int, engine.Report) {
	t.Helper()
	want := mustParse(t, doc)
	n := 0
	for range max {
		rep := h.tick(want)
		for _, r := range rep.Results {
			if r.Err != nil {
				t.Fatalf("tick %d: %s failed: %v", n+1, r.Action, r.Err)
			}
		}
		if len(rep.Results) == 0 {
			return n, rep
		}
		n++
	}
	t.Fatalf("not converged after %d ticks; mutations %v", max, h.mutations())
	return 0, engine.Report{}
}

func inSync(t *testing.T, rep engine.Report, vmid int) {
	t.Helper()
	for _, g := range rep.Guests {
		if g.VMID == vmid {
			if g.Phase != engine.PhaseInSync {
				t.Fatalf("guest %d: phase %s (%s), drift %+v; want in_sync", vmid, g.Phase, g.Err, g.Drift)
			}
			return
		}
	}
	t.Fatalf("guest %d not reported", vmid)
}

// Clone then config then start: two ticks that change something, and a
// third that finds nothing to do (cloud-init values included).
func TestCloneConverges(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	n, rep := converge(t, h, cloneDoc, 5)
	if n != 2 {
		t.Errorf("ticks that changed something = %d; want 2 (clone, then config and start)", n)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"clone 9000", "config 120", "start 120"}) {
		t.Errorf("mutations = %v; want clone, config, start", m)
	}
	inSync(t, rep, 120)
	g, _ := h.srv.Sim.Guest(120)
	if g.Status != "running" || g.Config["ciuser"] != "admin" || g.Config["name"] != "web-1" || g.Config["template"] != "" {
		t.Errorf("guest 120 = %s %v; want a running clone named web-1 with ciuser admin", g.Status, g.Config)
	}
	if want := "ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIOldEEHXRJbKuE453AGQyJq8GVUpkK1aV9xjsaW3kdJ0%20op%40ws"; g.Config["sshkeys"] != want {
		t.Errorf("sshkeys stored as %q; want PVE's URL-encoded %q", g.Config["sshkeys"], want)
	}
	if !strings.HasPrefix(g.Config["scsi0"], "local-lvm:vm-120-disk-") {
		t.Errorf("scsi0 = %q; want a full copy on local-lvm", g.Config["scsi0"])
	}
	// The journal proves the agent made it; a second agent run changes nothing.
	if p := h.j.Provenance(120); !p.CreatedByAgent || !p.Created || !p.Started {
		t.Errorf("provenance = %+v; want created by the agent, then started", p)
	}
	h.open()
	if rep := h.tick(mustParse(t, cloneDoc)); len(rep.Results) != 0 {
		t.Errorf("after restart: results %+v; want none", rep.Results)
	}
}

func TestCreateFromScratch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		doc   string
		vmid  int
		muts  []string
		check func(t *testing.T, g sim.GuestSnapshot)
	}{
		{"qemu", `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      121:
        kind: qemu
        state: running
        description: built from scratch
        create:
          disks: {scsi0: "local-lvm:8,discard=on", efidisk0: "local-lvm:1"}
        config: {name: scratch, memory: 1024, bios: ovmf, scsihw: virtio-scsi-single, boot: "order=scsi0", net0: "virtio,bridge=vmbr0", ostype: l26}
`, 121, []string{"create 121", "start 121"}, func(t *testing.T, g sim.GuestSnapshot) {
			if !strings.HasPrefix(g.Config["scsi0"], "local-lvm:vm-121-disk-") || !strings.Contains(g.Config["scsi0"], "size=8G") {
				t.Errorf("scsi0 = %q; want an 8G volume PVE allocated", g.Config["scsi0"])
			}
			if g.Config["bios"] != "ovmf" || g.Config["boot"] != "order=scsi0" {
				t.Errorf("config %v; want the create-time keys set at creation", g.Config)
			}
		}},
		{"lxc", `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      130:
        kind: lxc
        state: running
        create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", disks: {rootfs: "local-lvm:8"}}
        config: {hostname: ct130, memory: 1024, net0: "name=eth0,bridge=vmbr0,ip=dhcp"}
`, 130, []string{"create 130", "start 130"}, func(t *testing.T, g sim.GuestSnapshot) {
			if g.Config["unprivileged"] != "1" {
				t.Errorf("unprivileged = %q; want 1 (a container is unprivileged unless signed otherwise)", g.Config["unprivileged"])
			}
			if !strings.Contains(g.Config["rootfs"], "size=8G") {
				t.Errorf("rootfs = %q; want 8G", g.Config["rootfs"])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{Templates: true})
			n, rep := converge(t, h, tc.doc, 5)
			if n != 2 {
				t.Errorf("ticks that changed something = %d; want 2 (create, then start)", n)
			}
			if m := h.mutations(); !slices.Equal(m, tc.muts) {
				t.Errorf("mutations = %v; want %v", m, tc.muts)
			}
			inSync(t, rep, tc.vmid)
			g, _ := h.srv.Sim.Guest(tc.vmid)
			if g.Status != "running" {
				t.Errorf("status %s; want running", g.Status)
			}
			tc.check(t, g)
		})
	}
}

// A privileged container is created only with a signature: the create is
// held, nothing reaches PVE.
func TestCreatePrivilegedContainerHeld(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	rep := h.tick(mustParse(t, `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      131:
        kind: lxc
        create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"}
        config: {unprivileged: 0}
`))
	if len(h.mutations()) != 0 || len(rep.Pending) != 1 || rep.Guests[0].Phase != engine.PhasePendingSignature {
		t.Fatalf("mutations %v, pending %+v, guests %+v; want the create held for a signature", h.mutations(), rep.Pending, rep.Guests)
	}
}

// clusterReader shows the simulator's node as one of a cluster whose
// other node holds extra guests in /cluster/resources.
type clusterReader struct {
	engine.Reader
	extra []pve.Resource
}

func (c clusterReader) ClusterResources(ctx context.Context, typ string) ([]pve.Resource, error) {
	rs, err := c.Reader.ClusterResources(ctx, typ)
	return append(rs, c.extra...), err
}

// A vmid another node of the cluster holds is never created over: the
// desired guest is that guest, moved to the other node (issue 12 §4), and
// is reported moved with the node; nothing is created nor attempted.
func TestCreateRefusedWhenVMIDTakenInCluster(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	now := time.Now()
	h.eng.Backoff = backoff.NewTracker(backoff.Policy{Initial: time.Hour, Max: time.Hour}, func() time.Time { return now }, nil)
	h.eng.PVE = clusterReader{Reader: h.client, extra: []pve.Resource{{ID: "qemu/120", Type: "qemu", Node: "pve-b", Name: "db", VMID: 120, Status: "running"}}}
	want := mustParse(t, cloneDoc)
	for i := range 2 {
		rep := h.tick(want)
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("tick %d: mutations %v; want none", i+1, m)
		}
		g := rep.Guests[0]
		if g.Phase != engine.PhaseMoved || g.Node != "pve-b" || g.Err != "" || len(rep.Results) != 0 {
			t.Fatalf("tick %d: guest %+v, results %+v; want moved to the other node, nothing attempted", i+1, g, rep.Results)
		}
	}
	// Once the other guest is gone and the backoff is over, it is created.
	h.eng.PVE = h.client
	now = now.Add(2 * time.Hour)
	if n, _ := converge(t, h, cloneDoc, 5); n != 2 {
		t.Errorf("after the vmid was freed: %d changing ticks; want 2", n)
	}
}

// A cicustom snippet that does not exist is not written; once it exists,
// the guest is created with it.
func TestCreateCicustomNeedsSnippet(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	now := time.Now()
	h.eng.Backoff = backoff.NewTracker(backoff.Policy{Initial: time.Hour, Max: time.Hour}, func() time.Time { return now }, nil)
	doc := `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      122:
        kind: qemu
        create: {disks: {scsi0: "local-lvm:4", ide2: "local-lvm:cloudinit"}}
        config: {cicustom: "user=local:snippets/user.yaml"}
`
	rep := h.tick(mustParse(t, doc))
	if len(h.mutations()) != 0 || rep.Guests[0].Phase != engine.PhaseError || !strings.Contains(rep.Guests[0].Err, "no such snippet") {
		t.Fatalf("mutations %v, guest %+v; want the create refused for the missing snippet", h.mutations(), rep.Guests[0])
	}
	if err := h.srv.Sim.AddSnippet("local:snippets/user.yaml", "#cloud-config\n"); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	converge(t, h, doc, 5)
	if g, _ := h.srv.Sim.Guest(122); g.Config["cicustom"] != "user=local:snippets/user.yaml" {
		t.Errorf("cicustom = %q; want the snippet", g.Config["cicustom"])
	}
}

// A clone whose task fails leaves nothing (PVE removes the new config and
// its volumes); the next attempt, after backoff, clones again and
// converges.
func TestCloneTaskFailureRetried(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	want := mustParse(t, cloneDoc)
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	rep := h.tick(want)
	h.srv.Sim.SetFaults(sim.Faults{})
	if len(rep.Results) != 1 || rep.Results[0].Err == nil || rep.Guests[0].Phase != engine.PhaseError {
		t.Fatalf("results %+v, guests %+v; want the clone task's failure reported", rep.Results, rep.Guests)
	}
	if _, ok := h.srv.Sim.Guest(120); ok {
		t.Fatal("a failed clone left guest 120")
	}
	if p := h.j.Provenance(120); !p.CreateFailed || p.RemainsDigest != "" {
		t.Errorf("provenance %+v; want a failed create that left nothing", p)
	}
	h.passBackoff()
	converge(t, h, cloneDoc, 5)
	if m := h.mutations(); !slices.Equal(m, []string{"clone 9000", "config 120", "start 120"}) {
		t.Errorf("mutations = %v; want one clone that succeeded, then config and start", m)
	}
}

// A failed create that left remains: the agent destroys them (benign only
// because its journal proves they are its own failure, unchanged) and
// creates the guest again. Remains someone changed since are not the
// agent's to destroy.
func TestFailedCreateRemainsCleanedUp(t *testing.T) {
	for _, touched := range []bool{false, true} {
		name := "unchanged remains"
		if touched {
			name = "remains changed since"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, sim.Options{Templates: true})
			want := mustParse(t, cloneDoc)
			h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
			h.eng.PVE = leavesRemains{Reader: h.client, sim: h.srv.Sim, spec: qemuGuest(120, false, nil), once: new(sync.Once)}
			h.tick(want)
			h.srv.Sim.SetFaults(sim.Faults{})
			h.eng.PVE = h.client
			if p := h.j.Provenance(120); !p.CreateFailed || p.RemainsDigest == "" {
				t.Fatalf("provenance %+v; want the failed clone's remains recorded", p)
			}
			if touched {
				if _, err := h.client.SetConfig(t.Context(), "pve", guest.QEMU, 120, pve.ConfigChange{Set: map[string]string{"description": "in use"}}); err != nil {
					t.Fatal(err)
				}
			}
			// Past the failure's backoff: only the remains' state may
			// stop their destruction.
			h.passBackoff()
			rep := h.tick(want)
			_, exists := h.srv.Sim.Guest(120)
			if touched {
				if !exists || slices.Contains(h.mutations(), "destroy 120") {
					t.Fatalf("mutations %v; changed remains must not be destroyed unsigned", h.mutations())
				}
				return
			}
			if exists || !slices.Equal(h.mutations(), []string{"destroy 120"}) {
				t.Fatalf("mutations %v (guests %+v); want the remains destroyed", h.mutations(), rep.Guests)
			}
			converge(t, h, cloneDoc, 5)
			if m := h.mutations(); !slices.Equal(m, []string{"destroy 120", "clone 9000", "config 120", "start 120"}) {
				t.Errorf("mutations = %v; want the remains destroyed, then the clone converged", m)
			}
		})
	}
}

// lxcDoc creates container 130 from the seeded template and starts it.
const lxcDoc = `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      130:
        kind: lxc
        state: running
        create: {ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", disks: {rootfs: "local-lvm:8"}}
        config: {hostname: ct130, memory: 1024}
`

// A clone or a create interrupted at every crash point runs exactly once:
// recovery finds its task (a clone's qmclone task on the template) or
// proves it never started.
func TestCreateSurvivesCrash(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		vmid int
		muts []string
	}{
		{"clone", cloneDoc, 120, []string{"clone 9000", "config 120", "start 120"}},
		{"lxc", lxcDoc, 130, []string{"create 130", "start 130"}},
	} {
		for _, point := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
			crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd} {
			t.Run(tc.name+"/"+point, func(t *testing.T) {
				h := newHarness(t, sim.Options{Templates: true})
				ctx, cancel := context.WithCancel(t.Context())
				crashAt(t, point, cancel)
				h.eng.Tick(ctx, mustParse(t, tc.doc), nil)
				crashpoint.SetHook(nil)
				h.open()
				_, rep := converge(t, h, tc.doc, 5)
				inSync(t, rep, tc.vmid)
				if m := h.mutations(); !slices.Equal(m, tc.muts) {
					t.Fatalf("mutations = %v; want %v, the creation exactly once", m, tc.muts)
				}
				if got := h.j.InFlight(); len(got) != 0 {
					t.Errorf("ops left in flight: %+v", got)
				}
				if p := h.j.Provenance(tc.vmid); !p.CreatedByAgent {
					t.Errorf("provenance %+v; want the guest the agent's", p)
				}
			})
		}
	}
}

// The hub sees the clone as an action of its own kind, with its task, in
// a report the wire package accepts.
func TestCloneReportedOnTheWire(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	w := h.tick(mustParse(t, cloneDoc)).Wire()
	b, err := wire.EncodeReport(w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.DecodeReport(b)
	if err != nil {
		t.Fatalf("the hub would refuse the report: %v", err)
	}
	if len(got.Actions) != 1 {
		t.Fatalf("actions = %+v; want the clone", got.Actions)
	}
	a := got.Actions[0]
	if a.Action.Op != "clone" || a.Action.VMID != 120 || a.Action.Params["source"] != "9000" || a.Class != "benign" ||
		!strings.Contains(a.UPID, ":qmclone:9000:") || a.ExitStatus != "OK" {
		t.Errorf("action = %+v; want the benign clone of 9000 into 120 with its qmclone task", a)
	}
	if len(got.Sync) != 1 || got.Sync[0].Phase != wire.PhaseConverging {
		t.Errorf("sync = %+v; want 120 converging", got.Sync)
	}
}

// A create interrupted before its task was known, whose guest now exists
// under a clone lock (a task still running, or one that died), is not
// taken for the agent's: its fate is unknown, it is never run again, and
// the journal gives no provenance over that guest.
func TestInterruptedCloneFindsLockedGuest(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	ctx, cancel := context.WithCancel(t.Context())
	crashAt(t, crashpoint.AfterBegin, cancel)
	h.eng.Tick(ctx, mustParse(t, cloneDoc), nil)
	crashpoint.SetHook(nil)
	spec := qemuGuest(120, false, nil)
	spec.Lock = "clone"
	if err := h.srv.Sim.AddGuest(spec); err != nil {
		t.Fatal(err)
	}
	h.open()
	if got := h.j.InFlight(); len(got) != 0 {
		t.Fatalf("ops left in flight: %+v", got)
	}
	if p := h.j.Provenance(120); p.CreatedByAgent {
		t.Errorf("provenance %+v; a guest found locked is not provably the agent's", p)
	}
	h.tick(mustParse(t, cloneDoc))
	if slices.Contains(h.mutations(), "clone 9000") {
		t.Errorf("mutations %v; the clone must not run again", h.mutations())
	}
}

// TestHubPlanAfterCloneMatchesAgent: the report after a clone carries
// the journal's word that the agent made the guest and has not run it
// (sync.provenance, wire version 3), so the hub's plan shows the
// cloud-init write that follows as benign, as the agent runs it next
// tick; a report without it (an older agent) shows it held.
func TestHubPlanAfterCloneMatchesAgent(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	want := mustParse(t, cloneDoc)
	got, err := wire.DecodeReport(mustEncode(t, h.tick(want).Wire()))
	if err != nil {
		t.Fatal(err)
	}
	var prov *wire.Provenance
	for _, s := range got.Sync {
		if s.VMID == 120 {
			prov = s.Provenance
		}
	}
	if prov == nil || !prov.CreatedByAgent || !prov.Fresh || prov.CreateFailed {
		t.Fatalf("sync provenance of the clone = %+v; want created by the agent, fresh", prov)
	}
	classOf := func(p hub.PlanJSON) (string, bool) {
		for _, st := range p.Steps {
			if st.Action.VMID == 120 && st.Action.Op == "config" {
				return st.Class, true
			}
		}
		return "", false
	}
	cls, ok := classOf(hub.PlanReport("pve", 1, want, got))
	if !ok || cls != "benign" {
		t.Fatalf("hub plan after the clone: config step class %q (found %v); want benign, as the agent judges it", cls, ok)
	}
	if cls, _ := classOf(hub.PlanReport("pve", 1, want, wire.StripNewer(got, 2))); cls != "destructive" {
		t.Errorf("hub plan of a report without provenance: class %q; want destructive (the classifier alone)", cls)
	}
	// The agent's next tick runs it unsigned.
	rep := h.tick(want)
	if len(rep.Pending) != 0 {
		t.Errorf("agent held %+v after the clone; want the config write run", rep.Pending)
	}
}

func mustEncode(t *testing.T, r wire.Report) []byte {
	t.Helper()
	b, err := wire.EncodeReport(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
