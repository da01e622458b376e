package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/atomicfile"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/importer"
	"github.com/steward-pve/steward/internal/wire"
)

func init() { register(newImportCmd) }

func newImportCmd(stdout, stderr io.Writer) *cobra.Command {
	var file string
	var force bool
	cmd := &cobra.Command{
		Use:   "import HOST [VMID...]",
		Short: "Write desired state for existing guests from their host's last report",
		Long: `import writes a desired-state document for the guests HOST's agent last reported
(all but templates, or the VMIDs given): each guest's kind, run state,
description, tags and the config keys an operator would manage (CPU, memory,
name, start at boot, network devices), normalized; disks and other keys appear
as comments. For a guest desired state already names these are the keys it
manages; for the others, what the agent reports of unmanaged guests (read when
it first sees them, then every 10 minutes). Guests the host's current desired state names and that
are not imported are kept as they are, so applying the output manages what was
managed before plus the imported guests.

Nothing is managed until the document is applied (steward apply -f FILE); applied
unchanged, it changes nothing on the host.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var vmids []int
			for _, a := range args[1:] {
				n, err := strconv.Atoi(a)
				if err != nil || n < desired.MinVMID || n > desired.MaxVMID {
					return &UsageError{Err: fmt.Errorf("import: VMID %q: want a guest id (%d..%d)", a, desired.MinVMID, desired.MaxVMID)}
				}
				vmids = append(vmids, n)
			}
			if file != "" && file != "-" && !force {
				if _, err := os.Lstat(file); err == nil {
					return &UsageError{Err: fmt.Errorf("import: %s exists; --force replaces it", file)}
				}
			}
			c, err := operatorClient(cmd)
			if err != nil {
				return err
			}
			doc, err := runImport(cmd.Context(), c, args[0], vmids)
			if err != nil {
				return err
			}
			if file == "" || file == "-" {
				_, err = stdout.Write(doc)
				return err
			}
			if err := atomicfile.Write(file, doc, 0o644); err != nil {
				return fmt.Errorf("import: %w", err)
			}
			fmt.Fprintf(stderr, "Wrote %s: review it, then steward apply -f %s\n", file, file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "write the document to FILE (default: standard output)")
	cmd.Flags().BoolVar(&force, "force", false, "replace --file if it exists")
	addOperatorFlags(cmd)
	return cmd
}

// runImport returns the imported document for host (see package
// importer): its last report and current desired state from the hub.
func runImport(ctx context.Context, c *hubclient.Client, host string, vmids []int) ([]byte, error) {
	var hj hub.HostJSON
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host), nil, nil, &hj); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if len(hj.Report) == 0 {
		return nil, fmt.Errorf("import: host %s has not reported yet: import works from its agent's last report; start the agent (steward hosts add %s prints how)", host, host)
	}
	rep, err := wire.DecodeReport(hj.Report)
	if err != nil {
		return nil, fmt.Errorf("import: the hub's last report of %s: %w", host, err)
	}
	var cur wire.Desired
	if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(host)+"/desired", nil, nil, &cur); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	opt := importer.Options{VMIDs: vmids}
	if cur.Generation > 0 {
		d, err := desired.Parse(cur.Document)
		if err != nil {
			return nil, fmt.Errorf("import: the hub's desired document of %s (generation %d): %w", host, cur.Generation, err)
		}
		opt.Current = d.ForHost(host)
	}
	doc, err := importer.Generate(host, rep, opt)
	if errors.Is(err, importer.ErrNotReported) {
		return nil, &UsageError{Err: err}
	}
	return doc, err
}
