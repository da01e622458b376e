package engine

import (
	"context"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/plan"
)

// plan is the third step: the reconcile plan from the state observed
// first (with the remains of a failed create replaced by their cleanup,
// see create.go), each action gated, and a create checked against the
// cluster before it runs; what the gate allows is submitted, what it
// holds waits for a signature. Guests a signed job changes this tick are
// left out: their plan was made before that change and is made again,
// from what PVE then says, by the next tick.
func (t *tick) plan(ctx context.Context) {
	e := t.e
	t.rep.Plan = plan.Diff(t.want, t.actual, t.planOptions())
	t.cleanups(&t.rep.Plan)
	t.freshness(ctx, t.rep.Plan.Steps)
	for _, st := range t.rep.Plan.Steps {
		a := st.Action
		if t.signedVMIDs[a.VMID] {
			continue
		}
		var cfg guest.Config
		if g, ok := t.byID[a.VMID]; ok {
			cfg = g.Config
		}
		prov := t.provenance(a.VMID, a.Digest)
		// The storage headroom is read only when the rest of the action
		// may run now: a finding then holds it for a signature; a usage
		// that cannot be read refuses it until a later tick.
		headroom, unreadable := "", false
		ready, _ := e.Backoff.Ready(a.VMID)
		ready = ready && t.blocked[a.VMID] == ""
		if a.Op == action.Migrate && ready && !t.planOnly {
			// PVE's preconditions first: a target it refuses has no
			// storage to judge (migrate.go).
			if why := t.precheck(ctx, a); why != "" {
				t.refuse(a, classify.Benign, why)
				continue
			}
		}
		if ready {
			headroom, unreadable = t.headroom(ctx, a, cfg)
		}
		if unreadable && !t.planOnly {
			t.refuse(a, classify.Benign, "not run: "+headroom)
			continue
		}
		prov.Headroom = headroom
		for _, d := range e.Gate.DecideSplit(a, cfg, prov) {
			if d.Outcome != gate.Allowed {
				t.held[a.VMID] = append(t.held[a.VMID], d)
				continue
			}
			if ok, _ := e.Backoff.Ready(a.VMID); ok && !t.planOnly && t.blocked[a.VMID] == "" && d.Action.Op != action.Migrate {
				if why := t.precheck(ctx, d.Action); why != "" {
					t.refuse(d.Action, d.Verdict.Class, why)
					continue
				}
			}
			e.recordDecision(d, t.planOnly, "")
			t.allocate(d.Action, cfg)
			key := reconcileKey(d.Action, t.epochs[d.Action.VMID])
			if d.Action.Op == action.Migrate {
				key = t.migrateKey(d.Action)
			}
			t.submit(d.Permit, SourceReconcile, "", "", key)
		}
	}
}

// reconcileKey is the idempotency key of a reconcile action planned from
// an observation of its guest taken when epoch was the guest's
// journal.LastEnded entry ("" for none). It binds the action's intent
// (a.Key), the config digest it was planned against and that epoch, so
// two reconcile actions share a key exactly when they make the same
// change to the same config, planned from observations between which no
// op on the guest ended. Hence:
//
//   - an op of the same intent that ended after the observation (a
//     leftover op resolved in this tick, after the guest was read) has
//     the key: the plan could not see its effect, and the action is
//     skipped as done (SkipDone); the next tick plans from what PVE then
//     says;
//   - one that ended before it does not: that observation saw its effect,
//     so a guest that still needs the change needs it again. The digest
//     alone cannot tell these apart: PVE's digest hashes the config text,
//     so a guest set back to an earlier config by hand, or desired state
//     going A → B → A, brings back an earlier digest, and a key bound to
//     the digest alone would take the new write for the old one forever.
//
// Exactly once across a crash does not rest on this key: Recover ends
// every op that began and did not end (by its task's fate or the guest's
// state) before the engine observes again, so a restarted agent plans
// only from what PVE says once the op's fate is journaled, and an op that
// ran is not planned again. Signed jobs have keys of their own (jobKey)
// and nonces, which this does not touch; so do migrations (migrateKey),
// whose done-ness is judged by where the guest is.
func reconcileKey(a action.Action, epoch string) string {
	return "reconcile:" + a.Key() + "@" + a.Digest + "#" + epoch
}
