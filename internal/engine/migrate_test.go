package engine_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

func clusterCT(vmid int, node string, running bool) sim.GuestSpec {
	return sim.GuestSpec{VMID: vmid, Kind: guest.LXC, Name: "ct" + itoa(vmid), Node: node, Running: running, Config: map[string]string{
		"cores": "1", "memory": "512", "rootfs": "local-lvm:vm-" + itoa(vmid) + "-disk-0,size=8G", "ostype": "debian", "arch": "amd64", "unprivileged": "1"}}
}

// migrations returns the simulator's migrate mutations as "vmid target
// k=v..." strings.
func migrations(h *harness) []string {
	var out []string
	for _, m := range h.srv.Sim.Mutations() {
		if m.Op != "migrate" {
			continue
		}
		s := itoa(m.VMID) + " " + m.Path
		for _, k := range []string{"target", "online", "with-local-disks", "restart"} {
			if v, ok := m.Params[k]; ok {
				s += " " + k + "=" + v
			}
		}
		out = append(out, s)
	}
	return out
}

// TestRequestedMigration: desired state asks for node pve-b for a running
// VM (online) and a stopped container (offline) on pve-a. Agent a, on
// whose node they are, migrates each once; agent b, whose document names
// them too, reports them moved (on pve-a) until they arrive, never creates
// them nor reports them missing, and manages them from the tick they
// appear: its config reaches them there. Afterwards agent a reports them
// moved to pve-b and does nothing more.
func TestRequestedMigration(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}, TaskDuration: 20 * time.Millisecond, Templates: true},
		clusterVM(101, "pve-a", true), clusterCT(201, "pve-a", false))
	a := h.eng
	b := nodeAgent(h, "b", "pve-b")
	wantA := hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b, state: running}\n      201: {kind: lxc, node: pve-b}\n")
	wantB := hostDoc(t, "b", ""+
		"      101:\n        kind: qemu\n        node: pve-b\n        state: running\n        create: {clone: 9000}\n        config: {onboot: 1}\n"+
		"      201: {kind: lxc, node: pve-b, config: {cores: 2}}\n")

	// Agent b first: the guests are on pve-a, so b waits for them.
	rep, err := b.Tick(t.Context(), wantB, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, vmid := range []int{101, 201} {
		if g, _ := guestReport(rep, vmid); g.Phase != engine.PhaseMoved || g.Node != "pve-a" {
			t.Errorf("agent b before the migration: %d %+v; want moved (on pve-a)", vmid, g)
		}
	}
	if len(rep.Results) != 0 {
		t.Errorf("agent b acted before the guests arrived: %+v", rep.Results)
	}

	// Agent a migrates both in one tick.
	rep, err = a.Tick(t.Context(), wantA, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Results {
		if r.Err != nil || r.Class != "benign" || r.Action.Op != "migrate" {
			t.Errorf("agent a: %v %s err %v; want benign migrations that succeed", r.Action, r.Class, r.Err)
		}
	}
	// The two run on their own guests' queues, in parallel: PVE gets
	// them in either order.
	got := migrations(h)
	slices.Sort(got)
	if want := []string{
		"101 /nodes/pve-a/qemu/101/migrate target=pve-b online=1 with-local-disks=1",
		"201 /nodes/pve-a/lxc/201/migrate target=pve-b",
	}; !slices.Equal(got, want) {
		t.Fatalf("migrations %q; want %q", got, want)
	}
	for _, vmid := range []int{101, 201} {
		if g, _ := guestReport(rep, vmid); g.Phase != engine.PhaseMoved || g.Node != "pve-b" {
			t.Errorf("agent a after migrating %d: %+v; want moved to pve-b", vmid, g)
		}
	}
	if g, _ := h.srv.Sim.Guest(101); g.Node != "pve-b" || g.Status != "running" {
		t.Errorf("101 after the online migration: %s on %s; want running on pve-b", g.Status, g.Node)
	}

	// Both agents tick on: a does nothing more, b converges them there.
	for i := 0; i < 3; i++ {
		rep, err := a.Tick(t.Context(), wantA, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Results) != 0 {
			t.Fatalf("agent a acted after the migration: %+v", rep.Results)
		}
		for _, vmid := range []int{101, 201} {
			if g, _ := guestReport(rep, vmid); g.Phase != engine.PhaseMoved || g.Node != "pve-b" {
				t.Errorf("agent a: %d %+v; want moved to pve-b", vmid, g)
			}
		}
		rep, err = b.Tick(t.Context(), wantB, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range rep.Guests {
			if g.Phase == engine.PhaseError || g.Phase == engine.PhaseMoved {
				t.Errorf("agent b after the arrival: %+v; want it managed here", g)
			}
		}
	}
	rep, err = b.Tick(t.Context(), wantB, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, vmid := range []int{101, 201} {
		if g, _ := guestReport(rep, vmid); g.Phase != engine.PhaseInSync {
			t.Errorf("agent b: %d %+v; want in sync", vmid, g)
		}
	}
	if g, _ := h.srv.Sim.Guest(101); g.Config["onboot"] != "1" {
		t.Errorf("101 onboot %q; want 1, written by agent b", g.Config["onboot"])
	}
	for _, m := range h.srv.Sim.Mutations() {
		switch {
		case m.Op == "create" || m.Op == "clone":
			t.Errorf("a guest was created: %+v", m)
		case m.Op == "config" && !strings.HasPrefix(m.Path, "/nodes/pve-b/"):
			t.Errorf("config written through %s; only agent b writes, once the guest is on pve-b", m.Path)
		}
	}
	if got := migrations(h); len(got) != 2 {
		t.Errorf("migrations %q; want the two, once each", got)
	}
}

// TestMigrateRunningContainer: a running container migrates only in restart
// mode, and only where desired state allows a restart; otherwise it is an
// error saying so and nothing is sent.
func TestMigrateRunningContainer(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterCT(201, "pve-a", true))
	rep := h.tick(hostDoc(t, "pve", "      201: {kind: lxc, node: pve-b}\n"))
	g, _ := guestReport(rep, 201)
	if g.Phase != engine.PhaseError || !strings.Contains(g.Err, "a running container migrates only by restarting") {
		t.Errorf("without restart: allowed: %+v; want an error saying so", g)
	}
	if m := migrations(h); len(m) != 0 {
		t.Fatalf("migrations %q; want none", m)
	}
	rep = h.tick(hostDoc(t, "pve", "      201: {kind: lxc, node: pve-b, restart: allowed}\n"))
	if got, want := migrations(h), []string{"201 /nodes/pve-a/lxc/201/migrate target=pve-b restart=1"}; !slices.Equal(got, want) {
		t.Fatalf("migrations %q; want %q", got, want)
	}
	if sg, _ := h.srv.Sim.Guest(201); sg.Node != "pve-b" || sg.Status != "running" {
		t.Errorf("201: %s on %s; want running on pve-b", sg.Status, sg.Node)
	}
	if g, _ := guestReport(rep, 201); g.Phase != engine.PhaseMoved || g.Node != "pve-b" {
		t.Errorf("after: %+v; want moved to pve-b", g)
	}
}

// TestMigrateRefused: what PVE would refuse is refused before the POST,
// with PVE's reason and what to do, and not sent on later ticks either.
func TestMigrateRefused(t *testing.T) {
	vm := func(vmid int, extra map[string]string) sim.GuestSpec {
		g := clusterVM(vmid, "pve-a", false)
		for k, v := range extra {
			g.Config[k] = v
		}
		return g
	}
	ct := clusterCT(205, "pve-a", false)
	ct.Config["mp0"] = "/srv/data,mp=/data"
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}},
		vm(101, map[string]string{"hostpci0": "0000:01:00.0"}),
		vm(102, map[string]string{"ide2": "local:iso/debian.iso,media=cdrom"}),
		vm(103, map[string]string{"ide2": "cdrom,media=cdrom"}),
		vm(104, nil), ct)
	want := hostDoc(t, "pve", ""+
		"      101: {kind: qemu, node: pve-b}\n"+
		"      102: {kind: qemu, node: pve-b}\n"+
		"      103: {kind: qemu, node: pve-b}\n"+
		"      104: {kind: qemu, node: pve-z}\n"+
		"      205: {kind: lxc, node: pve-b}\n")
	reasons := map[int]string{
		101: "not migrated to pve-b: the VM uses devices of this node (hostpci0), which PVE refuses to migrate",
		102: "not migrated to pve-b: cdrom local:iso/debian.iso is an image on storage only this node has",
		103: "not migrated to pve-b: a cdrom drive uses this host's physical drive",
		104: "not migrated: pve-z is not another node of this cluster (PVE offers pve-b); fix node: in desired state",
		205: "not migrated to pve-b: mount point mp0 is a directory of this host",
	}
	for i := 0; i < 3; i++ {
		rep := h.tick(want)
		got := map[int]string{}
		for _, r := range rep.Results {
			if r.Err != nil {
				got[r.Action.VMID] = r.Err.Error()
			} else if r.Skip == engine.NotSkipped {
				t.Errorf("tick %d: %v ran", i, r.Action)
			}
		}
		for vmid, reason := range reasons {
			if i == 0 && !strings.Contains(got[vmid], reason) {
				t.Errorf("%d: %q; want %q", vmid, got[vmid], reason)
			}
		}
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("mutations %v; want none", m)
	}
}

// TestMigrateFailedNotRepeated: a migration whose task failed is not sent
// again while the guest's config is unchanged; the refusal carries the
// failure. Once the config changed, it is tried again.
func TestMigrateFailedNotRepeated(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterVM(101, "pve-a", false))
	want := hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b}\n")
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	rep := h.tick(want)
	if len(rep.Results) != 1 || rep.Results[0].Err == nil || !strings.Contains(rep.Results[0].Err.Error(), "sim-fault-injection") {
		t.Fatalf("results %+v; want the failed migration", rep.Results)
	}
	h.srv.Sim.SetFaults(sim.Faults{})
	for i := 0; i < 3; i++ {
		// Past the backoff each failure and refusal starts: what keeps
		// the migration from being sent again is the failure on record.
		h.passBackoff()
		rep = h.tick(want)
		for _, r := range rep.Results {
			if r.Err == nil && r.Skip == engine.NotSkipped {
				t.Fatalf("tick %d: %v ran again", i, r.Action)
			}
		}
	}
	if len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results %+v; want the migration refused", rep.Results)
	}
	if e := rep.Results[0].Err.Error(); !strings.Contains(e, "the last migration of this guest as it is now failed") || !strings.Contains(e, "sim-fault-injection") {
		t.Errorf("refusal %q; want it to say the last migration failed, and why", e)
	}
	// The config changes: the guest is not as it was, so it may go.
	cfg, err := h.client.GuestConfig(t.Context(), "pve-a", guest.QEMU, 101)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.SetConfig(t.Context(), "pve-a", guest.QEMU, 101, pve.ConfigChange{Set: map[string]string{"cores": "3"}, Digest: cfg.Digest}); err != nil {
		t.Fatal(err)
	}
	h.passBackoff()
	h.tick(want)
	if g, _ := h.srv.Sim.Guest(101); g.Node != "pve-b" {
		t.Errorf("101 on %s after its config changed; want migrated to pve-b", g.Node)
	}
	if got := migrations(h); len(got) != 1 {
		t.Errorf("migrations %q; want the one that succeeded (a failed task records none)", got)
	}
}

// TestMigrateLockedGuest: a guest under PVE's migrate lock (someone else's
// migration) gets nothing planned, not a second migration.
func TestMigrateLockedGuest(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterVM(101, "pve-a", false))
	if err := h.srv.Sim.SetLock(101, "migrate"); err != nil {
		t.Fatal(err)
	}
	rep := h.tick(hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b, config: {cores: 4}}\n"))
	if len(rep.Plan.Steps) != 0 || len(rep.Results) != 0 {
		t.Errorf("steps %+v results %+v; want nothing for a guest being migrated", rep.Plan.Steps, rep.Results)
	}
	if g, _ := guestReport(rep, 101); g.Phase != engine.PhaseConverging {
		t.Errorf("status %+v; want converging", g)
	}
}

// TestRequestedMigrationUnderHA: for a guest HA manages, PVE hands the
// migrate request to HA (an hamigrate task that ends at once) and HA's own
// migration follows. The agent asks once: while the guest is still here,
// before HA moved it and while HA moves it, it asks nothing more.
func TestRequestedMigrationUnderHA(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}, TaskDuration: 30 * time.Millisecond}, clusterVM(101, "pve-a", true))
	if err := h.srv.Sim.SetHA(101, "started"); err != nil {
		t.Fatal(err)
	}
	want := hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b, state: running}\n")
	moved := false
	for i := 0; i < 500 && !moved; i++ {
		rep := h.tick(want)
		g, _ := guestReport(rep, 101)
		switch g.Phase {
		case engine.PhaseConverging, engine.PhaseInSync:
		case engine.PhaseMoved:
			moved = g.Node == "pve-b"
		default:
			t.Fatalf("tick %d: %+v; want converging until it moved", i, g)
		}
	}
	if !moved {
		t.Fatal("the guest never reached pve-b")
	}
	var got []string
	for _, m := range h.srv.Sim.Mutations() {
		got = append(got, m.Op+" "+itoa(m.VMID)+" "+m.TokenID)
	}
	want2 := []string{"hamigrate 101 " + h.taskUser, "migrate 101 root@pam"}
	if !slices.Equal(got, want2) {
		t.Errorf("mutations %q; want one request to HA and HA's one migration %q", got, want2)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Status != "running" {
		t.Errorf("101 %s after HA's migration; want running", g.Status)
	}
}

// TestMigratedGuestComesBack: a guest migrated as asked and then moved back
// by hand (same config, so the same digest) is migrated again: the
// earlier migration's key does not block a guest not under HA.
func TestMigratedGuestComesBack(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterVM(101, "pve-a", false))
	want := hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b}\n")
	h.tick(want)
	if g, _ := h.srv.Sim.Guest(101); g.Node != "pve-b" {
		t.Fatalf("101 on %s; want pve-b", g.Node)
	}
	res, err := h.client.Migrate(t.Context(), "pve-b", guest.QEMU, 101, map[string]string{"target": "pve-a"})
	if err != nil {
		t.Fatal(err)
	}
	upid, _ := res.Task()
	if _, err := h.client.WaitTask(t.Context(), upid, pve.WaitOptions{Initial: time.Millisecond, Max: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	rep := h.tick(want)
	if g, _ := h.srv.Sim.Guest(101); g.Node != "pve-b" {
		t.Errorf("101 on %s after it came back; want migrated to pve-b again (results %+v)", g.Node, rep.Results)
	}
	if got := migrations(h); len(got) != 3 {
		t.Errorf("migrations %q; want the agent's two and the one by hand", got)
	}
}

// TestMigrateHeldByTargetHeadroom: the volumes a migration copies are
// judged against the target node's storage; one that would fill it past
// its threshold is held for a signature, and runs once signed.
func TestMigrateHeldByTargetHeadroom(t *testing.T) {
	h := newHarness(t, sim.Options{Nodes: []string{"pve-a", "pve-b"}}, clusterVM(101, "pve-a", false))
	env := signingEnv(t)
	useVerifier(h, env)
	st, err := h.client.StorageStatus(t.Context(), "pve-b", "local-lvm")
	if err != nil {
		t.Fatal(err)
	}
	// 4 GiB of room on pve-b's local-lvm: the 8 GiB disk does not fit.
	h.eng.Headroom = map[string]float64{"local-lvm": float64(st.Used+4*gib) / float64(st.Total)}
	want := hostDoc(t, "pve", "      101: {kind: qemu, node: pve-b}\n")
	rep := h.tick(want)
	if len(rep.Pending) != 1 || len(h.mutations()) != 0 {
		t.Fatalf("pending %+v, mutations %v; want the migration held, nothing run", rep.Pending, h.mutations())
	}
	d := rep.Pending[0]
	if d.Action.Op != "migrate" || !strings.Contains(d.Reason, "would take local-lvm on node pve-b to ") {
		t.Fatalf("pending %s %q; want the migration held with pve-b's figures", d.Action, d.Reason)
	}
	job := signedop.Job{Payload: d.Payload, Signatures: [][]byte{env.Sign(d.Payload, env.Alice.Signer)}}
	rep = h.tick(want, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("signed migration rejected: %+v", rep.Rejected)
	}
	if got := migrations(h); len(got) != 1 {
		t.Fatalf("migrations %q; want one", got)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Node != "pve-b" {
		t.Errorf("101 on %s; want pve-b", g.Node)
	}
	h.tick(want)
	if got := migrations(h); len(got) != 1 {
		t.Errorf("migrations %q after another tick; want still one", got)
	}
}
