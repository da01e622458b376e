package plan

import (
	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
)

// A migration desired state asks for (desired.Guest.Node; issue 12 §4).
// Only the host whose node holds the guest plans it: PVE migrates from the
// source node. A guest this host lists whose entry names another node
// (Options.Node is this host's node) gets exactly one step, a migrate to
// that node, and nothing else this tick: its config and run state are
// converged by the agent of the node it lands on (or by this one, next
// tick, if the migration is refused). Its Drift is the "node" change.
//
//   - A QEMU guest that is not stopped migrates online (online=1) with
//     with-local-disks=1, which PVE needs to mirror disks on local storage
//     while the guest runs and ignores for shared ones. A stopped one
//     migrates offline (PVE copies its local volumes itself).
//   - A running container migrates in restart mode (restart=1, timeout the
//     shutdown timeout): PVE cannot move a container live, so it is shut
//     down and started on the target. That is a restart, planned only with
//     restart: allowed; otherwise the guest is an Error saying so, and the
//     rest of its entry is planned here as usual (stop it, or allow the
//     restart, and it migrates offline next).
//   - A guest under PVE's migrate lock is being migrated (by this agent's
//     earlier step, by an operator or by HA): nothing is planned for it,
//     not a second migration, not a config write PVE would refuse.
//   - observe mode, or "node" in ignore, plans no migration: observe
//     reports it as drift.
//
// A guest whose entry names a node and that this host does not list is
// planned as before: Moved when the cluster shows it elsewhere (whether
// on the node its entry names, which is then done, or on its way there).

// migrateStep plans the migration of guest a to g.Node, or reports why not.
// handled is false when the guest is to be planned as usual after it
// (a running container whose restart desired state does not allow: st is
// then an Error, which the usual planning keeps).
func (d *differ) migrateStep(steps []Step, st *GuestStatus, g *desired.Guest, a *guest.Observed, node, timeout string) (_ []Step, handled bool) {
	ch := Change{Key: "node", From: node, To: g.Node}
	if g.EffectiveMode() == desired.Observe {
		return steps, false // reported with the guest's other drift (Diff)
	}
	if a.Lock == "migrate" {
		st.Phase, st.Drift = Converging, []Change{ch}
		return steps, true
	}
	params := map[string]string{"target": g.Node}
	running := a.Status != "stopped"
	switch a.Kind {
	case guest.QEMU:
		if running {
			params["online"], params["with-local-disks"] = "1", "1"
		}
	case guest.LXC:
		if running {
			if g.EffectiveRestart() != desired.RestartAllowed {
				st.Phase = Error
				st.Err = "node " + g.Node + ": a running container migrates only by restarting (PVE cannot move a container live); not migrated: set restart: allowed, or stop it"
				return steps, false
			}
			params["restart"], params["timeout"] = "1", timeout
		}
	default:
		st.Phase, st.Err = Error, "node "+g.Node+": cannot migrate a guest of kind "+string(a.Kind)
		return steps, true
	}
	st.Phase, st.Drift = Converging, []Change{ch}
	steps = d.grow(steps)
	steps = append(steps, Step{
		Action:  action.Action{Op: action.Migrate, VMID: a.VMID, Kind: a.Kind, Params: params, Digest: a.Digest},
		Changes: []Change{ch},
	})
	return steps, true
}

// wantsMigration reports whether desired guest g, which this host's node
// lists as a, asks to be on another node: the planner then plans its
// migration (a kind mismatch is planned as the usual error instead).
func wantsMigration(g *desired.Guest, a *guest.Observed, node string) bool {
	return g.Node != "" && node != "" && g.Node != node && !g.Ignored("node") && (g.Kind == "" || g.Kind == a.Kind)
}
