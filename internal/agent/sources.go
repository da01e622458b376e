package agent

import (
	"context"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/inbox"
	"github.com/steward-pve/steward/internal/signedop"
)

// DesiredSource is where the agent's desired state comes from: the
// desired file today (desiredfile.File), the hub next.
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

// JobSource is where signed jobs come from: the jobs directory today
// (DirJobs), the hub next.
//
// Jobs returns every job currently offered, in a stable order. It must
// honour ctx and should not block beyond one read of its origin. "Nothing
// new" is the same jobs again: a job that ran or was refused is judged the
// same way again (the journal makes a job that ran a no-op), so a source
// need not remember what it handed out. No jobs is an empty slice. An
// error fails the tick; a source should skip an unreadable job (and say
// so itself) rather than fail the others.
type JobSource interface {
	Jobs(ctx context.Context) ([]signedop.Job, error)
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

// DirJobs is the JobSource of a signed-jobs directory (package inbox): it
// never blocks on more than reading the directory, and never fails: an
// unreadable entry is skipped and logged once by the inbox.
type DirJobs struct{ Inbox *inbox.Inbox }

// Jobs returns the jobs in the directory, in payload file name order.
func (d DirJobs) Jobs(ctx context.Context) ([]signedop.Job, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return inbox.Jobs(d.Inbox.Read()), nil
}
