package hub

import (
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

// TestDashboardPendingSigners: the pending-signatures page says how many
// signers the agent's policy needs and who signed the waiting job so
// far: by key before the agent judged it, by principal once it did.
func TestDashboardPendingSigners(t *testing.T) {
	e := newEnv(t)
	tok := e.enroll("pve-a")
	a := action.Action{Op: action.SetConfig, VMID: 102, Kind: guest.QEMU, Params: map[string]string{"delete": "scsi0"}, Digest: "d102"}
	p, err := signedop.NewPayload("pve-a", a, time.Now(), time.Hour, "deletes a disk")
	if err != nil {
		t.Fatal(err)
	}
	payload := p.Canonical()
	rep := dashReport(string(payload))
	rep.Pending[0].Quorum = &wire.Quorum{Role: "operator", Need: 2}
	body, err := wire.EncodeReport(rep)
	if err != nil {
		t.Fatal(err)
	}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	b := newBrowser(e)
	b.login(e.opTok)
	page := func(want ...string) {
		t.Helper()
		resp, body := b.req("GET", "/ui/pending", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /ui/pending: %d %s", resp.StatusCode, body)
		}
		for _, w := range want {
			if !strings.Contains(body, w) {
				t.Errorf("GET /ui/pending: no %q in\n%s", w, body)
			}
		}
	}
	page("<dt>Signatures</dt>\n<dd>0 of 2 (role operator)</dd>")

	alice := signedoptest.NewKey(t, signedoptest.Ed25519)
	sig, err := signedop.Sign(payload, alice.Signer)
	if err != nil {
		t.Fatal(err)
	}
	var up UploadJSON
	e.must(200, "POST", "/v1/hosts/pve-a/jobs", e.opTok, mustJSON(t, JobJSON{Payload: payload, Signatures: [][]byte{sig}}), &up)
	// html/template writes '+' (in base64 fingerprints) as &#43;.
	page("1 of 2 (role operator): <code>" + strings.ReplaceAll(alice.Fingerprint(), "+", "&#43;") + "</code> — the job waits on the hub for more operators to sign this same payload")

	held := wire.JobResults{Host: "pve-a", Results: []wire.JobResult{{Job: up.ID, State: wire.JobHeld, Code: signedop.CodeInsufficientSigners,
		Reason: "waiting for 1 more signer(s)", Quorum: &wire.Quorum{Role: "operator", Need: 2, Signed: []string{"alice@example.com"}}}}}
	e.must(200, "POST", "/v1/agent/hosts/pve-a/job-results", tok, mustJSON(t, held), nil)
	page("1 of 2 (role operator): <code>alice@example.com</code>")
}
