package gate_test

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
)

const digest = "3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5"

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// actual is qemu 101's current config.
func actual() guest.Config {
	return guest.Config{
		"cores": "1", "memory": "1024", "balloon": "512",
		"scsi0":   "local-lvm:vm-101-disk-0,size=32G",
		"unused0": "local-lvm:vm-101-disk-1",
		"net0":    "virtio=BC:24:11:00:00:65,bridge=vmbr0",
	}
}

func cfg(params map[string]string) action.Action {
	return action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: params, Digest: digest}
}

func newGate(v *signedop.Verifier) *gate.Gate {
	return &gate.Gate{Host: "pve-a", Verifier: v, Now: func() time.Time { return now }}
}

func sameAction(a, b action.Action) bool {
	return a.Op == b.Op && a.VMID == b.VMID && a.Kind == b.Kind && a.Digest == b.Digest && maps.Equal(a.Params, b.Params)
}

func TestDecideBenignIsAllowedWithValidPermit(t *testing.T) {
	tests := []struct {
		name string
		a    action.Action
	}{
		{"start", action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Params: map[string]string{}}},
		{"config cores", cfg(map[string]string{"cores": "2"})},
		{"grow disk in place", cfg(map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=64G"})},
		{"allocate new disk in empty slot", cfg(map[string]string{"scsi1": "local-lvm:16"})},
		{"delete allow-listed key", cfg(map[string]string{"delete": "balloon"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newGate(nil).Decide(tt.a, actual(), classify.Provenance{})
			if d.Outcome != gate.Allowed {
				t.Fatalf("outcome = %q (%s); want %q", d.Outcome, d.Reason, gate.Allowed)
			}
			if !d.Permit.Valid() {
				t.Fatalf("permit not valid for an allowed decision")
			}
			if !sameAction(d.Permit.Action(), tt.a) {
				t.Errorf("permit action = %v; want %v", d.Permit.Action(), tt.a)
			}
			if d.Permit.Verdict().Class != classify.Benign {
				t.Errorf("permit class = %q; want benign", d.Permit.Verdict().Class)
			}
			if len(d.Permit.Signers()) != 0 || d.Permit.Nonce() != "" {
				t.Errorf("benign permit carries signers %v / nonce %q; want none", d.Permit.Signers(), d.Permit.Nonce())
			}
			if d.Payload != nil {
				t.Errorf("allowed decision carries a payload to sign")
			}
		})
	}
}

func TestDecideDestructiveIsPendingWithSignablePayload(t *testing.T) {
	tests := []struct {
		name string
		a    action.Action
	}{
		{"replace scsi0", cfg(map[string]string{"scsi0": "local-lvm:vm-101-disk-7,size=32G"})},
		{"shrink scsi0", cfg(map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=16G"})},
		{"delete unused0", cfg(map[string]string{"delete": "unused0"})},
		{"unknown key", cfg(map[string]string{"hookscript": "local:snippets/x.sh"})},
		{"destroy", action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: digest}},
		{"snapshot rollback", action.Action{Op: action.SnapshotRollback, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "before"}, Digest: digest}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newGate(nil).Decide(tt.a, actual(), classify.Provenance{})
			if d.Outcome != gate.PendingSignature {
				t.Fatalf("outcome = %q (%s); want %q", d.Outcome, d.Reason, gate.PendingSignature)
			}
			if d.Permit.Valid() {
				t.Fatalf("pending decision carries a valid permit")
			}
			if d.Verdict.Class != classify.Destructive || d.Reason == "" {
				t.Errorf("verdict = %+v, reason %q; want destructive with a reason", d.Verdict, d.Reason)
			}
			p, err := signedop.ParsePayload(d.Payload)
			if err != nil {
				t.Fatalf("ParsePayload(pending payload): %v\n%s", err, d.Payload)
			}
			if p.Host != "pve-a" {
				t.Errorf("payload host = %q; want pve-a", p.Host)
			}
			if !sameAction(gate.ActionOf(p), tt.a) {
				t.Errorf("payload action = %v; want the gated action %v", gate.ActionOf(p), tt.a)
			}
			if err := p.Matches("pve-a", tt.a); err != nil {
				t.Errorf("payload does not match the gated action: %v", err)
			}
			if !p.NotBefore.Equal(now) || p.Expires.Sub(p.NotBefore) != 24*time.Hour {
				t.Errorf("payload window = %v..%v; want %v + 24h", p.NotBefore, p.Expires, now)
			}
			if p.Nonce == "" || !strings.Contains(p.Reason, "steward") {
				t.Errorf("payload nonce %q reason %q; want a nonce and a steward reason", p.Nonce, p.Reason)
			}
		})
	}
}

// A held action offers the same payload tick after tick (one thing for the
// operator to sign) until half its TTL has passed; then, or when the
// guest's digest changes, a fresh payload with a new nonce.
func TestDecidePendingPayloadIsStableThenRenewed(t *testing.T) {
	a := cfg(map[string]string{"delete": "unused0"})
	clock := now
	g := &gate.Gate{Host: "pve-a", PayloadTTL: 24 * time.Hour, Now: func() time.Time { return clock }}
	nonce := func(a action.Action) string {
		t.Helper()
		p, err := signedop.ParsePayload(g.Decide(a, actual(), classify.Provenance{}).Payload)
		if err != nil {
			t.Fatalf("ParsePayload: %v", err)
		}
		return p.Nonce
	}
	first := nonce(a)
	clock = now.Add(11 * time.Hour)
	if n := nonce(a); n != first {
		t.Errorf("after 11h of 24h the payload changed (nonce %s → %s); want the same payload", first, n)
	}
	clock = now.Add(13 * time.Hour)
	renewed := nonce(a)
	if renewed == first {
		t.Errorf("after 13h of 24h the payload was not renewed")
	}
	other := a
	other.Digest = "0000000000000000000000000000000000000000"
	if n := nonce(other); n == renewed {
		t.Errorf("a different digest reused nonce %s; want a fresh payload", n)
	}
	if n := nonce(a); n != renewed {
		t.Errorf("renewed payload not kept (nonce %s → %s)", renewed, n)
	}
}

func TestZeroPermitIsNotValid(t *testing.T) {
	var p gate.Permit
	if p.Valid() {
		t.Errorf("zero Permit Valid() = true; want false")
	}
	if p.Action().Op != "" || p.Signers() != nil && len(p.Signers()) != 0 || p.Nonce() != "" {
		t.Errorf("zero Permit carries action %v signers %v nonce %q", p.Action(), p.Signers(), p.Nonce())
	}
	var d gate.Decision
	if d.Permit.Valid() {
		t.Errorf("zero Decision's Permit is valid")
	}
}

func TestDecideSignedWithoutVerifier(t *testing.T) {
	env := signedoptest.NewEnv(t)
	g := newGate(nil)
	// Destructive: rejected even though the job is correctly signed.
	job := env.Job(nil, env.Alice.Signer)
	d := g.DecideSigned(job, actual(), env.Current, classify.Provenance{})
	if d.Outcome != gate.Rejected || d.Permit.Valid() {
		t.Fatalf("destructive signed job without verifier: outcome %q permit valid %v; want rejected, no permit", d.Outcome, d.Permit.Valid())
	}
	if !strings.Contains(d.Reason, "no signers configured") {
		t.Errorf("reason = %q; want it to say no signers are configured", d.Reason)
	}
	// Benign: allowed, and needs no verifier.
	benign := action.Action{Op: action.Start, VMID: 101, Kind: guest.QEMU, Params: map[string]string{}, Digest: env.Current}
	env.Action = benign
	d = g.DecideSigned(env.Job(nil), actual(), env.Current, classify.Provenance{})
	if d.Outcome != gate.Allowed || !d.Permit.Valid() {
		t.Fatalf("benign signed job: outcome %q (%s); want allowed with a permit", d.Outcome, d.Reason)
	}
	if !sameAction(d.Permit.Action(), benign) {
		t.Errorf("permit action = %v; want %v", d.Permit.Action(), benign)
	}
	if d.Permit.Nonce() != "" || len(d.Permit.Signers()) != 0 {
		t.Errorf("benign signed permit consumed signature: nonce %q signers %v", d.Permit.Nonce(), d.Permit.Signers())
	}
}

func TestDecideSignedUnparsablePayload(t *testing.T) {
	env := signedoptest.NewEnv(t)
	g := newGate(env.Verifier())
	d := g.DecideSigned(signedop.Job{Payload: []byte("destroy everything\n")}, actual(), env.Current, classify.Provenance{})
	if d.Outcome != gate.Rejected || d.Reason == "" || d.Permit.Valid() {
		t.Errorf("unparsable payload: outcome %q reason %q permit %v; want rejected with a reason", d.Outcome, d.Reason, d.Permit.Valid())
	}
}

func TestDecideSignedWithVerifier(t *testing.T) {
	env := signedoptest.NewEnv(t)
	env.Host = "pve-a"
	g := newGate(env.Verifier())
	job := env.Job(nil, env.Alice.Signer, env.Bob.Signer)
	d := g.DecideSigned(job, actual(), env.Current, classify.Provenance{})
	if d.Outcome != gate.Allowed || !d.Permit.Valid() {
		t.Fatalf("outcome = %q (%s); want allowed", d.Outcome, d.Reason)
	}
	if !sameAction(d.Permit.Action(), env.Action) {
		t.Errorf("permit action = %v; want %v", d.Permit.Action(), env.Action)
	}
	want := []string{env.Alice.Fingerprint(), env.Bob.Fingerprint()}
	got := d.Permit.Signers()
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("signers = %v; want %v", got, want)
	}
	p, _ := signedop.ParsePayload(job.Payload)
	if d.Permit.Nonce() != p.Nonce {
		t.Errorf("permit nonce = %q; want %q", d.Permit.Nonce(), p.Nonce)
	}
	// Signers() returns a copy.
	if s := d.Permit.Signers(); len(s) > 0 {
		s[0] = "tampered"
		if slices.Contains(d.Permit.Signers(), "tampered") {
			t.Errorf("Signers() exposes the permit's slice")
		}
	}

	// The gate does not spend the nonce; once the engine recorded it as
	// spent, the same job again is rejected as replayed.
	if again := g.DecideSigned(job, actual(), env.Current, classify.Provenance{}); again.Outcome != gate.Allowed {
		t.Errorf("before the op ran, the same job again: outcome %q (%s); want allowed (deciding spends nothing)", again.Outcome, again.Reason)
	}
	if err := g.RecordSpent(d.Permit); err != nil {
		t.Fatal(err)
	}
	d = g.DecideSigned(job, actual(), env.Current, classify.Provenance{})
	if d.Outcome != gate.Rejected || !strings.Contains(d.Reason, signedop.CodeReplayed) {
		t.Errorf("replay: outcome %q reason %q; want rejected (%s)", d.Outcome, d.Reason, signedop.CodeReplayed)
	}

	// A fresh job against a changed guest is stale.
	d = g.DecideSigned(env.Job(nil, env.Alice.Signer), actual(), strings.Repeat("e", 40), classify.Provenance{})
	if d.Outcome != gate.Rejected || !strings.Contains(d.Reason, signedop.CodeStaleDigest) {
		t.Errorf("stale: outcome %q reason %q; want rejected (%s)", d.Outcome, d.Reason, signedop.CodeStaleDigest)
	}
}

func TestDecideSplit(t *testing.T) {
	tests := []struct {
		name        string
		params      map[string]string
		wantAllowed map[string]string // nil: no allowed part
		wantPending map[string]string // nil: no pending part
	}{
		{
			name:        "mixed cores and replaced scsi0",
			params:      map[string]string{"cores": "2", "scsi0": "local-lvm:vm-101-disk-7,size=32G"},
			wantAllowed: map[string]string{"cores": "2"},
			wantPending: map[string]string{"scsi0": "local-lvm:vm-101-disk-7,size=32G"},
		},
		{
			name:        "wholly benign",
			params:      map[string]string{"cores": "2", "memory": "2048", "scsi0": "local-lvm:vm-101-disk-0,size=40G"},
			wantAllowed: map[string]string{"cores": "2", "memory": "2048", "scsi0": "local-lvm:vm-101-disk-0,size=40G"},
		},
		{
			name:        "wholly destructive",
			params:      map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=1G", "hookscript": "local:snippets/x.sh", "delete": "unused0"},
			wantPending: map[string]string{"scsi0": "local-lvm:vm-101-disk-0,size=1G", "hookscript": "local:snippets/x.sh", "delete": "unused0"},
		},
		{
			name:        "delete list split",
			params:      map[string]string{"delete": "balloon,unused0"},
			wantAllowed: map[string]string{"delete": "balloon"},
			wantPending: map[string]string{"delete": "unused0"},
		},
		{
			name:        "set and delete list split",
			params:      map[string]string{"memory": "4096", "scsi0": "local-lvm:vm-101-disk-1", "delete": "balloon;unused0,scsi1"},
			wantAllowed: map[string]string{"memory": "4096", "delete": "balloon"},
			wantPending: map[string]string{"scsi0": "local-lvm:vm-101-disk-1", "delete": "unused0,scsi1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := cfg(tt.params)
			ds := newGate(nil).DecideSplit(a, actual(), classify.Provenance{})
			want := 0
			if tt.wantAllowed != nil {
				want++
			}
			if tt.wantPending != nil {
				want++
			}
			if len(ds) != want {
				t.Fatalf("got %d decisions %+v; want %d", len(ds), ds, want)
			}
			var allowed, pending []gate.Decision
			for _, d := range ds {
				if d.Action.Op != action.SetConfig || d.Action.VMID != 101 || d.Action.Kind != guest.QEMU || d.Action.Digest != digest {
					t.Errorf("decision action %v lost its identity or digest", d.Action)
				}
				switch d.Outcome {
				case gate.Allowed:
					allowed = append(allowed, d)
				case gate.PendingSignature:
					pending = append(pending, d)
				default:
					t.Errorf("unexpected outcome %q", d.Outcome)
				}
			}
			if tt.wantAllowed != nil {
				if len(allowed) != 1 {
					t.Fatalf("got %d allowed decisions; want 1", len(allowed))
				}
				if got := allowed[0].Permit.Action().Params; !maps.Equal(got, tt.wantAllowed) {
					t.Errorf("allowed params = %v; want %v", got, tt.wantAllowed)
				}
				if !allowed[0].Permit.Valid() {
					t.Errorf("allowed decision has no valid permit")
				}
			} else if len(allowed) != 0 {
				t.Errorf("got allowed decision %v; want none", allowed[0].Action)
			}
			if tt.wantPending != nil {
				if len(pending) != 1 {
					t.Fatalf("got %d pending decisions; want 1", len(pending))
				}
				d := pending[0]
				if !maps.Equal(d.Action.Params, tt.wantPending) {
					t.Errorf("pending params = %v; want %v", d.Action.Params, tt.wantPending)
				}
				if d.Permit.Valid() {
					t.Errorf("pending decision has a valid permit")
				}
				p, err := signedop.ParsePayload(d.Payload)
				if err != nil {
					t.Fatalf("pending payload: %v", err)
				}
				if !maps.Equal(p.Params, tt.wantPending) || p.Digest != digest {
					t.Errorf("payload params %v digest %q; want %v %q", p.Params, p.Digest, tt.wantPending, digest)
				}
			} else if len(pending) != 0 {
				t.Errorf("got pending decision %v; want none", pending[0].Action)
			}
		})
	}
}

// Non-config actions are never split: a destroy stays one pending decision.
func TestDecideSplitLeavesOtherOpsWhole(t *testing.T) {
	a := action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: digest}
	ds := newGate(nil).DecideSplit(a, actual(), classify.Provenance{})
	if len(ds) != 1 || ds[0].Outcome != gate.PendingSignature || !sameAction(ds[0].Action, a) {
		t.Fatalf("DecideSplit(destroy) = %+v; want one pending decision for the whole destroy", ds)
	}
}
