package signedop_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/sign"
	"github.com/steward-pve/steward/internal/signedop/signedoptest"
	"golang.org/x/crypto/ssh"
)

func needSSHKeygen(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ssh-keygen")
	if err != nil {
		t.Fatalf("ssh-keygen not found (install openssh-client): %v", err)
	}
	return p
}

// keygen makes a throwaway key with ssh-keygen and returns its path.
func keygen(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	cmd := exec.Command("ssh-keygen", append([]string{"-q", "-N", "", "-C", name, "-f", path}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %v: %v: %s", args, err, out)
	}
	return path
}

func run(t *testing.T, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func interopAction() action.Action {
	return action.Action{Op: action.SnapshotRollback, VMID: 4242, Kind: guest.LXC, Params: map[string]string{"snapname": "before-upgrade"}, Digest: "abc123"}
}

func TestInteropWithOpenSSH(t *testing.T) {
	needSSHKeygen(t)
	dir := t.TempDir()
	keys := []struct {
		name string
		args []string
	}{
		{"ed25519", []string{"-t", "ed25519"}},
		{"ecdsa256", []string{"-t", "ecdsa", "-b", "256"}},
		{"ecdsa384", []string{"-t", "ecdsa", "-b", "384"}},
		{"ecdsa521", []string{"-t", "ecdsa", "-b", "521"}},
		{"rsa3072", []string{"-t", "rsa", "-b", "3072"}},
	}
	now := time.Now()
	a := interopAction()
	p, err := signedop.NewPayload("pve-interop", a, now, time.Hour, "interop: roll back \"before-upgrade\" ✓\n")
	if err != nil {
		t.Fatal(err)
	}
	payload := p.Canonical()
	var allowed strings.Builder
	paths := map[string]string{}
	for _, k := range keys {
		paths[k.name] = keygen(t, dir, k.name, k.args...)
		pub, err := os.ReadFile(paths[k.name] + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(pub))
		allowed.WriteString(k.name + "@example.com " + f[0] + " " + f[1] + "\n")
	}
	allowedPath := filepath.Join(dir, "allowed_signers")
	if err := os.WriteFile(allowedPath, []byte(allowed.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	payloadPath := filepath.Join(dir, "payload.json")
	if err := os.WriteFile(payloadPath, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := allowedsigners.ParseFile(allowedPath)
	if err != nil {
		t.Fatal(err)
	}
	v := &signedop.Verifier{Signers: set}

	sshVerify := func(t *testing.T, principal string, sig []byte) error {
		t.Helper()
		sigPath := filepath.Join(t.TempDir(), "sig")
		if err := os.WriteFile(sigPath, sig, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, payload, "ssh-keygen", "-Y", "verify", "-n", signedop.Namespace, "-I", principal, "-f", allowedPath, "-s", sigPath)
		if err != nil {
			return &verifyErr{out}
		}
		return nil
	}

	for _, k := range keys {
		principal := k.name + "@example.com"
		t.Run("openssh signs, steward verifies/"+k.name, func(t *testing.T) {
			for _, extra := range [][]string{nil, {"-O", "hashalg=sha256"}} {
				args := append([]string{"-q", "-Y", "sign", "-n", signedop.Namespace, "-f", paths[k.name]}, extra...)
				out, err := run(t, payload, "ssh-keygen", args...)
				if err != nil {
					t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
				}
				sigOut := []byte(out)
				auth, err := v.Check(signedop.Job{Payload: payload, Signatures: [][]byte{sigOut}}, "pve-interop", a, a.Digest)
				if err != nil {
					t.Fatalf("Check of ssh-keygen signature %v: got %v; want accepted", extra, err)
				}
				if auth.Signers[0].Principal != principal {
					t.Fatalf("principal: got %q; want %q", auth.Signers[0].Principal, principal)
				}
			}
			// Through the library wrapper too.
			sig, err := sign.WithSSHKeygen(t.Context(), payload, paths[k.name])
			if err != nil {
				t.Fatalf("sign.WithSSHKeygen: %v", err)
			}
			if _, err := v.Check(signedop.Job{Payload: payload, Signatures: [][]byte{sig}}, "pve-interop", a, a.Digest); err != nil {
				t.Fatalf("Check of sign.WithSSHKeygen signature: got %v; want accepted", err)
			}
		})
		t.Run("steward signs, openssh verifies/"+k.name, func(t *testing.T) {
			pem, err := os.ReadFile(paths[k.name])
			if err != nil {
				t.Fatal(err)
			}
			signer, err := ssh.ParsePrivateKey(pem)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := signedop.Sign(payload, signer)
			if err != nil {
				t.Fatal(err)
			}
			if err := sshVerify(t, principal, sig); err != nil {
				t.Fatalf("ssh-keygen -Y verify of steward signature: %v", err)
			}
			if err := sshVerify(t, "someone-else@example.com", sig); err == nil {
				t.Fatalf("ssh-keygen -Y verify with the wrong principal: got success; want failure (test would prove nothing)")
			}
			if k.name == "rsa3072" {
				sha256sig := signedoptest.RawSign(t, payload, signer, signedoptest.SignOpts{RSAAlgorithm: ssh.KeyAlgoRSASHA256})
				if err := sshVerify(t, principal, sha256sig); err != nil {
					t.Fatalf("ssh-keygen -Y verify of rsa-sha2-256 signature: %v", err)
				}
				legacy := signedoptest.RawSign(t, payload, signer, signedoptest.SignOpts{RSAAlgorithm: ssh.KeyAlgoRSA})
				if err := sshVerify(t, principal, legacy); err == nil {
					t.Fatalf("ssh-keygen -Y verify of legacy ssh-rsa signature: got success; want OpenSSH to refuse it as steward does")
				}
				if _, err := v.Check(signedop.Job{Payload: payload, Signatures: [][]byte{legacy}}, "pve-interop", a, a.Digest); signedop.RejectionCode(err) != signedop.CodeLegacyRSASHA1 {
					t.Fatalf("steward on legacy ssh-rsa signature: got %v; want %s", err, signedop.CodeLegacyRSASHA1)
				}
			}
		})
	}

	t.Run("software FIDO signatures verify with openssh", func(t *testing.T) {
		// No FIDO hardware here: SKSigner builds PROTOCOL.u2f signatures in
		// software. OpenSSH verifying them proves the construction, so the
		// user-presence check steward makes is checked on the real format.
		for _, sk := range []*signedoptest.SKSigner{signedoptest.NewSKEd25519(t), signedoptest.NewSKECDSA(t)} {
			typ := sk.PublicKey().Type()
			path := filepath.Join(t.TempDir(), "allowed")
			os.WriteFile(path, []byte("fido@example.com "+string(ssh.MarshalAuthorizedKey(sk.PublicKey()))), 0o600)
			skSet, err := allowedsigners.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			skV := &signedop.Verifier{Signers: skSet}
			for _, flags := range []byte{0x01, 0x05, 0x00, 0x04} {
				sk.Flags = flags
				sig, err := signedop.Sign(payload, sk)
				if err != nil {
					t.Fatal(err)
				}
				sigPath := filepath.Join(t.TempDir(), "sig")
				os.WriteFile(sigPath, sig, 0o600)
				out, err := run(t, payload, "ssh-keygen", "-Y", "verify", "-n", signedop.Namespace, "-I", "fido@example.com", "-f", path, "-s", sigPath)
				// ssh-keygen -Y verify (OpenSSH 9.2) does not demand user
				// presence, so it accepts every flag value: it proves the
				// format. steward is stricter and demands the flag.
				if err != nil {
					t.Fatalf("%s flags %#x: ssh-keygen -Y verify: %v: %s", typ, flags, err, out)
				}
				if _, err := run(t, append([]byte("x"), payload...), "ssh-keygen", "-Y", "verify", "-n", signedop.Namespace, "-I", "fido@example.com", "-f", path, "-s", sigPath); err == nil {
					t.Fatalf("%s: ssh-keygen -Y verify accepted the signature over other bytes; the check proves nothing", typ)
				}
				present := flags&0x01 != 0
				_, err = skV.Check(signedop.Job{Payload: payload, Signatures: [][]byte{sig}}, "pve-interop", a, a.Digest)
				if present && err != nil {
					t.Fatalf("%s flags %#x: steward got %v; want accepted", typ, flags, err)
				}
				if !present && signedop.RejectionCode(err) != signedop.CodeNoUserPresence {
					t.Fatalf("%s flags %#x: steward got %v; want %s", typ, flags, err, signedop.CodeNoUserPresence)
				}
			}
		}
	})

	t.Run("openssh signs in a foreign namespace", func(t *testing.T) {
		out, err := run(t, payload, "ssh-keygen", "-q", "-Y", "sign", "-n", "file", "-f", paths["ed25519"])
		if err != nil {
			t.Fatalf("ssh-keygen -Y sign: %v: %s", err, out)
		}
		_, err = v.Check(signedop.Job{Payload: payload, Signatures: [][]byte{[]byte(out)}}, "pve-interop", a, a.Digest)
		if signedop.RejectionCode(err) != signedop.CodeWrongNamespace {
			t.Fatalf("got %v; want %s", err, signedop.CodeWrongNamespace)
		}
	})

	t.Run("certificate issued by ssh-keygen", func(t *testing.T) {
		ca := keygen(t, dir, "ca", "-t", "ed25519")
		user := keygen(t, dir, "user", "-t", "ed25519")
		if out, err := run(t, nil, "ssh-keygen", "-q", "-s", ca, "-I", "erin", "-n", "erin@example.com", "-V", "-1h:+1h", user+".pub"); err != nil {
			t.Fatalf("ssh-keygen -s: %v: %s", err, out)
		}
		caPub, _ := os.ReadFile(ca + ".pub")
		f := strings.Fields(string(caPub))
		caAllowed := filepath.Join(dir, "ca_allowed")
		os.WriteFile(caAllowed, []byte("*@example.com cert-authority "+f[0]+" "+f[1]+"\n"), 0o600)
		set, err := allowedsigners.ParseFile(caAllowed)
		if err != nil {
			t.Fatal(err)
		}
		out, err := run(t, payload, "ssh-keygen", "-q", "-Y", "sign", "-n", signedop.Namespace, "-f", user+"-cert.pub")
		if err != nil {
			t.Fatalf("ssh-keygen -Y sign with certificate: %v: %s", err, out)
		}
		store, err := nonce.Open(t.TempDir(), nonce.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer store.Close()
		cv := &signedop.Verifier{Signers: set, Nonces: store}
		auth, err := cv.Authorize(signedop.Job{Payload: payload, Signatures: [][]byte{[]byte(out)}}, "pve-interop", a, a.Digest)
		if err != nil {
			t.Fatalf("Authorize with certificate signature: got %v; want accepted", err)
		}
		if auth.Signers[0].Principal != "erin@example.com" {
			t.Fatalf("principal: got %q; want erin@example.com", auth.Signers[0].Principal)
		}
	})
}

type verifyErr struct{ out string }

func (e *verifyErr) Error() string { return "ssh-keygen -Y verify failed: " + e.out }
