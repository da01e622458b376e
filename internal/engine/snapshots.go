package engine

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/pve"
)

// Snapshot schedules (desired.Snapshots).
//
// Names. The agent names a snapshot SnapshotPrefix followed by the time it
// began the take on its own clock, in UTC: steward-YYYYMMDD-HHMMSS (23
// characters, within PVE's pve-snapshot-name: a letter, then up to 39
// letters, digits, '-' or '_'). The name says nothing about ownership: an
// operator may take a snapshot with such a name, and the agent never
// treats it as its own.
//
// Ownership. A snapshot is the agent's own when its journal holds it
// (journal.Snapshot): after a take op ended OK, the agent reads PVE's
// snapshot list and records the snapshot's name, snaptime and
// description. A snapshot PVE lists under that name with another snaptime
// or description is not the one the agent took (someone deleted it and
// made another, or edited it): it is never pruned without a signature.
// The parent is not compared: PVE re-parents a snapshot whenever an older
// one is deleted, which every prune does.
//
// A tick, for each guest whose entry has a schedule (enforce mode, the
// guest exists and is not locked, no op of it unresolved):
//  1. adopt: a snapshot PVE lists whose take op the journal shows ended
//     OK but that has no record yet (the agent stopped between the two)
//     is recorded, if PVE's snaptime lies within that take; a recorded
//     snapshot PVE no longer lists is forgotten;
//  2. take, when due: no snapshot of the agent's own, or the newest taken
//     Every ago or more (on the agent's clock). vmstate is asked only of a
//     running QEMU guest;
//  3. otherwise prune: the agent's snapshots beyond Keep, oldest first.
//     One unchanged since it was taken is deleted (benign by provenance,
//     classify.Provenance.Snapshot, bound to the config digest read this
//     tick, which covers every snapshot's section); one that changed is
//     held for a signature like any other snapshot delete.
//
// A take and a prune are ordinary journaled ops: a crash at any point is
// resolved by recovery (a take whose snapshot exists ended OK; one whose
// snapshot does not exist did not run) before the next tick plans anything,
// so a snapshot is never taken twice for one due time, and only a snapshot
// proven the agent's own is ever deleted without a signature.

// SnapshotPrefix starts the name of every snapshot the agent takes.
const SnapshotPrefix = "steward-"

const snapTimeLayout = "20060102-150405"

// SnapshotName is the name of a snapshot taken at t.
func SnapshotName(t time.Time) string { return SnapshotPrefix + t.UTC().Format(snapTimeLayout) }

// snapshotTime parses a SnapshotName; ok is false for any other name.
func snapshotTime(name string) (time.Time, bool) {
	if len(name) != len(SnapshotPrefix)+len(snapTimeLayout) || name[:len(SnapshotPrefix)] != SnapshotPrefix {
		return time.Time{}, false
	}
	t, err := time.Parse(snapTimeLayout, name[len(SnapshotPrefix):])
	return t, err == nil
}

// snapshotKey is the idempotency key of the take of snapshot name.
func snapshotKey(vmid int, name string) string {
	return "snapshot:" + strconv.Itoa(vmid) + ":" + name
}

// SnapshotState is a guest's snapshot schedule as the tick found it, for
// its report.
type SnapshotState struct {
	Every time.Duration
	Keep  int
	// Own are the agent's snapshots PVE lists unchanged, oldest first.
	Own []SnapshotInfo
	// LastTaken is when the newest of them was taken (zero: none);
	// NextDue when the next is due (at or before now: due now).
	LastTaken, NextDue time.Time
	// Held are the snapshots due for pruning that the agent may not
	// delete on its own, with why.
	Held []string
	// Note says why the schedule did nothing this tick (locked guest,
	// unreadable snapshots, name in use), or "".
	Note string
}

// SnapshotInfo is one of the agent's snapshots.
type SnapshotInfo struct {
	Name  string
	Taken time.Time
}

// snapshots is the schedule step, run after the reconcile plan.
func (t *tick) snapshots(ctx context.Context) {
	for vmid, g := range t.want.Guests {
		if g == nil || g.Snapshots == nil {
			continue
		}
		st := t.snapshotGuest(ctx, vmid, g)
		if t.snaps == nil {
			t.snaps = map[int]*SnapshotState{}
		}
		t.snaps[vmid] = st
	}
}

func (t *tick) snapshotGuest(ctx context.Context, vmid int, g *desired.Guest) *SnapshotState {
	e := t.e
	sched := g.Snapshots
	st := &SnapshotState{Every: sched.Interval(), Keep: sched.Keep}
	now := e.now()
	o, exists := t.byID[vmid]
	switch {
	case !exists:
		st.Note = "guest does not exist"
		return st
	case g.Kind != "" && g.Kind != o.Kind:
		st.Note = "kind mismatch"
		return st
	case t.blocked[vmid] != "":
		st.Note = "not now: " + t.blocked[vmid]
		return st
	case t.signedVMIDs[vmid]:
		st.Note = "a signed job changes the guest this tick"
		return st
	case o.Digest == "":
		st.Note = "config not read"
		return st
	}
	list, err := e.PVE.Snapshots(ctx, e.Node, o.Kind, vmid)
	if err != nil {
		st.Note = fmt.Sprintf("cannot list snapshots: %v", err)
		return st
	}
	byName := map[string]pve.Snapshot{}
	for _, s := range list {
		if !s.IsCurrent() {
			byName[s.Name] = s
		}
	}
	if !t.planOnly {
		t.adoptSnapshots(vmid, byName)
	}
	var own, changed []journal.Snapshot
	for _, r := range e.Journal.Snapshots(vmid) {
		s, ok := byName[r.Name]
		switch {
		case !ok:
			// Pruned, or deleted by someone else: no longer the agent's.
			if !t.planOnly {
				if err := e.Journal.RecordSnapshot(journal.Snapshot{VMID: vmid, Name: r.Name, Gone: true}); err != nil {
					e.log().Error("journaling a snapshot gone", "vmid", vmid, "snapshot", r.Name, "err", err)
				}
			}
		case s.SnapTime != r.Snaptime || s.Description != r.Description:
			changed = append(changed, r)
		default:
			own = append(own, r)
			st.Own = append(st.Own, SnapshotInfo{Name: r.Name, Taken: r.Taken})
		}
	}
	if len(own) > 0 {
		st.LastTaken = own[len(own)-1].Taken
		st.NextDue = st.LastTaken.Add(st.Every)
	} else {
		st.NextDue = now
	}
	if g.EffectiveMode() != desired.Enforce {
		st.Note = "observe mode: no snapshot taken or pruned"
		return st
	}
	if o.Lock != "" {
		// PVE refuses a snapshot of a locked guest (can't lock file ...
		// got timeout / is locked (backup)): wait for the lock to go.
		st.Note = fmt.Sprintf("guest locked (%s); the schedule waits", o.Lock)
		return st
	}
	if !now.Before(st.NextDue) {
		name := SnapshotName(now)
		if _, taken := byName[name]; taken {
			st.Note = fmt.Sprintf("a snapshot named %s exists already; the take waits for the next tick", name)
			return st
		}
		params := map[string]string{"snapname": name,
			"description": fmt.Sprintf("steward snapshot schedule (every %s, keep %d)", sched.Every, sched.Keep)}
		if sched.VMState && o.Kind == guest.QEMU && o.Status == "running" {
			params["vmstate"] = "1"
		}
		a := action.Action{Op: action.SnapshotCreate, VMID: vmid, Kind: o.Kind, Params: params}
		t.gateSnapshot(a, o.Config, classify.Provenance{}, snapshotKey(vmid, name))
		return st
	}
	for _, r := range t.rep.Results {
		if r.Action.VMID == vmid {
			// The config digest a prune is bound to is about to change.
			return st
		}
	}
	candidates := append(append([]journal.Snapshot(nil), own...), changed...)
	sortSnapshots(candidates)
	excess := len(candidates) - sched.Keep
	for _, r := range candidates[:max(excess, 0)] {
		a := action.Action{Op: action.SnapshotDelete, VMID: vmid, Kind: o.Kind, Params: map[string]string{"snapname": r.Name}, Digest: o.Digest}
		var prov classify.Provenance
		if isOwn(r, own) {
			prov.Snapshot = r.Name
		} else {
			st.Held = append(st.Held, r.Name+": changed since the agent took it (snaptime or description); deleting it needs a signature")
		}
		t.gateSnapshot(a, o.Config, prov, "prune:"+a.Key()+"@"+o.Digest)
	}
	return st
}

// gateSnapshot gates a take or prune and submits it or holds it.
func (t *tick) gateSnapshot(a action.Action, cfg guest.Config, prov classify.Provenance, idem string) {
	d := t.e.Gate.Decide(a, cfg, prov)
	if d.Outcome != gate.Allowed {
		t.held[a.VMID] = append(t.held[a.VMID], d)
		return
	}
	t.e.recordDecision(d, t.planOnly, "")
	t.submit(d.Permit, SourceReconcile, "", "", idem)
}

// adoptSnapshots records the snapshots of vmid that PVE lists, whose take
// op the journal shows ended OK and that have no record yet: the agent
// stopped (or the tick ended) between the take and its record. A snapshot
// is adopted only when PVE's snaptime lies between the take's start (the
// time in its name) and the end of its op, so one someone made later
// under the same name is not.
func (t *tick) adoptSnapshots(vmid int, byName map[string]pve.Snapshot) {
	e := t.e
	known := map[string]bool{}
	for _, r := range e.Journal.Snapshots(vmid) {
		known[r.Name] = true
	}
	for name, s := range byName {
		taken, ok := snapshotTime(name)
		if !ok || known[name] {
			continue
		}
		res, done := e.Journal.Completed(snapshotKey(vmid, name))
		if !done || !res.OK {
			continue
		}
		if s.SnapTime < taken.Unix()-1 || s.SnapTime > e.now().Unix()+1 {
			continue
		}
		r := journal.Snapshot{VMID: vmid, Name: name, Snaptime: s.SnapTime, Description: s.Description, Taken: taken}
		if err := e.Journal.RecordSnapshot(r); err != nil {
			e.log().Error("journaling a snapshot taken", "vmid", vmid, "snapshot", name, "err", err)
			continue
		}
		e.log().Info("snapshot recorded as the agent's own", "vmid", vmid, "snapshot", name, "snaptime", s.SnapTime)
	}
}

// afterSnapshots records the snapshots this tick's takes made, so the
// report and the next tick see them at once.
func (t *tick) afterSnapshots(ctx context.Context) {
	if t.planOnly {
		return
	}
	for _, r := range t.rep.Results {
		a := r.Action
		if a.Op != action.SnapshotCreate || r.Err != nil || r.Skip != NotSkipped || t.snaps[a.VMID] == nil {
			continue
		}
		list, err := t.e.PVE.Snapshots(ctx, t.e.Node, a.Kind, a.VMID)
		if err != nil {
			continue // adopted by the next tick
		}
		byName := map[string]pve.Snapshot{}
		for _, s := range list {
			if !s.IsCurrent() {
				byName[s.Name] = s
			}
		}
		t.adoptSnapshots(a.VMID, byName)
		st := t.snaps[a.VMID]
		if tk, ok := snapshotTime(a.Params["snapname"]); ok {
			if _, listed := byName[a.Params["snapname"]]; listed {
				st.Own = append(st.Own, SnapshotInfo{Name: a.Params["snapname"], Taken: tk})
				st.LastTaken, st.NextDue = tk, tk.Add(st.Every)
			}
		}
	}
}

func isOwn(r journal.Snapshot, own []journal.Snapshot) bool {
	for _, o := range own {
		if o.Name == r.Name {
			return true
		}
	}
	return false
}

func sortSnapshots(s []journal.Snapshot) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && (s[j].Taken.Before(s[j-1].Taken) || s[j].Taken.Equal(s[j-1].Taken) && s[j].Name < s[j-1].Name); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
