// Package executor turns one action.Action into PVE API calls through the
// pve client: a call that starts a task is waited on until the task stops
// and its exit status is asserted; an empty result is synchronous success.
//
// The executor never retries a mutation itself. Whether a failure may be
// retried is carried by the error (pve.IsRetryable); the engine's backoff
// decides when. A mutation whose outcome is unknown is reported as such and
// left to crash recovery, never re-sent blindly.
package executor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// PVE is the part of *pve.Client the executor uses. Methods block until
// PVE answers or ctx ends and are safe for concurrent use.
type PVE interface {
	Start(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.Result, error)
	Shutdown(ctx context.Context, node string, kind guest.Kind, vmid int, o pve.ShutdownOptions) (pve.Result, error)
	Stop(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.Result, error)
	Reboot(ctx context.Context, node string, kind guest.Kind, vmid int, timeout time.Duration) (pve.Result, error)
	SetConfig(ctx context.Context, node string, kind guest.Kind, vmid int, ch pve.ConfigChange) (pve.Result, error)
	Resize(ctx context.Context, node string, kind guest.Kind, vmid int, disk, size, digest string) (pve.Result, error)
	Create(ctx context.Context, node string, kind guest.Kind, vmid int, params map[string]string) (pve.Result, error)
	Clone(ctx context.Context, node string, kind guest.Kind, source, newid int, params map[string]string) (pve.Result, error)
	Destroy(ctx context.Context, node string, kind guest.Kind, vmid int, o pve.DestroyOptions) (pve.Result, error)
	SnapshotTake(ctx context.Context, node string, kind guest.Kind, vmid int, o pve.SnapshotOptions) (pve.Result, error)
	SnapshotRollback(ctx context.Context, node string, kind guest.Kind, vmid int, name string) (pve.Result, error)
	SnapshotDelete(ctx context.Context, node string, kind guest.Kind, vmid int, name string) (pve.Result, error)
	Migrate(ctx context.Context, node string, kind guest.Kind, vmid int, params map[string]string) (pve.Result, error)
	WaitTask(ctx context.Context, upid pve.UPID, o pve.WaitOptions) (pve.TaskResult, error)
}

// Timeouts bound each kind of action, from the PVE call to the end of its
// task. Zero fields take the defaults.
type Timeouts struct {
	Config   time.Duration // default 2m
	Power    time.Duration // start/stop; default 5m
	Shutdown time.Duration // extra time beyond the action's own shutdown timeout; default 2m
	Disk     time.Duration // resize, create, clone, destroy, snapshots; default 30m
	Migrate  time.Duration // a migration, disks and memory copied; default 2h
}

func (t Timeouts) withDefaults() Timeouts {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.Config, 2*time.Minute)
	def(&t.Power, 5*time.Minute)
	def(&t.Shutdown, 2*time.Minute)
	def(&t.Disk, 30*time.Minute)
	def(&t.Migrate, 2*time.Hour)
	return t
}

// Executor runs actions against one PVE node. The zero value is not usable;
// set Client and Node. Safe for concurrent use (the queue serializes per
// guest; the executor itself holds no per-guest state).
type Executor struct {
	Client   PVE
	Node     string
	Timeouts Timeouts
	Wait     pve.WaitOptions
	Logger   *slog.Logger // nil: no logging
}

// Outcome is what running an action produced.
type Outcome struct {
	UPID       string // empty for synchronous calls
	ExitStatus string // task exit status ("OK", "WARNINGS: 2"); empty for synchronous calls
	Warnings   int
}

// ErrUnsupported is returned for an op the executor does not implement.
var ErrUnsupported = errors.New("executor: unsupported op")

// Run performs a. onTask, when non-nil, is called with the task's UPID as
// soon as PVE returned it and before waiting; if it fails (the journal
// could not record the task), Run returns that error without waiting, so
// the op is left for crash recovery. Run blocks until the task stopped,
// the per-action timeout passed or ctx ended.
func (e *Executor) Run(ctx context.Context, a action.Action, onTask func(pve.UPID) error) (Outcome, error) {
	t := e.Timeouts.withDefaults()
	timeout := t.Disk
	switch a.Op {
	case action.SetConfig:
		timeout = t.Config
	case action.Start, action.Stop:
		timeout = t.Power
	case action.Shutdown, action.Reboot:
		timeout = t.Power + t.Shutdown + shutdownTimeout(a)
	case action.Migrate:
		timeout = t.Migrate
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	res, err := e.call(ctx, a)
	if err != nil {
		return Outcome{}, err
	}
	upid, async := res.Task()
	if !async {
		return Outcome{}, nil
	}
	out := Outcome{UPID: upid.String()}
	if onTask != nil {
		if err := onTask(upid); err != nil {
			return out, fmt.Errorf("executor: recording task %s: %w", upid, err)
		}
	}
	tr, err := e.Client.WaitTask(ctx, upid, e.Wait)
	out.ExitStatus, out.Warnings = tr.ExitStatus, tr.Warnings
	var te *pve.TaskError
	if errors.As(err, &te) {
		out.ExitStatus = te.ExitStatus
	}
	if err != nil {
		return out, err
	}
	if tr.Warnings > 0 && e.Logger != nil {
		e.Logger.Warn("task finished with warnings", "vmid", a.VMID, "op", a.Op, "upid", out.UPID, "exitstatus", tr.ExitStatus)
	}
	return out, nil
}

// shutdownTimeout is the graceful-shutdown timeout the action asks PVE for.
func shutdownTimeout(a action.Action) time.Duration {
	if s, ok := a.Params["timeout"]; ok {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 3 * time.Minute
}

func (e *Executor) call(ctx context.Context, a action.Action) (pve.Result, error) {
	c, node, k, id := e.Client, e.Node, a.Kind, a.VMID
	p := a.Params
	switch a.Op {
	case action.Start:
		return c.Start(ctx, node, k, id)
	case action.Stop:
		return c.Stop(ctx, node, k, id)
	case action.Shutdown:
		// A graceful shutdown that turns into a stop when the guest does not
		// power off within the timeout: PVE does both in one task
		// (forceStop), so one journaled op covers the whole transition.
		return c.Shutdown(ctx, node, k, id, pve.ShutdownOptions{Timeout: shutdownTimeout(a), ForceStop: true})
	case action.Reboot:
		// PVE's reboot: a graceful shutdown within the timeout, then a
		// start, in one task. A guest that does not power off in time is
		// not forced: the task fails and the guest keeps running.
		return c.Reboot(ctx, node, k, id, shutdownTimeout(a))
	case action.SetConfig:
		ch := pve.ConfigChange{Set: map[string]string{}, Delete: a.DeleteKeys(), Digest: a.Digest}
		for key, v := range p {
			if key != "delete" {
				ch.Set[key] = v
			}
		}
		return c.SetConfig(ctx, node, k, id, ch)
	case action.Resize:
		return c.Resize(ctx, node, k, id, p["disk"], p["size"], a.Digest)
	case action.Create:
		return c.Create(ctx, node, k, id, p)
	case action.Clone:
		// The action is about the new guest (VMID); PVE's call is made on
		// the source, in whose name its qmclone or vzclone task runs. A
		// container clone's unprivileged parameter is the agent's
		// expectation of what the clone inherits, checked before the
		// action runs, not one of PVE's clone parameters.
		src, err := strconv.Atoi(p["source"])
		if err != nil {
			return pve.Result{}, fmt.Errorf("executor: clone %d: source %q is not a vmid", id, p["source"])
		}
		rest := make(map[string]string, len(p))
		for key, v := range p {
			if key != "source" && !(k == guest.LXC && key == classify.UnprivilegedParam) {
				rest[key] = v
			}
		}
		return c.Clone(ctx, node, k, src, id, rest)
	case action.Destroy:
		if p[classify.ProtectedParam] == "1" {
			// PVE refuses to destroy a protected guest and has no
			// override: the signed destroy clears the flag first, in a
			// write bound to the digest it was signed for. If the
			// destroy then does not happen, the engine puts the flag
			// back (Engine.restoreProtection).
			ch := pve.ConfigChange{Delete: []string{"protection"}, Digest: a.Digest}
			if _, err := c.SetConfig(ctx, node, k, id, ch); err != nil {
				return pve.Result{}, fmt.Errorf("executor: clearing the protection flag of guest %d before destroying it: %w", id, err)
			}
		}
		return c.Destroy(ctx, node, k, id, pve.DestroyOptions{Purge: p["purge"] == "1", DestroyUnreferencedDisks: p["destroy-unreferenced-disks"] == "1"})
	case action.SnapshotCreate:
		return c.SnapshotTake(ctx, node, k, id, pve.SnapshotOptions{Name: p["snapname"], Description: p["description"], VMState: p["vmstate"] == "1"})
	case action.SnapshotRollback:
		return c.SnapshotRollback(ctx, node, k, id, p["snapname"])
	case action.SnapshotDelete:
		return c.SnapshotDelete(ctx, node, k, id, p["snapname"])
	case action.Migrate:
		// Made on the node the guest is on, the executor's: PVE migrates
		// from the source. Its task (qmigrate, vzmigrate, or hamigrate
		// for a guest under HA) runs there, so its UPID names this node.
		return c.Migrate(ctx, node, k, id, p)
	}
	return pve.Result{}, fmt.Errorf("%w %q", ErrUnsupported, a.Op)
}
