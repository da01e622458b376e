package agent_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

// TestHubTwoSigners is the four-eyes flow through a real hub: under a
// policy that asks two operators, a disk replacement pending on the hub
// states that quorum; Alice's signed job is held (waiting, not rejected,
// its payload still the one offered) and never runs; Bob's signature of
// the same payload joins the waiting job on the hub, and the agent runs
// it exactly once, naming both signers in its journal; more ticks and a
// late third signature change nothing.
func TestHubTwoSigners(t *testing.T) {
	h := startHub(t)
	srv := startSim(t)
	env := signedoptest.NewEnv(t)
	policy := signedop.Policy{Require: map[string]signedop.Requirement{"*": {Role: signedop.DefaultRole, Count: 2}}}
	ha := runHubAgentWith(t, h, srv, t.TempDir(), h.joinToken("pve"), env.AllowedSigners, func(c *agent.Config) { c.Policy = policy })

	h.putDesired("pve", fleetYAML("pve", "scsi0: \""+newDisk+"\""))
	var pend []wire.Pending
	eventually(t, "the disk replacement pending on the hub", func() bool {
		pend = h.pending("pve")
		return len(pend) == 1 && len(pend[0].Payload) > 0
	})
	if q := pend[0].Quorum; q == nil || q.Role != signedop.DefaultRole || q.Need != 2 || len(q.Signed) != 0 {
		t.Fatalf("pending quorum: got %+v; want 2 of role operator", q)
	}
	payload := pend[0].Payload
	replaced := func() int {
		n := 0
		for _, m := range mutationsOf(srv, 101) {
			if m.Params["scsi0"] == newDisk {
				n++
			}
		}
		return n
	}

	id := h.uploadJob("pve", payload, env.Sign(payload, env.Alice.Signer))
	var held hub.JobJSON
	eventually(t, "alice's job held for one more signer", func() bool {
		js := h.jobs("pve")
		if len(js) != 1 || js[0].Result == nil {
			return false
		}
		held = js[0]
		return true
	})
	r := held.Result
	if held.State != "waiting" || r.State != wire.JobHeld || r.Code != signedop.CodeInsufficientSigners || r.Quorum == nil ||
		r.Quorum.Need != 2 || !slices.Equal(r.Quorum.Signed, []string{"alice@example.com"}) {
		t.Fatalf("alice's job: state %s, result %+v; want waiting, held (insufficient_signers) with 1 of 2 signed by alice", held.State, r)
	}
	if want := "waiting for 1 more signer(s) of role operator (1 of 2 signed: alice@example.com)"; r.Reason != want {
		t.Errorf("held reason: got %q; want %q", r.Reason, want)
	}
	before := ha.tickCount()
	eventually(t, "three more ticks", func() bool { return ha.tickCount() >= before+3 })
	if n := replaced(); n != 0 {
		t.Fatalf("the disk replacement ran %d time(s) with 1 of 2 signatures", n)
	}
	if js := h.jobs("pve"); len(js) != 1 || js[0].State != "waiting" {
		t.Fatalf("jobs after more ticks: %+v; want alice's still waiting", js)
	}
	if p := h.pending("pve"); len(p) != 1 || string(p[0].Payload) != string(payload) {
		t.Fatalf("pending after alice signed: %+v; want the same payload offered (the one carrying her signature)", p)
	}

	if got := h.uploadJob("pve", payload, env.Sign(payload, env.Bob.Signer)); got != id {
		t.Fatalf("bob's upload: job %s; want alice's %s", got, id)
	}
	eventually(t, "the co-signed job done", func() bool {
		js := h.jobs("pve")
		return len(js) == 1 && js[0].State == wire.JobDone
	})
	before = ha.tickCount()
	eventually(t, "three more ticks", func() bool { return ha.tickCount() >= before+3 })
	if n := replaced(); n != 1 {
		t.Fatalf("the co-signed disk replacement ran %d time(s); want exactly once", n)
	}
	eventually(t, "the hub holds the begin receipt naming alice's and bob's keys", func() bool {
		rs, err := h.st.Receipts(t.Context(), "pve", 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, rc := range rs {
			if rc.Type == wire.ReceiptBegin && rc.Source == "signed" {
				return len(rc.Signers) == 2 && slices.Contains(rc.Signers, env.Alice.Fingerprint()) && slices.Contains(rc.Signers, env.Bob.Fingerprint())
			}
		}
		return false
	})
	err := h.op.JSON(t.Context(), http.MethodPost, "/v1/hosts/pve/jobs", nil, hub.JobJSON{Payload: payload, Signatures: [][]byte{env.Sign(payload, env.Carol.Signer)}}, nil)
	if !hubclient.IsCode(err, "job_final") {
		t.Fatalf("a third signature after the job ran: got %v; want 409 job_final", err)
	}
}
