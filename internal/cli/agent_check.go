package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/desired/desiredfile"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/preflight"
)

// newAgentCheckCmd is `steward agent check`: it reads the agent's own
// flags (f, filled by the parent's persistent flags) so it checks exactly
// what the agent would use.
func newAgentCheckCmd(f *agentFlags, stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Check that the agent can reach PVE (and the hub) with the privileges it needs",
		Long: `check runs, with the agent's own flags and environment, the checks an agent
needs to pass before it can converge this host, and prints one line per
check: PASS or FAIL, what was found and, for a failure, what to do.

  pve reachable      PVE answers at --pve-url
  pve tls            its certificate verifies (--pve-fingerprint, --pve-ca-file)
  pve token          the API token authenticates
  pve node           --node is a node of the cluster
  pve privileges P   the token holds, on ACL path P, every privilege steward
                     uses (GET /access/permissions, so grants on parents and
                     resource pools count); each missing one is named with
                     what steward needs it for. P is each guest and storage
                     the --desired file names for this host, else /vms and
                     /storage.
  hub reachable      (with a hub) the hub answers
  hub certificate    its certificate matches the pinned fingerprint
  hub authentication it accepts this host's token (before enrollment:
                     hub enrollment, without spending the join token)

With several hub replicas (--hub URL1,URL2 or as hub.json lists them) the hub
checks run against every replica on its own, each check's name ending with
the replica's URL: an agent moves between them, so each must pass.

It changes nothing. Exit status: 0 when every check passed, 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f.hostSet = cmd.Flags().Changed("host")
			return runAgentCheck(cmd.Context(), *f, stdout, stderr)
		},
	}
}

func runAgentCheck(ctx context.Context, f agentFlags, stdout, stderr io.Writer) error {
	if f.node == "" {
		return &UsageError{Err: errors.New("--node is required (the PVE node name, see `hostname` on the PVE host)")}
	}
	logger, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	fail := func(r preflight.Result) error {
		fmt.Fprintln(stdout, r)
		return &ExitStatus{Code: ExitFailure, Reason: "agent check: " + r.Check + " failed"}
	}
	settings := func(err error) error {
		return fail(preflight.Result{Check: "agent settings", Detail: err.Error(), Fix: "fix the setting named above; the agent would refuse to start"})
	}
	var pc preflight.Config
	// The hub, as the agent would connect to it. Connect never enrolls
	// without a join token, and this check never passes one on.
	e, err := agent.LoadEnrollment(f.stateDir)
	if err != nil {
		return settings(err)
	}
	host := ""
	if f.hostSet {
		host = f.host
	}
	switch {
	case e == nil && f.hubURL != "" && f.joinToken != "":
		c, err := hubclient.New(hubclient.Options{URL: f.hubURL, Fingerprint: f.hubFingerprint, CAFile: f.hubCAFile, UserAgent: "steward-agent"})
		if err != nil {
			return settings(err)
		}
		pc.Hub, pc.HubPinned, pc.HubEnrollPending = c, f.hubFingerprint != "", true
		// The rest is checked as the agent would run once enrolled.
		f.hubURL, f.hubFingerprint, f.hubCAFile, f.joinToken = "", "", "", ""
	case e != nil || f.hubURL != "":
		c, en, err := agent.Connect(ctx, agent.ConnectOptions{StateDir: f.stateDir, URL: f.hubURL, Fingerprint: f.hubFingerprint,
			CAFile: f.hubCAFile, Host: host, Logger: logger})
		if err != nil {
			return settings(err)
		}
		pinned := en.Fingerprint != ""
		if f.hubFingerprint != "" || f.hubCAFile != "" {
			pinned = f.hubFingerprint != ""
		}
		pc.Hub, pc.HubHost, pc.HubPinned = c, en.Host, pinned
		f.joinToken = ""
	}
	// A dry run's configuration: nothing is created, not even the
	// default jobs directory.
	f.dryRun = true
	cfg, err := agentConfig(ctx, f, f.jobsDir == "", logger)
	if err != nil {
		return settings(err)
	}
	p, ok := cfg.PVE.(preflight.PVE)
	if !ok {
		return fmt.Errorf("agent check: the PVE client %T cannot read permissions", cfg.PVE)
	}
	pc.PVE, pc.PVEURL, pc.TokenID, pc.Node = p, f.pveURL, cfg.TaskUser, f.node
	if src, ok := cfg.Desired.(*desiredfile.File); ok {
		doc, err := src.Desired(ctx)
		if err != nil {
			return fail(preflight.Result{Check: "desired state", Detail: err.Error(), Fix: "fix the --desired file"})
		}
		h := f.host
		if h == "" {
			h = f.node
		}
		pc.Desired = doc.ForHost(h)
	}
	rs := preflight.Run(ctx, pc)
	for _, r := range rs {
		fmt.Fprintln(stdout, r)
	}
	if !preflight.Passed(rs) {
		return &ExitStatus{Code: ExitFailure, Reason: "agent check: a check failed"}
	}
	return nil
}
