package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/safefile"
	"github.com/steward-pve/steward/internal/tlspin"
)

func init() { register(newLoginCmd) }

// maxTokenFile bounds --token-file.
const maxTokenFile = 4 << 10

func newLoginCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "login --hub URL",
		Short: "Log in to a hub: pin its certificate and store an operator token",
		Long: `login checks an operator token against the hub and stores the hub's URL,
its pinned certificate fingerprint and the token as a named context in
$XDG_CONFIG_HOME/steward/config.yaml (default ~/.config/steward/config.yaml;
the file 0600, its directory 0700), and makes that context current. Every
operator command then talks to the current context's hub.

On first contact the hub's certificate fingerprint is shown for you to
confirm, as ssh does: compare it with what ` + "`steward hub`" + ` printed. With
--hub-fingerprint (or STEWARD_HUB_FINGERPRINT) it is checked instead of
asked. Logging in again to a hub whose certificate changed is refused
unless the new fingerprint is given with --hub-fingerprint.

The token is read from --token-file, else STEWARD_TOKEN, else asked for
(without echo on a terminal). Nothing is saved unless the hub accepts it.

--context names the context (default: the hub's host name); STEWARD_HUB,
STEWARD_HUB_FINGERPRINT, STEWARD_CONTEXT and STEWARD_TOKEN override any
context for a single command.`,
		Example: `  steward login --hub https://hub.example:8440
  steward login --hub https://10.0.0.5:8440 --hub-fingerprint AB:CD:… --token-file ~/hub-token --context lab`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLogin(cmd.Context(), cmd, stdout, stderr)
		},
	}
	addOperatorFlags(cmd)
	cmd.Flags().String("token-file", "", "read the operator token from this file (default: STEWARD_TOKEN, else a prompt)")
	// --fingerprint reads as well as --hub-fingerprint at login.
	cmd.Flags().String("fingerprint", "", "same as --hub-fingerprint")
	cmd.Flags().MarkHidden("fingerprint")
	return cmd
}

// prompter reads answers from stdin, one line each; a secret is read
// without echo when stdin is a terminal.
type prompter struct {
	in  io.Reader
	r   *bufio.Reader
	out io.Writer
}

func newPrompter(in io.Reader, out io.Writer) *prompter {
	return &prompter{in: in, r: bufio.NewReader(in), out: out}
}

// line prints question and returns the answer without its newline; end
// of input with nothing typed is io.EOF.
func (p *prompter) line(question string) (string, error) {
	fmt.Fprint(p.out, question)
	s, err := p.r.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && s != "") {
		fmt.Fprintln(p.out)
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// secret is line without echo on a terminal.
func (p *prompter) secret(question string) (string, error) {
	if f, ok := p.in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(p.out, question)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(p.out)
		return string(b), err
	}
	return p.line(question)
}

func runLogin(ctx context.Context, cmd *cobra.Command, stdout, stderr io.Writer) error {
	fl := cmd.Flags()
	hub, _ := fl.GetString("hub")
	fp, _ := fl.GetString("hub-fingerprint")
	if alias, _ := fl.GetString("fingerprint"); alias != "" {
		if fp != "" && fp != alias {
			return &UsageError{Err: errors.New("login: --fingerprint and --hub-fingerprint differ; give one")}
		}
		fp = alias
	}
	name, _ := fl.GetString("context")
	tokenFile, _ := fl.GetString("token-file")
	if hub == "" {
		return &UsageError{Err: errors.New("login: --hub URL is required (the address `steward hub` printed)")}
	}
	u, err := hubclient.ParseURL(hub)
	if err != nil {
		return &UsageError{Err: fmt.Errorf("login: %w", err)}
	}
	hub = u.String()
	if name == "" {
		name = u.Hostname()
	}
	if err := checkContextName(name); err != nil {
		return &UsageError{Err: fmt.Errorf("login: --context: %w", err)}
	}
	if fp != "" {
		sum, err := tlspin.Parse(fp)
		if err != nil {
			return &UsageError{Err: fmt.Errorf("login: --hub-fingerprint: %w (as `steward hub` prints it)", err)}
		}
		fp = tlspin.Format(sum[:])
	}
	path, err := configPath(cmd)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	ask := newPrompter(cmd.InOrStdin(), stderr)

	// Read the token before contacting the hub, so a missing file fails
	// fast.
	token := ""
	switch {
	case tokenFile != "":
		b, err := safefile.ReadFile(tokenFile, maxTokenFile)
		if err != nil {
			return fmt.Errorf("login: reading --token-file: %w", err)
		}
		token = strings.TrimSpace(string(b))
		if token == "" {
			return fmt.Errorf("login: --token-file %s is empty", tokenFile)
		}
	case os.Getenv(tokenEnv) != "":
		token = strings.TrimSpace(os.Getenv(tokenEnv))
	}

	if u.Scheme == "https" && fp == "" {
		fp, err = confirmFingerprint(ctx, hub, cfg, ask)
		if err != nil {
			return err
		}
	}
	if token == "" {
		t, err := ask.secret("Operator token: ")
		if err != nil {
			return fmt.Errorf("login: reading the operator token: %w; give it with --token-file or %s", err, tokenEnv)
		}
		if token = strings.TrimSpace(t); token == "" {
			return errors.New("login: no operator token given; nothing saved")
		}
	}

	c, err := hubclient.New(hubclient.Options{URL: hub, Fingerprint: fp, Token: token, UserAgent: "steward-cli"})
	if err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts", nil, nil, nil); err != nil {
		if hubclient.StatusOf(err) == http.StatusUnauthorized {
			return fmt.Errorf("login: the hub refused the operator token (unknown or revoked); nothing saved: check the token (`steward hub` prints the first one once)")
		}
		return fmt.Errorf("login: checking the token with the hub: %w; nothing saved", err)
	}
	cfg.Contexts[name] = &opContext{Hub: hub, Fingerprint: fp, Token: token}
	cfg.Current = name
	if err := saveConfig(path, cfg); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	fmt.Fprintf(stdout, "Logged in to %s as context %q (now current); saved in %s\n", hub, name, path)
	return nil
}

// confirmFingerprint returns the fingerprint of the certificate the hub
// presents once it is trusted: silently when a saved context already pins
// that same fingerprint for this hub, otherwise after a person answers
// yes. A certificate that differs from a pinned one is refused.
func confirmFingerprint(ctx context.Context, hub string, cfg *opConfig, ask *prompter) (string, error) {
	got, err := hubclient.Probe(ctx, hub)
	if err != nil {
		return "", fmt.Errorf("login: %w", err)
	}
	for _, n := range cfg.names() {
		c := cfg.Contexts[n]
		if !sameHub(c.Hub, hub) || c.Fingerprint == "" {
			continue
		}
		if c.Fingerprint == got {
			return got, nil
		}
		return "", fmt.Errorf("login: the hub %s now presents certificate %s, but context %q pinned %s: if the hub's certificate was replaced on purpose, log in with --hub-fingerprint %s; otherwise something is impersonating the hub. Nothing saved", hub, got, n, c.Fingerprint, got)
	}
	fmt.Fprintf(ask.out, "The hub's certificate fingerprint is\n  %s\nCompare it with what `steward hub` printed.\n", got)
	ans, err := ask.line("Trust it? [y/N] ")
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("login: %w", err)
	}
	switch strings.ToLower(strings.TrimSpace(ans)) {
	case "y", "yes":
		return got, nil
	}
	return "", errors.New("login: the hub's certificate was not trusted; nothing saved (give --hub-fingerprint to pin it without asking)")
}
