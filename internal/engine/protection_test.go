package engine_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
)

// TestProtectedGuestDestroy: PVE refuses to destroy a guest with
// protection: 1. A signed destroy whose payload does not say the guest is
// protected is refused before anything reaches PVE; one that says so
// (protected=1) clears the flag, bound to the signed digest, then
// destroys the guest, once.
func TestProtectedGuestDestroy(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(105, false, map[string]string{"protection": "1"}))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(105)
	env.Current = g.Digest
	useVerifier(h, env)

	env.Action = action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
	if len(rep.Rejected) != 1 || rep.Rejected[0].Code != signedop.CodeWrongParams || !strings.Contains(rep.Rejected[0].Reason, "is protected") {
		t.Fatalf("destroy not saying protected: rejected %+v; want one wrong_params naming the protection", rep.Rejected)
	}
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("refused destroy mutated: %v", m)
	}

	env.Action.Params = map[string]string{"purge": "1", classify.ProtectedParam: "1"}
	job := env.Job(nil, env.Alice.Signer)
	rep = h.tick(nil, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("signed protected destroy rejected: %+v", rep.Rejected)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 105", "destroy 105"}) {
		t.Fatalf("mutations = %v; want [config 105 destroy 105]", m)
	}
	if _, ok := h.srv.Sim.Guest(105); ok {
		t.Fatalf("guest 105 still exists")
	}
	h.tick(nil, job)
	if m := h.mutations(); len(m) != 2 {
		t.Fatalf("the job again: mutations %v; want still two", m)
	}
}

// TestProtectedParamOnUnprotectedGuestRefused: a payload claiming a
// protection the guest does not have is refused too (the signer was told
// something untrue).
func TestProtectedParamOnUnprotectedGuestRefused(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(105, false, nil))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(105)
	env.Current = g.Digest
	useVerifier(h, env)
	env.Action = action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: map[string]string{classify.ProtectedParam: "1"}, Digest: g.Digest}
	rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
	if len(rep.Rejected) != 1 || rep.Rejected[0].Code != signedop.CodeWrongParams {
		t.Fatalf("rejected %+v; want one wrong_params", rep.Rejected)
	}
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("mutated: %v", m)
	}
}

// TestProtectedDestroyFailsFlagRestored: when PVE refuses the destroy
// after the flag was cleared (a running VM), the flag is put back and the
// guest's config digest is the one the destroy was signed on.
func TestProtectedDestroyFailsFlagRestored(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(107, true, map[string]string{"protection": "1"}))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(107)
	env.Current = g.Digest
	useVerifier(h, env)
	env.Action = action.Action{Op: action.Destroy, VMID: 107, Kind: guest.QEMU, Params: map[string]string{classify.ProtectedParam: "1"}, Digest: g.Digest}
	rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
	if len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results %+v; want the destroy of a running VM failed", rep.Results)
	}
	after, ok := h.srv.Sim.Guest(107)
	if !ok || after.Config["protection"] != "1" || after.Digest != g.Digest {
		t.Fatalf("guest 107 after the failed destroy: exists %v protection %q digest %s; want protected again with digest %s",
			ok, after.Config["protection"], after.Digest, g.Digest)
	}
}

// TestProtectedDestroyInterruptedResumes: the agent dies after it
// cleared the flag and before the destroy request left (what a crash
// there leaves: the op's begin durable, the guest alive and unprotected).
// Recovery puts the flag back, which restores the signed digest, and the
// same signed job then runs: the guest is destroyed exactly once, and
// never left unprotected and alive.
func TestProtectedDestroyInterruptedResumes(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(108, false, map[string]string{"protection": "1"}))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(108)
	env.Current = g.Digest
	env.Action = action.Action{Op: action.Destroy, VMID: 108, Kind: guest.QEMU, Params: map[string]string{classify.ProtectedParam: "1"}, Digest: g.Digest}
	job := env.Job(nil, env.Alice.Signer)
	p, err := signedop.ParsePayload(job.Payload)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := h.j.Begin(journal.Op{ID: "0123456789abcdef0123456789abcdef", Time: began, Source: string(engine.SourceSigned), Host: "pve",
		Action: env.Action, IdemKey: "signed:" + p.Nonce, Nonce: p.Nonce, NonceExpires: p.Expires}); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 108, pve.ConfigChange{Delete: []string{"protection"}, Digest: g.Digest}); err != nil {
		t.Fatalf("clearing the flag: %v", err)
	}

	// Restarted within NotRunGrace: the op stays in flight, the guest
	// untouched (still unprotected: nothing proves yet that the destroy
	// never reached PVE).
	h.open()
	useVerifier(h, env)
	if len(h.j.InFlight()) != 1 {
		t.Fatalf("in flight after an early restart: %d; want 1", len(h.j.InFlight()))
	}
	// Restarted after NotRunGrace: recovery proves the destroy never ran
	// and puts the flag back.
	h.now = func() time.Time { return began.Add(time.Minute) }
	h.open()
	useVerifier(h, env)
	cur, ok := h.srv.Sim.Guest(108)
	if !ok || cur.Config["protection"] != "1" || cur.Digest != g.Digest {
		t.Fatalf("after recovery: exists %v protection %q digest %s; want protected again, digest %s", ok, cur.Config["protection"], cur.Digest, g.Digest)
	}
	rep := h.tick(nil, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("the signed job after recovery was rejected: %+v", rep.Rejected)
	}
	if _, ok := h.srv.Sim.Guest(108); ok {
		t.Fatalf("guest 108 still exists after the signed job ran again")
	}
	if m := h.mutations(); !slices.Equal(m, []string{"config 108", "config 108", "config 108", "destroy 108"}) {
		t.Errorf("mutations = %v; want the test's clear, recovery's restore, the job's clear and one destroy", m)
	}
}
