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
	"encoding/hex"
	"log/slog"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/backoff"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/pve"
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
	// ClusterResources lists the cluster's resources of a type ("vm"):
	// every guest on every node, to refuse creating over a vmid in use.
	ClusterResources(ctx context.Context, typ string) ([]pve.Resource, error)
	// VolumeInfo reads one volume (STORAGE:NAME), to check that a
	// cicustom snippet exists before it is written.
	VolumeInfo(ctx context.Context, node, volid string) (pve.Volume, error)
	// StorageStatus reads a storage's size and usage, for the headroom
	// check before an allocation.
	StorageStatus(ctx context.Context, node, storage string) (pve.Storage, error)
	// MigrateCheck reads PVE's preconditions for migrating a guest
	// (GET …/migrate), before a migration desired state asks for.
	MigrateCheck(ctx context.Context, node string, kind guest.Kind, vmid int, target string) (pve.MigrateCheck, error)
	// TaskLog reads a task's log lines, for the reason a failed
	// migration logged.
	TaskLog(ctx context.Context, node string, upid pve.UPID, start, limit int) ([]pve.LogLine, error)
}

// Engine converges the guests of one host. Build it with all fields set
// (Logger and Now may be nil); it is safe to call Tick or PlanOnly from one goroutine
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
	// Headroom is the storage headroom threshold by storage id, a
	// fraction of the storage's size in (0, 1]; the "*" entry applies to
	// storages not listed; without either, classify.DefaultHeadroom. A
	// benign allocation (disk grow, new disk, create, full clone) that
	// would fill its storage past it is held for a signature.
	Headroom map[string]float64
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
	// UnmanagedEvery is how often the config of a guest desired state
	// does not name is read again for the report (wire.Guest.Observed,
	// what `steward import` adopts it with; see unmanaged.go). A guest is
	// read when first seen; 0 never reads unmanaged guests.
	UnmanagedEvery time.Duration
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
	active    map[string]bool        // op ids execute is running now; guarded by mu
	refusals  map[int]string         // why a guest's last action was refused before it ran (create.go); guarded by mu
	unmanaged map[int]unmanagedEntry // last config read of each unmanaged guest (unmanaged.go); guarded by mu
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
	// Unmanaged are the last configs read of the guests desired state
	// does not name (see Engine.UnmanagedEvery), by vmid; for the report
	// only.
	Unmanaged map[int]guest.Config
	// UnmanagedDigests are the PVE config digests of those reads.
	UnmanagedDigests map[int]string
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
	// Snapshots is the guest's snapshot schedule state; nil without a
	// schedule.
	Snapshots *SnapshotState
	// Provenance is the journal's word on the guest after the tick
	// (Fresh as the tick judged it); zero when the agent did not create it.
	Provenance classify.Provenance
	// Node is the node a moved guest is on (PhaseMoved).
	Node string
}

// Result is the fate of one action the tick submitted.
type Result struct {
	Action action.Action
	Source Source
	// Job is the id of the signed job (wire.JobID of its payload) the
	// action came from; empty for reconcile actions.
	Job     string
	Class   classify.Class
	Outcome executor.Outcome
	Err     error
	// Skip says why the action was not run (NotSkipped when it was);
	// Skipped says it for people, non-empty exactly when Skip is set.
	Skip    Skip
	Skipped string
}

// Source is where an action came from.
type Source string

// Sources of an action. The journal records them as strings
// (journal.Op.Source).
const (
	SourceReconcile Source = "reconcile" // the plan toward desired state
	SourceSigned    Source = "signed"    // a signed job
)

// Skip is why the tick did not run an action it decided on.
type Skip int

// Skip reasons.
const (
	NotSkipped   Skip = iota // the action ran (or was submitted and failed)
	SkipHeld                 // an earlier op on the guest is unresolved
	SkipBackoff              // the guest backs off after failures
	SkipPlanOnly             // a plan-only pass (PlanOnly) runs nothing
	SkipDone                 // an op with the same idempotency key already completed
)

// Blocks reports whether s leaves the guest in error: it waits for an
// unresolved op or a backoff, rather than having nothing left to do.
func (s Skip) Blocks() bool { return s == SkipHeld || s == SkipBackoff }

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
	// PhaseMoved: the guest is not on this node but on another node of the
	// cluster (GuestReport.Node): migrated, or moved by HA. Nothing is
	// done for it here; it is never created, never reported missing.
	PhaseMoved = "moved"
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

func randomID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("engine: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}
