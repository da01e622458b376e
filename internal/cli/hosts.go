package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

func init() {
	register(newHostsCmd)
	register(newBlockCmd(true))
	register(newBlockCmd(false))
}

// JoinJSON is `steward hosts add -o json`.
type JoinJSON struct {
	Host           string    `json:"host"`
	JoinToken      string    `json:"join_token"`
	Expires        time.Time `json:"expires"`
	Hub            string    `json:"hub"`
	HubFingerprint string    `json:"hub_fingerprint,omitempty"`
	// Command is the one-time command to run on the host.
	Command string `json:"command"`
}

// HostsJSON is `steward hosts list -o json` (and `steward status`).
type HostsJSON struct {
	Hosts []HostSummaryJSON `json:"hosts"`
}

// HostDetailJSON is `steward hosts show HOST -o json` (and `steward
// status HOST`).
type HostDetailJSON struct {
	Host   HostSummaryJSON   `json:"host"`
	Guests []GuestStatusJSON `json:"guests"`
}

func newHostsCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "Add, list, show and remove the hosts of the fleet",
	}
	add := &cobra.Command{
		Use:   "add HOST",
		Short: "Create a host and print the one-time command that enrolls its agent",
		Long: `add creates HOST on the hub (if new) and a one-time join token, and prints the
command to run on that Proxmox host:

  steward agent --hub URL --hub-fingerprint FP --join-token stwj_…

The token is valid once, for the hub's --join-token-ttl (default 1h); run
add again for a new one. HOST is the id desired state names (letters,
digits, '-', '_', '.').

-o json prints {"host", "join_token", "expires", "hub", "hub_fingerprint",
"command"}.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			host := args[0]
			if err := store.CheckHostID(host); err != nil {
				return &UsageError{Err: fmt.Errorf("hosts add: %s", strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "))}
			}
			t, err := operatorTarget(cmd)
			if err != nil {
				return err
			}
			c, err := t.Client()
			if err != nil {
				return err
			}
			var resp struct {
				Host      string    `json:"host"`
				JoinToken string    `json:"join_token"`
				Expires   time.Time `json:"expires"`
			}
			if err := c.JSON(cmd.Context(), http.MethodPost, hostPath(host, "join-token"), nil, nil, &resp); err != nil {
				return err
			}
			out := JoinJSON{Host: resp.Host, JoinToken: resp.JoinToken, Expires: resp.Expires, Hub: c.URL(), HubFingerprint: t.Fingerprint}
			out.Command = "steward agent --hub " + out.Hub
			if out.HubFingerprint != "" {
				out.Command += " --hub-fingerprint " + out.HubFingerprint
			}
			out.Command += " --join-token " + out.JoinToken
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "Host %q is ready to enroll. On that Proxmox host, once, before %s, run:\n\n  %s\n\nThe join token works once; `steward hosts add %s` makes a new one.\n",
					out.Host, out.Expires.Local().Format(time.RFC3339), out.Command, out.Host)
				return err
			})
		},
	}
	addOperatorFlags(add)
	addOutputFlag(add)

	list := &cobra.Command{
		Use:   "list",
		Short: "List hosts: state, last seen, agent version and a sync summary",
		Long: `list shows every host the hub knows: whether its agent enrolled, when it last
reported, the agent's version and how many of its managed guests are in sync.

-o json prints {"hosts": [HOST…]} sorted by host, each HOST as
{"host", "state" (awaiting_enrollment | enrolled | revoked), "blocked",
"blocked_reason", "last_seen" (null: never), "report_time", "node",
"agent_version", "frozen", "desired_generation", "reported_generation",
"guests", "managed", "sync" ({phase: count} for in_sync, converging,
drift_observed, pending_signature, pending_restart, error),
"pending_signatures"}.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, c, err := operatorOutput(cmd)
			if err != nil {
				return err
			}
			hosts, err := hostSummaries(cmd.Context(), c)
			if err != nil {
				return err
			}
			out := HostsJSON{Hosts: hosts}
			return writeOutput(stdout, format, out, func(w io.Writer) error {
				if len(out.Hosts) == 0 {
					_, err := fmt.Fprintln(w, "No hosts yet: `steward hosts add HOST` prints the command that enrolls one.")
					return err
				}
				now := time.Now()
				tw := newTable(w)
				fmt.Fprintln(tw, "HOST\tSTATE\tLAST SEEN\tVERSION\tSYNC")
				for _, h := range out.Hosts {
					ver := h.AgentVersion
					if ver == "" {
						ver = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", h.Host, hostStateText(h), ago(h.LastSeen, now), ver, h.syncLine())
				}
				return tw.Flush()
			})
		},
	}
	addOperatorFlags(list)
	addOutputFlag(list)

	show := &cobra.Command{
		Use:   "show HOST",
		Short: "Show one host and the status of each of its guests",
		Long: `show prints HOST's summary (as list does) and every guest of its last report:
run state, and for managed guests the sync phase, why it is not in sync,
drifted fields, keys waiting for a restart, the next retry and the actions
held for signatures (with what each would destroy).

-o json prints {"host": HOST (as in hosts list), "guests": [{"vmid",
"kind", "name", "status", "lock", "managed", "phase", "reason", "drift"
([{"key", "from", "to"}]), "pending_restart", "next_retry",
"pending_signature" ([{"op", "params", "reason", "destroys"}]),
"config_error"}]} sorted by vmid.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHostDetail(cmd, args[0], 0, stdout)
		},
	}
	addOperatorFlags(show)
	addOutputFlag(show)

	rm := &cobra.Command{
		Use:   "rm HOST",
		Short: "Revoke a host: its agent's token stops working at once",
		Long: `rm revokes HOST's agent token; the agent's next request fails. The hub keeps
the host's history. To bring the host back, ` + "`steward hosts add HOST`" + ` and
enroll its agent again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := operatorClient(cmd)
			if err != nil {
				return err
			}
			if err := c.JSON(cmd.Context(), http.MethodPost, hostPath(args[0], "revoke"), nil, nil, nil); err != nil {
				return noHost(err, args[0])
			}
			fmt.Fprintf(stdout, "Host %q revoked: its agent's token no longer works.\n", args[0])
			return nil
		},
	}
	addOperatorFlags(rm)
	cmd.AddCommand(add, list, show, rm)
	return cmd
}

func hostStateText(h HostSummaryJSON) string {
	s := strings.ReplaceAll(h.State, "_", " ")
	if h.Blocked {
		s += ", blocked"
	}
	if h.Frozen {
		s += ", frozen"
	}
	return s
}

// runHostDetail prints one host's detail, or with vmid > 0 that guest's.
func runHostDetail(cmd *cobra.Command, host string, vmid int, stdout io.Writer) error {
	format, c, err := operatorOutput(cmd)
	if err != nil {
		return err
	}
	v, err := getHost(cmd.Context(), c, host)
	if err != nil {
		return err
	}
	out := HostDetailJSON{Host: v.summary(), Guests: v.guests()}
	if vmid > 0 {
		var keep []GuestStatusJSON
		for _, g := range out.Guests {
			if g.VMID == vmid {
				keep = append(keep, g)
			}
		}
		if keep == nil {
			return fmt.Errorf("host %q reported no guest %d and its desired state does not name it", host, vmid)
		}
		out.Guests = keep
	}
	return writeOutput(stdout, format, out, func(w io.Writer) error {
		if vmid > 0 {
			return writeGuestDetail(w, out.Host, out.Guests[0], time.Now())
		}
		return writeHostDetail(w, out, time.Now())
	})
}

func writeHostDetail(w io.Writer, d HostDetailJSON, now time.Time) error {
	h := d.Host
	fmt.Fprintf(w, "Host:      %s (%s)\n", h.Host, hostStateText(h))
	if h.Blocked {
		fmt.Fprintf(w, "Blocked:   %s\n", h.BlockedReason)
	}
	fmt.Fprintf(w, "Last seen: %s\n", ago(h.LastSeen, now))
	if h.Node != "" {
		fmt.Fprintf(w, "Node:      %s, agent %s\n", h.Node, orDash(h.AgentVersion))
	}
	fmt.Fprintf(w, "Desired:   generation %d (agent reported %d)\n", h.DesiredGeneration, h.ReportedGeneration)
	fmt.Fprintf(w, "Sync:      %s\n", h.syncLine())
	if len(d.Guests) == 0 {
		if h.LastSeen == nil {
			fmt.Fprintln(w, "\nNo report yet: the agent has not reported.")
		}
		return nil
	}
	fmt.Fprintln(w)
	tw := newTable(w)
	fmt.Fprintln(tw, "VMID\tKIND\tNAME\tSTATUS\tPHASE\tDETAIL")
	for _, g := range d.Guests {
		phase := g.Phase
		if !g.Managed {
			phase = "unmanaged"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", g.VMID, orDash(g.Kind), orDash(g.Name), orDash(g.Status), phase, guestDetail(g, now))
	}
	return tw.Flush()
}

// guestDetail is one line of why a guest is not in sync.
func guestDetail(g GuestStatusJSON, now time.Time) string {
	var parts []string
	switch {
	case g.Phase == wire.PhaseMoved:
		parts = append(parts, "on node "+g.Node+" of the cluster; its entry belongs under that node's host")
	case g.Status == "" && g.Managed:
		parts = append(parts, "not on the host")
	}
	if g.Lock != "" {
		parts = append(parts, "locked ("+g.Lock+")")
	}
	if g.Reason != "" {
		parts = append(parts, g.Reason)
	}
	if len(g.Drift) > 0 {
		var ds []string
		for _, c := range g.Drift {
			ds = append(ds, fmt.Sprintf("%s %s→%s", c.Key, orDash(c.From), orDash(c.To)))
		}
		parts = append(parts, "drift: "+strings.Join(ds, ", "))
	}
	if len(g.PendingRestart) > 0 {
		parts = append(parts, "at next restart: "+strings.Join(g.PendingRestart, ", "))
	}
	for _, p := range g.PendingSignature {
		s := "needs signature: " + p.Op
		if len(p.Destroys) > 0 {
			s += " (destroys " + strings.Join(p.Destroys, ", ") + ")"
		}
		parts = append(parts, s)
	}
	if g.NextRetry != nil {
		parts = append(parts, "next retry "+retryIn(*g.NextRetry, now))
	}
	if g.ConfigError != "" {
		parts = append(parts, "config unreadable: "+g.ConfigError)
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newBlockCmd(block bool) func(stdout, stderr io.Writer) *cobra.Command {
	return func(stdout, stderr io.Writer) *cobra.Command {
		cmd := &cobra.Command{
			Use:   "unblock HOST",
			Short: "Let a blocked host's agent change guests again",
			Args:  cobra.ExactArgs(1),
		}
		if block {
			cmd.Use, cmd.Short = "block HOST --reason TEXT", "Stop a host's agent from changing any guest (it keeps reporting)"
			cmd.Long = `block tells HOST's agent, at its next report, to mutate nothing until
unblocked; it keeps reporting. --reason is required and shown in status.`
			cmd.Flags().String("reason", "", "why the host is blocked (required)")
		}
		cmd.RunE = func(cmd *cobra.Command, args []string) error {
			path, body := hostPath(args[0], "unblock"), any(nil)
			if block {
				reason, _ := cmd.Flags().GetString("reason")
				if strings.TrimSpace(reason) == "" {
					return &UsageError{Err: errors.New("block: --reason is required: say why the host is blocked")}
				}
				path, body = hostPath(args[0], "block"), map[string]string{"reason": reason}
			}
			c, err := operatorClient(cmd)
			if err != nil {
				return err
			}
			if err := c.JSON(cmd.Context(), http.MethodPost, path, nil, body, nil); err != nil {
				return noHost(err, args[0])
			}
			if block {
				fmt.Fprintf(stdout, "Host %q blocked: its agent changes nothing from its next report on.\n", args[0])
			} else {
				fmt.Fprintf(stdout, "Host %q unblocked.\n", args[0])
			}
			return nil
		}
		addOperatorFlags(cmd)
		return cmd
	}
}

// writeGuestDetail prints one guest of host h, one field a line.
func writeGuestDetail(w io.Writer, h HostSummaryJSON, g GuestStatusJSON, now time.Time) error {
	tw := newTable(w)
	fmt.Fprintf(tw, "Guest:\t%s/%d", h.Host, g.VMID)
	if g.Kind != "" || g.Name != "" {
		fmt.Fprintf(tw, " (%s %q)", orDash(g.Kind), g.Name)
	}
	fmt.Fprintln(tw)
	status := g.Status
	if status == "" {
		status = "not on the host"
	}
	fmt.Fprintf(tw, "Status:\t%s\n", status)
	if g.Lock != "" {
		fmt.Fprintf(tw, "Lock:\t%s\n", g.Lock)
	}
	if !g.Managed {
		fmt.Fprintf(tw, "Phase:\tunmanaged (no desired state names it)\n")
		return tw.Flush()
	}
	fmt.Fprintf(tw, "Phase:\t%s\n", g.Phase)
	if g.Reason != "" {
		label := "Reason:"
		if g.Phase == "error" {
			label = "Last error:"
		}
		fmt.Fprintf(tw, "%s\t%s\n", label, g.Reason)
	}
	if g.NextRetry != nil {
		fmt.Fprintf(tw, "Next retry:\t%s (%s)\n", retryIn(*g.NextRetry, now), g.NextRetry.Local().Format(time.RFC3339))
	}
	for _, c := range g.Drift {
		fmt.Fprintf(tw, "Drift:\t%s %s → %s\n", c.Key, planValue(c.From), planValue(c.To))
	}
	if len(g.PendingRestart) > 0 {
		fmt.Fprintf(tw, "At next restart:\t%s\n", strings.Join(g.PendingRestart, ", "))
	}
	for _, p := range g.PendingSignature {
		s := p.Op
		if len(p.Destroys) > 0 {
			s += " [destroys " + strings.Join(p.Destroys, ", ") + "]"
		}
		fmt.Fprintf(tw, "Needs signature:\t%s (steward sign --host %s)\n", s, h.Host)
	}
	if g.ConfigError != "" {
		fmt.Fprintf(tw, "Config error:\t%s\n", g.ConfigError)
	}
	writeSnapshotSchedule(tw, g.Snapshots, now)
	return tw.Flush()
}

// writeSnapshotSchedule shows a guest's snapshot schedule: the policy,
// its state, the agent's snapshots with their ages, and held prunes.
func writeSnapshotSchedule(w io.Writer, sc *wire.SnapshotSchedule, now time.Time) {
	if sc == nil {
		return
	}
	every := sc.Every
	if d, err := time.ParseDuration(sc.Every); err == nil {
		every = d.String() // 24h0m0s → 24h, 1h30m0s → 1h30m
		if strings.HasSuffix(every, "m0s") {
			every = strings.TrimSuffix(every, "0s")
		}
		if strings.HasSuffix(every, "h0m") {
			every = strings.TrimSuffix(every, "0m")
		}
	}
	line := fmt.Sprintf("every %s, keep %d: %d kept", every, sc.Keep, len(sc.Snapshots))
	if !sc.LastTaken.IsZero() {
		line += fmt.Sprintf(", last taken %s ago", shortDuration(now.Sub(sc.LastTaken)))
	}
	switch {
	case sc.NextDue.IsZero():
	case !sc.NextDue.After(now):
		line += ", next due now"
	default:
		line += fmt.Sprintf(", next due in %s (%s)", shortDuration(sc.NextDue.Sub(now)), sc.NextDue.Local().Format(time.RFC3339))
	}
	fmt.Fprintf(w, "Snapshots:\t%s\n", line)
	for _, s := range sc.Snapshots {
		fmt.Fprintf(w, "Snapshot:\t%s (%s old)\n", s.Name, shortDuration(now.Sub(s.Taken)))
	}
	for _, h := range sc.Held {
		fmt.Fprintf(w, "Held prune:\t%s\n", h)
	}
	if sc.Note != "" {
		fmt.Fprintf(w, "Schedule:\t%s\n", sc.Note)
	}
}

// shortDuration prints d rounded to the minute, with days: "6d3h0m".
func shortDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	d = d.Round(time.Minute)
	days := d / (24 * time.Hour)
	rest := strings.TrimSuffix((d % (24 * time.Hour)).String(), "0s")
	if rest == "" {
		rest = "0m"
	}
	if days > 0 && rest == "0m" {
		return fmt.Sprintf("%dd", days)
	}
	if days > 0 {
		return fmt.Sprintf("%dd%s", days, rest)
	}
	return rest
}

// retryIn says when a retry at t is due: "in 1m30s", or "due" once past
// (the agent retries at its next tick).
func retryIn(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	if d <= 0 {
		return "due (at the agent's next tick)"
	}
	return "in " + d.String()
}
