package cli

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// Issue 8 §6: `op payload` refuses what the agent refuses, with the
// agent's own code and reason (signedop.Admissible).
func TestOpPayloadRefusesWhatTheAgentRefuses(t *testing.T) {
	base := []string{"op", "payload", "--host", "pve-a", "--vmid", "101", "--kind", "qemu"}
	tests := []struct {
		name string
		args []string
		a    action.Action
		ttl  time.Duration
		code string
	}{
		{"unknown op", []string{"--op", "format_disk", "--digest", "abc"},
			action.Action{Op: "format_disk", VMID: 101, Kind: guest.QEMU, Digest: "abc"}, time.Hour, signedop.CodeUnknownOp},
		{"ttl over the maximum", []string{"--op", "destroy", "--digest", "abc", "--ttl", "200h"},
			action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Digest: "abc"}, 200 * time.Hour, signedop.CodeTTLTooLong},
		{"destroy without a digest", []string{"--op", "destroy"},
			action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU}, time.Hour, signedop.CodeMissingDigest},
		{"snapshot delete without a digest", []string{"--op", "snapshot_delete", "--param", "snapname=s1"},
			action.Action{Op: action.SnapshotDelete, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"snapname": "s1"}}, time.Hour, signedop.CodeMissingDigest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCLI(t, append(base, tt.args...)...)
			if err == nil || ExitCode(err) != ExitUsage || out != "" {
				t.Fatalf("got %q, %v; want a usage error and no payload", out, err)
			}
			// The agent's reason, word for word.
			p, perr := signedop.NewPayload("pve-a", tt.a, time.Now(), tt.ttl, "")
			if perr != nil {
				t.Fatal(perr)
			}
			var r *signedop.Rejection
			if !errors.As(signedop.Admissible(p, 0), &r) || r.Code != tt.code {
				t.Fatalf("Admissible: got %v; want code %s", r, tt.code)
			}
			if !strings.Contains(err.Error(), "("+tt.code+"): "+r.Reason) {
				t.Errorf("got %q; want the agent's code and reason %q", err, r.Reason)
			}
		})
	}
	// Ops that need no digest still work without one.
	if _, _, err := runCLI(t, append(base, "--op", "start")...); err != nil {
		t.Errorf("start without a digest: %v", err)
	}
}

// `op sign` refuses a payload the agent would refuse (made by hand, not
// by `op payload`), and `op verify` rejects it with the agent's code even
// when it was signed with plain ssh-keygen.
func TestOpSignAndVerifyRefuseInadmissible(t *testing.T) {
	f := newOpFixture(t, "alice")
	p, err := signedop.NewPayload("pve-a", action.Action{Op: "format_disk", VMID: 101, Kind: guest.QEMU, Digest: "abc"}, time.Now(), time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(f.dir, "bad.json")
	if err := os.WriteFile(bad, p.Canonical(), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCLI(t, "op", "sign", "--key", f.keys["alice"], bad)
	if err == nil || !strings.Contains(err.Error(), "(unknown_op)") {
		t.Fatalf("op sign: got %v; want a refusal naming unknown_op", err)
	}
	if _, serr := os.Stat(bad + ".sig"); !errors.Is(serr, os.ErrNotExist) {
		t.Fatalf("op sign wrote a signature for a refused payload (stat: %v)", serr)
	}
	if out, err := exec.Command("ssh-keygen", "-Y", "sign", "-n", signedop.Namespace, "-f", f.keys["alice"], bad).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
	}
	out, _, err := runCLI(t, "op", "verify", "--allowed-signers", f.allowed, "--host", "pve-a", bad, bad+".sig")
	if !errors.Is(err, errRejected) || !strings.HasPrefix(out, "REJECTED (unknown_op): ") {
		t.Fatalf("op verify: got %q, %v; want REJECTED (unknown_op)", out, err)
	}
}

// `op verify` prints the window the agent really accepts: the payload's
// window widened by the clock-skew allowance at each end.
func TestOpVerifyPrintsAcceptWindow(t *testing.T) {
	f := newOpFixture(t, "alice")
	if _, _, err := runCLI(t, "op", "sign", "--key", f.keys["alice"], f.payload); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.payload)
	p, err := signedop.ParsePayload(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "op", "verify", "--allowed-signers", f.allowed, "--host", "pve-a", f.payload, f.payload+".sig")
	if err != nil {
		t.Fatalf("op verify: %v\n%s", err, out)
	}
	skew := signedop.DefaultMaxSkew
	from := p.NotBefore.Add(-skew).Format(signedop.TimeLayout)
	until := p.Expires.Add(skew).Format(signedop.TimeLayout)
	for _, want := range []string{"from " + from + " until " + until, "clock-skew allowance of " + skew.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("op verify output lacks %q:\n%s", want, out)
		}
	}
}
