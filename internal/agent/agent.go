// Package agent is steward's host daemon as a library: it owns the state
// directory (an exclusive lock, the journal, the nonce store and the
// pending-signature outbox), resolves every interrupted op before it
// mutates anything, and then runs the engine's reconcile tick on an
// interval until its context ends.
//
// Inputs come through two seams the agent owns: a DesiredSource (the
// desired file, or the hub) and a JobSource (the signed-jobs directory,
// next to the hub's jobs). With a Hub (hub.go) the agent also reports
// every tick, honours the hub's poll interval and block, long-polls its
// desired state in a goroutine Run owns, and ships its journal as
// hash-chained receipts (receipts.go). Enrollment (enroll.go) leaves what
// the hub link needs in the state directory. A local freeze file
// (freeze.go) stops every mutation whatever the hub says.
//
// Run is the daemon; Once runs one tick and returns its report (steward
// agent --once); Plan observes and plans without a state directory and
// changes nothing (--dry-run). The command line only turns flags into a
// Config and prints what these return.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// PVE is what the agent needs of the PVE API client (pve.Client): the
// engine's reads and the executor's mutations. Methods block until PVE
// answers or ctx ends and are safe for concurrent use.
type PVE interface {
	engine.Reader
	executor.PVE
}

// Defaults for Config fields left zero.
const (
	DefaultInterval    = 30 * time.Second
	DefaultConcurrency = 3
)

// DefaultBackoff is the per-guest retry policy after a failed action.
var DefaultBackoff = backoff.Policy{Initial: 5 * time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}

// Config is everything an Agent is built from. Node, PVE and (for Run and
// Once) StateDir are required; every other zero field takes its default.
type Config struct {
	Node string // the PVE node name
	Host string // the host id desired state names; default Node
	// StateDir holds the lock, journal, nonce store and pending outbox;
	// created (0700) when missing.
	StateDir string
	PVE      PVE
	// TaskUser is the PVE user (USER@REALM!TOKENID) the agent acts as, so
	// recovery adopts only its own tasks (engine.Engine.TaskUser).
	TaskUser string

	Desired DesiredSource // nil: nothing is desired, nothing changes
	Jobs    JobSource     // nil: no signed jobs

	// Hub, when set, is the hub the agent is enrolled with: it is the
	// desired-state source (Desired must then be nil), its signed jobs
	// are offered next to Jobs', every tick is reported to it, and its
	// long poll runs in a goroutine Run owns, waking the loop when the
	// desired generation moves. Its poll interval then replaces
	// Interval (within MinHubInterval..MaxHubInterval).
	Hub *Hub

	// Signers are the operators who may sign destructive ops; nil means
	// none, and destructive ops never run. Policy is the signing policy
	// (zero: signedop.DefaultPolicy).
	Signers *allowedsigners.Set
	Policy  signedop.Policy

	Interval        time.Duration // between ticks; default DefaultInterval
	Concurrency     int           // mutations in flight toward PVE; default DefaultConcurrency
	ShutdownTimeout time.Duration // graceful shutdown before a stop; default plan.DefaultShutdownTimeout
	NotRunGrace     time.Duration // see engine.Engine.NotRunGrace
	TaskWait        pve.WaitOptions
	Timeouts        executor.Timeouts
	Backoff         backoff.Policy // zero: DefaultBackoff
	// Headroom is the storage headroom threshold by storage id
	// (engine.Engine.Headroom); nil: classify.DefaultHeadroom everywhere.
	// It is the agent's own setting: desired state cannot raise it.
	Headroom map[string]float64

	// Logger receives the daemon's log; nil discards it.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. The tick interval is measured
	// with the runtime's timers (so testing/synctest controls both).
	Now func() time.Time
	// OnTick, when set, is called by Run after every tick with its report
	// or error (the report is the zero Report on error), from Run's
	// goroutine.
	OnTick func(engine.Report, error)
	// JournalSync, when set, is called after every fsync of the journal
	// with its duration (journal.Options.OnSync), for metrics.
	JournalSync func(time.Duration)
}

// Agent is one host's daemon. Build it with New; Run, Once and Plan may
// be called one at a time (the state directory lock refuses a second
// agent on the same directory, in this process or another).
type Agent struct {
	cfg    Config
	log    *slog.Logger
	gate   *gate.Gate
	eng    *engine.Engine
	outbox outbox

	// Touched only by the goroutine running Run or Once.
	receipts    *receipts // the open state's receipt log (with a hub)
	holding     bool      // the last tick was held (frozen or blocked)
	jobsWaiting bool      // the hub said jobs wait that the last tick did not get
	// heeded is set once a report was put to the hub since Run or Once
	// began (answered or not): until then a tick changes nothing, since
	// the hub may have blocked the host while the agent was down.
	heeded bool
}

// ErrConfig is wrapped by New's errors: the Config is unusable as given.
var ErrConfig = errors.New("agent: bad config")

// New checks cfg and builds the agent's parts. It does no I/O: the state
// directory is opened by Run and Once.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Node == "":
		return nil, fmt.Errorf("%w: Node (the PVE node name) is required", ErrConfig)
	case cfg.PVE == nil:
		return nil, fmt.Errorf("%w: PVE (the API client) is required", ErrConfig)
	case cfg.Interval < 0:
		return nil, fmt.Errorf("%w: Interval must be positive, got %s", ErrConfig, cfg.Interval)
	case cfg.Hub != nil && cfg.Desired != nil:
		return nil, fmt.Errorf("%w: desired state comes from the hub or from a file, not both", ErrConfig)
	case cfg.Hub != nil && cfg.Hub.host != cfg.Host && cfg.Host != "":
		return nil, fmt.Errorf("%w: the hub enrolled this agent as host %q, not %q", ErrConfig, cfg.Hub.host, cfg.Host)
	}
	if cfg.Host == "" && cfg.Hub != nil {
		cfg.Host = cfg.Hub.host
	}
	if cfg.Host == "" {
		cfg.Host = cfg.Node
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.Desired == nil {
		cfg.Desired = NoDesired{}
	}
	if cfg.Jobs == nil {
		cfg.Jobs = NoJobs{}
	}
	if cfg.Hub != nil {
		if cfg.Now != nil {
			cfg.Hub.now = cfg.Now
		}
		cfg.Desired = cfg.Hub
		cfg.Jobs = &bothJobs{local: cfg.Jobs, hub: cfg.Hub}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	g := &gate.Gate{Host: cfg.Host, Logger: log, Now: cfg.Now}
	eng := &engine.Engine{
		Host: cfg.Host, Node: cfg.Node, PVE: cfg.PVE, Gate: g, Logger: log, TaskUser: cfg.TaskUser,
		Exec:        &executor.Executor{Client: cfg.PVE, Node: cfg.Node, Logger: log, Timeouts: cfg.Timeouts, Wait: cfg.TaskWait},
		Backoff:     backoff.NewTracker(cfg.Backoff, now, nil),
		Plan:        plan.Options{ShutdownTimeout: cfg.ShutdownTimeout},
		NotRunGrace: cfg.NotRunGrace,
		Headroom:    cfg.Headroom,
		Now:         cfg.Now,
	}
	if cfg.Hub != nil {
		// Reported to the hub only: `steward import` adopts guests from it.
		eng.UnmanagedEvery = engine.DefaultUnmanagedEvery
	}
	a := &Agent{cfg: cfg, log: log, gate: g, eng: eng}
	if cfg.StateDir != "" {
		a.outbox = outbox{dir: filepath.Join(cfg.StateDir, "pending"), log: log}
	}
	return a, nil
}

// PendingDir is the directory holding the payloads waiting for
// signatures, one file each (see PendingFile).
func (a *Agent) PendingDir() string { return a.outbox.dir }

// Plan observes the host, plans toward desired state and gates the plan
// and the signed jobs offered, executing and journaling nothing. It needs
// no state directory.
func (a *Agent) Plan(ctx context.Context) (engine.Report, error) {
	if h := a.cfg.Hub; h != nil && a.cfg.StateDir != "" {
		if err := h.load(a.cfg.StateDir, false); err != nil {
			return engine.Report{}, err
		}
		a.fetchOnce(ctx)
	}
	want, jobs, err := a.inputs(ctx)
	if err != nil {
		return engine.Report{}, err
	}
	return a.eng.PlanOnly(ctx, want, jobs)
}

// Once opens the state directory, resolves interrupted ops (once: a
// failure is returned, not retried), runs one tick, updates the pending
// outbox and settles the jobs. The report is returned with the tick's
// error; when only settling a finished job failed, the error is a
// *SettleError and the report is whole.
func (a *Agent) Once(ctx context.Context) (engine.Report, error) {
	st, err := a.open(ctx)
	if err != nil {
		return engine.Report{}, err
	}
	defer st.close(ctx)
	a.heeded = false
	if err := a.eng.Recover(ctx); err != nil {
		return engine.Report{}, err
	}
	a.outbox.load(a.gate)
	a.fetchOnce(ctx)
	a.heed(ctx)
	rep, err := a.tick(ctx)
	if err != nil {
		return rep, err
	}
	a.report(ctx, rep)
	if err := a.cfg.Jobs.Settle(ctx, rep.Jobs); err != nil {
		return rep, &SettleError{Err: err}
	}
	return rep, nil
}

// fetchOnce asks the hub for its desired document without waiting, for
// a single tick (Once, Plan); a hub that cannot be reached leaves the
// document held.
func (a *Agent) fetchOnce(ctx context.Context) {
	h := a.cfg.Hub
	if h == nil {
		return
	}
	if _, err := h.fetch(ctx, 0); err != nil && ctx.Err() == nil {
		a.log.Warn("fetching desired state from the hub failed; using the last document held", "err", err, "generation", h.Generation())
	}
}

// SettleError is Once's error when the tick ran but a finished signed job
// could not be settled (moved out of the inbox, reported to the hub).
type SettleError struct{ Err error }

func (e *SettleError) Error() string {
	return "agent: settling a finished signed job: " + e.Err.Error()
}

func (e *SettleError) Unwrap() error { return e.Err }

// Run is the daemon: it opens the state directory, resolves interrupted
// ops before any mutation (retrying every Interval until that succeeds:
// nothing is changed meanwhile), with a hub puts a first report to it
// (heed), then ticks every Interval until ctx
// ends. It returns nil when ctx ends after recovery, ctx's error when it
// ends during recovery, and an error when the state directory cannot be
// opened. A failed tick is logged and the next one runs on schedule. On
// return the queue is drained (up to a minute), and the journal, nonce
// store and lock are released.
func (a *Agent) Run(ctx context.Context) error {
	st, err := a.open(ctx)
	if err != nil {
		return err
	}
	defer st.close(ctx)
	a.heeded = false
	if err := a.recover(ctx); err != nil {
		return err
	}
	a.outbox.load(a.gate)
	var wake <-chan struct{}
	if h := a.cfg.Hub; h != nil {
		pctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			h.poll(pctx)
		}()
		defer func() { stop(); <-done }()
		wake = h.wake()
	}
	interval := a.cfg.Interval
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		if !a.heeded {
			a.heed(ctx)
		}
		rep, err := a.tick(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil // shutting down: an interrupted tick is not a failure
		case err != nil:
			a.log.Error("tick failed", "err", err)
		default:
			// A job that could not be settled is logged by its source
			// and settled by a later tick.
			if ctl, ok := a.report(ctx, rep); ok {
				interval = a.cfg.Hub.pollInterval(ctl.PollInterval)
			}
			_ = a.cfg.Jobs.Settle(ctx, rep.Jobs)
			logReport(a.log, rep)
		}
		if a.cfg.OnTick != nil {
			a.cfg.OnTick(rep, err)
		}
		next := interval
		if a.jobsWaiting {
			next = 0 // the hub holds jobs this tick did not see
			a.jobsWaiting = false
		}
		timer.Reset(next)
	}
}

// report sends rep to the hub (when there is one) and notes whether the
// hub holds jobs the tick did not see.
func (a *Agent) report(ctx context.Context, rep engine.Report) (wire.Control, bool) {
	h := a.cfg.Hub
	if h == nil {
		return wire.Control{}, false
	}
	frozen, _ := Frozen(a.cfg.StateDir)
	ctl, ok := h.report(ctx, rep, frozen)
	a.heeded = a.heeded || ctx.Err() == nil
	a.jobsWaiting = ok && ctl.JobsWaiting && h.lastHubJobs == 0 && h.jobsFetchErr == ""
	if ok && a.receipts != nil {
		cctx, cancel := context.WithTimeout(ctx, h.timeout)
		err := a.receipts.ship(cctx, h.client, ctl.HubVersion)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("shipping journal receipts to the hub failed; the next tick sends them again", "err", err)
		}
	}
	return ctl, ok
}

// heed puts a report to the hub before the first tick may change
// anything, so that a block set while the agent was down holds from the
// first tick: the report says what the host looks like (observed, planned
// and gated, nothing executed) and the hub's answer is applied. A hub
// that does not answer leaves the state last heard from it
// (HubStateFile) in force: blocked if it was, otherwise converging to the
// document held. When the host cannot be observed, nothing is reported
// and the next tick (held meanwhile) tries again.
func (a *Agent) heed(ctx context.Context) {
	h := a.cfg.Hub
	if h == nil || a.heeded {
		return
	}
	rep, err := a.held(ctx, "waiting for the hub's answer to the first report (is the host blocked?)")
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("observing the host for the first report failed; changing nothing until the hub has been asked", "err", err)
		}
		return
	}
	if _, ok := a.report(ctx, rep); !ok && ctx.Err() == nil {
		blocked, reason := h.Blocked()
		a.log.Warn("the hub did not answer the first report; going by what it said last", "blocked", blocked, "blocked_reason", reason, "generation", h.Generation())
	}
}

// held observes, plans and gates without changing anything, each action
// and waiting job skipped for why.
func (a *Agent) held(ctx context.Context, why string) (engine.Report, error) {
	want, jobs, err := a.inputs(ctx)
	if err != nil {
		return engine.Report{}, err
	}
	rep, err := a.eng.PlanOnly(ctx, want, jobs)
	markHeld(&rep, why)
	return rep, err
}

// markHeld gives every action a plan-only pass skipped, and every job
// left waiting, the reason why.
func markHeld(rep *engine.Report, why string) {
	for i := range rep.Results {
		if rep.Results[i].Skip == engine.SkipPlanOnly {
			rep.Results[i].Skipped = why
		}
	}
	for i := range rep.Jobs {
		if rep.Jobs[i].Status == engine.JobWaiting {
			rep.Jobs[i].Reason = why
		}
	}
}

// hold returns why the agent must change nothing now ("" when it may):
// the local freeze file, the hub's block, or (with a hub) no report put
// to it yet.
func (a *Agent) hold() string {
	if frozen, reason := Frozen(a.cfg.StateDir); frozen {
		return "frozen (" + FreezeFile + " in the state directory): " + reason
	}
	if h := a.cfg.Hub; h != nil {
		if blocked, reason := h.Blocked(); blocked {
			if reason == "" {
				reason = "no reason given"
			}
			return "blocked by the hub: " + reason
		}
		if !a.heeded {
			return "the hub has not been asked yet whether the host is blocked"
		}
	}
	return ""
}

// recover resolves interrupted ops, retrying every Interval.
func (a *Agent) recover(ctx context.Context) error {
	err := a.eng.Recover(ctx)
	for err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		a.log.Error("recovery failed; nothing will be changed until it succeeds", "err", err, "retry_in", a.cfg.Interval)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(a.cfg.Interval):
		}
		err = a.eng.Recover(ctx)
	}
	return nil
}

// inputs reads desired state for this host and the signed jobs offered.
func (a *Agent) inputs(ctx context.Context) (want *desired.Host, jobs []signedop.Job, err error) {
	doc, err := a.cfg.Desired.Desired(ctx)
	if err != nil {
		return nil, nil, err
	}
	jobs, err = a.cfg.Jobs.Jobs(ctx)
	if err != nil {
		return nil, nil, err
	}
	return doc.ForHost(a.cfg.Host), jobs, nil
}

// tick runs one reconcile tick and, when it succeeded, updates the
// pending outbox (the jobs are settled by the caller). A desired document or job list that cannot be read
// fails the tick.
func (a *Agent) tick(ctx context.Context) (engine.Report, error) {
	want, jobs, err := a.inputs(ctx)
	if err != nil {
		return engine.Report{}, err
	}
	var rep engine.Report
	if hold := a.hold(); hold != "" {
		// Observe, plan and report; change nothing.
		rep, err = a.eng.PlanOnly(ctx, want, jobs)
		markHeld(&rep, hold)
		if err == nil && !a.holding {
			a.log.Warn("changing nothing", "why", hold)
		}
		a.holding = true
	} else {
		if a.holding {
			a.log.Info("no longer held: changes resume")
		}
		a.holding = false
		rep, err = a.eng.Tick(ctx, want, jobs)
	}
	if err == nil {
		if perr := a.outbox.save(rep); perr != nil {
			a.log.Error("writing pending payloads", "dir", a.outbox.dir, "err", perr)
		}
	}
	return rep, err
}

// state is what open acquired; close releases it.
type state struct {
	unlock   func()
	receipts *receipts // nil without a hub
	journal  *journal.Journal
	nonces   *nonce.Store
	queue    *guestq.Queue
}

// open takes the state directory: creates it, locks it, opens the journal
// and (with signers) the nonce store, starts the queue, and wires them
// into the engine and gate.
func (a *Agent) open(ctx context.Context) (*state, error) {
	if a.cfg.StateDir == "" {
		return nil, fmt.Errorf("%w: StateDir is required to run", ErrConfig)
	}
	unlock, err := LockDir(a.cfg.StateDir)
	if err != nil {
		return nil, err
	}
	st := &state{unlock: unlock}
	jopts := journal.Options{Logger: a.log, OnSync: a.cfg.JournalSync}
	if a.cfg.Hub != nil {
		// Receipts are audit, not safety: a receipt log that cannot even
		// be set aside leaves the agent converging without them (the next
		// start makes the missing ones from the journal, or reports the
		// break).
		if st.receipts, err = openReceipts(a.cfg.StateDir, a.cfg.Host, a.log, a.cfg.Now); err != nil {
			a.log.Error("journal receipts are off until the agent restarts", "err", err)
			st.receipts = nil
		} else {
			jopts.OnRecord = st.receipts.record
		}
	}
	a.receipts = st.receipts
	st.journal, err = journal.Open(filepath.Join(a.cfg.StateDir, "journal"), jopts)
	if err != nil {
		st.close(ctx)
		return nil, err
	}
	if st.receipts != nil {
		// Before recovery appends anything: the receipts a crash kept
		// from the log, in order.
		st.receipts.catchUp(st.journal)
	}
	if a.cfg.Hub != nil {
		if err := a.cfg.Hub.load(a.cfg.StateDir, true); err != nil {
			st.close(ctx)
			return nil, err
		}
	}
	a.gate.Verifier = nil
	if a.cfg.Signers != nil {
		st.nonces, err = nonce.Open(filepath.Join(a.cfg.StateDir, "nonces"), nonce.Options{})
		if err != nil {
			st.close(ctx)
			return nil, err
		}
		pol := a.cfg.Policy
		if pol.Require == nil && pol.Roles == nil {
			pol = signedop.DefaultPolicy()
		}
		a.gate.Verifier = &signedop.Verifier{Signers: a.cfg.Signers, Policy: pol, Nonces: st.nonces, Now: a.cfg.Now}
	} else {
		a.log.Warn("no --allowed-signers: destructive ops will never run on this host")
	}
	st.queue = guestq.New(guestq.Options{Concurrency: a.cfg.Concurrency, Logger: a.log})
	a.eng.Journal, a.eng.Queue = st.journal, st.queue
	return st, nil
}

// close drains the queue (up to a minute, even when ctx has ended), then
// closes the nonce store and the journal and releases the lock.
func (st *state) close(ctx context.Context) {
	if st.queue != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		st.queue.Close(cctx)
		cancel()
	}
	if st.nonces != nil {
		st.nonces.Close()
	}
	if st.journal != nil {
		st.journal.Close()
	}
	if st.receipts != nil {
		st.receipts.close()
	}
	st.unlock()
}
