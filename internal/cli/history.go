package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hubclient"
)

func init() { register(newHistoryCmd) }

// HistoryRow is one entry of `steward history -o json`: the hub's
// history entry (see hub.HistoryEntryJSON) with its host.
type HistoryRow struct {
	Host string `json:"host"`
	hub.HistoryEntryJSON
}

func newHistoryCmd(stdout, stderr io.Writer) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history [HOST[/VMID]]",
		Short: "The audit trail of what agents did: who asked, who signed, what ran, PVE's task and result",
		Long: `history shows the operations the agents' journals recorded and shipped to the hub
(hash-chained receipts), oldest first: when, which guest, what ran, why (reconcile:
desired state; signed: a signed job, with the operator who uploaded it and the key
fingerprints that signed it; recovery: finishing an op a crash interrupted), PVE's
task id and how it ended; and the gate's decisions (operations held for a
signature or refused).

HOST limits it to one host, HOST/VMID to one guest; --limit keeps the newest N
entries per host.

-o json|yaml prints {"entries": [{"host", "type", "seq", "time", "op", "vmid",
"action", "source", "signers", "nonce", "job", "asked_by", "upid", "result",
"ended_at", "class", "verdict", "reason"}]}.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := outputFormat(cmd)
			if err != nil {
				return err
			}
			target := ""
			if len(args) == 1 {
				target = args[0]
			}
			host, vmid, err := parseGuestTarget(target)
			if err != nil {
				return err
			}
			c, err := operatorClient(cmd)
			if err != nil {
				return err
			}
			rows, err := runHistory(cmd.Context(), c, host, vmid, limit)
			if err != nil {
				return err
			}
			out := struct {
				Entries []HistoryRow `json:"entries"`
			}{rows}
			return writeOutput(stdout, format, out, func(w io.Writer) error { return historyText(w, rows) })
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "the newest N entries per host (1..1000)")
	addOperatorFlags(cmd)
	addOutputFlag(cmd)
	return cmd
}

// parseGuestTarget splits HOST[/VMID]; "" is every host.
func parseGuestTarget(s string) (string, int, error) {
	host, v, ok := strings.Cut(s, "/")
	if host == "" && ok {
		return "", 0, &UsageError{Err: fmt.Errorf("%q: want HOST or HOST/VMID", s)}
	}
	if !ok {
		return host, 0, nil
	}
	vmid, err := strconv.Atoi(v)
	if err != nil || vmid < 1 {
		return "", 0, &UsageError{Err: fmt.Errorf("%q: the part after / is a guest id (a whole number), e.g. %s/101", s, host)}
	}
	return host, vmid, nil
}

// runHistory reads the history of host (every host when ""), of guest
// vmid only when it is not 0.
func runHistory(ctx context.Context, c *hubclient.Client, host string, vmid, limit int) ([]HistoryRow, error) {
	if limit < 1 || limit > 1000 {
		return nil, &UsageError{Err: fmt.Errorf("--limit %d: want 1..1000", limit)}
	}
	hosts := []string{host}
	if host == "" {
		var out struct {
			Hosts []hub.HostJSON `json:"hosts"`
		}
		if err := c.JSON(ctx, http.MethodGet, "/v1/hosts", nil, nil, &out); err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		hosts = hosts[:0]
		for _, h := range out.Hosts {
			hosts = append(hosts, h.ID)
		}
	}
	rows := []HistoryRow{}
	for _, h := range hosts {
		q := url.Values{"limit": {strconv.Itoa(limit)}}
		if vmid != 0 {
			q.Set("vmid", strconv.Itoa(vmid))
		}
		var out hub.HistoryJSON
		if err := c.JSON(ctx, http.MethodGet, "/v1/hosts/"+url.PathEscape(h)+"/history", q, nil, &out); err != nil {
			return nil, fmt.Errorf("history: %w", err)
		}
		for _, e := range out.Entries {
			rows = append(rows, HistoryRow{Host: h, HistoryEntryJSON: e})
		}
	}
	return rows, nil
}

// historyText is history's text output: a table, one line per entry.
func historyText(w io.Writer, rows []HistoryRow) error {
	if len(rows) == 0 {
		fmt.Fprintln(w, "No history yet: agents ship their journal to the hub as they act.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tHOST\tVMID\tWHAT\tASKED BY\tSIGNED BY\tTASK\tRESULT")
	for _, r := range rows {
		what := "?"
		if r.Action != nil {
			what = r.Action.Op
			for _, k := range sortedKeys(r.Action.Params) {
				what += " " + k + "=" + r.Action.Params[k]
			}
		}
		asked := dash(r.AskedBy)
		switch {
		case r.AskedBy != "":
		case r.Source == "reconcile":
			asked = "desired state"
		case r.Source == "recovery":
			asked = "recovery"
		case r.Source == "signed":
			asked = "signed job"
		}
		result := ""
		switch {
		case r.Type == "break":
			what, result = "chain break", r.Reason
		case r.Type == "decision":
			result = r.Verdict
			if r.Reason != "" {
				result += ": " + r.Reason
			}
		case r.Result == nil:
			result = "(no end recorded yet)"
		case r.Result.OK:
			result = "ok " + r.Result.ExitStatus
		default:
			result = "failed: " + r.Result.Error
		}
		if r.Result != nil && r.Result.Resolution != "" {
			result += " (" + r.Result.Resolution + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format("2006-01-02 15:04:05Z"), r.Host, r.VMID,
			what, asked, dash(strings.Join(r.Signers, ",")), dash(r.UPID), strings.TrimSpace(result))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
