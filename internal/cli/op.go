package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/signedop/sign"
)

func init() { register(newOpCmd) }

func newOpCmd(stdout, stderr io.Writer) *cobra.Command {
	op := &cobra.Command{
		Use:   "op",
		Short: "Make, sign and check signed operations (destructive actions an agent runs only with operator signatures)",
		Long: "Signed operations authorize one destructive action on one guest in one config state.\n" +
			"Signatures are OpenSSH SSHSIG in the namespace " + signedop.Namespace + ", so\n" +
			"`ssh-keygen -Y sign -n " + signedop.Namespace + " -f KEY PAYLOAD` works as well as `steward op sign`.",
	}
	op.AddCommand(newOpPayloadCmd(stdout), newOpSignCmd(stdout, stderr), newOpVerifyCmd(stdout))
	return op
}

func newOpPayloadCmd(stdout io.Writer) *cobra.Command {
	var (
		host, kind, opName, digest, reason string
		vmid                               int
		params                             []string
		ttl                                time.Duration
	)
	cmd := &cobra.Command{
		Use:   "payload --host H --vmid N --kind qemu|lxc --op OP [--param k=v ...] [--digest D] [--ttl 1h] [--reason TEXT]",
		Short: "Print the canonical payload authorizing one action, ready to sign",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runOpPayload(cmd.Context(), stdout, host, vmid, kind, opName, params, digest, ttl, reason, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "", "host id of the agent that will run the action")
	f.IntVar(&vmid, "vmid", 0, "guest vmid")
	f.StringVar(&kind, "kind", "", "guest kind: qemu or lxc")
	f.StringVar(&opName, "op", "", "operation: destroy, config, resize, snapshot_rollback, snapshot_delete, ...")
	f.StringArrayVar(&params, "param", nil, "PVE API parameter as key=value (repeatable); exactly the action's parameters")
	f.StringVar(&digest, "digest", "", "the guest's current PVE config digest (required for config, resize, destroy and snapshot ops; empty for create, start, shutdown, stop, reboot)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the signature stays valid (agents accept at most "+signedop.DefaultMaxTTL.String()+", plus a clock-skew allowance of "+signedop.DefaultMaxSkew.String()+" at each end)")
	f.StringVar(&reason, "reason", "", "why (recorded with the operation)")
	for _, n := range []string{"host", "vmid", "kind", "op"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

func runOpPayload(_ context.Context, stdout io.Writer, host string, vmid int, kind, opName string, params []string, digest string, ttl time.Duration, reason string, now time.Time) error {
	k, err := guest.ParseKind(kind)
	if err != nil {
		return &UsageError{Err: fmt.Errorf("op payload: --kind: %w", err)}
	}
	a := action.Action{Op: action.Op(opName), VMID: vmid, Kind: k, Params: map[string]string{}, Digest: digest}
	for _, kv := range params {
		key, val, ok := strings.Cut(kv, "=")
		if !ok || key == "" {
			return &UsageError{Err: fmt.Errorf("op payload: --param %q: want key=value", kv)}
		}
		if _, dup := a.Params[key]; dup {
			return &UsageError{Err: fmt.Errorf("op payload: --param %s given twice", key)}
		}
		a.Params[key] = val
	}
	p, err := signedop.NewPayload(host, a, now, ttl, reason)
	if err != nil {
		return &UsageError{Err: fmt.Errorf("op payload: %w", err)}
	}
	if err := agentWouldRefuse(p); err != nil {
		return &UsageError{Err: fmt.Errorf("op payload: %w", err)}
	}
	_, err = stdout.Write(p.Canonical())
	return err
}

func newOpSignCmd(stdout, stderr io.Writer) *cobra.Command {
	var key, out string
	var useAgent bool
	cmd := &cobra.Command{
		Use:   "sign --key KEY [--agent] [--out FILE] PAYLOAD_FILE",
		Short: "Sign a payload with an OpenSSH key (through ssh-keygen, so FIDO keys work, or ssh-agent)",
		Long: "Signs PAYLOAD_FILE and writes the armored signature to PAYLOAD_FILE.sig (or --out; - for stdout).\n" +
			"Without --agent it runs `ssh-keygen -Y sign -n " + signedop.Namespace + " -f KEY`, so passphrase\n" +
			"prompts and security-key touches work as in OpenSSH. With --agent it signs through the ssh-agent\n" +
			"at $SSH_AUTH_SOCK with the agent key matching KEY's public key (KEY.pub, or KEY if it is a .pub file).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOpSign(cmd.Context(), stdout, stderr, key, useAgent, out, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&key, "key", "", "OpenSSH private key file (or public key whose private half is in ssh-agent)")
	f.BoolVar(&useAgent, "agent", false, "sign through ssh-agent ($SSH_AUTH_SOCK)")
	f.StringVar(&out, "out", "", "signature output file (default PAYLOAD_FILE.sig; - for stdout)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

func runOpSign(ctx context.Context, stdout, stderr io.Writer, key string, useAgent bool, out, payloadFile string) error {
	payload, err := safefile.ReadFile(payloadFile, signedop.MaxPayloadSize)
	if err != nil {
		return fmt.Errorf("op sign: %w", err)
	}
	p, err := signedop.ParsePayload(payload)
	if err != nil {
		return fmt.Errorf("op sign: refusing to sign %s: %w", payloadFile, err)
	}
	if err := agentWouldRefuse(p); err != nil {
		return fmt.Errorf("op sign: refusing to sign %s: %w", payloadFile, err)
	}
	fmt.Fprintf(stderr, "Signing: %s\n", describePayload(p))
	key = expandHome(key)
	var sig []byte
	if useAgent {
		sig, err = sign.WithAgent(payload, key)
	} else {
		sig, err = sign.SSHKeygen{Prompt: stderr}.Sign(ctx, payload, key)
	}
	if err != nil {
		return fmt.Errorf("op sign: %w", err)
	}
	if out == "-" {
		_, err = stdout.Write(sig)
		return err
	}
	if out == "" {
		out = payloadFile + ".sig"
	}
	if err := os.WriteFile(out, sig, 0o644); err != nil {
		return fmt.Errorf("op sign: write signature: %w", err)
	}
	fmt.Fprintf(stderr, "Wrote signature to %s\n", out)
	return nil
}

// agentWouldRefuse runs the agent's own payload checks
// (signedop.Admissible, as the gate and the verifier call it) so that the
// operator's tools never make or sign what every agent refuses.
func agentWouldRefuse(p signedop.Payload) error {
	var r *signedop.Rejection
	if err := signedop.Admissible(p, 0); errors.As(err, &r) {
		return fmt.Errorf("the agent would refuse it (%s): %s", r.Code, r.Reason)
	}
	return nil
}

// acceptWindow describes when an agent accepts p: the payload's window
// widened by the verifier's clock-skew allowance at both ends.
func acceptWindow(v *signedop.Verifier, p signedop.Payload) string {
	from, until, skew := v.Window(p)
	return fmt.Sprintf("the agent accepts it from %s until %s (its window %s to %s, widened by the agent's clock-skew allowance of %v at each end)",
		from.UTC().Format(signedop.TimeLayout), until.UTC().Format(signedop.TimeLayout),
		p.NotBefore.UTC().Format(signedop.TimeLayout), p.Expires.UTC().Format(signedop.TimeLayout), skew)
}

func describePayload(p signedop.Payload) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %d on host %s", p.Op, p.Kind, p.VMID, p.Host)
	keys := make([]string, 0, len(p.Params))
	for k := range p.Params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%q", k, p.Params[k])
	}
	if s := protectedNote(p); s != "" {
		fmt.Fprintf(&b, " PROTECTED: %s", s)
	}
	fmt.Fprintf(&b, " (config digest %q, valid %s to %s, nonce %s)", p.Digest, p.NotBefore.Format(signedop.TimeLayout), p.Expires.Format(signedop.TimeLayout), p.Nonce)
	if p.Reason != "" {
		fmt.Fprintf(&b, " reason: %q", p.Reason)
	}
	return b.String()
}

func newOpVerifyCmd(stdout io.Writer) *cobra.Command {
	var allowed, policy, host, digest string
	cmd := &cobra.Command{
		Use:   "verify --allowed-signers FILE [--policy FILE] --host H [--digest D] PAYLOAD_FILE SIG_FILE...",
		Short: "Check signatures on a payload as an agent would, and print the verdict",
		Long: "Checks the payload, every signature, the signers against the allowed_signers file,\n" +
			"the policy and the validity window, exactly as the agent does, and prints the verdict\n" +
			"with its reason; exits 1 on rejection. It does not consume the nonce, so it cannot tell\n" +
			"whether the operation already ran (the agent rejects replays). The guest's current\n" +
			"digest is taken from the payload unless --digest is given.",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOpVerify(cmd.Context(), stdout, allowed, policy, host, digest, cmd.Flags().Changed("digest"), args[0], args[1:], time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&allowed, "allowed-signers", "", "OpenSSH allowed_signers file")
	f.StringVar(&policy, "policy", "", "signing policy file (YAML; default: one operator signature)")
	f.StringVar(&host, "host", "", "host id the action is for")
	f.StringVar(&digest, "digest", "", "the guest's current config digest (default: the payload's)")
	cmd.MarkFlagRequired("allowed-signers")
	cmd.MarkFlagRequired("host")
	return cmd
}

// errRejected is returned by op verify after printing a rejection verdict.
var errRejected = errors.New("op verify: rejected")

func runOpVerify(_ context.Context, stdout io.Writer, allowedPath, policyPath, host, digest string, digestSet bool, payloadFile string, sigFiles []string, now time.Time) error {
	set, err := allowedsigners.ParseFile(allowedPath)
	if err != nil {
		return fmt.Errorf("op verify: %w", err)
	}
	pol := signedop.DefaultPolicy()
	if policyPath != "" {
		if pol, err = signedop.ReadPolicyFile(policyPath); err != nil {
			return fmt.Errorf("op verify: --policy: %w", err)
		}
	}
	job := signedop.Job{}
	if job.Payload, err = safefile.ReadFile(payloadFile, signedop.MaxPayloadSize); err != nil {
		return fmt.Errorf("op verify: %w", err)
	}
	for _, f := range sigFiles {
		s, err := safefile.ReadFile(f, signedop.MaxSignatureSize)
		if err != nil {
			return fmt.Errorf("op verify: %w", err)
		}
		job.Signatures = append(job.Signatures, s)
	}
	var a action.Action
	v := &signedop.Verifier{Signers: set, Policy: pol, Now: func() time.Time { return now }}
	window := ""
	if p, err := signedop.ParsePayload(job.Payload); err == nil {
		a = p.Action()
		if !digestSet {
			digest = p.Digest
		}
		window = acceptWindow(v, p)
	}
	auth, err := v.Check(job, host, a, digest)
	if err != nil {
		var r *signedop.Rejection
		if !errors.As(err, &r) {
			return fmt.Errorf("op verify: %w", err)
		}
		fmt.Fprintf(stdout, "REJECTED (%s): %s\n", r.Code, r.Reason)
		if window != "" {
			fmt.Fprintf(stdout, "  %s\n", window)
		}
		return errRejected
	}
	fmt.Fprintf(stdout, "OK: %s\n", describePayload(auth.Payload))
	fmt.Fprintf(stdout, "  %s\n", window)
	for _, s := range auth.Signers {
		fmt.Fprintf(stdout, "  signed by %s %s roles %s\n", s.Principal, s.Fingerprint, strings.Join(s.Roles, ","))
	}
	fmt.Fprintln(stdout, "  (nonce not consumed: the agent rejects the job if it already ran)")
	return nil
}

// protectedNote is what a signer must read about a destroy of a protected
// guest (classify.ProtectedParam), or "".
func protectedNote(p signedop.Payload) string {
	if p.Op != action.Destroy || p.Params[classify.ProtectedParam] != "1" {
		return ""
	}
	return "this guest is protected (PVE's protection flag); signing clears the flag and destroys it"
}
