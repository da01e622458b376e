package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
)

func init() {
	register(newPlanCmd)
	register(newStatusCmd)
}

// PlanOutJSON is `steward plan -o json`.
type PlanOutJSON struct {
	Hosts []PlanHostJSON `json:"hosts"`
}

// PlanHostJSON is what one host's agent will do next.
type PlanHostJSON struct {
	Host string `json:"host"`
	// Reported is false when the host has not reported: nothing can be
	// planned yet.
	Reported          bool       `json:"reported"`
	ReportTime        *time.Time `json:"report_time,omitempty"`
	DesiredGeneration int64      `json:"desired_generation"`
	// Benign steps the agent runs; NeedsSignature the destructive ones it
	// holds until signed, each with "destroys".
	Benign         []hub.PlanStepJSON  `json:"benign"`
	NeedsSignature []hub.PlanStepJSON  `json:"needs_signature"`
	Guests         []hub.PlanGuestJSON `json:"guests"`
}

func newPlanCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "plan [HOST]",
		Short: "Show what each agent will do next: benign steps, and those that need a signature",
		Long: `plan runs the shared planner on each host's last report and its desired state
on the hub (all hosts, or HOST), and shows the benign steps its agent will
run apart from the destructive ones it holds until signed, each with what
it would destroy; then guest notes (errors, drift observed, locks).

The report holds only the config keys the agent managed when it reported,
so a key newly added to desired state shows as a change until the agent
reports again.

Exit status: 0 nothing to do, 2 some agent has steps to run or sign, 1 an
error.

-o json prints {"hosts": [{"host", "reported", "report_time",
"desired_generation", "benign": [STEP], "needs_signature": [STEP],
"guests": [{"vmid", "phase", "drift", "error", "lock"}]}]}, each STEP as
{"action": {"op", "vmid", "kind", "params", "digest"}, "class", "reason",
"changes": [{"key", "from", "to"}], "destroys"}.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			var hosts []string
			if len(args) == 1 {
				hosts = args
			} else {
				views, err := listHosts(cmd.Context(), c, false)
				if err != nil {
					return err
				}
				for _, v := range views {
					if v.JSON.RevokedAt == nil {
						hosts = append(hosts, v.JSON.ID)
					}
				}
			}
			out := PlanOutJSON{Hosts: []PlanHostJSON{}}
			steps := 0
			for _, h := range hosts {
				ph, err := hostPlan(cmd.Context(), c, h)
				if err != nil {
					return err
				}
				steps += len(ph.Benign) + len(ph.NeedsSignature)
				out.Hosts = append(out.Hosts, ph)
			}
			pt := painter{on: format == outputText && useColour(stdout)}
			if err := writeOutput(stdout, format, out, func(w io.Writer) error {
				if len(out.Hosts) == 0 {
					_, err := fmt.Fprintln(w, "No hosts yet: `steward hosts add HOST` enrolls one.")
					return err
				}
				for _, h := range out.Hosts {
					writeHostPlan(w, h, pt)
				}
				return nil
			}); err != nil {
				return err
			}
			if steps > 0 {
				return &ExitStatus{Code: ExitChanged, Reason: fmt.Sprintf("%d planned step(s)", steps)}
			}
			return nil
		},
	}
	addOperatorFlags(cmd)
	addOutputFlag(cmd)
	return cmd
}

// hostPlan asks the hub for host's plan; a host that has not reported
// has none.
func hostPlan(ctx context.Context, c *hubclient.Client, host string) (PlanHostJSON, error) {
	out := PlanHostJSON{Host: host, Benign: []hub.PlanStepJSON{}, NeedsSignature: []hub.PlanStepJSON{}, Guests: []hub.PlanGuestJSON{}}
	var p hub.PlanJSON
	err := c.JSON(ctx, http.MethodGet, hostPath(host, "plan"), nil, nil, &p)
	switch {
	case hubclient.IsCode(err, "no_report"):
		return out, nil
	case err != nil:
		return out, noHost(err, host)
	}
	out.Reported = true
	t := p.ReportTime
	out.ReportTime = &t
	out.DesiredGeneration = p.DesiredGeneration
	b, d := splitSteps(p)
	if b != nil {
		out.Benign = b
	}
	if d != nil {
		out.NeedsSignature = d
	}
	if p.Guests != nil {
		out.Guests = p.Guests
	}
	return out, nil
}

func writeHostPlan(w io.Writer, h PlanHostJSON, pt painter) {
	switch {
	case !h.Reported:
		fmt.Fprintf(w, "%s: has not reported yet; nothing to plan.\n", pt.paint(ansiCyan, h.Host))
		return
	case h.DesiredGeneration == 0:
		fmt.Fprintf(w, "%s: no desired state; its agent changes nothing.\n", pt.paint(ansiCyan, h.Host))
		return
	}
	p := hub.PlanJSON{Steps: append(append([]hub.PlanStepJSON{}, h.Benign...), h.NeedsSignature...), Guests: h.Guests}
	fmt.Fprintf(w, "%s: desired generation %d, from the report of %s:\n", pt.paint(ansiCyan, h.Host), h.DesiredGeneration, h.ReportTime.Local().Format(time.RFC3339))
	if !writePlan(w, p, "  ", pt) {
		fmt.Fprintln(w, "  Nothing to do: every managed guest is in sync.")
	}
}

// FleetStatusJSON is `steward status -o json`: every host at a glance.
type FleetStatusJSON = HostsJSON

func newStatusCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [HOST[/VMID]]",
		Short: "Show the fleet at a glance, a host's guests, or one guest in detail",
		Long: `status without an argument prints one line per host: last seen, and how many
of its managed guests are in sync, converging, pending a restart, drifted
(observe mode), pending a signature or in error, and whether the host is
frozen (its local freeze file) or blocked (by an operator).

status HOST prints each guest of the host's last report (as hosts show);
status HOST/VMID that guest in detail: its last error and next retry,
drifted fields, keys waiting for a restart, actions held for signatures
with what they would destroy, and its snapshot schedule (the agent's
snapshots with their ages, last taken, next due, held prunes).

-o json prints, without an argument, {"hosts": [HOST]} as hosts list does;
with HOST or HOST/VMID, {"host": HOST, "guests": [GUEST]} as hosts show does
(one guest for HOST/VMID).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				host, vmidText, hasVMID := strings.Cut(args[0], "/")
				vmid := 0
				if hasVMID {
					if _, err := fmt.Sscanf(vmidText, "%d", &vmid); err != nil || vmid <= 0 || fmt.Sprint(vmid) != vmidText {
						return &UsageError{Err: fmt.Errorf("status: %q: want HOST or HOST/VMID (a number)", args[0])}
					}
				}
				return runHostDetail(cmd, host, vmid, stdout)
			}
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			hosts, err := hostSummaries(cmd.Context(), c)
			if err != nil {
				return err
			}
			out := FleetStatusJSON{Hosts: hosts}
			return writeOutput(stdout, format, out, func(w io.Writer) error { return writeFleet(w, out, time.Now()) })
		},
	}
	addOperatorFlags(cmd)
	addOutputFlag(cmd)
	return cmd
}

func writeFleet(w io.Writer, f FleetStatusJSON, now time.Time) error {
	if len(f.Hosts) == 0 {
		_, err := fmt.Fprintln(w, "No hosts yet: `steward hosts add HOST` prints the command that enrolls one.")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "HOST\tLAST SEEN\tIN SYNC\tCONVERGING\tPENDING RESTART\tDRIFTED\tPENDING SIGNATURE\tERROR\tFROZEN\tBLOCKED")
	for _, h := range f.Hosts {
		if h.State != hostEnrolled {
			fmt.Fprintf(tw, "%s\t%s\t(%s)\t\t\t\t\t\t\t%s\n", h.Host, ago(h.LastSeen, now), strings.ReplaceAll(h.State, "_", " "), yesNo(h.Blocked))
			continue
		}
		in := fmt.Sprintf("%d/%d", h.Sync["in_sync"], h.Managed)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", h.Host, ago(h.LastSeen, now), in,
			h.Sync["converging"], h.Sync["pending_restart"], h.Sync["drift_observed"], h.Sync["pending_signature"], h.Sync["error"],
			yesNo(h.Frozen), yesNo(h.Blocked))
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
