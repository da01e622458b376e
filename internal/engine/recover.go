package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/propstr"
	"github.com/steward-pve/steward/internal/pve"
)

// Recover resolves every op the journal holds as begun but not ended, and
// journals each resolution, before the engine may mutate anything. An op
// whose UPID was recorded is resolved by its task's final status (waiting
// for it if it still runs). Otherwise PVE's task list is searched for the
// one task that can only be this op's (see findTask); failing that, the
// guest's actual state is compared with the op's intent. Recover never
// re-executes an op. One that PVE proves did not run ends with Retry: a
// reconcile action is planned again if still desired, a signed job stays
// runnable while its signature is valid. One whose fate cannot be known
// ends failed and is reported, never run again. A signed op begun less
// than NotRunGrace ago with no trace in PVE stays in flight; the ticks
// resolve it before its guest is mutated again.
//
// An op that cannot be resolved (PVE unreachable) makes Recover fail; the
// caller retries later and must not tick until Recover succeeded. Recover
// also adds every nonce the journal holds as spent to the nonce store (its
// derived index), so a store that was lost or moved aside is rebuilt.
func (e *Engine) Recover(ctx context.Context) error {
	crashpoint.Hit(crashpoint.BeforeRecover)
	for _, op := range e.Journal.InFlight() {
		err := e.settle(ctx, op)
		if errors.Is(err, errTooEarly) {
			e.log().Info("in-flight op left for the next tick", "op", op.ID, "vmid", op.Action.VMID, "action", op.Action.Op, "why", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("engine: resolving in-flight op %s (%s): %w", op.ID, op.Action, err)
		}
	}
	if e.Gate != nil {
		for n, exp := range e.Journal.SpentNonces() {
			if err := e.Gate.RecordNonce(n, exp); err != nil {
				return fmt.Errorf("engine: rebuilding the nonce store from the journal: %w", err)
			}
		}
	}
	e.recovered = true
	return nil
}

// errTooEarly is settle's answer for an op with no trace in PVE that began
// too recently for that to prove PVE never received it.
var errTooEarly = errors.New("no task and no effect yet, but begun too recently to prove PVE never received the call")

// settle resolves the in-flight op and journals its resolution.
func (e *Engine) settle(ctx context.Context, op journal.Op) error {
	res, upid, err := e.resolve(ctx, op)
	if err != nil {
		return err
	}
	crashpoint.Hit(crashpoint.AfterResolve)
	if !res.OK {
		if err := e.restoreProtection(ctx, op.Action); err != nil {
			return fmt.Errorf("restoring the protection flag op %s cleared before a destroy that did not happen: %w", op.ID, err)
		}
	}
	if op.UPID == "" && upid != "" {
		// Found in PVE's task list: journal it, so the record says
		// PVE accepted the op (create provenance depends on it).
		if err := e.Journal.Task(op.ID, upid); err != nil {
			return fmt.Errorf("journaling the task of op %s: %w", op.ID, err)
		}
	}
	if err := e.Journal.End(op.ID, res); err != nil {
		return fmt.Errorf("journaling resolution of op %s: %w", op.ID, err)
	}
	if !res.Retry && op.Nonce != "" && e.Gate != nil {
		if err := e.Gate.RecordNonce(op.Nonce, op.NonceExpires); err != nil {
			e.log().Warn("recording a spent nonce in the nonce store failed; the journal still holds it", "err", err)
		}
	}
	lvl := slog.LevelInfo
	if !res.OK && !res.Retry {
		lvl = slog.LevelWarn
	}
	e.log().Log(ctx, lvl, "recovered in-flight op", "op", op.ID, "vmid", op.Action.VMID, "action", op.Action.Op,
		"source", op.Source, "ok", res.OK, "retry", res.Retry, "resolution", res.Resolution)
	return nil
}

// resolveLeftovers settles the ops still in flight that no execute of this
// process is running (their outcome was unknown when they returned, or
// Recover left them as too recent). It returns the guests that must not
// be mutated this tick, with why.
func (e *Engine) resolveLeftovers(ctx context.Context) map[int]string {
	blocked := map[int]string{}
	for _, op := range e.Journal.InFlight() {
		if e.isActive(op.ID) {
			blocked[op.Action.VMID] = fmt.Sprintf("op %s (%s) still running", op.ID, op.Action.Op)
			continue
		}
		if err := e.settle(ctx, op); err != nil {
			blocked[op.Action.VMID] = fmt.Sprintf("outcome of op %s (%s) not yet known (%v); guest not changed until it is", op.ID, op.Action.Op, err)
			if !errors.Is(err, errTooEarly) {
				e.log().Warn("in-flight op still unresolved", "op", op.ID, "vmid", op.Action.VMID, "action", op.Action.Op, "err", err)
			}
		}
	}
	return blocked
}

// DefaultNotRunGrace is Engine.NotRunGrace when it is zero.
const DefaultNotRunGrace = 30 * time.Second

func (e *Engine) notRunGrace() time.Duration {
	if e.NotRunGrace > 0 {
		return e.NotRunGrace
	}
	return DefaultNotRunGrace
}

// taskTypes are the PVE task types each op can start (HA-managed guests
// run ha* tasks instead). Both kinds resize in a task of type "resize"
// (qemu-server and pve-container fork_worker('resize', ...); QEMU's resize
// was synchronous before PVE 8.0.5 and started no task). Config writes
// are absent on purpose: the
// executor writes config synchronously (PUT), which starts no task, so a
// qmconfig task found in the list is someone else's and must not be taken
// for ours.
var taskTypes = map[guest.Kind]map[action.Op][]string{
	guest.QEMU: {
		action.Start: {"qmstart", "hastart"}, action.Stop: {"qmstop", "hastop"}, action.Shutdown: {"qmshutdown", "hastop"},
		action.Reboot: {"qmreboot"},
		action.Resize: {"resize"}, action.Create: {"qmcreate", "qmrestore"}, action.Clone: {"qmclone"},
		action.Destroy: {"qmdestroy"}, action.SnapshotCreate: {"qmsnapshot"}, action.SnapshotRollback: {"qmrollback"},
		action.SnapshotDelete: {"qmdelsnapshot"}, action.Migrate: {"qmigrate", "hamigrate"},
	},
	guest.LXC: {
		action.Start: {"vzstart", "hastart"}, action.Stop: {"vzstop", "hastop"}, action.Shutdown: {"vzshutdown", "hastop"},
		action.Reboot: {"vzreboot"},
		action.Resize: {"resize"}, action.Create: {"vzcreate", "vzrestore"}, action.Clone: {"vzclone"},
		action.Destroy: {"vzdestroy"}, action.SnapshotCreate: {"vzsnapshot"}, action.SnapshotRollback: {"vzrollback"},
		action.SnapshotDelete: {"vzdelsnapshot"}, action.Migrate: {"vzmigrate", "hamigrate"},
	},
}

// resolve decides how an op that began and did not end turned out. upid is
// the op's task, whether journaled or found in PVE's task list ("" when
// PVE started none or it is ambiguous which).
func (e *Engine) resolve(ctx context.Context, op journal.Op) (res journal.Result, upid string, err error) {
	a := op.Action
	ambiguous := 0
	if op.UPID == "" {
		found, err := e.findTask(ctx, op)
		if err != nil {
			return journal.Result{}, "", err
		}
		switch len(found) {
		case 0:
		case 1:
			op.UPID = found[0].String()
		default:
			ambiguous = len(found)
		}
	}
	if op.UPID != "" {
		u, err := pve.ParseUPID(op.UPID)
		if err != nil {
			return journal.Result{}, "", fmt.Errorf("journaled UPID: %w", err)
		}
		tr, err := e.PVE.WaitTask(ctx, u, e.waitOptions())
		if err != nil {
			if te, ok := err.(*pve.TaskError); ok {
				return journal.Result{OK: false, ExitStatus: te.ExitStatus, Error: te.Error(), Retry: te.Retryable(),
					Resolution: "recovered: task " + op.UPID + " failed: " + te.ExitStatus}, op.UPID, nil
			}
			return journal.Result{}, "", err
		}
		return journal.Result{OK: true, ExitStatus: tr.ExitStatus, Resolution: "recovered: task " + op.UPID + " finished " + tr.ExitStatus}, op.UPID, nil
	}
	met, what, err := e.intentMet(ctx, a)
	if err != nil {
		return journal.Result{}, "", err
	}
	if met {
		return journal.Result{OK: true, Resolution: "recovered: already applied (" + what + ")"}, "", nil
	}
	if strings.HasPrefix(what, lockedRemains) {
		return journal.Result{OK: false, Error: "fate unknown",
			Resolution: "recovered: fate unknown: no task of this op found and the " + what + " (a task still running, or one that died); not run again, check the guest"}, "", nil
	}
	if ambiguous > 0 {
		return journal.Result{OK: false, Error: "fate unknown",
			Resolution: fmt.Sprintf("recovered: fate unknown: %d tasks could be this op's and none is provably it (%s); not run again, check the guest", ambiguous, what)}, "", nil
	}
	if len(taskTypes[a.Kind][a.Op]) > 0 && e.TaskUser == "" {
		return journal.Result{OK: false, Error: "fate unknown",
			Resolution: "recovered: fate unknown: no task user configured to find this op's task (" + what + "); not run again, check the guest"}, "", nil
	}
	if Source(op.Source) == SourceSigned && e.now().Sub(op.Time) < e.notRunGrace() {
		// Retry would let the signed job run again; a reconcile action
		// is planned again only from what PVE then says.
		return journal.Result{}, "", errTooEarly
	}
	next := "a reconcile action is planned again if still desired"
	if Source(op.Source) == SourceSigned {
		next = "the signed job stays runnable while its signature is valid"
	}
	return journal.Result{OK: false, Error: "not applied", Retry: true,
		Resolution: "recovered: PVE never ran it (" + what + "); " + next}, "", nil
}

// findTask returns the tasks in the node's task list that can be op's:
// started no earlier than the second op began (UPIDs have seconds
// precision), by this agent's own token, of a type op starts, on its
// guest, and not recorded in the journal for another op. Exactly one is
// op's task; none means PVE started none; more is ambiguous. A clone's
// task (qmclone, vzclone) runs in the name of the guest cloned, not the
// new one:
// two clones of one template begun in the same second by ops whose tasks
// the journal does not hold are ambiguous.
func (e *Engine) findTask(ctx context.Context, op journal.Op) ([]pve.UPID, error) {
	types := taskTypes[op.Action.Kind][op.Action.Op]
	if len(types) == 0 || e.TaskUser == "" {
		return nil, nil
	}
	vmid := op.Action.VMID
	if op.Action.Op == action.Clone {
		src, err := strconv.Atoi(op.Action.Params["source"])
		if err != nil {
			return nil, nil // never sent: the executor refuses such a clone
		}
		vmid = src
	}
	since := op.Time.Truncate(time.Second)
	tasks, err := e.PVE.Tasks(ctx, e.Node, pve.TaskQuery{VMID: vmid, Source: "all", Since: since})
	if err != nil {
		return nil, fmt.Errorf("listing tasks of guest %d: %w", vmid, err)
	}
	var found []pve.UPID
	for _, t := range tasks {
		u := t.UPID
		// Only a task this agent's own token started can be this op's:
		// another user's task on the same guest must never be taken for
		// ours (its failed create would otherwise pass for our provenance).
		if u.User != e.TaskUser || u.ID != fmt.Sprint(vmid) || u.Started().Before(since) || !slices.Contains(types, u.Type) {
			continue
		}
		if owner, ok := e.Journal.TaskOwner(u.String()); ok && owner != op.ID {
			continue // another op's task: never two ops share one UPID
		}
		found = append(found, u)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].StartTime < found[j].StartTime })
	return found, nil
}

// intentMet compares the guest as PVE shows it now with what a should have
// done. what says what was compared, for the journal.
func (e *Engine) intentMet(ctx context.Context, a action.Action) (bool, string, error) {
	status, lock, exists, err := e.guestStatus(ctx, a.VMID, a.Kind)
	if err != nil {
		return false, "", err
	}
	switch a.Op {
	case action.Create, action.Clone:
		if exists && (lock == "create" || lock == "clone") {
			// PVE's task still runs, or died and left its remains: this
			// is not the guest the op asked for, and not provably ours.
			return false, lockedRemains + lock, nil
		}
		return exists, fmt.Sprintf("guest exists: %v", exists), nil
	case action.Destroy:
		return !exists, fmt.Sprintf("guest exists: %v", exists), nil
	case action.Migrate:
		return e.migrateMet(ctx, a, lock, exists)
	}
	if !exists {
		return false, "guest does not exist", nil
	}
	switch a.Op {
	case action.Start:
		return status == "running", "status " + status, nil
	case action.Shutdown, action.Stop:
		return status == "stopped", "status " + status, nil
	case action.Reboot:
		// A reboot's intent is that nothing waits for a restart.
		pc, err := e.PVE.ConfigWithPending(ctx, e.Node, a.Kind, a.VMID)
		if err != nil {
			return false, "", err
		}
		if status == "running" && len(pc.Pending) == 0 {
			return true, "running, nothing pending", nil
		}
		return false, fmt.Sprintf("status %s, pending %s", status, strings.Join(pc.Pending, ",")), nil
	case action.SetConfig:
		cfg, err := e.PVE.GuestConfig(ctx, e.Node, a.Kind, a.VMID)
		if err != nil {
			return false, "", err
		}
		var diffs []string
		for k, want := range a.Params {
			if k == "delete" {
				continue
			}
			if got, ok := cfg.Values[k]; !ok || !normalize.Equal(a.Kind, k, want, got) {
				diffs = append(diffs, k)
			}
		}
		for _, k := range a.DeleteKeys() {
			if _, ok := cfg.Values[k]; ok {
				diffs = append(diffs, "delete "+k)
			}
		}
		sort.Strings(diffs)
		if len(diffs) > 0 {
			return false, "differs: " + strings.Join(diffs, ", "), nil
		}
		return true, "config matches", nil
	case action.SnapshotCreate, action.SnapshotDelete:
		snaps, err := e.PVE.Snapshots(ctx, e.Node, a.Kind, a.VMID)
		if err != nil {
			return false, "", err
		}
		has := false
		for _, s := range snaps {
			if s.Name == a.Params["snapname"] {
				has = true
			}
		}
		if a.Op == action.SnapshotCreate {
			return has, fmt.Sprintf("snapshot present: %v", has), nil
		}
		return !has, fmt.Sprintf("snapshot present: %v", has), nil
	case action.Resize:
		return e.resizeMet(ctx, a)
	}
	// Rollback leaves no state that tells whether it ran; with no task
	// found, it did not start.
	return false, "no task found", nil
}

// resizeMet reports whether the disk of resize a already has at least the
// absolute size a asks for, as the guest's config records it (a resize
// rewrites the drive's size=). A relative size ("+10G") cannot be judged
// after the fact: with no task found, it did not start.
func (e *Engine) resizeMet(ctx context.Context, a action.Action) (bool, string, error) {
	disk, size := a.Params["disk"], a.Params["size"]
	if strings.HasPrefix(size, "+") {
		return false, "no task found", nil
	}
	want, err := propstr.ParseSize(size)
	if err != nil {
		return false, "no task found; size " + strconv.Quote(size) + " unreadable", nil
	}
	cfg, err := e.PVE.GuestConfig(ctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return false, "", err
	}
	dk := "file"
	if a.Kind == guest.LXC {
		dk = "volume"
	}
	_, have, ok, err := propstr.Volume(cfg.Values[disk], dk)
	if err != nil || !ok {
		return false, "no task found; " + disk + " has no readable size", nil
	}
	what := fmt.Sprintf("%s is %s, resize to %s", disk, propstr.FormatSize(have), propstr.FormatSize(want))
	return have >= want, what, nil
}

// lockedRemains starts intentMet's answer for a create whose guest exists
// under a create or clone lock.
const lockedRemains = "guest exists with lock "

func (e *Engine) guestStatus(ctx context.Context, vmid int, kind guest.Kind) (status, lock string, exists bool, err error) {
	list, err := e.PVE.Guests(ctx, e.Node, kind)
	if err != nil {
		return "", "", false, fmt.Errorf("listing %s guests: %w", kind, err)
	}
	for _, g := range list {
		if g.VMID == vmid {
			return g.Status, g.Lock, true, nil
		}
	}
	return "", "", false, nil
}

func (e *Engine) waitOptions() pve.WaitOptions {
	if e.Exec != nil {
		return e.Exec.Wait
	}
	return pve.WaitOptions{}
}
