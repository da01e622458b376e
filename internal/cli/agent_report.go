package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/agent"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
)

// checkDesiredHost reads the desired document once at start and refuses
// to run when it names other hosts but not host (the host id is most
// likely wrong); a document that gives host nothing to manage is a
// warning, since running on is right there (an empty document changes
// nothing, and guests may be added later).
func checkDesiredHost(ctx context.Context, p desired.Provider, host string, logger *slog.Logger) error {
	doc, err := p.Desired(ctx)
	if err != nil {
		return err
	}
	warn, err := doc.CheckHost(host)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if warn != "" {
		logger.Warn(warn, "host", host)
	}
	return nil
}

// printReport writes what one `agent --once` tick planned and did: the
// plan, each action's result, each signed job by file, what waits for a
// signature, each guest's state after its actions ran, and the summary.
func printReport(w io.Writer, rep engine.Report, pendingDir string) {
	fmt.Fprint(w, rep.Plan.Render())
	if len(rep.Results) > 0 {
		fmt.Fprintln(w, "\nResults:")
	}
	for _, r := range rep.Results {
		switch {
		case r.Skipped != "":
			fmt.Fprintf(w, "  skip  %s (%s)\n", r.Action, r.Skipped)
		case r.Err != nil:
			fmt.Fprintf(w, "  FAIL  %s: %v\n", r.Action, r.Err)
		default:
			extra := ""
			if r.Outcome.UPID != "" {
				extra = " task " + r.Outcome.ExitStatus
			}
			fmt.Fprintf(w, "  ok    %s%s\n", r.Action, extra)
		}
	}
	if len(rep.Jobs) > 0 {
		fmt.Fprintln(w, "\nSigned jobs:")
	}
	for _, j := range rep.Jobs {
		what := ""
		if j.Action.Op != "" {
			what = " (" + j.Action.String() + ")"
		}
		switch j.Status {
		case engine.JobRan:
			fmt.Fprintf(w, "  ran       %s%s; moved to done/\n", j.Name, what)
		case engine.JobCompleted:
			fmt.Fprintf(w, "  done      %s%s: %s; not run again, moved to done/\n", j.Name, what, j.Reason)
		case engine.JobFailed:
			fmt.Fprintf(w, "  FAILED    %s%s: %s; not run again (sign a new payload), moved to done/\n", j.Name, what, j.Reason)
		case engine.JobRejected:
			fmt.Fprintf(w, "  REJECTED  %s%s: %s\n", j.Name, what, j.Reason)
		default:
			fmt.Fprintf(w, "  waiting   %s%s: %s\n", j.Name, what, j.Reason)
		}
	}
	for _, d := range rep.Pending {
		fmt.Fprintf(w, "\nPENDING SIGNATURE  %s\n  why: %s\n", d.Action, d.Reason)
		if len(d.Payload) > 0 {
			fmt.Fprintf(w, "  payload: %s (sign with `steward op sign --key KEY FILE`)\n", filepath.Join(pendingDir, agent.PendingFile(d.Offer)))
		}
	}
	if len(rep.Guests) > 0 {
		fmt.Fprintln(w, "\nGuests (after this tick's actions):")
	}
	for _, g := range rep.Guests {
		line := fmt.Sprintf("  %d %s", g.VMID, g.Phase)
		if g.Changed {
			line += " (changed)"
		}
		if g.Err != "" {
			line += ": " + g.Err
		}
		if len(g.Pending) > 0 {
			line += " (applied at the next restart: " + strings.Join(g.Pending, ", ") + ")"
		}
		if !g.NextRetry.IsZero() {
			line += " (next retry " + g.NextRetry.Format(time.RFC3339) + ")"
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "\nSummary: %s\n", summaryText(rep.Summary()))
}

// summaryText renders a tick's summary as key=value pairs: the guests
// managed, in sync, changed, pending signature and failed, then any other
// phase with guests in it (converging, drift_observed, ...) and the signed
// jobs that ran, failed or were rejected.
func summaryText(s engine.Summary) string {
	var b strings.Builder
	for _, kv := range agent.SummaryAttrs(s) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%v", kv.Key, kv.Value)
	}
	return b.String()
}

// onceStatus is the result of `agent --once` after a tick that ran: an
// error (exit 1) when an action failed (a signed job's included), a guest
// is in error,
// a signed job was rejected or a finished job could not leave the inbox
// (moveErr); else an ExitStatus of ExitChanged when the tick changed
// something or holds an action for a signature; else nil (exit 0).
func onceStatus(rep engine.Report, moveErr error) error {
	s := rep.Summary()
	var errs []string
	if s.ActionsFailed > 0 {
		errs = append(errs, fmt.Sprintf("%d action(s) failed", s.ActionsFailed))
	}
	if s.Failed > 0 {
		errs = append(errs, fmt.Sprintf("%d guest(s) in error", s.Failed))
	}
	if s.JobsRejected > 0 {
		errs = append(errs, fmt.Sprintf("%d signed job(s) rejected", s.JobsRejected))
	}
	if len(errs) > 0 || moveErr != nil {
		err := errors.New("agent: " + strings.Join(errs, ", "))
		if moveErr != nil {
			if len(errs) == 0 {
				err = nil
			}
			err = errors.Join(err, fmt.Errorf("agent: moving a finished signed job to done/: %w", moveErr))
		}
		return err
	}
	if s.Changed > 0 || s.PendingSignature > 0 || s.JobsRan > 0 || s.JobsAwaiting > 0 {
		return &ExitStatus{Code: ExitChanged, Reason: "agent: changed something or holds an action for a signature (exit 2)"}
	}
	return nil
}
