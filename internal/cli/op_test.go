package cli

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/steward-pve/steward/internal/signedop"
)

func runCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Run(t.Context(), args, &o, &e)
	return o.String(), e.String(), err
}

type opFixture struct {
	dir, payload, allowed string
	keys                  map[string]string // name → private key path
}

func newOpFixture(t *testing.T, names ...string) *opFixture {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	f := &opFixture{dir: t.TempDir(), keys: map[string]string{}}
	var allowed strings.Builder
	for _, n := range names {
		p := filepath.Join(f.dir, n)
		if out, err := exec.Command("ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", n, "-f", p).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v: %s", err, out)
		}
		pub, _ := os.ReadFile(p + ".pub")
		fs := strings.Fields(string(pub))
		allowed.WriteString(n + "@example.com " + fs[0] + " " + fs[1] + "\n")
		f.keys[n] = p
	}
	f.allowed = filepath.Join(f.dir, "allowed_signers")
	os.WriteFile(f.allowed, []byte(allowed.String()), 0o600)
	out, _, err := runCLI(t, "op", "payload", "--host", "pve-a", "--vmid", "101", "--kind", "qemu", "--op", "destroy",
		"--param", "purge=1", "--param", "destroy-unreferenced-disks=1", "--digest", "abc", "--reason", "decommission")
	if err != nil {
		t.Fatalf("op payload: %v", err)
	}
	f.payload = filepath.Join(f.dir, "payload.json")
	os.WriteFile(f.payload, []byte(out), 0o600)
	return f
}

func TestOpPayloadSignVerify(t *testing.T) {
	f := newOpFixture(t, "alice", "bob")
	payload, _ := os.ReadFile(f.payload)
	p, err := signedop.ParsePayload(payload)
	if err != nil {
		t.Fatalf("op payload output is not a canonical payload: %v", err)
	}
	if p.Op != "destroy" || p.VMID != 101 || p.Params["purge"] != "1" || p.Digest != "abc" || p.Reason != "decommission" {
		t.Fatalf("payload: got %+v", p)
	}
	if _, stderr, err := runCLI(t, "op", "sign", "--key", f.keys["alice"], f.payload); err != nil {
		t.Fatalf("op sign: %v (stderr %s)", err, stderr)
	} else if !strings.Contains(stderr, "destroy qemu 101 on host pve-a") {
		t.Fatalf("op sign stderr %q: want a description of what is signed", stderr)
	}
	sig := f.payload + ".sig"
	// OpenSSH agrees.
	cmd := exec.Command("ssh-keygen", "-Y", "verify", "-n", signedop.Namespace, "-I", "alice@example.com", "-f", f.allowed, "-s", sig)
	cmd.Stdin = bytes.NewReader(payload)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -Y verify of op sign output: %v: %s", err, out)
	}
	out, _, err := runCLI(t, "op", "verify", "--allowed-signers", f.allowed, "--host", "pve-a", f.payload, sig)
	if err != nil || !strings.HasPrefix(out, "OK: destroy qemu 101") || !strings.Contains(out, "alice@example.com SHA256:") {
		t.Fatalf("op verify: got %q, %v; want OK naming alice", out, err)
	}

	policy := filepath.Join(f.dir, "policy.yaml")
	os.WriteFile(policy, []byte("require:\n  destroy: {role: operator, count: 2}\n"), 0o600)
	bobSig := filepath.Join(f.dir, "bob.sig")
	if _, stderr, err := runCLI(t, "op", "sign", "--key", f.keys["bob"], "--out", bobSig, f.payload); err != nil {
		t.Fatalf("op sign bob: %v (%s)", err, stderr)
	}
	rejections := []struct {
		name string
		args []string
		code string
	}{
		{"wrong host", []string{"--host", "pve-b", f.payload, sig}, signedop.CodeWrongHost},
		{"stale digest", []string{"--host", "pve-a", "--digest", "def", f.payload, sig}, signedop.CodeStaleDigest},
		{"two of operator, one signer", []string{"--host", "pve-a", "--policy", policy, f.payload, sig}, signedop.CodeInsufficientSigners},
		{"same signature twice", []string{"--host", "pve-a", "--policy", policy, f.payload, sig, sig}, signedop.CodeInsufficientSigners},
		{"signature as payload", []string{"--host", "pve-a", sig, sig}, signedop.CodeBadPayload},
	}
	for _, tt := range rejections {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCLI(t, append([]string{"op", "verify", "--allowed-signers", f.allowed}, tt.args...)...)
			if err == nil || ExitCode(err) != 1 {
				t.Fatalf("err: got %v; want exit 1", err)
			}
			if want := "REJECTED (" + tt.code + "): "; !strings.HasPrefix(out, want) {
				t.Fatalf("stdout: got %q; want prefix %q", out, want)
			}
		})
	}
	out, _, err = runCLI(t, "op", "verify", "--allowed-signers", f.allowed, "--host", "pve-a", "--policy", policy, f.payload, sig, bobSig)
	if err != nil || !strings.Contains(out, "bob@example.com") {
		t.Fatalf("two signers: got %q, %v; want OK", out, err)
	}
}

func TestOpPayloadUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"bad kind", []string{"--host", "h", "--vmid", "101", "--kind", "vm", "--op", "destroy"}},
		{"bad param", []string{"--host", "h", "--vmid", "101", "--kind", "qemu", "--op", "config", "--param", "novalue"}},
		{"duplicate param", []string{"--host", "h", "--vmid", "101", "--kind", "qemu", "--op", "config", "--param", "a=1", "--param", "a=2"}},
		{"bad vmid", []string{"--host", "h", "--vmid", "7", "--kind", "qemu", "--op", "destroy"}},
		{"missing host", []string{"--vmid", "101", "--kind", "qemu", "--op", "destroy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCLI(t, append([]string{"op", "payload"}, tt.args...)...)
			if ExitCode(err) != ExitUsage {
				t.Fatalf("got %v (exit %d); want usage error (exit %d)", err, ExitCode(err), ExitUsage)
			}
		})
	}
}

func TestOpSignRefusesNonCanonical(t *testing.T) {
	f := newOpFixture(t, "alice")
	payload, _ := os.ReadFile(f.payload)
	bad := filepath.Join(f.dir, "bad.json")
	os.WriteFile(bad, bytes.Replace(payload, []byte(`,"host"`), []byte(`, "host"`), 1), 0o600)
	if _, _, err := runCLI(t, "op", "sign", "--key", f.keys["alice"], bad); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("got %v; want refusal naming canonical form", err)
	}
	if _, err := os.Stat(bad + ".sig"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("signature file written for a refused payload (stat: %v)", err)
	}
}

func TestOpSignWithAgent(t *testing.T) {
	f := newOpFixture(t, "alice")
	pem, _ := os.ReadFile(f.keys["alice"])
	raw, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	serveAgent(t, other, raw)

	out := filepath.Join(f.dir, "agent.sig")
	if _, stderr, err := runCLI(t, "op", "sign", "--agent", "--key", f.keys["alice"], "--out", out, f.payload); err != nil {
		t.Fatalf("op sign --agent: %v (%s)", err, stderr)
	}
	res, _, err := runCLI(t, "op", "verify", "--allowed-signers", f.allowed, "--host", "pve-a", f.payload, out)
	if err != nil || !strings.HasPrefix(res, "OK:") {
		t.Fatalf("verify agent signature: got %q, %v; want OK", res, err)
	}
	// A key the agent does not hold is an error naming its fingerprint.
	g := newOpFixture(t, "zed")
	if _, _, err := runCLI(t, "op", "sign", "--agent", "--key", g.keys["zed"], "--out", "-", f.payload); err == nil || !strings.Contains(err.Error(), "SHA256:") {
		t.Fatalf("unknown agent key: got %v; want error naming the fingerprint", err)
	}
}

// serveAgent serves an ssh-agent holding keys (private keys as
// agent.AddedKey takes them) on a socket that SSH_AUTH_SOCK names until
// the test ends.
func serveAgent(t *testing.T, keys ...any) {
	t.Helper()
	keyring := agent.NewKeyring()
	for _, k := range keys {
		if err := keyring.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			agent.ServeAgent(keyring, c)
			c.Close()
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	t.Setenv("SSH_AUTH_SOCK", sock)
}
