package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// TestSignHistoryCommands runs steward sign and steward history as an
// operator does, logged in to a real hub: an expired payload is refused
// (exit 1, nothing uploaded), a valid one is signed with ssh-keygen,
// uploaded and followed until the agent reports it done (exit 0), and
// history then shows who asked, who signed, PVE's task and the result.
func TestSignHistoryCommands(t *testing.T) {
	o := newOpsHub(t)
	e := newOpEnv(t)
	e.login(o.testHub, "lab")
	key := newOpFixture(t, "op").keys["op"]
	agent := o.enroll("pve-a")

	made := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.report(agent, reportWith("pve-a", digestA, pendingDestroy(t, "pve-a", digestA, made, time.Hour)))
	out, stderr, err := e.run("", "sign", "--host", "pve-a", "--key", key, "--yes", "-o", "json")
	if ExitCode(err) != ExitFailure || !Silent(err) {
		t.Fatalf("sign of an expired payload: got %v (exit %d); want exit 1, the refusal in the output\n%s", err, ExitCode(err), stderr)
	}
	golden(t, "sign-expired.json", out)
	if !strings.Contains(stderr, "REFUSED, not signed (expired): the payload expired at 2026-01-01T01:00:00Z") {
		t.Errorf("stderr does not say why it refused:\n%s", stderr)
	}
	if n := len(o.jobs("pve-a")); n != 0 {
		t.Fatalf("jobs after a refusal: got %d; want none", n)
	}

	pd := pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)
	o.report(agent, reportWith("pve-a", digestA, pd))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	upid := "UPID:pve-a:0000A1B2:0000C3D4:65920000:qmdestroy:102:steward@pve!agent:"
	go answerJobs(ctx, t, agent, "pve-a", wire.JobResult{State: wire.JobDone, UPID: upid, ExitStatus: "OK"})
	out, stderr, err = e.run("", "sign", "--host", "pve-a", "--key", key, "--yes", "--wait", "1m", "-o", "json")
	if err != nil {
		t.Fatalf("sign: %v\n%s", err, stderr)
	}
	job := wire.JobID(pd.Payload)
	golden(t, "sign-done.json", out, job, "JOB")
	cancel()

	// The agent's journal, shipped as receipts: the signed destroy.
	p, err := signedop.ParsePayload(pd.Payload)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s int) time.Time { return made.Add(time.Duration(s) * time.Second) }
	act := &wire.Action{Op: "destroy", VMID: 102, Kind: "qemu", Params: map[string]string{"purge": "1"}, Digest: digestA}
	rs := []wire.Receipt{
		{Time: at(0), Type: wire.ReceiptDecision, Source: "reconcile", Action: act, Class: "destructive", Verdict: "pending_signature", Reason: "destroys the guest"},
		{Time: at(60), Type: wire.ReceiptBegin, Op: "op-1", Source: "signed", Action: act, Signers: []string{"SHA256:operatorkey"}, Nonce: p.Nonce},
		{Time: at(61), Type: wire.ReceiptTask, Op: "op-1", UPID: upid},
		{Time: at(63), Type: wire.ReceiptEnd, Op: "op-1", Result: &wire.OpResult{OK: true, ExitStatus: "OK"}},
	}
	wire.Chain(0, wire.ZeroHash, rs)
	if _, err := agentReceipts(t, agent, rs); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = e.run("", "history", "pve-a/102", "-o", "json")
	if err != nil {
		t.Fatalf("history: %v\n%s", err, stderr)
	}
	golden(t, "history.json", out, job, "JOB", p.Nonce, "NONCE")
	out, _, err = e.run("", "history", "pve-a")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "history.txt", out)

	if _, stderr, err := e.run("", "history", "pve-a/x"); ExitCode(err) != ExitUsage {
		t.Errorf("history pve-a/x: got %v; want a usage error\n%s", err, stderr)
	}
	if _, _, err := e.run("", "history", "nope"); ExitCode(err) != ExitFailure || !strings.Contains(err.Error(), "no_such_host") {
		t.Errorf("history of an unknown host: got %v; want exit 1 naming no_such_host", err)
	}
}

func agentReceipts(t *testing.T, agent *hubclient.Client, rs []wire.Receipt) ([]byte, error) {
	t.Helper()
	b, err := wire.EncodeReceipts(wire.Receipts{Host: "pve-a", Receipts: rs})
	if err != nil {
		return nil, err
	}
	resp, err := agent.Do(t.Context(), hubclient.Request{Method: "POST", Path: "/v1/agent/hosts/pve-a/receipts", Body: b})
	if err != nil {
		return nil, err
	}
	return resp.Body, resp.Err("POST", "receipts")
}
