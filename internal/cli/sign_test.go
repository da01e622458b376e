package cli

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

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
