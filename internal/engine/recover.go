package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/pve"
)

// Recover resolves every op the journal holds as begun but not ended, and
// journals each resolution, before the engine may mutate anything. An op
// whose UPID was recorded is resolved by its task's final status (waiting
// for it if it still runs). Otherwise PVE's task list is searched for a
// task this op started; failing that, the guest's actual state is compared
// with the op's intent. Recover never re-executes an op: one that did not
// happen is planned again by the next tick, from what PVE says.
//
// An op that cannot be resolved (PVE unreachable) makes Recover fail; the
// caller retries later and must not tick until Recover succeeded.
func (e *Engine) Recover(ctx context.Context) error {
	crashpoint.Hit(crashpoint.BeforeRecover)
	for _, op := range e.Journal.InFlight() {
		res, upid, err := e.resolve(ctx, op)
		if err != nil {
			return fmt.Errorf("engine: resolving in-flight op %s (%s): %w", op.ID, op.Action, err)
		}
		crashpoint.Hit(crashpoint.AfterResolve)
		if op.UPID == "" && upid != "" {
			// Found in PVE's task list: journal it, so the record says
			// PVE accepted the op (create provenance depends on it).
			if err := e.Journal.Task(op.ID, upid); err != nil {
				return fmt.Errorf("engine: journaling the task of op %s: %w", op.ID, err)
			}
		}
		if err := e.Journal.End(op.ID, res); err != nil {
			return fmt.Errorf("engine: journaling resolution of op %s: %w", op.ID, err)
		}
		e.log().Info("recovered in-flight op", "op", op.ID, "vmid", op.Action.VMID, "action", op.Action.Op,
			"ok", res.OK, "resolution", res.Resolution)
	}
	e.recovered = true
	return nil
}

// taskTypes are the PVE task types each op can start (HA-managed guests
// run ha* tasks instead). Config writes are absent on purpose: the
// executor writes config synchronously (PUT), which starts no task, so a
// qmconfig task found in the list is someone else's and must not be taken
// for ours.
var taskTypes = map[guest.Kind]map[action.Op][]string{
	guest.QEMU: {
		action.Start: {"qmstart", "hastart"}, action.Stop: {"qmstop", "hastop"}, action.Shutdown: {"qmshutdown", "hastop"},
		action.Resize: {"qmresize", "resize"}, action.Create: {"qmcreate", "qmrestore"},
		action.Destroy: {"qmdestroy"}, action.SnapshotCreate: {"qmsnapshot"}, action.SnapshotRollback: {"qmrollback"},
		action.SnapshotDelete: {"qmdelsnapshot"},
	},
	guest.LXC: {
		action.Start: {"vzstart", "hastart"}, action.Stop: {"vzstop", "hastop"}, action.Shutdown: {"vzshutdown", "hastop"},
		action.Resize: {"vzresize", "resize"}, action.Create: {"vzcreate", "vzrestore"},
		action.Destroy: {"vzdestroy"}, action.SnapshotCreate: {"vzsnapshot"}, action.SnapshotRollback: {"vzrollback"},
		action.SnapshotDelete: {"vzdelsnapshot"},
	},
}

// clockSkew tolerates a difference between this host's clock and the
// timestamps PVE writes into UPIDs (they are the same host, but the UPID
// has seconds precision).
const clockSkew = 5 * time.Second

// resolve decides how an op that began and did not end turned out. upid is
// the op's task, whether journaled or found in PVE's task list ("" when
// PVE started none).
func (e *Engine) resolve(ctx context.Context, op journal.Op) (res journal.Result, upid string, err error) {
	a := op.Action
	if op.UPID == "" {
		u, err := e.findTask(ctx, op)
		if err != nil {
			return journal.Result{}, "", err
		}
		if !u.IsZero() {
			op.UPID = u.String()
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
				return journal.Result{OK: false, ExitStatus: te.ExitStatus, Error: te.Error(),
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
	return journal.Result{OK: false, Error: "not applied",
		Resolution: "recovered: not applied (" + what + "); the next tick plans it again if still desired"}, "", nil
}

// findTask searches the node's task list for the task op started: same
// guest, a task type the op starts, started no earlier than the op began.
// A zero UPID means none was found.
func (e *Engine) findTask(ctx context.Context, op journal.Op) (pve.UPID, error) {
	types := taskTypes[op.Action.Kind][op.Action.Op]
	if len(types) == 0 {
		return pve.UPID{}, nil
	}
	tasks, err := e.PVE.Tasks(ctx, e.Node, pve.TaskQuery{VMID: op.Action.VMID, Source: "all", Since: op.Time.Add(-clockSkew)})
	if err != nil {
		return pve.UPID{}, fmt.Errorf("listing tasks of guest %d: %w", op.Action.VMID, err)
	}
	var found []pve.UPID
	for _, t := range tasks {
		u := t.UPID
		// Only a task this agent's own token started can be this op's:
		// another user's task on the same guest must never be taken for
		// ours (its failed create would otherwise pass for our provenance).
		if e.TaskUser == "" || u.User != e.TaskUser {
			continue
		}
		if u.ID != fmt.Sprint(op.Action.VMID) || u.Started().Before(op.Time.Add(-clockSkew)) {
			continue
		}
		for _, ty := range types {
			if u.Type == ty {
				found = append(found, u)
			}
		}
	}
	if len(found) == 0 {
		return pve.UPID{}, nil
	}
	sort.Slice(found, func(i, j int) bool { return found[i].StartTime < found[j].StartTime })
	return found[0], nil
}

// intentMet compares the guest as PVE shows it now with what a should have
// done. what says what was compared, for the journal.
func (e *Engine) intentMet(ctx context.Context, a action.Action) (bool, string, error) {
	status, exists, err := e.guestStatus(ctx, a.VMID, a.Kind)
	if err != nil {
		return false, "", err
	}
	switch a.Op {
	case action.Create:
		return exists, fmt.Sprintf("guest exists: %v", exists), nil
	case action.Destroy:
		return !exists, fmt.Sprintf("guest exists: %v", exists), nil
	}
	if !exists {
		return false, "guest does not exist", nil
	}
	switch a.Op {
	case action.Start:
		return status == "running", "status " + status, nil
	case action.Shutdown, action.Stop:
		return status == "stopped", "status " + status, nil
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
	}
	// Resize and rollback leave no state that tells whether they ran; with
	// no task found, they did not start.
	return false, "no task found", nil
}

func (e *Engine) guestStatus(ctx context.Context, vmid int, kind guest.Kind) (status string, exists bool, err error) {
	list, err := e.PVE.Guests(ctx, e.Node, kind)
	if err != nil {
		return "", false, fmt.Errorf("listing %s guests: %w", kind, err)
	}
	for _, g := range list {
		if g.VMID == vmid {
			return g.Status, true, nil
		}
	}
	return "", false, nil
}

func (e *Engine) waitOptions() pve.WaitOptions {
	if e.Exec != nil {
		return e.Exec.Wait
	}
	return pve.WaitOptions{}
}
