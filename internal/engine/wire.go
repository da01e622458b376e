package engine

import (
	"maps"
	"slices"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/wire"
)

// Wire converts r to the report the hub receives. Everything the tick
// saw, decided and did is kept, in the wire's terms: errors become their
// text, a guest's config is reduced to the keys desired state manages
// (normalized, as the planner compares them), the plan's steps appear as
// the actions they became (Actions) or were held as (Pending), and each
// guest's lock is carried with its sync status. Facts other than the node
// (agent version, frozen) are the caller's to fill in.
func (r Report) Wire() wire.Report {
	w := wire.Report{Host: r.Host, Time: wireTime(r.Time), Facts: wire.Facts{Node: r.Node}, Guests: make([]wire.Guest, 0, len(r.Observed))}
	for _, g := range r.Observed {
		wg := wire.Guest{VMID: g.VMID, Kind: string(g.Kind), Name: g.Name, Status: g.Status, Lock: g.Lock,
			Template: g.Template, Digest: g.Digest, ConfigError: g.ConfigErr}
		wg.Config = managedConfig(g, r.Want)
		if cfg, ok := r.Unmanaged[g.VMID]; ok && (r.Want == nil || r.Want.Guests[g.VMID] == nil) {
			wg.Observed = observedConfig(g.Kind, cfg)
			if wg.Digest == "" {
				wg.Digest = r.UnmanagedDigests[g.VMID]
			}
		}
		if g.Template && g.Kind == guest.LXC && g.Config != nil && clonedBy(r.Want, g.VMID) {
			// What the hub's plan needs to judge a container clone as the
			// agent does: the clone inherits the template's unprivileged.
			wg.Observed = map[string]string{"unprivileged": normalize.Value(guest.LXC, "unprivileged", g.Config["unprivileged"])}
		}
		w.Guests = append(w.Guests, wg)
	}
	locks := map[int]string{}
	for _, gs := range r.Plan.Guests {
		locks[gs.VMID] = gs.Lock
	}
	for _, gr := range r.Guests {
		s := wire.Sync{VMID: gr.VMID, Phase: gr.Phase, Reason: gr.Err, Lock: locks[gr.VMID], NextRetry: wireTime(gr.NextRetry),
			Pending: slices.Clone(gr.Pending), Node: gr.Node}
		for _, c := range gr.Drift {
			s.Drift = append(s.Drift, wire.Change{Key: c.Key, From: c.From, To: c.To})
		}
		if sc := gr.Snapshots; sc != nil {
			ws := &wire.SnapshotSchedule{Every: sc.Every.String(), Keep: sc.Keep, LastTaken: wireTime(sc.LastTaken), NextDue: wireTime(sc.NextDue),
				Held: slices.Clone(sc.Held), Note: sc.Note}
			for _, o := range sc.Own {
				ws.Snapshots = append(ws.Snapshots, wire.ScheduledSnapshot{Name: o.Name, Taken: wireTime(o.Taken)})
			}
			s.Snapshots = ws
		}
		if p := gr.Provenance; p.CreatedByAgent || p.CreateFailed || p.Fresh {
			s.Provenance = &wire.Provenance{CreatedByAgent: p.CreatedByAgent, CreateFailed: p.CreateFailed, Fresh: p.Fresh}
		}
		w.Sync = append(w.Sync, s)
	}
	for _, res := range r.Results {
		ar := wire.ActionResult{Action: wireAction(res.Action), Source: string(res.Source), Class: string(res.Class), Job: res.Job,
			UPID: res.Outcome.UPID, ExitStatus: res.Outcome.ExitStatus, Warnings: res.Outcome.Warnings, Skipped: res.Skipped}
		if res.Err != nil {
			ar.Error = res.Err.Error()
		}
		w.Actions = append(w.Actions, ar)
	}
	for _, d := range r.Pending {
		wp := wire.Pending{Action: wireAction(d.Action), Reason: d.Reason,
			Destroys: slices.Clone(d.Verdict.Keys), Payload: slices.Clone(d.Payload)}
		if q := d.Quorum; q != nil {
			wp.Quorum = &wire.Quorum{Role: q.Role, Need: q.Count}
		}
		w.Pending = append(w.Pending, wp)
	}
	for _, d := range r.Rejected {
		w.Rejected = append(w.Rejected, wireRejection(d))
	}
	return w
}

// wireTime is t as it reads back from the wire: UTC, no monotonic clock.
func wireTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.Round(0).UTC()
}

func wireRejection(d gate.Decision) wire.Rejection {
	rj := wire.Rejection{Job: d.Job, Code: d.Code, Reason: d.Reason}
	if d.Action.Op != "" {
		a := wireAction(d.Action)
		rj.Action = &a
	}
	return rj
}

func wireAction(a action.Action) wire.Action {
	w := wire.Action{Op: string(a.Op), VMID: a.VMID, Kind: string(a.Kind), Digest: a.Digest}
	if len(a.Params) > 0 { // empty and absent params read back alike
		w.Params = maps.Clone(a.Params)
	}
	return w
}

// managedConfig is the part of g's config that want manages: its config
// keys (less those it ignores) plus description and tags when it names
// them, each normalized. Nil for an unmanaged guest or one whose config
// was not read.
// clonedBy reports whether a guest want names is created as a clone of
// vmid.
func clonedBy(want *desired.Host, vmid int) bool {
	if want == nil {
		return false
	}
	for _, g := range want.Guests {
		if g != nil && g.Create.IsClone() && g.Create.Clone == vmid {
			return true
		}
	}
	return false
}

func managedConfig(g guest.Observed, want *desired.Host) map[string]string {
	if want == nil || g.Config == nil {
		return nil
	}
	dg := want.Guests[g.VMID]
	if dg == nil {
		return nil
	}
	out := map[string]string{}
	add := func(k string) {
		if !dg.Ignored(k) {
			out[k] = normalize.Value(g.Kind, k, g.Config[k])
		}
	}
	for k := range dg.Config {
		add(k)
	}
	if dg.Description != nil {
		add("description")
	}
	if dg.Tags != nil {
		add("tags")
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
