package engine

import (
	"context"
	"errors"

	"github.com/steward-pve/steward/internal/classify"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
)

// ErrNotRecovered is returned by Tick before Recover succeeded.
var ErrNotRecovered = errors.New("engine: in-flight ops not yet resolved; call Recover first")

// Tick runs one reconcile pass toward want (nil means nothing is desired)
// and executes jobs, the signed jobs presented this tick. It returns when
// every submitted action finished or ctx ended. It fails with
// ErrNotRecovered until Recover succeeded.
//
// A pass is five steps, each in a file of its own: observe (observe.go),
// signed jobs (signed.go), plan (plan.go), act (act.go) and report
// (report.go).
func (e *Engine) Tick(ctx context.Context, want *desired.Host, jobs []signedop.Job) (Report, error) {
	if !e.recovered {
		return Report{}, ErrNotRecovered
	}
	return e.pass(ctx, want, jobs, false)
}

// PlanOnly is Tick without effects: it observes, plans and gates, and
// reports every action it would run as skipped (SkipPlanOnly); it
// executes nothing, journals nothing, resolves no leftover op and needs no
// Recover first.
func (e *Engine) PlanOnly(ctx context.Context, want *desired.Host, jobs []signedop.Job) (Report, error) {
	return e.pass(ctx, want, jobs, true)
}

// tick is the state one pass threads through its steps.
type tick struct {
	e        *Engine
	planOnly bool
	want     *desired.Host
	parsed   []signedop.ParsedJob // each signed job, parsed once
	rep      Report
	// epochs is the journal's LastEnded as it was before the guests were
	// read: what each guest's reconcile keys are bound to (reconcileKey).
	epochs map[int]string
	// actual is what the observe step read; byID indexes it (and, after
	// the act step, holds what the touched guests became).
	actual []guest.Observed
	byID   map[int]guest.Observed
	// blocked are the guests with an op still unresolved, and why.
	blocked map[int]string
	subs    []submitted
	// held are the decisions holding an action for a signature, by guest;
	// they are recorded and reported once the tick's actions ended.
	held map[int][]gate.Decision
	// signedVMIDs are the guests a signed job changes this tick.
	signedVMIDs map[int]bool
	jobResults  map[int]int // index in rep.Jobs → index in rep.Results
	// fresh says, for the guests a config step touches, whether the agent
	// created them and they have not run since (create.go).
	fresh map[int]bool
	// resources is the cluster's guest list, read once a tick when a
	// create is due (create.go); nil until then.
	resources []pve.Resource
	// elsewhere holds the desired guests this node does not list that
	// /cluster/resources shows on a node (moved.go); clusterErr says why
	// it could not be read, when it could not.
	elsewhere  map[int]string
	clusterErr string
	// migrateKeys are the idempotency keys of migrations of guests that
	// came back after an earlier one (migrate.go).
	migrateKeys map[int]string
	// storages caches the storage usage read this tick (with whether
	// each is shared), and allocated what the actions allowed so far
	// allocate, by "node/storage" (headroom.go).
	storages  map[string]classify.StorageUsage
	shared    map[string]bool
	allocated map[string]int64
	// snaps is each scheduled guest's snapshot schedule state
	// (snapshots.go).
	snaps map[int]*SnapshotState
}

// submitted is an action handed to the per-guest queue.
type submitted struct {
	idx    int // in rep.Results
	ticket *guestq.Ticket
	out    *executor.Outcome // written by the job, read after its ticket is done
}

func (e *Engine) pass(ctx context.Context, want *desired.Host, jobs []signedop.Job, planOnly bool) (Report, error) {
	if want == nil {
		want = &desired.Host{}
	}
	e.seenDecisions = map[string]bool{}
	defer func() { e.lastDecisions = e.seenDecisions }()
	t := &tick{e: e, planOnly: planOnly, want: want, held: map[int][]gate.Decision{},
		signedVMIDs: map[int]bool{}, jobResults: map[int]int{}}
	if err := t.observe(ctx, jobs); err != nil {
		return Report{}, err
	}
	// Signed jobs first: they carry operator intent for this exact state.
	t.signedJobs(ctx)
	t.plan(ctx)
	t.snapshots(ctx)
	t.act(ctx)
	if err := ctx.Err(); err != nil {
		return t.rep, err
	}
	t.afterSnapshots(ctx)
	t.report(ctx)
	return t.rep, ctx.Err()
}

// recordDecision journals and logs a gate decision. A decision that holds
// or refuses an action is recorded when it first appears, not again on
// every tick it stays the same, so a long-pending action does not grow the
// journal or the log; allowed decisions are always recorded (each precedes
// an execution).
func (e *Engine) recordDecision(d gate.Decision, planOnly bool, file string) {
	if planOnly || e.Journal == nil {
		return
	}
	if d.Outcome != gate.Allowed {
		key := d.Outcome + "\x00" + d.Action.Key() + "@" + d.Action.Digest + "\x00" + d.Reason
		e.seenDecisions[key] = true
		if e.lastDecisions[key] {
			return
		}
	}
	log := e.log()
	if file != "" {
		log = log.With("job_file", file)
	}
	log.Info("gate decision", "vmid", d.Action.VMID, "op", d.Action.Op, "class", d.Verdict.Class,
		"outcome", d.Outcome, "reason", d.Reason, "signers", d.Permit.Signers())
	err := e.Journal.Decision(journal.Decision{Time: e.now(), VMID: d.Action.VMID, Action: d.Action,
		Class: string(d.Verdict.Class), Verdict: d.Outcome, Reason: d.Reason, Signers: d.Permit.Signers()})
	if err != nil {
		e.log().Error("journaling gate decision", "err", err)
	}
}
