package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/hub/store/postgres"
	"github.com/steward-pve/steward/internal/hub/store/sqlite"
)

func newHubMigrateCmd(stdout, _ io.Writer) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate --from sqlite:DIR --to postgres://…",
		Short: "Copy a SQLite hub's state into an empty PostgreSQL database and verify the copy",
		Long: `migrate copies everything a SQLite hub keeps (hosts and their token hashes,
join tokens, operator tokens, every desired generation, reports, signed jobs
and their results, pending signatures, journal receipts, the audit log, the
event log, operator tokens' last use) from
the hub data directory DIR into an empty PostgreSQL database, in one
transaction, then reads the copy back and compares every table with the
source (row count and SHA-256 of its content). Agents and operators keep
their tokens. Stop the SQLite hub first: what it writes after the copy
began is not copied.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHubMigrate(cmd.Context(), from, to, stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "the SQLite hub: sqlite:DIR, DIR being its --data-dir")
	fl.StringVar(&to, "to", "", "the PostgreSQL database: postgres://USER@HOST:PORT/DB (must hold no hub state yet)")
	return cmd
}

func runHubMigrate(ctx context.Context, from, to string, stdout io.Writer) error {
	dir, ok := strings.CutPrefix(from, "sqlite:")
	if !ok || dir == "" {
		return &UsageError{Err: fmt.Errorf("hub migrate: --from must be sqlite:DIR (the SQLite hub's --data-dir), got %q", from)}
	}
	if pg, err := hubStoreKind(to); err != nil || !pg {
		return &UsageError{Err: errors.New("hub migrate: --to must be a postgres://USER@HOST:PORT/DB URL")}
	}
	dbPath := filepath.Join(dir, hubDBFile)
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("hub migrate: no SQLite hub database in %s: %w", dir, err)
	}
	src, err := sqlite.Open(ctx, dbPath, sqlite.Options{})
	if err != nil {
		return fmt.Errorf("hub migrate: %w", err)
	}
	defer src.Close()
	dst, err := postgres.Open(ctx, to, postgres.Options{})
	if err != nil {
		return fmt.Errorf("hub migrate: %w", err)
	}
	defer dst.Close()
	sums, err := store.Copy(ctx, src, dst)
	if err != nil {
		return fmt.Errorf("hub migrate: %w", err)
	}
	fmt.Fprintf(stdout, "Copied %s to %s:\n", dbPath, postgres.Redact(to))
	for _, s := range sums {
		fmt.Fprintf(stdout, "  %-12s %7d rows  sha256 %s\n", s.Table, s.Count, s.SHA256)
	}
	fmt.Fprintf(stdout, "Verified: every table of the copy has the source's row count and content hash.\n"+
		"Next: start each replica with --store (the same URL) and the certificate agents pin\n"+
		"(%s and %s from %s, or --tls-cert/--tls-key).\n", hubCertFile, hubKeyFile, dir)
	return nil
}
