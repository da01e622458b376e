package engine_test

import (
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// TestDiskGrowHeldByHeadroomThenSigned: a disk grow that would fill
// local-lvm past its threshold is held (pending_signature, with the
// figures), is not run by an unsigned job the hub could write, and runs
// exactly once when signed; the simulator's storage usage grows with it.
func TestDiskGrowHeldByHeadroomThenSigned(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G"}))
	env := signingEnv(t)
	useVerifier(h, env)
	st, err := h.client.StorageStatus(t.Context(), h.srv.Sim.Node(), "local-lvm")
	if err != nil {
		t.Fatalf("StorageStatus: %v", err)
	}
	// A threshold 16 GiB above today's usage: growing by 32 GiB passes it.
	h.eng.Headroom = map[string]float64{"local-lvm": float64(st.Used+16*gib) / float64(st.Total)}
	want := mustParse(t, fleet(101, guest.QEMU, `scsi0: "local-lvm:vm-101-disk-0,size=64G"`))

	rep := h.tick(want)
	if len(rep.Pending) != 1 || len(h.mutations()) != 0 {
		t.Fatalf("first tick: pending %+v, mutations %v; want 1 pending and none", rep.Pending, h.mutations())
	}
	d := rep.Pending[0]
	if d.Action.Op != action.Resize || !strings.Contains(d.Reason, "would take local-lvm to ") || !strings.Contains(d.Reason, " threshold") {
		t.Fatalf("pending = %s %q; want a resize held with the storage figures", d.Action, d.Reason)
	}
	if !strings.Contains(d.Offer.Reason, "would take local-lvm to ") {
		t.Errorf("payload reason %q does not show the signer the figures", d.Offer.Reason)
	}
	if p := phaseOf(rep, 101); p != engine.PhasePendingSignature {
		t.Errorf("phase = %q; want %q", p, engine.PhasePendingSignature)
	}

	// The hub can write a job for the same grow, but without a signature
	// it is refused: the headroom hold is the agent's, not the hub's.
	rep = h.tick(want, unsignedJob(env, d.Action))
	if len(rep.Rejected) != 1 || len(h.mutations()) != 0 {
		t.Fatalf("unsigned grow: rejected %+v, mutations %v; want refused, none", rep.Rejected, h.mutations())
	}

	job := signedop.Job{Payload: d.Payload, Signatures: [][]byte{env.Sign(d.Payload, env.Alice.Signer)}}
	rep = h.tick(want, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("signed grow rejected: %+v", rep.Rejected)
	}
	if m := h.mutations(); len(m) != 1 || m[0] != "resize 101" {
		t.Fatalf("mutations = %v; want one resize 101", m)
	}
	if n := volumeSize(t, h, "local-lvm:vm-101-disk-0"); n != 64*gib {
		t.Errorf("volume size = %d; want %d", n, 64*gib)
	}
	after, err := h.client.StorageStatus(t.Context(), h.srv.Sim.Node(), "local-lvm")
	if err != nil {
		t.Fatalf("StorageStatus: %v", err)
	}
	if after.Used != st.Used+32*gib || after.Avail != after.Total-after.Used {
		t.Errorf("storage after the grow: used %d avail %d; want used %d, avail total-used", after.Used, after.Avail, st.Used+32*gib)
	}

	rep = h.tick(want, job)
	if m := h.mutations(); len(m) != 1 {
		t.Fatalf("the signed job again: mutations %v; want still one", m)
	}
	if len(rep.Pending) != 0 || phaseOf(rep, 101) != engine.PhaseInSync {
		t.Errorf("after the grow: pending %+v, phase %q; want none, in_sync", rep.Pending, phaseOf(rep, 101))
	}
}

// TestHeadroomCountsTheTicksOwnAllocations: two grows on one storage that
// each fit alone but not together: the first runs, the second is held.
func TestHeadroomCountsTheTicksOwnAllocations(t *testing.T) {
	h := newHarness(t, sim.Options{},
		qemuGuest(101, false, map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=32G"}),
		qemuGuest(102, false, map[string]string{"scsi0": "local-lvm:vm-102-disk-0,size=32G"}))
	st, err := h.client.StorageStatus(t.Context(), h.srv.Sim.Node(), "local-lvm")
	if err != nil {
		t.Fatal(err)
	}
	h.eng.Headroom = map[string]float64{"*": float64(st.Used+40*gib) / float64(st.Total)}
	doc := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n" +
		"      101: {kind: qemu, config: {scsi0: \"local-lvm:vm-101-disk-0,size=64G\"}}\n" +
		"      102: {kind: qemu, config: {scsi0: \"local-lvm:vm-102-disk-0,size=64G\"}}\n"
	rep := h.tick(mustParse(t, doc))
	if m := h.mutations(); len(m) != 1 || m[0] != "resize 101" {
		t.Errorf("mutations = %v; want only resize 101", m)
	}
	if len(rep.Pending) != 1 || rep.Pending[0].Action.VMID != 102 {
		t.Errorf("pending = %+v; want the grow of 102 held", rep.Pending)
	}
}
