package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/tlspin"
)

// Operator commands find their hub and token in this order:
//
//  1. --hub, --hub-fingerprint (or STEWARD_HUB, STEWARD_HUB_FINGERPRINT)
//     and STEWARD_TOKEN;
//  2. the context named by --context (STEWARD_CONTEXT), else the config
//     file's current context (`steward login`, `steward context use`).
//
// A context's token and fingerprint are used only for the context's own
// hub: with --hub naming another hub, the token must come from
// STEWARD_TOKEN, so a token never travels to a hub it was not issued by.

// tokenEnv holds an operator token for commands run without a config
// file (scripts, CI). There is deliberately no --token flag: a flag's
// value is visible to every user of the machine in the process list.
const tokenEnv = "STEWARD_TOKEN"

// addOperatorFlags registers the flags every command that talks to the
// hub as an operator shares.
func addOperatorFlags(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.String("hub", "", "hub URL (default: the current context's, see steward login)")
	fl.String("hub-fingerprint", "", "SHA-256 fingerprint of the hub's certificate to pin (default: the context's)")
	fl.String("context", "", "use this login context instead of the current one")
	addLoginFileFlag(cmd, "")
}

// loginFileFlag names the operator's login file (contexts, tokens) on
// every operator command. It was --config until --config came to mean a
// settings file on steward hub, agent and sim; --config is still taken
// here, deprecated, and never from STEWARD_CONFIG (which is the settings
// file's), so an environment set up for a hub cannot redirect an
// operator's logins.
const loginFileFlag = "login-file"

// addLoginFileFlag gives cmd --login-file (STEWARD_LOGIN_FILE) and the
// deprecated --config alias. what, when not empty, replaces the usage's
// opening words.
func addLoginFileFlag(cmd *cobra.Command, what string) {
	if what == "" {
		what = "operator login file: hub contexts and tokens"
	}
	fl := cmd.Flags()
	fl.String(loginFileFlag, "", what+" (default $XDG_CONFIG_HOME/steward/config.yaml)")
	fl.String("config", "", "deprecated name of --login-file")
	_ = fl.MarkHidden("config")
	_ = fl.SetAnnotation("config", noEnvAnnotation, []string{"true"})
}

// opTarget is the hub an operator command talks to, resolved from flags,
// environment and the config file.
type opTarget struct {
	Context     string // "" when flags and environment alone named the hub
	Hub         string
	Fingerprint string // "" for plain http on loopback, or system roots
	Token       string
	ConfigPath  string
}

// Client returns a hub client for t.
func (t opTarget) Client() (*hubclient.Client, error) {
	return hubclient.New(hubclient.Options{URL: t.Hub, Fingerprint: t.Fingerprint, Token: t.Token, UserAgent: "steward-cli"})
}

// configPath returns --login-file, else the deprecated --config, else
// the default path.
func configPath(cmd *cobra.Command) (string, error) {
	if p, _ := cmd.Flags().GetString(loginFileFlag); p != "" {
		return p, nil
	}
	if p, _ := cmd.Flags().GetString("config"); p != "" {
		fmt.Fprintln(cmd.ErrOrStderr(), "steward: --config is deprecated on operator commands: use --login-file (--config names a settings file on steward hub, agent and sim)")
		return p, nil
	}
	return defaultConfigPath()
}

// operatorTarget resolves the hub, fingerprint and token for cmd (see the
// order above). It reads the config file but does not contact the hub.
func operatorTarget(cmd *cobra.Command) (opTarget, error) {
	fl := cmd.Flags()
	hub, _ := fl.GetString("hub")
	fp, _ := fl.GetString("hub-fingerprint")
	name, _ := fl.GetString("context")
	path, err := configPath(cmd)
	if err != nil {
		return opTarget{}, err
	}
	t := opTarget{Hub: hub, Fingerprint: fp, Token: os.Getenv(tokenEnv), ConfigPath: path}
	if fp != "" {
		if _, err := tlspin.Parse(fp); err != nil {
			return opTarget{}, &UsageError{Err: fmt.Errorf("--hub-fingerprint: %w (as `steward hub` prints it)", err)}
		}
	}
	// Flags and environment alone are enough: the config is not read.
	if hub != "" && t.Token != "" && name == "" {
		return t, nil
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return opTarget{}, err
	}
	if name == "" {
		name = cfg.Current
	}
	var c *opContext
	if name != "" {
		if c = cfg.Contexts[name]; c == nil {
			return opTarget{}, fmt.Errorf("no context %q in %s: `steward context list` shows them; `steward login --hub URL --context %s` makes it", name, path, name)
		}
	}
	if c == nil {
		if hub == "" {
			return opTarget{}, errors.New("no hub: log in first (steward login --hub URL), or set --hub and " + tokenEnv)
		}
		return opTarget{}, fmt.Errorf("no operator token for %s: set %s or log in (steward login --hub %s)", hub, tokenEnv, hub)
	}
	t.Context = name
	if t.Hub == "" {
		t.Hub = c.Hub
	}
	if !sameHub(t.Hub, c.Hub) {
		if t.Token == "" {
			return opTarget{}, fmt.Errorf("--hub %s is not the hub of context %q (%s), whose token is not sent elsewhere: set %s or log in to it", t.Hub, name, c.Hub, tokenEnv)
		}
		t.Context = ""
		return t, nil
	}
	if t.Fingerprint == "" {
		t.Fingerprint = c.Fingerprint
	}
	if t.Token == "" {
		t.Token = c.Token
	}
	return t, nil
}

// sameHub compares two hub URLs after parsing (a trailing slash is no
// difference).
func sameHub(a, b string) bool {
	ua, err1 := hubclient.ParseURL(a)
	ub, err2 := hubclient.ParseURL(b)
	return err1 == nil && err2 == nil && ua.String() == ub.String()
}

// operatorOutput is what most operator commands start with: the -o
// format (checked first, so a bad -o fails before any network call) and
// the client for the chosen hub.
func operatorOutput(cmd *cobra.Command) (string, *hubclient.Client, error) {
	format, err := outputFormat(cmd)
	if err != nil {
		return "", nil, err
	}
	c, err := operatorClient(cmd)
	if err != nil {
		return "", nil, err
	}
	return format, c, nil
}

// operatorClient returns a client for the hub cmd's flags, environment
// and config name, carrying the operator token. It does not contact the
// hub.
func operatorClient(cmd *cobra.Command) (*hubclient.Client, error) {
	t, err := operatorTarget(cmd)
	if err != nil {
		return nil, err
	}
	return t.Client()
}
