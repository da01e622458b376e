package engine_test

import (
	"bytes"
	"slices"
	"testing"

	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// Regression tests of issue 8 §4 and §5: a held payload is bound to the
// state it will meet, and a tick reports each guest as its actions left it.

// A change mixing benign and destructive keys runs its benign part first
// and offers the destructive part's payload against the digest that write
// produced: the first payload offered is the one accepted, and it is never
// rewritten in between.
func TestMixedChangePayloadBoundToResultingDigest(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{"scsi1": "local-lvm:vm-101-disk-1,size=10G"}))
	env := signingEnv(t)
	useVerifier(h, env)
	newVol := "local-lvm:vm-101-disk-7,size=10G"
	want := mustParse(t, fleet(101, guest.QEMU, `cores: 4, scsi1: "`+newVol+`"`))

	rep := h.tick(want)
	if m := h.mutations(); !slices.Equal(m, []string{"config 101"}) {
		t.Fatalf("first tick mutations = %v; want only the benign config 101", m)
	}
	g, _ := h.srv.Sim.Guest(101)
	if g.Config["cores"] != "4" || g.Config["scsi1"] == newVol {
		t.Fatalf("after the first tick cores=%s scsi1=%s; want cores 4 and scsi1 untouched", g.Config["cores"], g.Config["scsi1"])
	}
	if len(rep.Pending) != 1 {
		t.Fatalf("first tick: %d pending; want 1", len(rep.Pending))
	}
	first := rep.Pending[0].Payload
	p, err := signedop.ParsePayload(first)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != g.Digest {
		t.Errorf("first payload bound to digest %s; want %s, the digest the benign write left", p.Digest, g.Digest)
	}
	if _, ok := p.Params["cores"]; ok || p.Params["scsi1"] != newVol {
		t.Errorf("first payload params = %v; want only scsi1=%s", p.Params, newVol)
	}
	if len(rep.Guests) != 1 || rep.Guests[0].Phase != engine.PhasePendingSignature || !rep.Guests[0].Changed {
		t.Errorf("guests = %+v; want 101 pending_signature and changed", rep.Guests)
	}

	// The next tick offers the very same payload: one thing to sign.
	rep = h.tick(want)
	if len(rep.Pending) != 1 || !bytes.Equal(rep.Pending[0].Payload, first) {
		t.Fatalf("second tick pending = %d, same payload %v; want the first payload again", len(rep.Pending), len(rep.Pending) == 1 && bytes.Equal(rep.Pending[0].Payload, first))
	}

	job := signedop.Job{Name: "job.json", Payload: first, Signatures: [][]byte{env.Sign(first, env.Alice.Signer)}}
	rep = h.tick(want, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("the first payload, signed, was rejected: %s", rep.Rejected[0].Reason)
	}
	if len(rep.Jobs) != 1 || rep.Jobs[0].Status != engine.JobRan || rep.Jobs[0].Name != "job.json" {
		t.Fatalf("jobs = %+v; want job.json ran", rep.Jobs)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Config["scsi1"] != newVol {
		t.Fatalf("scsi1 = %s; want %s", g.Config["scsi1"], newVol)
	}
	// Reported as the signed job left it: in sync, nothing more pending.
	if len(rep.Pending) != 0 || len(rep.Guests) != 1 || rep.Guests[0].Phase != engine.PhaseInSync {
		t.Errorf("after the signed run: pending %d, guests %+v; want none pending and 101 in_sync", len(rep.Pending), rep.Guests)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 101", "config 101"}) {
		t.Errorf("mutations = %v; want the benign write and the signed one", m)
	}

	// Presented again, the job is reported as completed, never run.
	rep = h.tick(want, job)
	if len(rep.Jobs) != 1 || rep.Jobs[0].Status != engine.JobCompleted || len(h.mutations()) != 2 {
		t.Errorf("job presented again: jobs %+v, mutations %v; want completed and no new mutation", rep.Jobs, h.mutations())
	}
}

// A tick reports each guest's state after its actions ran: a guest it
// started and reconfigured is in sync, not converging.
func TestTickReportsStateAfterActions(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
	rep := h.tick(mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101: {state: running, config: {cores: 2}}
      102: {config: {cores: 1}}
`))
	if len(rep.Plan.Steps) != 2 {
		t.Fatalf("planned %d steps; want 2 (config and start of 101)", len(rep.Plan.Steps))
	}
	got := map[int]engine.GuestReport{}
	for _, g := range rep.Guests {
		got[g.VMID] = g
	}
	if g := got[101]; g.Phase != engine.PhaseInSync || !g.Changed || len(g.Drift) != 0 {
		t.Errorf("guest 101 = %+v; want in_sync, changed, no drift", g)
	}
	if g := got[102]; g.Phase != engine.PhaseInSync || g.Changed {
		t.Errorf("guest 102 = %+v; want in_sync, unchanged", g)
	}
	s := rep.Summary()
	if s.Managed != 2 || s.Phases[engine.PhaseInSync] != 2 || s.Changed != 1 || s.PendingSignature != 0 || s.Failed != 0 {
		t.Errorf("summary = %+v; want 2 managed, 2 in sync, 1 changed", s)
	}
}
