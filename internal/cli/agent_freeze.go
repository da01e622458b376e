package cli

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/agent"
)

// newAgentFreezeCmd is `steward agent freeze`: create the freeze file
// that stops every mutation on this host until `steward agent unfreeze`.
func newAgentFreezeCmd(stdout io.Writer) *cobra.Command {
	var stateDir, reason string
	cmd := &cobra.Command{
		Use:   "freeze",
		Short: "Stop every change on this host until unfrozen (the hub cannot lift it)",
		Long: `freeze creates <state-dir>/freeze holding the reason. While it exists the
agent observes, plans and reports (as frozen) but changes nothing in PVE:
no reconcile action and no signed job runs. The running agent sees it at
its next tick; no restart is needed. Only someone on this host can lift
it, with steward agent unfreeze (or by removing the file).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := agent.Freeze(stateDir, reason); err != nil {
				return err
			}
			_, r := agent.Frozen(stateDir)
			fmt.Fprintf(stdout, "frozen: %s (%s)\n", r, filepath.Join(stateDir, agent.FreezeFile))
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/steward", "the agent's state directory")
	cmd.Flags().StringVar(&reason, "reason", "", "why the host is frozen (reported to the hub)")
	return cmd
}

// newAgentUnfreezeCmd is `steward agent unfreeze`.
func newAgentUnfreezeCmd(stdout io.Writer) *cobra.Command {
	var stateDir string
	cmd := &cobra.Command{
		Use:   "unfreeze",
		Short: "Lift a freeze made with steward agent freeze",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			had, err := agent.Unfreeze(stateDir)
			if err != nil {
				return err
			}
			if !had {
				return errors.New("agent: not frozen: " + filepath.Join(stateDir, agent.FreezeFile) + " does not exist")
			}
			fmt.Fprintln(stdout, "unfrozen: changes resume at the agent's next tick")
			return nil
		},
	}
	cmd.Flags().StringVar(&stateDir, "state-dir", "/var/lib/steward", "the agent's state directory")
	return cmd
}

// agentVersion is the version the agent reports in its facts.
func agentVersion() string { return Version }
