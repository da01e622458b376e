// Package engine runs the agent's reconcile tick on one Proxmox host:
// observe the guests, plan toward desired state, gate every action, run
// what the gate permits through the per-guest queue and the executor, and
// journal every mutation so a crash at any instant can be resolved.
//
// The tick is level-based: it never remembers which event caused it. After
// a crash, Recover resolves every journaled op that began and did not end
// (by its task's fate, or by comparing the guest with the op's intent)
// before any new mutation, and every tick first resolves ops left in
// flight since (an outcome that was unknown) before it mutates their guest
// again. A reconcile op that did not run is planned again from what PVE
// says; a signed job that PVE proves did not run stays runnable while its
// signature is valid (see the journal package doc for its states).
package engine

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
)

// Reader is the read side of the PVE client the engine uses. Methods block
// until PVE answers or ctx ends and are safe for concurrent use. A guest
// that does not exist is an error for which pve.IsNotFound is true.
type Reader interface {
	Guests(ctx context.Context, node string, kind guest.Kind) ([]pve.GuestSummary, error)
	GuestConfig(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.GuestConfig, error)
	// ConfigWithPending is the observation read: one GET …/pending gives
	// the config as written (what plans compare against), its digest and
	// the keys still waiting for a restart.
	ConfigWithPending(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.PendingConfig, error)
	TaskStatus(ctx context.Context, node string, upid pve.UPID) (pve.TaskStatus, error)
	Tasks(ctx context.Context, node string, q pve.TaskQuery) ([]pve.TaskSummary, error)
	Snapshots(ctx context.Context, node string, kind guest.Kind, vmid int) ([]pve.Snapshot, error)
	WaitTask(ctx context.Context, upid pve.UPID, o pve.WaitOptions) (pve.TaskResult, error)
}

// Engine converges the guests of one host. Build it with all fields set
// (Logger and Now may be nil); it is safe to call Tick from one goroutine
// at a time.
type Engine struct {
	Host    string // the host id desired state names
	Node    string // the PVE node name
	PVE     Reader
	Exec    *executor.Executor
	Journal *journal.Journal
	Queue   *guestq.Queue
	Gate    *gate.Gate
	Backoff *backoff.Tracker
	Plan    plan.Options
	// ProvisionCleanupWindow bounds how long a failed create of the agent's
	// own lets it destroy the remains without a signature; default
	// DefaultProvisionCleanupWindow.
	ProvisionCleanupWindow time.Duration
	// TaskUser is the PVE user (USER@REALM!TOKENID) the agent acts as.
	// Recovery adopts only tasks this user started; empty means it adopts
	// none and judges interrupted ops by the guest's state alone.
	TaskUser string
	// ReadConcurrency bounds parallel config reads; default 4.
	ReadConcurrency int
	// NotRunGrace is how long after a signed op began recovery waits before it
	// takes "no task and no effect" as proof that PVE never received the
	// call (a request still being processed leaves neither yet); until
	// then the op stays in flight and its guest is not mutated. Default
	// DefaultNotRunGrace.
	NotRunGrace time.Duration
	Logger      *slog.Logger
	Now         func() time.Time

	recovered bool
	mu        sync.Mutex
	active    map[string]bool // op ids execute is running now; guarded by mu
	// Held and refused decisions recorded by the previous tick and this
	// one; see recordDecision.
	lastDecisions, seenDecisions map[string]bool
}

// Report is what one tick saw, decided and did. Wire converts it to the
// report the hub receives.
type Report struct {
	Host, Node string    // the engine's host id and PVE node
	Time       time.Time // when the tick began observing
	// Observed is every guest PVE listed, with the configs read for the
	// guests desired state or a signed job names; the guests the tick
	// acted on as PVE reported them after those actions.
	Observed []guest.Observed
	// Want is the desired state the tick converged toward (never nil).
	Want *desired.Host
	// Plan is what the tick planned from the state it observed first.
	Plan    plan.Plan
	Guests  []GuestReport
	Results []Result
	// Pending are the destructive actions waiting for signatures, each
	// bound to the guest's state after this tick's actions ran.
	Pending  []gate.Decision
	Rejected []gate.Decision // signed jobs presented and refused
	// Jobs is the fate of each job presented, in the order given.
	Jobs []JobReport
}

// GuestReport is one managed guest's sync status after the tick: for a
// guest the tick acted on, as PVE reports it once those actions ended.
type GuestReport struct {
	VMID      int
	Phase     string // in_sync, converging, drift_observed, pending_restart, pending_signature, error
	Drift     []plan.Change
	Pending   []string // managed keys PVE applies at the guest's next restart
	Err       string
	NextRetry time.Time
	// Changed is true when at least one action ran on the guest this tick.
	Changed bool
}

// Result is the fate of one action the tick submitted.
type Result struct {
	Action action.Action
	Source string
	// Job is the id of the signed job (wire.JobID of its payload) the
	// action came from; empty for reconcile actions.
	Job     string
	Class   classify.Class
	Outcome executor.Outcome
	Err     error
	Skipped string // non-empty when the action was not run (backoff, already done)
}

// Phases of a GuestReport.
const (
	PhaseInSync        = "in_sync"
	PhaseConverging    = "converging"
	PhaseDriftObserved = "drift_observed"
	// PhasePendingRestart: the managed config is written but some of it
	// is not live until the guest restarts, and the agent does not restart
	// it (restart: never, observe mode, or the guest is stopped).
	PhasePendingRestart   = "pending_restart"
	PhasePendingSignature = "pending_signature"
	PhaseError            = "error"
)

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) log() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// ErrNotRecovered is returned by Tick before Recover succeeded.
var ErrNotRecovered = errors.New("engine: in-flight ops not yet resolved; call Recover first")

// Tick runs one reconcile pass toward want (nil means nothing is desired)
// and executes jobs, the signed jobs presented this tick. With dryRun it
// observes, plans and gates but executes and journals nothing. It returns
// when every submitted action finished or ctx ended.
func (e *Engine) Tick(ctx context.Context, want *desired.Host, jobs []signedop.Job, dryRun bool) (Report, error) {
	if !e.recovered && !dryRun {
		return Report{}, ErrNotRecovered
	}
	if want == nil {
		want = &desired.Host{}
	}
	tickID := randomID()
	e.seenDecisions = map[string]bool{}
	defer func() { e.lastDecisions = e.seenDecisions }()

	// Observe: the two guest lists plus one config read per guest that
	// desired state or a signed job names; nothing per unmanaged guest.
	names := map[int]bool{}
	for vmid := range want.Guests {
		names[vmid] = true
	}
	// Each signed job is read once; the gate decides on it below.
	parsed := signedop.ParseJobs(jobs)
	rep := Report{Host: e.Host, Node: e.Node, Time: e.now(), Want: want}
	rep.Jobs = make([]JobReport, len(jobs))
	for i, pj := range parsed {
		rep.Jobs[i] = JobReport{Name: pj.Job.Name}
		if pj.Err == nil && pj.Payload.Host == e.Host {
			names[pj.Payload.VMID] = true
		}
	}
	actual, err := e.observe(ctx, names)
	if err != nil {
		return Report{}, err
	}
	rep.Observed = actual
	// Ops whose outcome a previous tick could not learn are resolved now,
	// before their guest is mutated again.
	var blocked map[int]string
	if !dryRun {
		blocked = e.resolveLeftovers(ctx)
	}
	byID := make(map[int]guest.Observed, len(actual))
	for _, g := range actual {
		byID[g.VMID] = g
	}

	rep.Plan = plan.Diff(want, actual, e.Plan)
	type submitted struct {
		idx    int
		ticket *guestq.Ticket
		out    *executor.Outcome // written by the job, read after its ticket is done
	}
	var subs []submitted
	// held are the decisions holding an action for a signature, by guest;
	// they are recorded and reported once the tick's actions ended.
	held := map[int][]gate.Decision{}

	// submit queues p and returns the index of its Result; file names a
	// signed job's file in the log.
	submit := func(p gate.Permit, source, job, file, idem string) int {
		a := p.Action()
		r := Result{Action: a, Source: source, Job: job, Class: p.Verdict().Class}
		if why, ok := blocked[a.VMID]; ok {
			r.Skipped = why
			rep.Results = append(rep.Results, r)
			return len(rep.Results) - 1
		}
		if ok, next := e.Backoff.Ready(a.VMID); !ok {
			r.Skipped = "backing off until " + next.Format(time.RFC3339)
			rep.Results = append(rep.Results, r)
			return len(rep.Results) - 1
		}
		if dryRun {
			r.Skipped = "dry run"
			rep.Results = append(rep.Results, r)
			return len(rep.Results) - 1
		}
		rep.Results = append(rep.Results, r)
		idx := len(rep.Results) - 1
		out := new(executor.Outcome)
		t, err := e.Queue.Submit(guestq.Job{VMID: a.VMID, Key: idem, Run: func(ctx context.Context) error {
			o, err := e.execute(ctx, p, source, file, idem)
			*out = o
			return err
		}})
		if err != nil {
			rep.Results[idx].Err = err
			return idx
		}
		subs = append(subs, submitted{idx: idx, ticket: t, out: out})
		return idx
	}

	// Signed jobs first: they carry operator intent for this exact state.
	signedVMIDs := map[int]bool{}
	nonces := map[string]bool{} // nonces of the signed jobs submitted this tick
	jobResults := map[int]int{} // index in rep.Jobs → index in rep.Results
	for i, pj := range parsed {
		jr := &rep.Jobs[i]
		if pj.Err == nil {
			jr.Action = gate.ActionOf(pj.Payload)
		}
		if e.Journal != nil && pj.Err == nil {
			if res, done := e.Journal.Completed(jobKey(pj.Job)); done && !res.Retry {
				// This job ran, or failed conclusively (a destructive one
				// also spent its nonce), before this tick: it is reported
				// as such and never run again.
				jr.Status, jr.Reason = JobCompleted, completion(res)
				continue
			}
		}
		t := gate.Target{}
		if pj.Err == nil {
			if g, exists := byID[pj.Payload.VMID]; exists {
				t.Guest = &g
				t.Provenance = e.provenance(g.VMID, g.Digest)
			} else {
				t.Provenance = e.provenance(pj.Payload.VMID, "")
			}
			if _, held := blocked[pj.Payload.VMID]; !held {
				// An op of a held guest is unresolved (possibly this job's
				// own): submit reports the guest held; nothing is spent or
				// refused. Otherwise a nonce the journal committed, or one
				// allowed earlier this tick, is a replay.
				t.Spent = func(n string) bool {
					spent := nonces[n]
					if !spent && e.Journal != nil {
						_, spent = e.Journal.NonceSpent(n)
					}
					nonces[n] = true
					return spent
				}
			}
		}
		d := e.Gate.DecideJob(pj, t)
		if d.Action.Op != "" {
			e.recordDecision(d, dryRun, pj.Job.Name)
		}
		if d.Outcome != gate.Allowed {
			rep.Rejected = append(rep.Rejected, d)
			jr.Status, jr.Reason = JobRejected, d.Reason
			if d.Action.Op != "" {
				jr.Action = d.Action
			}
			continue
		}
		jobResults[i] = submit(d.Permit, "signed", pj.ID, pj.Job.Name, jobKey(pj.Job))
		signedVMIDs[d.Action.VMID] = true
	}

	// Then the reconcile plan, except for guests a signed job changes this
	// tick: their plan was made before that change and is made again, from
	// what PVE then says, by the next tick.
	for _, st := range rep.Plan.Steps {
		a := st.Action
		if signedVMIDs[a.VMID] {
			continue
		}
		var cfg guest.Config
		if g, ok := byID[a.VMID]; ok {
			cfg = g.Config
		}
		for _, d := range e.Gate.DecideSplit(a, cfg, e.provenance(a.VMID, a.Digest)) {
			if d.Outcome != gate.Allowed {
				held[a.VMID] = append(held[a.VMID], d)
				continue
			}
			e.recordDecision(d, dryRun, "")
			submit(d.Permit, "reconcile", "", "", reconcileKey(d.Action, tickID))
		}
	}

	for _, s := range subs {
		err := s.ticket.Wait(ctx)
		r := &rep.Results[s.idx]
		if err == nil {
			r.Outcome = *s.out
		}
		r.Err = err
		if errors.Is(err, errAlreadyDone) {
			r.Err, r.Skipped = nil, "already completed (idempotency key)"
		}
		switch {
		case r.Err == nil:
			e.Backoff.Success(r.Action.VMID)
		case ctx.Err() != nil:
		default:
			e.Backoff.Failure(r.Action.VMID)
		}
	}
	for i, ri := range jobResults {
		e.jobOutcome(&rep.Jobs[i], rep.Results[ri], jobKey(parsed[i].Job))
	}
	if err := ctx.Err(); err != nil {
		return rep, err
	}

	// The guests the tick acted on are read again: what is reported, and
	// what a held action's payload is bound to, is the state those
	// actions left. A change that mixes benign and destructive keys thus
	// offers its payload against the digest its benign part produced, so
	// the first payload offered is the one the agent will accept.
	final := rep.Plan
	touched := map[int]bool{}
	for _, s := range subs {
		touched[rep.Results[s.idx].Action.VMID] = true
	}
	if len(touched) > 0 {
		after, err := e.observe(ctx, touched)
		if err != nil {
			e.log().Warn("re-reading the guests changed this tick failed; reporting them as first observed", "err", err)
		} else {
			rep.Observed = mergeObserved(actual, after, touched)
			final = plan.Diff(want, rep.Observed, e.Plan)
			for vmid := range touched {
				delete(held, vmid)
			}
			for _, g := range after {
				if touched[g.VMID] {
					byID[g.VMID] = g
				}
			}
			for _, st := range final.Steps {
				a := st.Action
				if !touched[a.VMID] {
					continue
				}
				for _, d := range e.Gate.DecideSplit(a, byID[a.VMID].Config, e.provenance(a.VMID, a.Digest)) {
					if d.Outcome != gate.Allowed {
						held[a.VMID] = append(held[a.VMID], d)
					}
				}
			}
		}
	}
	for _, vmid := range slices.Sorted(maps.Keys(held)) {
		for _, d := range held[vmid] {
			e.recordDecision(d, dryRun, "")
			rep.Pending = append(rep.Pending, d)
		}
	}
	rep.Guests = e.guestReports(rep, final, held)
	return rep, ctx.Err()
}

// mergeObserved returns actual with the guests in touched replaced by what
// after says of them (dropped where after no longer lists them), sorted by
// vmid.
func mergeObserved(actual, after []guest.Observed, touched map[int]bool) []guest.Observed {
	out := make([]guest.Observed, 0, len(actual))
	for _, g := range actual {
		if !touched[g.VMID] {
			out = append(out, g)
		}
	}
	for _, g := range after {
		if touched[g.VMID] {
			out = append(out, g)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}

// jobKey is the idempotency key of a signed job: the hash of its exact
// payload bytes. Not the nonce alone: a job anyone can write (an unsigned
// benign one) could then claim the nonce of an operator's pending payload
// and make the agent skip the real job.
func jobKey(j signedop.Job) string {
	sum := sha256.Sum256(j.Payload)
	return "signed:" + hex.EncodeToString(sum[:16])
}

// reconcileKey is the idempotency key of a reconcile action. A config write
// is keyed by the digest it was planned against: once it ran, the config
// (and so the digest) changed, and the same write against the same digest
// can never be due again. Run-state actions leave the digest unchanged, so
// they are keyed per tick; recovery, not the key, keeps them exactly-once
// across crashes.
func reconcileKey(a action.Action, tickID string) string {
	if a.Op == action.SetConfig && a.Digest != "" {
		return "reconcile:" + a.Key() + "@" + a.Digest
	}
	return "reconcile:" + a.Key() + "#" + tickID
}

var errAlreadyDone = errors.New("engine: op with this idempotency key already completed")

// execute runs one permitted action, journaled: begin is durable before
// PVE is called, the UPID as soon as it is known, end when the outcome is.
func (e *Engine) execute(ctx context.Context, p gate.Permit, source, file, idem string) (executor.Outcome, error) {
	a := p.Action()
	id := randomID()
	if res, done := e.Journal.Completed(idem); done && !res.Retry {
		if res.OK || source == "signed" {
			// Done, or a signed op that failed conclusively: its
			// signature is spent and only a new one may try again.
			return executor.Outcome{}, errAlreadyDone
		}
		// An earlier attempt of this intent failed: this is a new
		// attempt, journaled as such. (An attempt that ended with Retry
		// did not run; the new one keeps its key.)
		idem += "/retry:" + id
	}
	log := e.log().With("op", id, "vmid", a.VMID, "action", a.Op, "source", source)
	if file != "" {
		log = log.With("job_file", file)
	}
	if err := e.recheckDigest(ctx, a); err != nil {
		// Nothing is journaled or spent: a signed job stays runnable.
		log.Warn("op not started: re-reading the guest failed", "err", err, "retryable", pve.IsRetryable(err))
		return executor.Outcome{}, err
	}
	op := journal.Op{ID: id, Time: e.now(), Source: source, Host: e.Host, Action: a, IdemKey: idem, Signers: p.Signers(),
		Nonce: p.Nonce(), NonceExpires: p.NonceExpires()}
	crashpoint.Hit(crashpoint.BeforeBegin)
	e.setActive(op.ID, true)
	defer e.setActive(op.ID, false)
	if err := e.Journal.Begin(op); err != nil {
		switch {
		case errors.Is(err, journal.ErrDone):
			return executor.Outcome{}, errAlreadyDone
		case errors.Is(err, journal.ErrNonceSpent):
			return executor.Outcome{}, fmt.Errorf("engine: %s not run: %w", a, gate.Replayed(op.Nonce))
		}
		return executor.Outcome{}, fmt.Errorf("engine: journal begin for %s: %w (op not started)", a, err)
	}
	crashpoint.Hit(crashpoint.AfterBegin)
	// Parameter values stay out of logs (a config write may carry a
	// secret such as a cloud-init password); the journal has them.
	log.Info("op begin", "keys", slices.Sorted(maps.Keys(a.Params)), "signers", op.Signers)

	out, err := e.Exec.Run(ctx, a, func(u pve.UPID) error {
		crashpoint.Hit(crashpoint.AfterTaskReturned)
		err := e.Journal.Task(op.ID, u.String())
		crashpoint.Hit(crashpoint.AfterTaskRecorded)
		return err
	})
	crashpoint.Hit(crashpoint.AfterCall)

	var unknown *pve.OutcomeUnknownError
	if errors.As(err, &unknown) || (err != nil && ctx.Err() != nil) {
		// The request may have reached PVE. Resolve it the way crash
		// recovery would, with a fresh context: never re-send blindly.
		op.UPID = out.UPID
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		res, upid, rerr := e.resolve(rctx, op)
		cancel()
		if rerr == nil && out.UPID == "" && upid != "" {
			if terr := e.Journal.Task(op.ID, upid); terr != nil {
				return out, fmt.Errorf("engine: journaling the task of %s: %w", a, terr)
			}
		}
		if rerr != nil {
			log.Error("op outcome unknown; left in flight, resolved before guest is mutated again", "err", err, "resolve_err", rerr)
			return out, fmt.Errorf("engine: outcome of %s unknown (%v); resolved at the next tick before the guest is changed again", a, err)
		}
		if eerr := e.Journal.End(op.ID, res); eerr != nil {
			return out, fmt.Errorf("engine: journal end: %w", eerr)
		}
		e.recordSpent(p, res)
		if !res.OK {
			return out, fmt.Errorf("engine: %s: %s", a, res.Resolution)
		}
		return out, nil
	}

	res := journal.Result{OK: err == nil, ExitStatus: out.ExitStatus}
	if err != nil {
		res.Error = err.Error()
		// PVE's answer proves nothing ran: the intent may run again.
		res.Retry = pve.IsRetryable(err)
		if a.Op == action.Create && out.UPID != "" {
			res.RemainsDigest = e.remains(ctx, a)
		}
	}
	if eerr := e.Journal.End(op.ID, res); eerr != nil {
		return out, fmt.Errorf("engine: journal end for %s: %w", a, eerr)
	}
	crashpoint.Hit(crashpoint.AfterEnd)
	e.recordSpent(p, res)
	if err != nil {
		log.Warn("op failed", "err", err, "retry", res.Retry)
		if res.Retry {
			return out, fmt.Errorf("%w (PVE did not run it; retried with backoff)", err)
		}
		return out, err
	}
	log.Info("op end", "upid", out.UPID, "exitstatus", out.ExitStatus)
	return out, nil
}

// recordSpent adds the nonce of a signed op that ended without Retry to
// the nonce store, the index derived from the journal.
func (e *Engine) recordSpent(p gate.Permit, res journal.Result) {
	if res.Retry || p.Nonce() == "" {
		return
	}
	if err := e.Gate.RecordSpent(p); err != nil {
		e.log().Warn("recording a spent nonce in the nonce store failed; the journal still holds it", "err", err)
	}
}

func (e *Engine) setActive(id string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active == nil {
		e.active = map[string]bool{}
	}
	if on {
		e.active[id] = true
	} else {
		delete(e.active, id)
	}
}

func (e *Engine) isActive(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active[id]
}

// recordDecision journals and logs a gate decision. A decision that holds
// or refuses an action is recorded when it first appears, not again on
// every tick it stays the same, so a long-pending action does not grow the
// journal or the log; allowed decisions are always recorded (each precedes
// an execution).
// recheckDigest re-reads the guest's config right before an action whose
// PVE call cannot carry a digest (destroy, snapshot rollback, delete and
// create) and refuses to run it when the config changed since the action
// was planned or signed: what was authorized was that action on that
// state. (Config writes and resizes pass the digest to PVE instead.)
func (e *Engine) recheckDigest(ctx context.Context, a action.Action) error {
	switch a.Op {
	case action.Destroy, action.SnapshotRollback, action.SnapshotDelete, action.SnapshotCreate:
	default:
		return nil
	}
	if a.Digest == "" {
		return nil
	}
	cfg, err := e.PVE.GuestConfig(ctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return fmt.Errorf("engine: re-reading guest %d before %s: %w (not run)", a.VMID, a.Op, err)
	}
	if cfg.Digest != a.Digest {
		return fmt.Errorf("engine: guest %d changed since %s was authorized (config digest %s, now %s); not run, a new signature is needed",
			a.VMID, a.Op, a.Digest, cfg.Digest)
	}
	return nil
}

// remains reads what a failed create left behind: the config digest of the
// guest if PVE kept one, else "". Read right after the failure, it is what
// later lets the agent clean up its own remains (and nothing else).
func (e *Engine) remains(ctx context.Context, a action.Action) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cfg, err := e.PVE.GuestConfig(rctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return ""
	}
	return cfg.Digest
}

func (e *Engine) recordDecision(d gate.Decision, dryRun bool, file string) {
	if dryRun || e.Journal == nil {
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

// provenance is what the agent's own journal proves about vmid, whose
// config digest is now currentDigest. A failed provision vouches for the
// guest only while the guest is exactly what the failure left behind (the
// same digest the agent read right after it failed) and only for
// ProvisionCleanupWindow after it failed: "moments ago", and never for a
// guest someone created or changed since.
func (e *Engine) provenance(vmid int, currentDigest string) classify.Provenance {
	if e.Journal == nil {
		return classify.Provenance{}
	}
	p := e.Journal.Provenance(vmid)
	window := e.ProvisionCleanupWindow
	if window <= 0 {
		window = DefaultProvisionCleanupWindow
	}
	failed := p.CreateFailed && p.RemainsDigest != "" && p.RemainsDigest == currentDigest &&
		e.now().Sub(p.FailedAt) <= window
	return classify.Provenance{CreatedByAgent: p.CreatedByAgent, CreateFailed: failed}
}

// DefaultProvisionCleanupWindow is how long after its own create failed the
// agent may destroy the remains without a signature.
const DefaultProvisionCleanupWindow = time.Hour

// observe reads both guest lists and the configs (with their pending
// keys) of the named guests: 2 + one request per named guest.
func (e *Engine) observe(ctx context.Context, names map[int]bool) ([]guest.Observed, error) {
	var out []guest.Observed
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		list, err := e.PVE.Guests(ctx, e.Node, k)
		if err != nil {
			return nil, fmt.Errorf("engine: listing %s guests on node %s: %w", k, e.Node, err)
		}
		for _, g := range list {
			out = append(out, guest.Observed{VMID: g.VMID, Kind: k, Name: g.Name, Status: g.Status, Lock: g.Lock, Template: g.Template})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })

	limit := e.ReadConcurrency
	if limit <= 0 {
		limit = 4
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range out {
		if !names[out[i].VMID] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(g *guest.Observed) {
			defer wg.Done()
			defer func() { <-sem }()
			// One GET …/pending, not GET …/config: the same single request
			// per guest gives the config as written (what plans compare
			// against), its digest, and which keys wait for a restart.
			pc, err := e.PVE.ConfigWithPending(ctx, e.Node, g.Kind, g.VMID)
			if err != nil {
				g.ConfigErr = err.Error()
				return
			}
			g.Config, g.Digest, g.Pending, g.Current = pc.Config.Values, pc.Config.Digest, pc.Pending, pc.Current
		}(&out[i])
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// guestReports derives each desired guest's status from final, the plan
// of the state after the tick's actions, the tick's results and the
// actions held for a signature.
func (e *Engine) guestReports(rep Report, final plan.Plan, pending map[int][]gate.Decision) []GuestReport {
	failed := map[int]Result{}
	ran := map[int]bool{}
	for _, r := range rep.Results {
		if r.Err != nil || (r.Skipped != "" && r.Skipped != "dry run" && r.Skipped != "already completed (idempotency key)") {
			failed[r.Action.VMID] = r
		} else if r.Skipped == "" {
			ran[r.Action.VMID] = true
		}
	}
	out := make([]GuestReport, 0, len(final.Guests))
	for _, gs := range final.Guests {
		gr := GuestReport{VMID: gs.VMID, Drift: gs.Drift, Err: gs.Err, Pending: gs.Pending, Changed: ran[gs.VMID]}
		switch {
		case gs.Phase == plan.Error:
			gr.Phase = PhaseError
		case gs.Phase == plan.DriftObserved:
			gr.Phase = PhaseDriftObserved
		case len(pending[gs.VMID]) > 0:
			gr.Phase = PhasePendingSignature
		case failed[gs.VMID].Action.Op != "":
			r := failed[gs.VMID]
			gr.Phase = PhaseError
			if r.Err != nil {
				gr.Err = r.Err.Error()
			} else {
				gr.Err = r.Skipped
			}
			_, gr.NextRetry = e.Backoff.Ready(gs.VMID)
		case gs.Phase == plan.Converging:
			gr.Phase = PhaseConverging
		case gs.Phase == plan.PendingRestart:
			gr.Phase = PhasePendingRestart
		default:
			gr.Phase = PhaseInSync
		}
		out = append(out, gr)
	}
	return out
}

func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("engine: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
