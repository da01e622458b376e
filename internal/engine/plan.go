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
		if ok, _ := e.Backoff.Ready(a.VMID); ok && t.blocked[a.VMID] == "" {
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
			if ok, _ := e.Backoff.Ready(a.VMID); ok && !t.planOnly && t.blocked[a.VMID] == "" {
				if why := t.precheck(ctx, d.Action); why != "" {
					t.refuse(d.Action, d.Verdict.Class, why)
					continue
				}
			}
			e.recordDecision(d, t.planOnly, "")
			t.allocate(d.Action, cfg)
			t.submit(d.Permit, SourceReconcile, "", "", reconcileKey(d.Action, t.id))
		}
	}
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
