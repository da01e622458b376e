package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub/store/sqlite"
)

func newHubBackupCmd(stdout, _ io.Writer) *cobra.Command {
	var dataDir, out string
	cmd := &cobra.Command{
		Use:   "backup --data-dir DIR --out FILE",
		Short: "Write a consistent snapshot of a SQLite hub's database, while the hub serves",
		Long: `backup writes a consistent copy of DIR/hub.db to FILE (SQLite's VACUUM INTO
from one read snapshot: the running hub is not paused). FILE must not
exist; it appears whole or not at all (written beside it, synced, then
renamed). The TLS key in DIR is not copied: back it up on its own. To
restore, stop the hub and put FILE in place of DIR/hub.db.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHubBackup(cmd.Context(), dataDir, out, stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "the hub's --data-dir")
	fl.StringVar(&out, "out", "", "the snapshot file to write (must not exist)")
	return cmd
}

func runHubBackup(ctx context.Context, dataDir, out string, stdout io.Writer) error {
	if dataDir == "" || out == "" {
		return &UsageError{Err: errors.New("hub backup: --data-dir and --out are required")}
	}
	if err := sqlite.Backup(ctx, filepath.Join(dataDir, hubDBFile), out); err != nil {
		return fmt.Errorf("hub backup: %w", err)
	}
	fmt.Fprintf(stdout, "Wrote a snapshot of %s to %s\n", filepath.Join(dataDir, hubDBFile), out)
	return nil
}
