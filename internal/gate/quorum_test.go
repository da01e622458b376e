package gate_test

import (
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"golang.org/x/crypto/ssh"
)

// twoOperators is a policy asking two distinct operators for every op;
// carol holds only the viewer role.
func twoOperators() signedop.Policy {
	return signedop.Policy{
		Roles:   map[string][]string{"alice@example.com": {"operator"}, "bob@example.com": {"operator"}, "carol@example.com": {"viewer"}},
		Require: map[string]signedop.Requirement{"*": {Role: "operator", Count: 2}},
	}
}

// TestDecideSignedAwaitingSignatures: a job whose signatures all verify
// but whose operators are too few waits (AwaitingSignatures, nothing
// spent, what it lacks stated); the same payload with a second operator
// is allowed; anything wrong with it still rejects it: an unknown
// signer, an expired payload, a nonce already spent.
func TestDecideSignedAwaitingSignatures(t *testing.T) {
	env := signedoptest.NewEnv(t)
	env.Policy = twoOperators()
	g := newGate(env.Verifier())
	p := env.NewPayload(nil)
	b := p.Canonical()
	job := func(signers ...ssh.Signer) signedop.Job {
		j := signedop.Job{Payload: b}
		for _, s := range signers {
			j.Signatures = append(j.Signatures, env.Sign(b, s))
		}
		return j
	}
	decide := func(j signedop.Job) gate.Decision {
		return g.DecideSigned(j, actual(), env.Current, classify.Provenance{})
	}
	for _, c := range []struct {
		name           string
		job            signedop.Job
		signed, others []string
		says           string
	}{
		{"one operator", job(env.Alice.Signer), []string{"alice@example.com"}, nil,
			"waiting for 1 more signer(s) of role operator (1 of 2 signed: alice@example.com)"},
		{"one key twice", job(env.Alice.Signer, env.Alice.Signer), []string{"alice@example.com"}, nil, "(1 of 2 signed: alice@example.com)"},
		{"an operator and a viewer", job(env.Alice.Signer, env.Carol.Signer), []string{"alice@example.com"}, []string{"carol@example.com"},
			"also signed by carol@example.com, not counted"},
		{"a viewer alone", job(env.Carol.Signer), nil, []string{"carol@example.com"}, "waiting for 2 more signer(s) of role operator (0 of 2 signed)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := decide(c.job)
			sf := d.Shortfall
			if d.Outcome != gate.AwaitingSignatures || d.Code != signedop.CodeInsufficientSigners || d.Permit.Valid() || sf == nil {
				t.Fatalf("got outcome %q code %q permit %v shortfall %+v (%s); want awaiting_signatures, no permit", d.Outcome, d.Code, d.Permit.Valid(), sf, d.Reason)
			}
			if sf.Role != "operator" || sf.Need != 2 || strings.Join(sf.Signed, ",") != strings.Join(c.signed, ",") || strings.Join(sf.Others, ",") != strings.Join(c.others, ",") {
				t.Errorf("shortfall = %+v; want 2 of operator, signed %v, others %v", sf, c.signed, c.others)
			}
			if !strings.Contains(d.Reason, c.says) {
				t.Errorf("reason = %q; want it to say %q", d.Reason, c.says)
			}
			if env.Nonces().Used(p.Nonce) {
				t.Fatal("a job awaiting signatures spent its nonce")
			}
		})
	}

	if d := decide(job(env.Alice.Signer, env.Mallory.Signer)); d.Outcome != gate.Rejected || d.Code != signedop.CodeUnknownSigner {
		t.Errorf("alice and an unknown key: outcome %q code %q; want rejected (%s): any bad signature rejects the job", d.Outcome, d.Code, signedop.CodeUnknownSigner)
	}
	full := decide(job(env.Alice.Signer, env.Bob.Signer))
	if full.Outcome != gate.Allowed || len(full.Permit.Signers()) != 2 {
		t.Fatalf("alice and bob: outcome %q (%s), signers %v; want allowed with both", full.Outcome, full.Reason, full.Permit.Signers())
	}
	if err := g.RecordSpent(full.Permit); err != nil {
		t.Fatal(err)
	}
	if d := decide(job(env.Alice.Signer)); d.Outcome != gate.Rejected || d.Code != signedop.CodeReplayed {
		t.Errorf("one signature of a payload that ran: outcome %q code %q; want rejected (replayed), not held", d.Outcome, d.Code)
	}

	expired := env.Job(nil, env.Alice.Signer)
	env.Now = env.Now.Add(3 * time.Hour)
	if d := decide(expired); d.Outcome != gate.Rejected || d.Code != signedop.CodeExpired || !strings.Contains(d.Reason, "expired at") {
		t.Errorf("an expired payload with one of two signatures: outcome %q code %q (%s); want rejected (expired)", d.Outcome, d.Code, d.Reason)
	}
}

// TestAwaitOffersTheHeldPayload: while a job for an action waits for
// more signatures, the payload offered for that action is the job's, so
// the next operator signs the bytes that carry the first signature; once
// no such job is presented, the gate offers its own again.
func TestAwaitOffersTheHeldPayload(t *testing.T) {
	env := signedoptest.NewEnv(t)
	env.Policy = twoOperators()
	g := newGate(env.Verifier())
	a := action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"purge": "1", "destroy-unreferenced-disks": "1"}, Digest: digest}
	d := g.Decide(a, actual(), classify.Provenance{})
	if d.Outcome != gate.PendingSignature || d.Quorum == nil || d.Quorum.Role != "operator" || d.Quorum.Count != 2 {
		t.Fatalf("decide: outcome %q quorum %+v; want pending, 2 of operator", d.Outcome, d.Quorum)
	}
	own := string(d.Payload)

	held, err := signedop.NewPayload("pve-a", a, now.Add(-time.Hour), 24*time.Hour, "an earlier offer alice signed")
	if err != nil {
		t.Fatal(err)
	}
	other := held
	other.Host = "pve-b"
	g.Await([]signedop.Payload{held, other})
	if d := g.Decide(a, actual(), classify.Provenance{}); string(d.Payload) != string(held.Canonical()) {
		t.Fatalf("offered while a job awaits signatures: %s; want the held job's payload", d.Payload)
	}
	g.Await(nil)
	if d := g.Decide(a, actual(), classify.Provenance{}); string(d.Payload) != own {
		t.Fatalf("offered once no job awaits: %s; want the gate's own offer again", d.Payload)
	}
	if d := newGate(nil).Decide(a, actual(), classify.Provenance{}); d.Quorum != nil {
		t.Errorf("quorum without a verifier: %+v; want nil", d.Quorum)
	}
}
