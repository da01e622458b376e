// Package sign makes operator signatures over signed-operation payloads
// with the operator's own tools: OpenSSH's ssh-keygen (files, FIDO
// hardware keys, passphrases) or a running ssh-agent. In-process signing
// with a key already loaded is signedop.Sign; verification is package
// signedop's.
package sign

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
)

// SSHKeygen signs by running OpenSSH's ssh-keygen -Y sign, so keys held in
// FIDO hardware, passphrase-protected files and ssh-agent all work exactly
// as OpenSSH supports them.
type SSHKeygen struct {
	// Program is the ssh-keygen binary; "" means "ssh-keygen" on PATH.
	Program string
	// Prompt, if non-nil, receives ssh-keygen's stderr as it is written
	// (touch and passphrase prompts); it is also kept for error messages.
	Prompt interface{ Write([]byte) (int, error) }
}

// Sign runs ssh-keygen -Y sign -n signedop.Namespace -f keyFile over payload (on
// stdin) and returns the armored signature. keyFile is a private key, or a
// public key whose private half is in ssh-agent. It blocks until
// ssh-keygen exits or ctx is done. Errors include ssh-keygen's stderr.
func (k SSHKeygen) Sign(ctx context.Context, payload []byte, keyFile string) ([]byte, error) {
	prog := k.Program
	if prog == "" {
		prog = "ssh-keygen"
	}
	cmd := exec.CommandContext(ctx, prog, "-q", "-Y", "sign", "-n", signedop.Namespace, "-f", keyFile)
	cmd.Stdin = bytes.NewReader(payload)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	if k.Prompt != nil {
		cmd.Stderr = teeWriter{&errb, k.Prompt}
	} else {
		cmd.Stderr = &errb
	}
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = "no output"
		}
		return nil, fmt.Errorf("signedop: %s -Y sign -f %s: %v: %s", prog, keyFile, err, msg)
	}
	if _, err := signedop.ParseSignature(out.Bytes()); err != nil {
		return nil, fmt.Errorf("signedop: %s -Y sign produced an unusable signature: %w", prog, err)
	}
	return out.Bytes(), nil
}

type teeWriter struct {
	a *bytes.Buffer
	b interface{ Write([]byte) (int, error) }
}

func (t teeWriter) Write(p []byte) (int, error) {
	t.a.Write(p)
	t.b.Write(p) // best effort: a failing prompt writer must not fail signing
	return len(p), nil
}

// WithSSHKeygen is SSHKeygen{}.Sign.
func WithSSHKeygen(ctx context.Context, payload []byte, keyFile string) ([]byte, error) {
	return SSHKeygen{}.Sign(ctx, payload, keyFile)
}

// maxPublicKeySize bounds a .pub file (an RSA 16384 key is about 3 KiB).
const maxPublicKeySize = 64 << 10

// WithAgent signs payload through the ssh-agent at $SSH_AUTH_SOCK with
// the agent key whose public half is in key's .pub file (key itself when
// it names a .pub file), or, with key "", with the agent's only key.
// Errors say which key is missing and how to add it.
func WithAgent(payload []byte, key string) ([]byte, error) {
	var want []byte
	var pubPath string
	if key != "" {
		pubPath = key
		if !strings.HasSuffix(pubPath, ".pub") {
			pubPath += ".pub"
		}
		pubText, err := safefile.ReadFile(pubPath, maxPublicKeySize)
		if err != nil {
			return nil, fmt.Errorf("read public key for agent lookup: %w", err)
		}
		pub, _, _, _, err := ssh.ParseAuthorizedKey(pubText)
		if err != nil {
			return nil, fmt.Errorf("parse public key %s: %w", pubPath, err)
		}
		want = pub.Marshal()
	}
	sock := os.Getenv("SSH_AUTH_SOCK")
	if sock == "" {
		return nil, errors.New("--agent: SSH_AUTH_SOCK is not set; start ssh-agent or sign without --agent")
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("--agent: connect to ssh-agent: %w", err)
	}
	defer conn.Close()
	signers, err := agent.NewClient(conn).Signers()
	if err != nil {
		return nil, fmt.Errorf("--agent: list agent keys: %w", err)
	}
	if want == nil {
		switch len(signers) {
		case 0:
			return nil, errors.New("--agent: ssh-agent holds no key; ssh-add one first")
		case 1:
			return signedop.Sign(payload, signers[0])
		}
		var fps []string
		for _, s := range signers {
			fps = append(fps, ssh.FingerprintSHA256(s.PublicKey()))
		}
		return nil, fmt.Errorf("--agent: ssh-agent holds %d keys (%s): name the one to sign with, --key ~/.ssh/KEY.pub", len(signers), strings.Join(fps, ", "))
	}
	for _, s := range signers {
		if bytes.Equal(s.PublicKey().Marshal(), want) {
			return signedop.Sign(payload, s)
		}
	}
	pub, _ := ssh.ParsePublicKey(want)
	return nil, fmt.Errorf("--agent: ssh-agent holds no key %s (from %s); ssh-add it first", ssh.FingerprintSHA256(pub), pubPath)
}
