package engine_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// Regression tests for holes found by red-teaming the gate: each once
// demonstrated a path by which guest data was lost without an operator's
// signature for exactly that action on exactly that state, and each now
// asserts the safe outcome. The fixes: benign jobs must name the current
// digest of an existing guest (gate.staleJob); actions whose PVE call takes
// no digest re-read the config first (engine.recheckDigest); an LXC create
// is benign only with unprivileged=1; a failed provision vouches only for
// remains still in the exact state the agent saw right after the failure;
// recovery adopts only tasks of the agent's own token; signed jobs are
// keyed by their payload bytes, not by a nonce anyone can copy.

// rtAfterRead wraps the PVE reader: right after the engine reads guest
// vmid's config (its observation), fn changes the guest in PVE. This is
// "the guest changed between observation and action", made deterministic.
type rtAfterRead struct {
	engine.Reader
	vmid int
	once *sync.Once
	fn   func()
}

func (r rtAfterRead) ConfigWithPending(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.PendingConfig, error) {
	cfg, err := r.Reader.ConfigWithPending(ctx, node, kind, vmid)
	if vmid == r.vmid {
		r.once.Do(r.fn)
	}
	return cfg, err
}

func rtAfter(h *harness, vmid int, fn func()) rtAfterRead {
	return rtAfterRead{Reader: h.client, vmid: vmid, once: new(sync.Once), fn: fn}
}

// rtAttachPrecious attaches a fresh volume as key on vmid through PVE (as a
// human admin would) and returns the volume id PVE chose.
func rtAttachPrecious(t *testing.T, h *harness, kind guest.Kind, vmid int, key string) string {
	t.Helper()
	if _, err := h.client.SetConfig(context.Background(), h.srv.Sim.Node(), kind, vmid,
		pve.ConfigChange{Set: map[string]string{key: "local-lvm:10"}}); err != nil {
		t.Fatalf("attaching %s to %d: %v", key, vmid, err)
	}
	g, _ := h.srv.Sim.Guest(vmid)
	vol, _, _ := strings.Cut(g.Config[key], ",")
	return vol
}

// HOLE 1: an unsigned "benign" config job may carry an empty digest, so the
// write reaches PVE without PVE's concurrent-change check. The classifier
// judged scsi1 as an empty slot (new allocation: benign); by the time the
// write lands, scsi1 holds a disk, which PVE replaces (detaching it to
// unusedN). The reconcile path refuses to write without a digest
// (plan: "refusing to write without PVE's concurrent-change check"); the
// signed-jobs path does not.
func TestRedteamHoleBenignJobWithoutDigestTOCTOU(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	var precious string
	h.eng.PVE = rtAfter(h, 101, func() { precious = rtAttachPrecious(t, h, guest.QEMU, 101, "scsi1") })
	env.Action = action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"scsi1": "local-lvm:4"}}
	job := env.Job(func(p *signedop.Payload) { p.Digest = "" })
	job.Signatures = nil

	h.tick(nil, job)

	g, _ := h.srv.Sim.Guest(101)
	if !strings.HasPrefix(g.Config["scsi1"], precious+",") && g.Config["scsi1"] != precious {
		t.Fatalf("scsi1 = %q; want it to still hold %s (the unsigned write replaced a disk attached after observation; config now %v)",
			g.Config["scsi1"], precious, g.Config)
	}
}

// HOLE 1b: the same with a guest that does not exist when observed: with
// no actual config every slot looks empty, so a write of scsi0 is a
// "new allocation"; the guest appears before the write, without a digest
// the write replaces its scsi0.
func TestRedteamHoleBenignJobForAbsentGuestTOCTOU(t *testing.T) {
	h := newHarness(t, sim.Options{})
	env := signingEnv(t)
	useVerifier(h, env)
	// The guest list is read before configs; make 170 appear right after
	// the lists are read by hiding it from the first listing.
	if err := h.srv.Sim.AddGuest(qemuGuest(170, false, nil)); err != nil {
		t.Fatal(err)
	}
	h.eng.PVE = &rtHideOnce{Reader: h.client, vmid: 170}
	env.Action = action.Action{Op: action.SetConfig, VMID: 170, Kind: guest.QEMU, Params: map[string]string{"scsi0": "local-lvm:4"}}
	job := env.Job(func(p *signedop.Payload) { p.Digest = "" })
	job.Signatures = nil

	h.tick(nil, job)

	g, _ := h.srv.Sim.Guest(170)
	if !strings.HasPrefix(g.Config["scsi0"], "local-lvm:vm-170-disk-0,") {
		t.Fatalf("scsi0 = %q, unused0 = %q; want vm-170-disk-0 still attached (an unsigned write replaced it)", g.Config["scsi0"], g.Config["unused0"])
	}
}

// rtHideOnce hides vmid from the first QEMU guest listing only.
type rtHideOnce struct {
	engine.Reader
	vmid int
	mu   sync.Mutex
	done bool
}

func (r *rtHideOnce) Guests(ctx context.Context, node string, kind guest.Kind) ([]pve.GuestSummary, error) {
	list, err := r.Reader.Guests(ctx, node, kind)
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind != guest.QEMU || r.done {
		return list, err
	}
	r.done = true
	out := list[:0:0]
	for _, g := range list {
		if g.VMID != r.vmid {
			out = append(out, g)
		}
	}
	return out, err
}

// HOLE 2: a validly signed destroy is verified against the digest read at
// observation, but PVE's destroy takes no digest and the engine does not
// re-check before executing: a disk attached to the guest after the
// operator signed (and after the agent observed) is destroyed with it. The
// signature covered a state that no longer exists when the action runs.
func TestRedteamHoleSignedDestroyAfterGuestChanged(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(105, false, nil))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(105)
	env.Action = action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	useVerifier(h, env)
	h.eng.PVE = rtAfter(h, 105, func() { rtAttachPrecious(t, h, guest.QEMU, 105, "scsi1") })

	h.tick(nil, env.Job(nil, env.Alice.Signer))

	if _, ok := h.srv.Sim.Guest(105); !ok {
		t.Fatalf("guest 105 was destroyed although its config changed after the destroy was signed (mutations %v)", h.mutations())
	}
}

// HOLE 3: an unsigned LXC create without "unprivileged" is benign to the
// classifier, but pve-container's default is unprivileged=0: the hub can
// create a privileged container (root in it is root on the host, which can
// destroy every guest's data). The classifier already treats an explicit
// unprivileged=0 as needing a signature; the default must be judged the
// same.
func TestRedteamHoleUnsignedPrivilegedContainerByDefault(t *testing.T) {
	// Templates: the simulator has the ostemplate, so a create that got
	// through would really run (without it PVE refuses every create and
	// this test could not fail).
	h := newHarness(t, sim.Options{Templates: true})
	env := signingEnv(t)
	useVerifier(h, env)
	const tmpl = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
	env.Action = action.Action{Op: action.Create, VMID: 250, Kind: guest.LXC,
		Params: map[string]string{"ostemplate": tmpl, "rootfs": "local-lvm:8"}}
	job := env.Job(func(p *signedop.Payload) { p.Digest = "" })
	job.Signatures = nil

	rep := h.tick(nil, job)

	for _, m := range h.srv.Sim.Mutations() {
		if m.Op == "create" && m.Params["unprivileged"] != "1" {
			t.Fatalf("unsigned create of a privileged container reached PVE: %v (rejected %+v)", m.Params, rep.Rejected)
		}
	}
	if _, ok := h.srv.Sim.Guest(250); ok {
		t.Fatalf("guest 250 exists after an unsigned privileged create; want it refused")
	}

	// Control: the same create, unprivileged, is benign and runs, so the
	// refusal above is the gate's and not the simulator's.
	env.Action = action.Action{Op: action.Create, VMID: 251, Kind: guest.LXC,
		Params: map[string]string{"ostemplate": tmpl, "rootfs": "local-lvm:8", "unprivileged": "1"}}
	ok := env.Job(func(p *signedop.Payload) { p.Digest = "" })
	ok.Signatures = nil
	h.tick(nil, ok)
	if _, exists := h.srv.Sim.Guest(251); !exists {
		t.Fatalf("unprivileged create of 251 did not run (mutations %v); the harness cannot tell a refusal from a failure", h.srv.Sim.Mutations())
	}
}

// HOLE 4: provenance is by vmid alone. After the agent's own create of 160
// failed (PVE cleaned up, nothing is left), another user creates a guest
// with the same vmid and puts it to use. Within ProvisionCleanupWindow the
// hub can destroy that guest unsigned: the journal proves the agent's
// create failed, not that the guest now at 160 is what that create left.
func TestRedteamHoleProvenanceForForeignGuestAtSameVMID(t *testing.T) {
	h := newHarness(t, sim.Options{})
	env := signingEnv(t)
	useVerifier(h, env)
	create := unsignedJob(env, action.Action{Op: action.Create, VMID: 160, Kind: guest.QEMU, Digest: "", Params: map[string]string{"name": "scratch", "memory": "512", "scsi0": "local-lvm:8"}})
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	if rep := h.tick(nil, create); len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results = %+v; want the create task to fail", rep.Results)
	}
	h.srv.Sim.SetFaults(sim.Faults{})
	if _, ok := h.srv.Sim.Guest(160); ok {
		t.Fatalf("the failed create left guest 160 behind; this test needs a clean failure")
	}
	// Someone else's production database takes the free vmid.
	prod := qemuGuest(160, false, // stopped (a running guest PVE would not destroy; a benign stop by the agent would end the provenance)
		map[string]string{"scsi1": "local-lvm:vm-160-disk-7,size=500G"})
	prod.Name = "prod-db"
	if err := h.srv.Sim.AddGuest(prod); err != nil {
		t.Fatal(err)
	}
	g, _ := h.srv.Sim.Guest(160)
	destroy := unsignedJob(env, action.Action{Op: action.Destroy, VMID: 160, Kind: guest.QEMU, Digest: g.Digest, Params: map[string]string{"purge": "1"}})
	h.passBackoff() // the failed create's backoff must not be what spares the guest
	h.tick(nil, destroy)
	if _, ok := h.srv.Sim.Guest(160); !ok {
		t.Fatalf("guest 160 (prod-db, never created by the agent) was destroyed without a signature: %v", h.mutations())
	}
}

// HOLE 5: recovery adopts another user's task. The agent journaled the
// begin of a create of 180 and crashed before sending it. Meanwhile another
// PVE user (not the agent's token) tried to create 180, that task failed,
// and they then created 180 for real. At start-up, Recover looks for a
// qmcreate task of 180 from any user (Source "all"; the UPID's user is not
// compared with the agent's token) and journals that foreign failed task as
// the agent's own failed create: the agent now "proves" a failed provision
// and destroys the other user's guest without a signature.
func TestRedteamHoleRecoveryAdoptsForeignTask(t *testing.T) {
	h := newHarness(t, sim.Options{})
	env := signingEnv(t)
	create := action.Action{Op: action.Create, VMID: 180, Kind: guest.QEMU,
		Params: map[string]string{"name": "scratch", "memory": "512", "scsi0": "local-lvm:8"}}
	if err := h.j.Begin(journal.Op{ID: "0123456789abcdef0123456789abcdef", Source: "signed", Host: "pve",
		Action: create, IdemKey: "signed:rt-crash"}); err != nil {
		t.Fatal(err)
	}
	// Another user, with their own token.
	const otherID, otherSecret = "ops@pve!admin", "5f1c6a2e-8b4d-4c1e-9a7f-2d3e4f5a6b7c"
	all := []string{"VM.Allocate", "VM.Audit", "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network",
		"VM.Config.Options", "VM.Config.HWType", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.PowerMgmt",
		"Datastore.AllocateSpace", "Datastore.Audit", "Sys.Audit", "Sys.Modify", "SDN.Use", "Pool.Allocate"}
	h.srv.Sim.AddToken(otherID, otherSecret, map[string][]string{"/": all})
	tok, err := pve.ParseToken(otherID + "=" + otherSecret)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pve.New(pve.Options{URL: h.srv.URL, Token: tok, HTTPClient: h.srv.Client})
	if err != nil {
		t.Fatal(err)
	}
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	res, err := other.Create(t.Context(), h.srv.Sim.Node(), guest.QEMU, 180, map[string]string{"name": "prod-db", "memory": "4096", "scsi0": "local-lvm:8"})
	if err != nil {
		t.Fatalf("other user's create: %v", err)
	}
	if u, ok := res.Task(); ok {
		if _, err := other.WaitTask(t.Context(), u, pve.WaitOptions{Initial: time.Millisecond, Max: 10 * time.Millisecond}); err == nil {
			t.Fatalf("other user's create task succeeded; want it to fail")
		}
	}
	h.srv.Sim.SetFaults(sim.Faults{})
	prod := qemuGuest(180, false, nil)
	prod.Name = "prod-db"
	if err := h.srv.Sim.AddGuest(prod); err != nil {
		t.Fatal(err)
	}

	h.open() // agent restart: Recover resolves the in-flight create
	useVerifier(h, env)
	if p := h.j.Provenance(180); p.CreateFailed {
		t.Errorf("provenance of 180 after recovery = %+v; the failed task was another user's", p)
	}
	g, _ := h.srv.Sim.Guest(180)
	destroy := unsignedJob(env, action.Action{Op: action.Destroy, VMID: 180, Kind: guest.QEMU, Digest: g.Digest, Params: map[string]string{"purge": "1"}})
	h.tick(nil, destroy)
	if _, ok := h.srv.Sim.Guest(180); !ok {
		t.Fatalf("guest 180 (another user's) was destroyed without a signature: %v", h.mutations())
	}
}

// An unsigned benign job that copies the nonce of an operator's pending
// payload must not make the agent skip the operator's real signed job.
func TestRedteamNonceSquattingDoesNotBlockSignedJob(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {config: {scsi0: "local-lvm:vm-101-disk-9,size=32G"}}
`)
	rep := h.tick(want)
	if len(rep.Pending) != 1 {
		t.Fatalf("pending = %d; want 1", len(rep.Pending))
	}
	p, err := signedop.ParsePayload(rep.Pending[0].Payload)
	if err != nil {
		t.Fatal(err)
	}
	squat := env.Job(func(q *signedop.Payload) {
		q.Op, q.VMID, q.Kind, q.Params, q.Nonce = action.Start, 101, guest.QEMU, map[string]string{}, p.Nonce
	})
	squat.Signatures = nil
	h.tick(want, squat)
	real := signedop.Job{Payload: rep.Pending[0].Payload, Signatures: [][]byte{env.Sign(rep.Pending[0].Payload, env.Alice.Signer)}}
	h.tick(want, real)
	if g, _ := h.srv.Sim.Guest(101); g.Config["scsi0"] != "local-lvm:vm-101-disk-9,size=32G" {
		t.Fatalf("scsi0 = %q; the operator's signed job did not run after a job squatted its nonce", g.Config["scsi0"])
	}
}
