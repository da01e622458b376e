package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"github.com/steward-pve/steward/internal/wire"
)

const digestA = "1111111111111111111111111111111111111111"

// testSigner signs with a fresh software key and counts its calls.
type testSigner struct {
	mu    sync.Mutex
	calls int
	key   *signedoptest.Key
}

func newTestSigner(t *testing.T) *testSigner {
	return &testSigner{key: signedoptest.NewKey(t, signedoptest.Ed25519)}
}

func (s *testSigner) sign(_ context.Context, payload []byte) ([]byte, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	return signedop.Sign(payload, s.key.Signer)
}

func TestSignUploadsAndFollowsTheJob(t *testing.T) {
	o := newOpsHub(t)
	agent := o.enroll("pve-a")
	pd := pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)
	o.report(agent, reportWith("pve-a", digestA, pd))

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go answerJobs(ctx, t, agent, "pve-a", wire.JobResult{State: wire.JobDone, UPID: "UPID:pve-a:1:2:3:qmdestroy:102:root@pam:", ExitStatus: "OK"})

	s := newTestSigner(t)
	var errw strings.Builder
	res, err := runSign(t.Context(), o.op, strings.NewReader("y\n"), &errw, signOptions{Host: "pve-a", Wait: time.Minute, Poll: 10 * time.Millisecond, Sign: s.sign})
	if err != nil {
		t.Fatalf("runSign: %v\n%s", err, errw.String())
	}
	if len(res) != 1 || res[0].State != wire.JobDone || res[0].UPID == "" || res[0].ExitStatus != "OK" || res[0].Job != wire.JobID(pd.Payload) {
		t.Fatalf("results: got %+v; want the destroy done with its task", res)
	}
	out := errw.String()
	for _, want := range []string{"destroy qemu 102 \"scratch\" on pve-a", "the guest and every disk it owns", "param:     purge=1",
		"config digest " + digestA, "Sign this operation? [y/N]", "done, task UPID:pve-a"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	jobs := o.jobs("pve-a")
	if len(jobs) != 1 || string(jobs[0].Payload) != string(pd.Payload) || jobs[0].Uploader != "admin" {
		t.Fatalf("hub's jobs: got %+v; want the agent's payload byte for byte, uploaded by admin", jobs)
	}
	if _, err := signedop.ParseSignature(jobs[0].Signatures[0]); err != nil {
		t.Errorf("uploaded signature: %v", err)
	}
}

func TestSignRefusesExpiredAndStale(t *testing.T) {
	cases := []struct {
		name     string
		pending  func(t *testing.T) wire.Pending
		reported string // the digest the last report shows
		code     string
		says     string
	}{
		{"expired", func(t *testing.T) wire.Pending {
			return pendingDestroy(t, "pve-a", digestA, time.Now().Add(-2*time.Hour), time.Hour)
		}, digestA, signedop.CodeExpired, "the payload expired at"},
		{"stale digest", func(t *testing.T) wire.Pending {
			return pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)
		}, "2222222222222222222222222222222222222222", signedop.CodeStaleDigest, "the guest changed since the payload was made"},
		{"action differs from the payload", func(t *testing.T) wire.Pending {
			pd := pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)
			pd.Action.VMID = 103
			return pd
		}, digestA, "", "is not the action the hub lists"},
		{"re-targeted", func(t *testing.T) wire.Pending {
			return pendingDestroy(t, "pve-b", digestA, time.Now(), time.Hour)
		}, digestA, "", "refusing a re-targeted payload"},
		{"ttl longer than agents accept", func(t *testing.T) wire.Pending {
			return pendingDestroy(t, "pve-a", digestA, time.Now(), 30*24*time.Hour)
		}, digestA, signedop.CodeTTLTooLong, "accepts at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := newOpsHub(t)
			agent := o.enroll("pve-a")
			o.report(agent, reportWith("pve-a", c.reported, c.pending(t)))
			s := newTestSigner(t)
			var errw strings.Builder
			res, err := runSign(t.Context(), o.op, strings.NewReader(""), &errw, signOptions{Host: "pve-a", Yes: true, Wait: time.Minute, Sign: s.sign})
			if !errors.Is(err, errSignFailed) || ExitCode(err) != ExitFailure {
				t.Fatalf("runSign: got %v (exit %d); want errSignFailed, exit 1\n%s", err, ExitCode(err), errw.String())
			}
			if len(res) != 1 || res[0].State != signRefused || res[0].Code != c.code || !strings.Contains(res[0].Reason, c.says) {
				t.Fatalf("result: got %+v; want refused, code %q, saying %q", res, c.code, c.says)
			}
			if !strings.Contains(errw.String(), "REFUSED, not signed") {
				t.Errorf("output does not say it refused:\n%s", errw.String())
			}
			if s.calls != 0 || len(o.jobs("pve-a")) != 0 {
				t.Fatalf("signed %d times, %d jobs uploaded; want nothing signed or uploaded", s.calls, len(o.jobs("pve-a")))
			}
		})
	}
}

func TestSignDeclinedAndNothingPending(t *testing.T) {
	o := newOpsHub(t)
	agent := o.enroll("pve-a")
	o.enroll("pve-b")
	o.report(agent, reportWith("pve-a", digestA, pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)))
	s := newTestSigner(t)
	var errw strings.Builder
	for _, answer := range []string{"n\n", "", "maybe\n"} {
		res, err := runSign(t.Context(), o.op, strings.NewReader(answer), &errw, signOptions{Wait: time.Minute, Sign: s.sign})
		if err != nil || len(res) != 1 || res[0].State != signDeclined {
			t.Fatalf("answer %q: got %+v, %v; want declined, no error", answer, res, err)
		}
	}
	if s.calls != 0 || len(o.jobs("pve-a")) != 0 {
		t.Fatalf("declined: signed %d times, %d jobs; want none", s.calls, len(o.jobs("pve-a")))
	}
	errw.Reset()
	res, err := runSign(t.Context(), o.op, nil, &errw, signOptions{Host: "pve-b", Sign: s.sign})
	if err != nil || len(res) != 0 || !strings.Contains(errw.String(), "pve-b: no operation is waiting for a signature") {
		t.Fatalf("nothing pending: got %+v, %v, %q; want no result, no error", res, err, errw.String())
	}
	if _, err := runSign(t.Context(), o.op, nil, &errw, signOptions{Host: "pve-a"}); ExitCode(err) != ExitUsage {
		t.Fatalf("no --key: got %v; want a usage error", err)
	}
}

// TestSignWithSSHKeygen signs through the real ssh-keygen with a key file,
// as an operator does, and checks the hub got a signature of that key.
func TestSignWithSSHKeygen(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen is needed for this test (install openssh-client): %v", err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	if out, err := exec.CommandContext(t.Context(), "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@test", "-f", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	o := newOpsHub(t)
	agent := o.enroll("pve-a")
	o.report(agent, reportWith("pve-a", digestA, pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)))
	var errw strings.Builder
	res, err := runSign(t.Context(), o.op, nil, &errw, signOptions{Host: "pve-a", Key: keyFile, Yes: true})
	if err != nil || len(res) != 1 || res[0].State != "waiting" {
		t.Fatalf("runSign: got %+v, %v; want one job waiting\n%s", res, err, errw.String())
	}
	jobs := o.jobs("pve-a")
	if len(jobs) != 1 {
		t.Fatalf("jobs: got %d; want 1", len(jobs))
	}
	sig, err := signedop.ParseSignature(jobs[0].Signatures[0])
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(pub)); !strings.HasPrefix(got, strings.TrimSpace(authorizedKey(sig))) {
		t.Fatalf("signing key: got %s; want %s", authorizedKey(sig), got)
	}
}

func authorizedKey(s *signedop.Signature) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey)))
}

// TestSignWithAgentOnlyKey: `steward sign --agent` without --key signs with
// the ssh-agent's only key, and with several names them.
func TestSignWithAgentOnlyKey(t *testing.T) {
	o := newOpsHub(t)
	e := newOpEnv(t)
	e.login(o.testHub, "lab")
	agentC := o.enroll("pve-a")
	o.report(agentC, reportWith("pve-a", digestA, pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)))
	k := signedoptest.NewKey(t, signedoptest.Ed25519)
	serveAgent(t, k.Private)
	if _, stderr, err := e.run("", "sign", "--host", "pve-a", "--agent", "--yes", "--wait", "0"); err != nil {
		t.Fatalf("sign --agent: %v\n%s", err, stderr)
	}
	jobs := o.jobs("pve-a")
	if len(jobs) != 1 {
		t.Fatalf("jobs: got %d; want 1", len(jobs))
	}
	sig, err := signedop.ParseSignature(jobs[0].Signatures[0])
	if err != nil || ssh.FingerprintSHA256(sig.PublicKey) != k.Fingerprint() {
		t.Fatalf("signed by %v (%v); want the agent's key %s", sig, err, k.Fingerprint())
	}

	o.report(agentC, reportWith("pve-a", digestA, pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)))
	serveAgent(t, k.Private, signedoptest.NewKeyN(t, signedoptest.ECDSAP256, 1).Private)
	_, _, err = e.run("", "sign", "--host", "pve-a", "--agent", "--yes", "--wait", "0")
	if err == nil || !strings.Contains(err.Error(), "ssh-agent holds 2 keys") || !strings.Contains(err.Error(), k.Fingerprint()) {
		t.Fatalf("sign --agent with two agent keys: got %v; want an error naming both", err)
	}
}

// TestSignTwoSigners: the four-eyes flow from the operators' side. The
// listing of every host comes from the fleet view; Alice sees that two
// operators must sign, signs, and is told one more is needed (exit 0,
// nothing to follow); signing again with her key adds nothing; Bob sees
// Alice's signature as the agent credited it, signs the same payload,
// his signature joins her job, and he follows it until the agent ran it;
// a signature after that is refused (the job ended).
func TestSignTwoSigners(t *testing.T) {
	o := newOpsHub(t)
	agent := o.enroll("pve-a")
	o.enroll("pve-b") // reports nothing: not listed
	pd := pendingDestroy(t, "pve-a", digestA, time.Now(), time.Hour)
	pd.Quorum = &wire.Quorum{Role: "operator", Need: 2}
	o.report(agent, reportWith("pve-a", digestA, pd))
	id := wire.JobID(pd.Payload)
	alice, bob := newTestSigner(t), newTestSigner(t)

	var errw strings.Builder
	res, err := runSign(t.Context(), o.op, nil, &errw, signOptions{Yes: true, Wait: time.Hour, Sign: alice.sign})
	if err != nil || len(res) != 1 || res[0].State != signAwaiting || res[0].Signatures != 1 || res[0].Need != 2 || res[0].Job != id {
		t.Fatalf("alice: got %+v, %v; want one result awaiting signatures, 1 of 2, no error\n%s", res, err, errw.String())
	}
	for _, want := range []string{"pve-a: 1 operation(s) waiting", "signed:    0 of 2 (role operator)\n", "signed and uploaded as job",
		"(1 of 2 signature(s) of role operator)", "waiting for 1 more signer(s) of role operator"} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("alice's output lacks %q:\n%s", want, errw.String())
		}
	}
	if strings.Contains(errw.String(), "pve-b") {
		t.Errorf("alice's output names pve-b, which holds nothing to sign:\n%s", errw.String())
	}
	errw.Reset()
	if res, err := runSign(t.Context(), o.op, nil, &errw, signOptions{Host: "pve-a", Yes: true, Wait: time.Hour, Sign: alice.sign}); err != nil ||
		len(res) != 1 || res[0].State != signAwaiting || !strings.Contains(errw.String(), "your key had signed job") {
		t.Fatalf("alice again: got %+v, %v; want nothing added, still awaiting\n%s", res, err, errw.String())
	}
	if js := o.jobs("pve-a"); len(js) != 1 || len(js[0].Signatures) != 1 {
		t.Fatalf("jobs after alice: %+v; want one job with her one signature", js)
	}

	// The agent holds it for one more signer, naming alice; once the job
	// carries two signatures it runs it.
	held := wire.JobResult{Job: id, State: wire.JobHeld, Code: signedop.CodeInsufficientSigners,
		Reason: "waiting for 1 more signer(s) of role operator (1 of 2 signed: alice@example.com)",
		Quorum: &wire.Quorum{Role: "operator", Need: 2, Signed: []string{"alice@example.com"}}}
	postResult := func(r wire.JobResult) {
		t.Helper()
		b, _ := json.Marshal(wire.JobResults{Host: "pve-a", Results: []wire.JobResult{r}})
		if resp, err := agent.Do(t.Context(), hubclient.Request{Method: "POST", Path: "/v1/agent/hosts/pve-a/job-results", Body: b}); err != nil || resp.Status != 200 {
			t.Fatalf("posting %s: %v %v", r.State, err, resp)
		}
	}
	postResult(held)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			var out struct{ Jobs []hub.JobJSON }
			if agent.JSON(ctx, "GET", "/v1/agent/hosts/pve-a/jobs", nil, nil, &out) != nil {
				return
			}
			if len(out.Jobs) == 1 && len(out.Jobs[0].Signatures) == 2 {
				b, _ := json.Marshal(wire.JobResults{Host: "pve-a", Results: []wire.JobResult{{Job: id, State: wire.JobDone, UPID: "UPID:pve-a:1:2:3:qmdestroy:102:root@pam:", ExitStatus: "OK"}}})
				agent.Do(ctx, hubclient.Request{Method: "POST", Path: "/v1/agent/hosts/pve-a/job-results", Body: b})
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	errw.Reset()
	res, err = runSign(t.Context(), o.op, strings.NewReader("y\n"), &errw, signOptions{Wait: time.Minute, Poll: 10 * time.Millisecond, Sign: bob.sign})
	if err != nil || len(res) != 1 || res[0].State != wire.JobDone || res[0].Signatures != 2 || res[0].Job != id {
		t.Fatalf("bob: got %+v, %v; want the job done with two signatures\n%s", res, err, errw.String())
	}
	for _, want := range []string{"signed:    1 of 2 (role operator): alice@example.com", "your signature joins job",
		"(2 of 2 signature(s) of role operator)", "done, task UPID:pve-a"} {
		if !strings.Contains(errw.String(), want) {
			t.Errorf("bob's output lacks %q:\n%s", want, errw.String())
		}
	}
	js := o.jobs("pve-a")
	if len(js) != 1 || len(js[0].Signatures) != 2 || string(js[0].Payload) != string(pd.Payload) {
		t.Fatalf("jobs after bob: %+v; want the one job, the agent's payload, two signatures", js)
	}
	for i, s := range []*testSigner{alice, bob} {
		fp, err := signedop.SignerFingerprint(js[0].Signatures[i])
		if err != nil || fp != s.key.Fingerprint() {
			t.Errorf("signature %d by %s (%v); want %s", i+1, fp, err, s.key.Fingerprint())
		}
	}

	errw.Reset()
	carol := newTestSigner(t)
	res, err = runSign(t.Context(), o.op, nil, &errw, signOptions{Host: "pve-a", Yes: true, Wait: time.Minute, Sign: carol.sign})
	if ExitCode(err) != ExitFailure || len(res) != 1 || res[0].State != signRefused || res[0].Code != "job_final" {
		t.Fatalf("carol after the job ran: got %+v, %v; want refused (job_final), exit 1\n%s", res, err, errw.String())
	}
}
