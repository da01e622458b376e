package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/sim"
)

func init() { register(newSimCmd) }

type simFlags struct {
	listen       string
	opts         sim.Options
	legacyErrors bool
	verbose      bool
}

func newSimCmd(stdout, stderr io.Writer) *cobra.Command {
	var f simFlags
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Run a simulator of the Proxmox VE API (HTTPS, self-signed certificate)",
		Long: `sim serves a faithful simulation of the PVE API subset steward uses, with
QEMU and LXC guests, asynchronous tasks, config locks, API-token privileges
and optional injected faults. It prints the URL, the certificate fingerprint
(as PVE shows ssl_fingerprint) and the API token, and serves until interrupted.

With --nodes it serves a cluster of those nodes through the one address: a
shared vmid space, /cluster/status and /cluster/resources as a cluster
member answers them, guests on each node, migration between nodes, and HA
moves driven through the control API (/_sim/guests/{vmid}/ha/migrate).
Seeded guests and templates go to --node (default: the first of --nodes).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(f.opts.Nodes) > 0 && !cmd.Flags().Changed("node") {
				f.opts.Node = ""
			}
			return runSim(cmd.Context(), f, stdout, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8006", "address to listen on")
	fl.StringVar(&f.opts.Node, "node", "pve", "node name (with --nodes: the node seeded guests go to and /cluster/status calls local)")
	fl.StringSliceVar(&f.opts.Nodes, "nodes", nil, "serve a cluster of these nodes (comma-separated, e.g. pve-a,pve-b,pve-c)")
	fl.StringVar(&f.opts.ClusterName, "cluster-name", "sim-cluster", "the cluster's name in /cluster/status (with --nodes)")
	fl.IntVar(&f.opts.Guests, "guests", 20, "number of seeded guests (a mix of VMs and containers)")
	fl.BoolVar(&f.opts.Templates, "templates", true, "seed the QEMU template 9000 (disk and cloud-init drive), the container template 9001 and the container template volume local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst, for creating guests")
	fl.StringVar(&f.opts.Token, "token", "", "API token USER@REALM!TOKENID=SECRET with all privileges (default: generated)")
	fl.Int64Var(&f.opts.Seed, "seed", 1, "seed for guests and faults")
	fl.DurationVar(&f.opts.TaskDuration, "task-duration", 500*time.Millisecond, "how long asynchronous tasks run")
	fl.DurationVar(&f.opts.CloneDuration, "clone-duration", 0, "how long clone tasks run (a container clone locks its template all that time); 0 means --task-duration")
	fl.DurationVar(&f.opts.LockTimeout, "lock-timeout", 10*time.Second, "how long a write waits for a held config lock (PVE: 10s)")
	fl.DurationVar(&f.opts.AuthFailureDelay, "auth-failure-delay", 0, "delay for 401 responses (PVE: 3s)")
	fl.BoolVar(&f.legacyErrors, "legacy-errors", false, "omit the body 'message' field, as PVE before 8.3")
	fl.DurationVar(&f.opts.Faults.Latency, "latency", 0, "added latency per API request")
	fl.Float64Var(&f.opts.Faults.ErrorRate, "error-rate", 0, "probability of a 500 before execution")
	fl.Float64Var(&f.opts.Faults.Status596Rate, "status-596-rate", 0, "probability of a 596 before execution")
	fl.Float64Var(&f.opts.Faults.DropAfterExecRate, "drop-after-exec-rate", 0, "probability of closing the connection after a mutation executed")
	fl.Float64Var(&f.opts.Faults.TaskFailRate, "task-fail-rate", 0, "probability of a task failing")
	fl.Float64Var(&f.opts.Faults.SlowTaskRate, "slow-task-rate", 0, "probability of a task running slow-task-factor times longer")
	fl.IntVar(&f.opts.Faults.SlowTaskFactor, "slow-task-factor", 10, "slow task multiplier")
	fl.BoolVar(&f.verbose, "verbose", false, "log every mutation and task to stderr")
	return cmd
}

func runSim(ctx context.Context, f simFlags, stdout, stderr io.Writer) error {
	for name, r := range map[string]float64{"error-rate": f.opts.Faults.ErrorRate, "status-596-rate": f.opts.Faults.Status596Rate,
		"drop-after-exec-rate": f.opts.Faults.DropAfterExecRate, "task-fail-rate": f.opts.Faults.TaskFailRate, "slow-task-rate": f.opts.Faults.SlowTaskRate} {
		if r < 0 || r > 1 {
			return &UsageError{Err: fmt.Errorf("sim: --%s must be between 0 and 1, got %v", name, r)}
		}
	}
	opts := f.opts
	opts.LegacyErrors = f.legacyErrors
	level := slog.LevelWarn
	if f.verbose {
		level = slog.LevelDebug
	}
	opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	s, err := sim.New(opts)
	if err != nil {
		return &UsageError{Err: err}
	}
	defer s.Close()
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("sim: listen on %s: %w", f.listen, err)
	}
	fmt.Fprintf(stdout, "URL:         https://%s\nNode:        %s\n", ln.Addr(), s.Node())
	if len(s.Nodes()) > 1 {
		fmt.Fprintf(stdout, "Nodes:       %s\n", strings.Join(s.Nodes(), ","))
	}
	fmt.Fprintf(stdout, "Fingerprint: %s\nToken:       %s\n", s.Fingerprint(), s.Token())
	return sim.Serve(ctx, s, ln)
}
