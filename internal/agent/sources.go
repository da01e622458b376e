package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/inbox"
	"github.com/steward-pve/steward/internal/signedop"
)

// DesiredSource is where the agent's desired state comes from: the
// desired file (desiredfile.File) or the hub (Hub).
//
// Desired returns the current document. It must honour ctx; whether it
// blocks is the source's to say (a file source reads the file and returns;
// a hub source may hold a long poll until the generation moves or its wait
// ends). "Nothing new" is the same document again: the tick is
// level-based and converges to whatever it is given. "Nothing desired" is
// an empty document, never nil; an error fails the tick, and the next
// tick asks again. A source that cannot reach its origin should return
// the last document it had (the agent keeps converging toward it) rather
// than an error.
type DesiredSource interface {
	Desired(ctx context.Context) (*desired.Document, error)
}

// JobSource is where signed jobs come from: the jobs directory
// (DirJobs), with a hub the hub's jobs too (Hub).
//
// Jobs returns every job currently offered, in a stable order. It must
// honour ctx and should not block beyond one read of its origin. "Nothing
// new" is the same jobs again: a job that ran or was refused is judged the
// same way again (the journal makes a job that ran a no-op), so a source
// need not remember what it handed out. No jobs is an empty slice. An
// error fails the tick; a source should skip an unreadable job (and say
// so itself) rather than fail the others.
//
// Settle is told, after each tick that ran, what became of every job it
// offered (Report.Jobs): a directory source moves finished jobs aside, a
// hub source reports results so the hub clears them. It must honour ctx.
// An error means a finished job could not be settled; the journal still
// keeps it from running again, and the next Settle sees it as completed.
type JobSource interface {
	Jobs(ctx context.Context) ([]signedop.Job, error)
	Settle(ctx context.Context, jobs []engine.JobReport) error
}

// NoDesired is the DesiredSource of a host without desired state: it
// returns an empty document (which changes nothing) and never blocks.
type NoDesired struct{}

// Desired returns an empty document, or ctx's error.
func (NoDesired) Desired(ctx context.Context) (*desired.Document, error) {
	return desired.Empty{}.Desired(ctx)
}

// NoJobs is the JobSource of a host without signed jobs.
type NoJobs struct{}

// Jobs returns no jobs, or ctx's error.
func (NoJobs) Jobs(ctx context.Context) ([]signedop.Job, error) { return nil, ctx.Err() }

// Settle has nothing to settle.
func (NoJobs) Settle(context.Context, []engine.JobReport) error { return nil }

// DirJobs is the JobSource of a signed-jobs directory (package inbox): it
// never blocks on more than reading the directory, and Jobs never fails:
// an unreadable entry is skipped and logged once by the inbox. Settle
// moves finished jobs to Done and prunes it. For one goroutine at a time
// (the agent's tick loop).
type DirJobs struct {
	Inbox *inbox.Inbox
	// Done receives finished jobs; nil leaves them in the inbox (the
	// journal keeps them from running again).
	Done *inbox.Done
	// Create makes the inbox directory (0700) on first use when missing:
	// the default directory under the state directory.
	Create bool
	Logger *slog.Logger // nil: no logging
}

// Jobs returns the jobs in the directory, in payload file name order.
func (d *DirJobs) Jobs(ctx context.Context) ([]signedop.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if d.Create && d.Inbox.Dir != "" {
		if err := os.MkdirAll(d.Inbox.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("agent: creating the signed-jobs directory: %w", err)
		}
		d.Create = false
	}
	return inbox.Jobs(d.Inbox.Read()), nil
}

// Settle reports each job's fate once per verdict and moves finished jobs
// to Done (see inbox.Done.Settle), then prunes Done; it returns the first
// error moving a job.
func (d *DirJobs) Settle(ctx context.Context, jobs []engine.JobReport) error {
	if d.Done == nil {
		return nil
	}
	err := d.Done.Settle(jobs)
	if _, perr := d.Done.Prune(); perr != nil && d.Logger != nil {
		d.Logger.Warn("pruning finished signed jobs", "dir", d.Done.Dir, "err", perr)
	}
	return err
}

// bothJobs offers the local jobs and the hub's side by side, and settles
// each with the source it came from (hub jobs are named HubJobPrefix…;
// local ones by their file path).
type bothJobs struct {
	local JobSource
	hub   *Hub
}

// Jobs returns the local jobs, then the hub's. A local source's error
// fails the tick as before; the hub's never does.
func (b *bothJobs) Jobs(ctx context.Context) ([]signedop.Job, error) {
	local, err := b.local.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	hub, err := b.hub.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	return append(local, hub...), nil
}

// Settle settles every job with its own source; it returns the first
// error.
func (b *bothJobs) Settle(ctx context.Context, jobs []engine.JobReport) error {
	var local, hub []engine.JobReport
	for _, j := range jobs {
		if strings.HasPrefix(j.Name, HubJobPrefix) {
			hub = append(hub, j)
		} else {
			local = append(local, j)
		}
	}
	return errors.Join(b.local.Settle(ctx, local), b.hub.Settle(ctx, hub))
}
