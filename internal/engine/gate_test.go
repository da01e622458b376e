package engine_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/sim"
)

// Guests of the hostile-state scenarios: qemu 101 with EFI and TPM state
// disks and an unused volume, qemu 102 whose disk is "another guest's
// disk", lxc 201 with a mount point.
func hostileGuests() []sim.GuestSpec {
	return []sim.GuestSpec{
		qemuGuest(101, false, map[string]string{
			"efidisk0":  "local-lvm:vm-101-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M",
			"tpmstate0": "local-lvm:vm-101-disk-2,size=4M,version=v2.0",
			"unused0":   "local-lvm:vm-101-disk-3",
		}),
		qemuGuest(102, false, nil),
		lxcGuest(201, false, map[string]string{"mp0": "local-lvm:vm-201-disk-1,mp=/data,size=8G"}),
	}
}

func fleet(vmid int, kind guest.Kind, config string) string {
	return fmt.Sprintf("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n      %d:\n        kind: %s\n        config: {%s}\n", vmid, kind, config)
}

// TestHostileDesiredState holds desired documents that try to destroy data
// through every config path a desired document can express. Each is either
// refused by desired.Parse, naming the offending path, or planned, gated
// and reported as pending_signature, with nothing destructive reaching the
// simulator: only the benign keys a document mixes in may be written.
func TestHostileDesiredState(t *testing.T) {
	tests := []struct {
		name   string
		vmid   int
		kind   guest.Kind
		config string
		// parseErr, when set, is the path desired.Parse must name.
		parseErr string
		// hostile are the keys that must never reach PVE.
		hostile []string
		// benign are the keys (with values) that may be written, alone.
		benign map[string]string
	}{
		{name: "replace scsi0 volume", vmid: 101, kind: guest.QEMU, config: `scsi0: "local-lvm:vm-101-disk-9,size=32G"`, hostile: []string{"scsi0"}},
		{name: "replace scsi0 with another guest's disk", vmid: 101, kind: guest.QEMU, config: `scsi0: "local-lvm:vm-102-disk-0,size=32G"`, hostile: []string{"scsi0"}},
		{name: "shrink scsi0", vmid: 101, kind: guest.QEMU, config: `scsi0: "local-lvm:vm-101-disk-0,size=16G"`, hostile: []string{"scsi0"}},
		{name: "attach another guest's disk as unused1", vmid: 101, kind: guest.QEMU, config: `unused1: "local-lvm:vm-102-disk-0"`, hostile: []string{"unused1"}},
		{name: "move scsi0's volume to unused1", vmid: 101, kind: guest.QEMU, config: `unused1: "local-lvm:vm-101-disk-0"`, hostile: []string{"unused1"}},
		{name: "replace unused0", vmid: 101, kind: guest.QEMU, config: `unused0: "local-lvm:vm-102-disk-0"`, hostile: []string{"unused0"}},
		{name: "attach another guest's disk as sata1", vmid: 101, kind: guest.QEMU, config: `sata1: "local-lvm:vm-102-disk-0,size=32G"`, hostile: []string{"sata1"}},
		{name: "attach a host block device", vmid: 101, kind: guest.QEMU, config: `virtio1: "/dev/sdb"`, hostile: []string{"virtio1"}},
		{name: "replace efidisk0", vmid: 101, kind: guest.QEMU, config: `efidisk0: "local-lvm:vm-101-disk-9,efitype=4m,size=4M"`, hostile: []string{"efidisk0"}},
		{name: "replace tpmstate0", vmid: 101, kind: guest.QEMU, config: `tpmstate0: "local-lvm:vm-102-disk-0,size=4M,version=v2.0"`, hostile: []string{"tpmstate0"}},
		{name: "shrink lxc rootfs", vmid: 201, kind: guest.LXC, config: `rootfs: "local-lvm:vm-201-disk-0,size=4G"`, hostile: []string{"rootfs"}},
		{name: "replace lxc rootfs", vmid: 201, kind: guest.LXC, config: `rootfs: "local-lvm:vm-102-disk-0,size=8G"`, hostile: []string{"rootfs"}},
		{name: "replace mp0", vmid: 201, kind: guest.LXC, config: `mp0: "local-lvm:vm-102-disk-0,mp=/data,size=8G"`, hostile: []string{"mp0"}},
		{name: "bind-mount a host path as mp1", vmid: 201, kind: guest.LXC, config: `mp1: "/var/lib/vz,mp=/host"`, hostile: []string{"mp1"}},
		// A key PVE's schema does not know is refused when the document is
		// parsed: it never becomes a payload that PVE rejects after the
		// nonce is spent.
		{name: "unknown key foo", vmid: 101, kind: guest.QEMU, config: `foo: "bar"`, parseErr: "hosts.pve.guests.101.config.foo: unknown config key for a qemu guest"},
		{name: "lxc key on a qemu guest", vmid: 101, kind: guest.QEMU, config: `mp0: "local-lvm:vm-102-disk-0,mp=/data"`, parseErr: "hosts.pve.guests.101.config.mp0: unknown config key for a qemu guest"},
		{name: "args", vmid: 101, kind: guest.QEMU, config: `args: "-drive file=/dev/sda"`, hostile: []string{"args"}},
		{name: "hookscript", vmid: 101, kind: guest.QEMU, config: `hookscript: "local:snippets/wipe.sh"`, hostile: []string{"hookscript"}},
		{name: "lxc hookscript", vmid: 201, kind: guest.LXC, config: `hookscript: "local:snippets/wipe.sh"`, hostile: []string{"hookscript"}},
		{
			name: "cores mixed with replaced scsi0", vmid: 101, kind: guest.QEMU,
			config:  `cores: 2, scsi0: "local-lvm:vm-101-disk-9,size=32G"`,
			hostile: []string{"scsi0"}, benign: map[string]string{"cores": "2"},
		},
		{
			name: "memory mixed with shrunk rootfs and hookscript", vmid: 201, kind: guest.LXC,
			config:  `memory: 1024, rootfs: "local-lvm:vm-201-disk-0,size=1G", hookscript: "local:snippets/wipe.sh"`,
			hostile: []string{"rootfs", "hookscript"}, benign: map[string]string{"memory": "1024"},
		},
		{name: "drop mp0 with an empty value", vmid: 201, kind: guest.LXC, config: `mp0: ""`, parseErr: "hosts.pve.guests.201.config.mp0"},
		{name: "drop scsi0 with null", vmid: 101, kind: guest.QEMU, config: `scsi0: null`, parseErr: "hosts.pve.guests.101.config.scsi0"},
		{name: "delete unused0", vmid: 101, kind: guest.QEMU, config: `delete: unused0`, parseErr: "hosts.pve.guests.101.config.delete"},
		{name: "delete hidden in mixed case", vmid: 101, kind: guest.QEMU, config: `Delete: scsi0`, parseErr: "hosts.pve.guests.101.config.Delete"},
		{name: "digest", vmid: 101, kind: guest.QEMU, config: `digest: "0000000000000000000000000000000000000000"`, parseErr: "hosts.pve.guests.101.config.digest"},
		{name: "force", vmid: 101, kind: guest.QEMU, config: `force: 1`, parseErr: "hosts.pve.guests.101.config.force"},
		{name: "skiplock", vmid: 101, kind: guest.QEMU, config: `skiplock: 1`, parseErr: "hosts.pve.guests.101.config.skiplock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := fleet(tt.vmid, tt.kind, tt.config)
			d, err := desired.Parse([]byte(doc))
			if tt.parseErr != "" {
				if err == nil {
					t.Fatalf("desired.Parse accepted the document; want an error naming %s", tt.parseErr)
				}
				var fe *desired.FieldError
				if !errors.As(err, &fe) && !strings.Contains(err.Error(), tt.parseErr) {
					t.Fatalf("desired.Parse error = %v; want a FieldError naming %s", err, tt.parseErr)
				}
				if !strings.Contains(err.Error(), tt.parseErr) {
					t.Errorf("desired.Parse error = %q; want it to name %s", err, tt.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("desired.Parse: %v (the case expects the document to be accepted and gated)", err)
			}
			h := newHarness(t, sim.Options{}, hostileGuests()...)
			rep := h.tick(d.ForHost("pve"))

			if len(rep.Pending) == 0 {
				t.Fatalf("no pending decision; plan:\n%s", rep.Plan.Render())
			}
			for _, p := range rep.Pending {
				if p.Outcome != gate.PendingSignature || len(p.Payload) == 0 || p.Permit.Valid() {
					t.Errorf("pending %v: outcome %q payload %d bytes permit %v; want pending_signature with a payload and no permit",
						p.Action, p.Outcome, len(p.Payload), p.Permit.Valid())
				}
				pl, err := signedop.ParsePayload(p.Payload)
				if err != nil {
					t.Errorf("pending payload does not parse: %v", err)
					continue
				}
				if pl.Host != "pve" || pl.VMID != tt.vmid {
					t.Errorf("payload host %q vmid %d; want pve %d", pl.Host, pl.VMID, tt.vmid)
				}
				for k := range tt.benign {
					if _, ok := pl.Params[k]; ok {
						t.Errorf("pending payload holds benign key %s; want only the destructive keys", k)
					}
				}
			}
			// Every hostile key is held in some pending payload.
			for _, k := range tt.hostile {
				held := false
				for _, p := range rep.Pending {
					if pl, err := signedop.ParsePayload(p.Payload); err == nil {
						_, held1 := pl.Params[k]
						held = held || held1 || pl.Params["disk"] == k
					}
				}
				if !held {
					t.Errorf("hostile key %s is in no pending payload", k)
				}
			}
			var phase string
			for _, g := range rep.Guests {
				if g.VMID == tt.vmid {
					phase = g.Phase
				}
			}
			if phase != engine.PhasePendingSignature {
				t.Errorf("guest %d phase = %q; want %q", tt.vmid, phase, engine.PhasePendingSignature)
			}

			muts := h.srv.Sim.Mutations()
			for _, m := range muts {
				for _, k := range tt.hostile {
					if _, ok := m.Params[k]; ok || strings.Contains(m.Params["delete"], k) || m.Params["disk"] == k {
						t.Errorf("mutation %s %d %s touches hostile key %s: %v", m.Op, m.VMID, m.Path, k, m.Params)
					}
				}
			}
			if tt.benign == nil {
				if len(muts) != 0 {
					t.Fatalf("mutations = %v; want none", h.mutations())
				}
			} else {
				if len(muts) != 1 || muts[0].Op != "config" || muts[0].VMID != tt.vmid {
					t.Fatalf("mutations = %v; want exactly [config %d]", h.mutations(), tt.vmid)
				}
				got := maps.Clone(muts[0].Params)
				delete(got, "digest")
				if !maps.Equal(got, tt.benign) {
					t.Errorf("benign write params = %v; want exactly %v", got, tt.benign)
				}
			}
			for _, id := range []int{101, 102, 201} {
				if _, ok := h.srv.Sim.Guest(id); !ok {
					t.Errorf("guest %d is gone", id)
				}
			}
		})
	}
}

// signingEnv returns a trust configuration for host "pve" whose verifier
// runs on the real clock (the gate stamps pending payloads with time.Now),
// with its nonce store in a directory of its own.
func signingEnv(t *testing.T) *signedoptest.Env {
	env := signedoptest.NewEnv(t)
	env.Host = "pve"
	env.Now = time.Now()
	return env
}

func useVerifier(h *harness, env *signedoptest.Env) {
	v := env.Verifier()
	v.Now = time.Now
	h.eng.Gate = &gate.Gate{Host: "pve", Verifier: v}
}

// unsignedJob is a job anyone could write into the jobs directory: a
// payload for exactly a, with no signatures.
func unsignedJob(env *signedoptest.Env, a action.Action) signedop.Job {
	j := env.Job(func(p *signedop.Payload) {
		p.Op, p.VMID, p.Kind, p.Digest, p.Params = a.Op, a.VMID, a.Kind, a.Digest, a.Params
	})
	j.Signatures = nil
	return j
}

// journalHas reports whether the journal file in dir holds s.
func journalHas(t *testing.T, dir, s string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, journal.FileName))
	if err != nil {
		t.Fatalf("reading journal: %v", err)
	}
	return bytes.Contains(b, []byte(s))
}

func TestPendingSignedThenRunsOnce(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	newVol := "local-lvm:vm-101-disk-9,size=32G"
	want := mustParse(t, fleet(101, guest.QEMU, `scsi0: "`+newVol+`"`))

	rep := h.tick(want)
	if len(rep.Pending) != 1 || len(h.mutations()) != 0 {
		t.Fatalf("first tick: %d pending, mutations %v; want 1 pending and none", len(rep.Pending), h.mutations())
	}
	payload := rep.Pending[0].Payload
	job := signedop.Job{Payload: payload, Signatures: [][]byte{env.Sign(payload, env.Alice.Signer)}}

	// Signed by someone not in allowed_signers: refused, nothing runs.
	forged := signedop.Job{Payload: payload, Signatures: [][]byte{env.Sign(payload, env.Mallory.Signer)}}
	rep = h.tick(want, forged)
	if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, signedop.CodeUnknownSigner) {
		t.Fatalf("forged job: rejected = %+v; want one %s rejection", rep.Rejected, signedop.CodeUnknownSigner)
	}
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("forged job mutated: %v", m)
	}

	rep = h.tick(want, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("signed job rejected: %+v", rep.Rejected)
	}
	muts := h.srv.Sim.Mutations()
	if len(muts) != 1 || muts[0].Op != "config" || muts[0].VMID != 101 || muts[0].Params["scsi0"] != newVol {
		t.Fatalf("mutations = %v (%v); want exactly one config 101 with scsi0=%s", h.mutations(), muts, newVol)
	}
	var signed *engine.Result
	for i, r := range rep.Results {
		if r.Source == "signed" {
			signed = &rep.Results[i]
		}
	}
	if signed == nil || signed.Err != nil || signed.Action.Params["scsi0"] != newVol {
		t.Fatalf("results = %+v; want one successful signed result for scsi0", rep.Results)
	}
	if g, _ := h.srv.Sim.Guest(101); g.Config["scsi0"] != newVol {
		t.Errorf("scsi0 = %q; want %q", g.Config["scsi0"], newVol)
	}
	if !journalHas(t, h.dir, env.Alice.Fingerprint()) {
		t.Errorf("journal does not hold the signer's fingerprint %s", env.Alice.Fingerprint())
	}

	rep = h.tick(want)
	for _, st := range rep.Plan.Steps {
		if st.Action.VMID == 101 {
			t.Errorf("tick after the signed op planned %s", st.Action)
		}
	}
	if len(rep.Pending) != 0 {
		t.Errorf("tick after the signed op has %d pending decisions", len(rep.Pending))
	}

	// The same job again: its nonce is spent; nothing runs.
	h.tick(want, job)
	if n := len(h.srv.Sim.Mutations()); n != 1 {
		t.Fatalf("replayed job: %d mutations; want 1: %v", n, h.mutations())
	}

	// Agent restart: journal and nonce store reopened from disk.
	env.ReopenNonces()
	h.open()
	useVerifier(h, env)
	h.tick(want, job)
	if n := len(h.srv.Sim.Mutations()); n != 1 {
		t.Fatalf("replay after restart: %d mutations; want 1: %v", n, h.mutations())
	}

	// A restart that lost the journal still has the nonce store (and the
	// guest's digest moved on): the job is refused, not run.
	h.dir = t.TempDir()
	h.open()
	useVerifier(h, env)
	// The payload's write is now benign (scsi0 already holds that volume),
	// so the gate lets it through unsigned; PVE refuses it on the stale
	// digest. Either way nothing changes.
	h.tick(want, job)
	if n := len(h.srv.Sim.Mutations()); n != 1 {
		t.Fatalf("replay with a fresh journal: %d mutations; want 1: %v", n, h.mutations())
	}
}

func TestSignedDestroyRunsOnce(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(105, false, nil), qemuGuest(106, false, nil))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(105)
	env.Action = action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	env.Current = g.Digest
	useVerifier(h, env)
	job := env.Job(nil, env.Alice.Signer)

	rep := h.tick(nil, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("rejected: %+v", rep.Rejected)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"destroy 105"}) {
		t.Fatalf("mutations = %v; want [destroy 105]", m)
	}
	if m := h.srv.Sim.Mutations()[0]; m.Params["purge"] != "1" {
		t.Errorf("destroy params = %v; want purge=1", m.Params)
	}
	if _, ok := h.srv.Sim.Guest(105); ok {
		t.Errorf("guest 105 still exists")
	}
	if _, ok := h.srv.Sim.Guest(106); !ok {
		t.Errorf("guest 106 is gone")
	}
	if !journalHas(t, h.dir, env.Alice.Fingerprint()) {
		t.Errorf("journal does not hold the signer's fingerprint")
	}

	h.tick(nil, job)
	env.ReopenNonces()
	h.open()
	useVerifier(h, env)
	h.tick(nil, job)
	if m := h.mutations(); !slices.Equal(m, []string{"destroy 105"}) {
		t.Fatalf("after replays, mutations = %v; want [destroy 105]", m)
	}
}

// TestRejectionMatrixReachesNothing runs every case of the Authorize-level
// rejection matrix through a real engine against the simulator.
//
// In the engine the gated action is not chosen by the caller: the agent
// derives it from the signed payload itself. So the matrix's re-targeting
// cases (a payload naming another op, host, vmid, kind or params, correctly
// signed over that other payload) are, to the engine, honest requests for
// that other action, judged on their own. The attack they model reaches
// the engine in two forms, both tested here: a payload edited after signing
// (the signature no longer covers it: bad_signature; another host or a
// guest kind that is not the guest's: refused before verification), and a case that claims the guest changed since
// signing, which is made real by changing the guest (stale_digest). A
// validly signed payload for another guest fails that guest's digest (see
// TestSignedRetargetedAtAnotherGuest). Payloads that do not parse are
// refused by the engine before the verifier, with the parser's reason.
func TestRejectionMatrixReachesNothing(t *testing.T) {
	cases := signedoptest.Cases()
	if len(cases) < 25 {
		t.Fatalf("matrix has %d cases; want at least 25", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
			g, _ := h.srv.Sim.Guest(101)
			env := signedoptest.NewEnv(t)
			env.Host = "pve"
			env.Action = action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU,
				Params: map[string]string{"purge": "1", "destroy-unreferenced-disks": "1"}, Digest: g.Digest}
			env.Current = g.Digest
			at := c.Build(env)

			job, wantCode := at.Job, c.Code
			p, perr := signedop.ParsePayload(at.Job.Payload)
			retargeted := perr == nil && (p.Host != env.Host || p.Op != env.Action.Op || p.VMID != env.Action.VMID ||
				p.Kind != env.Action.Kind || !maps.Equal(p.Params, env.Action.Params))
			wantHostRefusal, wantKindRefusal := false, false
			switch {
			case at.Host != env.Host || at.Action.Op != env.Action.Op || at.Action.VMID != env.Action.VMID ||
				at.Action.Kind != env.Action.Kind || !maps.Equal(at.Action.Params, env.Action.Params) || at.Action.Digest != env.Action.Digest:
				t.Fatalf("case re-targets the attempt's action (%v on %s); this test does not know how to map it onto the engine", at.Action, at.Host)
			case retargeted:
				// The edited payload, carrying signatures over the honest one.
				honest := env.Job(nil, env.Alice.Signer)
				job = signedop.Job{Payload: at.Job.Payload, Signatures: honest.Signatures}
				wantCode = signedop.CodeBadSignature
				if p.VMID != env.Action.VMID {
					// The verifier checks the digest (now guest 102's)
					// before signatures.
					wantCode = signedop.CodeStaleDigest
				}
				wantHostRefusal = p.Host != env.Host
				// A payload naming the other guest kind is refused before
				// verification: the guest is not of that kind.
				wantKindRefusal = !wantHostRefusal && p.VMID == env.Action.VMID && p.Kind != env.Action.Kind
			case at.CurrentDigest != env.Current:
				// Make "the guest changed since signing" true in PVE.
				if _, err := h.client.SetConfig(t.Context(), h.srv.Sim.Node(), guest.QEMU, 101,
					pve.ConfigChange{Set: map[string]string{"cores": "3"}}); err != nil {
					t.Fatalf("changing the guest: %v", err)
				}
			}
			g, _ = h.srv.Sim.Guest(101)
			useVerifierAt(h, env)
			before := len(h.srv.Sim.Mutations())

			rep := h.tick(nil, job)

			if m := h.srv.Sim.Mutations(); len(m) != before {
				t.Fatalf("mutations reached the simulator: %v", h.mutations()[before:])
			}
			if g2, ok := h.srv.Sim.Guest(101); !ok || g2.Digest != g.Digest {
				t.Fatalf("guest 101 changed: exists=%v digest %s -> %s", ok, g.Digest, g2.Digest)
			}
			if len(rep.Results) != 0 {
				t.Errorf("results = %+v; want nothing submitted", rep.Results)
			}
			if wantCode == signedop.CodeInsufficientSigners {
				// Valid signatures, too few signers: held for more, not
				// refused (the job stays runnable, its nonce unspent).
				if len(rep.Rejected) != 0 || len(rep.Jobs) != 1 || rep.Jobs[0].Status != engine.JobWaiting || rep.Jobs[0].Shortfall == nil ||
					!strings.Contains(rep.Jobs[0].Reason, "waiting for ") {
					t.Fatalf("rejected = %+v, jobs = %+v; want the job waiting for more signers, not rejected", rep.Rejected, rep.Jobs)
				}
				if env.Nonces().Used(p.Nonce) {
					t.Fatal("a job awaiting signatures spent its nonce")
				}
				return
			}
			if len(rep.Rejected) != 1 {
				t.Fatalf("rejected = %+v; want exactly one rejection", rep.Rejected)
			}
			reason := rep.Rejected[0].Reason
			switch {
			case reason == "":
				t.Fatalf("rejection has no reason")
			case perr != nil:
				if reason != perr.Error() {
					t.Errorf("reason = %q; want the parser's %q", reason, perr.Error())
				}
			case wantKindRefusal:
				if !strings.Contains(reason, "signed for a lxc guest, but guest 101 is qemu") {
					t.Errorf("reason = %q; want the kind mismatch", reason)
				}
			case wantHostRefusal:
				if !strings.Contains(reason, `signed for host "pve-b"`) {
					t.Errorf("reason = %q; want it to name the foreign host", reason)
				}
			default:
				if !strings.Contains(reason, "("+wantCode+")") {
					t.Errorf("reason = %q; want code (%s)", reason, wantCode)
				}
			}
		})
	}
}

// useVerifierAt installs env's verifier with env's (possibly fixed) clock.
func useVerifierAt(h *harness, env *signedoptest.Env) {
	h.eng.Gate = &gate.Gate{Host: "pve", Verifier: env.Verifier()}
}

// TestSignedRetargetedAtAnotherGuest: a correctly signed destroy whose
// payload names another guest (carrying the first guest's digest, as a
// copied payload would) fails that guest's digest; nothing runs.
func TestSignedRetargetedAtAnotherGuest(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil), qemuGuest(102, false, nil))
	env := signingEnv(t)
	g, _ := h.srv.Sim.Guest(101)
	env.Action = action.Action{Op: action.Destroy, VMID: 102, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
	useVerifier(h, env)
	rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
	if m := h.mutations(); len(m) != 0 {
		t.Fatalf("mutations = %v; want none", m)
	}
	if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, signedop.CodeStaleDigest) {
		t.Fatalf("rejected = %+v; want one %s rejection", rep.Rejected, signedop.CodeStaleDigest)
	}
}

// unreadable wraps the PVE reader so one guest's config cannot be read.
type unreadable struct {
	engine.Reader
	vmid int
}

func (u unreadable) ConfigWithPending(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.PendingConfig, error) {
	if vmid == u.vmid {
		return pve.PendingConfig{}, errors.New("injected: config read failed")
	}
	return u.Reader.ConfigWithPending(ctx, node, kind, vmid)
}

// TestGateHoles tries other ways a destructive action might reach PVE
// without a verified signature.
func TestGateHoles(t *testing.T) {
	t.Run("benign signed job for another host", func(t *testing.T) {
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		env.Host = "pve-other"
		env.Action = action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Params: map[string]string{}}
		useVerifier(h, env)
		rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, `"pve-other"`) {
			t.Fatalf("rejected = %+v; want a foreign-host rejection", rep.Rejected)
		}
	})

	t.Run("signed destroy of a guest whose config cannot be read", func(t *testing.T) {
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		g, _ := h.srv.Sim.Guest(101)
		env.Action = action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
		useVerifier(h, env)
		h.eng.PVE = unreadable{Reader: h.client, vmid: 101}
		rep := h.tick(nil, env.Job(nil, env.Alice.Signer))
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, "unreadable") {
			t.Fatalf("rejected = %+v; want an unreadable-config rejection", rep.Rejected)
		}
	})

	t.Run("unsigned create over an existing guest", func(t *testing.T) {
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		env.Action = action.Action{Op: action.Create, VMID: 101, Kind: guest.QEMU,
			Params: map[string]string{"name": "evil", "memory": "512", "scsi0": "local-lvm:8"}}
		useVerifier(h, env)
		rep := h.tick(nil, env.Job(nil)) // no signatures: fine for a benign create, not for this
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if len(rep.Rejected) != 1 {
			t.Fatalf("rejected = %+v; want one rejection", rep.Rejected)
		}
	})

	t.Run("create with force over an existing guest signed by an unknown key", func(t *testing.T) {
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		g, _ := h.srv.Sim.Guest(101)
		env.Action = action.Action{Op: action.Create, VMID: 101, Kind: guest.QEMU,
			Params: map[string]string{"name": "evil", "memory": "512", "force": "1"}, Digest: g.Digest}
		useVerifier(h, env)
		rep := h.tick(nil, env.Job(nil, env.Mallory.Signer))
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, signedop.CodeUnknownSigner) {
			t.Fatalf("rejected = %+v; want %s", rep.Rejected, signedop.CodeUnknownSigner)
		}
	})

	t.Run("unsigned destroy, snapshot rollback and delete and disk-touching config as jobs", func(t *testing.T) {
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, map[string]string{"unused0": "local-lvm:vm-101-disk-3"}))
		env := signingEnv(t)
		g, _ := h.srv.Sim.Guest(101)
		useVerifier(h, env)
		var jobs []signedop.Job
		for _, a := range []action.Action{
			{Op: action.Destroy, Params: map[string]string{"purge": "1"}},
			{Op: action.SnapshotRollback, Params: map[string]string{"snapname": "s1"}},
			{Op: action.SnapshotDelete, Params: map[string]string{"snapname": "s1"}},
			{Op: action.SetConfig, Params: map[string]string{"delete": "unused0"}},
			{Op: action.SetConfig, Params: map[string]string{"cores": "2", "delete": "scsi0"}},
			{Op: action.Resize, Params: map[string]string{"disk": "scsi0", "size": "1G"}},
		} {
			a.VMID, a.Kind, a.Digest = 101, guest.QEMU, g.Digest
			env.Action = a
			jobs = append(jobs, env.Job(nil))
		}
		rep := h.tick(nil, jobs...)
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if len(rep.Rejected) != len(jobs) {
			t.Fatalf("%d rejected of %d jobs: %+v", len(rep.Rejected), len(jobs), rep.Rejected)
		}
		for _, d := range rep.Rejected {
			if !strings.Contains(d.Reason, signedop.CodeNoSignatures) {
				t.Errorf("%s: reason %q; want %s", d.Action, d.Reason, signedop.CodeNoSignatures)
			}
		}
	})

	t.Run("benign signed jobs each run", func(t *testing.T) {
		// Benign signed jobs consume no nonce; each must still run once,
		// keyed by its own payload nonce.
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		useVerifier(h, env)
		for _, op := range []action.Op{action.Start, action.Stop} {
			env.Action = action.Action{Op: op, VMID: 101, Kind: guest.QEMU, Params: map[string]string{}}
			rep := h.tick(nil, env.Job(nil))
			for _, r := range rep.Results {
				if r.Err != nil || r.Skipped != "" {
					t.Errorf("%s: result err %v skipped %q", op, r.Err, r.Skipped)
				}
			}
		}
		if m := h.mutations(); !slices.Equal(m, []string{"start 101", "stop 101"}) {
			t.Fatalf("mutations = %v; want [start 101 stop 101]", m)
		}
	})

	t.Run("signed destroy naming the wrong kind", func(t *testing.T) {
		// 101 is a VM; an operator signs "destroy lxc 101" against its
		// digest. It must not destroy anything.
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		g, _ := h.srv.Sim.Guest(101)
		env.Action = action.Action{Op: action.Destroy, VMID: 101, Kind: guest.LXC, Params: map[string]string{"purge": "1"}, Digest: g.Digest}
		useVerifier(h, env)
		h.tick(nil, env.Job(nil, env.Alice.Signer))
		if m := h.mutations(); len(m) != 0 {
			t.Fatalf("mutations = %v; want none", m)
		}
		if _, ok := h.srv.Sim.Guest(101); !ok {
			t.Fatalf("guest 101 destroyed")
		}
	})

	t.Run("pending payload signed then guest changed by hub", func(t *testing.T) {
		// The hub gets a payload signed, then changes the guest (a benign
		// write) before the job is presented: the signature is stale.
		h := newHarness(t, sim.Options{}, qemuGuest(101, false, nil))
		env := signingEnv(t)
		useVerifier(h, env)
		want := mustParse(t, fleet(101, guest.QEMU, `scsi0: "local-lvm:vm-101-disk-9,size=32G"`))
		rep := h.tick(want)
		if len(rep.Pending) != 1 {
			t.Fatalf("pending = %d; want 1", len(rep.Pending))
		}
		pl := rep.Pending[0].Payload
		job := signedop.Job{Payload: pl, Signatures: [][]byte{env.Sign(pl, env.Alice.Signer)}}
		h.tick(mustParse(t, fleet(101, guest.QEMU, `cores: 4`)))
		before := len(h.srv.Sim.Mutations())
		rep = h.tick(nil, job)
		if m := h.srv.Sim.Mutations(); len(m) != before {
			t.Fatalf("stale signed job mutated: %v", h.mutations()[before:])
		}
		if len(rep.Rejected) != 1 || !strings.Contains(rep.Rejected[0].Reason, signedop.CodeStaleDigest) {
			t.Fatalf("rejected = %+v; want %s", rep.Rejected, signedop.CodeStaleDigest)
		}
	})
}

// hiding wraps the PVE reader so one guest is missing from the guest
// lists: the guest appears between the agent's look and its action.
type hiding struct {
	engine.Reader
	vmid int
}

func (h hiding) Guests(ctx context.Context, node string, kind guest.Kind) ([]pve.GuestSummary, error) {
	list, err := h.Reader.Guests(ctx, node, kind)
	return slices.DeleteFunc(list, func(g pve.GuestSummary) bool { return g.VMID == h.vmid }), err
}

// A benign (unsigned) create that PVE refuses because someone else took
// the vmid in the meantime must not give the agent "provenance" over that
// guest: destroying it afterwards still needs a signature.
func TestRefusedCreateGivesNoProvenance(t *testing.T) {
	h := newHarness(t, sim.Options{}, qemuGuest(150, false, nil))
	env := signingEnv(t)
	useVerifier(h, env)
	create := unsignedJob(env, action.Action{Op: action.Create, VMID: 150, Kind: guest.QEMU, Digest: "", Params: map[string]string{"name": "scratch", "memory": "512", "scsi0": "local-lvm:8"}})
	h.eng.PVE = hiding{Reader: h.client, vmid: 150}
	rep := h.tick(nil, create)
	if len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results = %+v; want the create submitted and refused by PVE", rep.Results)
	}
	h.eng.PVE = h.client
	if p := h.j.Provenance(150); p.CreatedByAgent {
		t.Fatalf("provenance after a refused create = %+v; want none", p)
	}
	g, _ := h.srv.Sim.Guest(150)
	destroy := unsignedJob(env, action.Action{Op: action.Destroy, VMID: 150, Kind: guest.QEMU, Digest: g.Digest, Params: map[string]string{"purge": "1"}})
	rep = h.tick(nil, destroy)
	if _, ok := h.srv.Sim.Guest(150); !ok {
		t.Fatal("guest 150, which the agent did not create, was destroyed without a signature")
	}
	if len(rep.Rejected) != 1 {
		t.Fatalf("rejected = %+v; want the unsigned destroy rejected", rep.Rejected)
	}
}

// leavesRemains wraps the PVE reader so that a failed create leaves a
// guest behind, as PVE does when its own cleanup fails: the remains appear
// just before the agent looks at what the failure left.
type leavesRemains struct {
	engine.Reader
	sim  *sim.Sim
	spec sim.GuestSpec
	once *sync.Once
}

func (l leavesRemains) GuestConfig(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.GuestConfig, error) {
	if vmid == l.spec.VMID {
		l.once.Do(func() { l.sim.AddGuest(l.spec) })
	}
	return l.Reader.GuestConfig(ctx, node, kind, vmid)
}

// The one benign destroy: the remains of the agent's own provision that
// failed moments ago, still exactly as the failure left them. After
// ProvisionCleanupWindow, or once the guest changed, the failure no longer
// vouches for it and destroying it needs a signature again.
func TestOwnFailedProvisionCleanup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		after     time.Duration
		touch     bool // the remains are changed after the failure
		destroyed bool
	}{
		{"within the window", 10 * time.Minute, false, true},
		{"after the window", 2 * time.Hour, false, false},
		{"changed since the failure", 10 * time.Minute, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{})
			env := signingEnv(t)
			useVerifier(h, env)
			now := time.Now()
			h.eng.Now = func() time.Time { return now }
			create := unsignedJob(env, action.Action{Op: action.Create, VMID: 160, Kind: guest.QEMU, Digest: "", Params: map[string]string{"name": "scratch", "memory": "512", "scsi0": "local-lvm:8"}})
			h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
			h.eng.PVE = leavesRemains{Reader: h.client, sim: h.srv.Sim, spec: qemuGuest(160, false, nil), once: new(sync.Once)}
			if rep := h.tick(nil, create); len(rep.Results) != 1 || rep.Results[0].Err == nil {
				t.Fatalf("results = %+v; want the create task to fail", rep.Results)
			}
			h.srv.Sim.SetFaults(sim.Faults{})
			h.eng.PVE = h.client
			if tc.touch {
				if _, err := h.client.SetConfig(t.Context(), "pve", guest.QEMU, 160, pve.ConfigChange{Set: map[string]string{"description": "in use"}}); err != nil {
					t.Fatal(err)
				}
			}
			now = now.Add(tc.after)
			h.passBackoff()
			g, _ := h.srv.Sim.Guest(160)
			destroy := unsignedJob(env, action.Action{Op: action.Destroy, VMID: 160, Kind: guest.QEMU, Digest: g.Digest, Params: map[string]string{"purge": "1"}})
			h.tick(nil, destroy)
			if _, exists := h.srv.Sim.Guest(160); exists == tc.destroyed {
				t.Fatalf("guest 160 exists = %v; want destroyed = %v", exists, tc.destroyed)
			}
		})
	}
}
