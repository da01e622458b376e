package engine

import (
	"context"
	"fmt"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/plan"
)

// Guests that move (issue 12 §4). The agent sees its own node; a PVE
// cluster moves guests between nodes (a migration, HA). A guest desired
// state names for this host that this node does not list is looked up in
// GET /cluster/resources before it is planned:
//
//   - on another node: it has moved. It is reported as moved with that
//     node and nothing is done for it: never created (a create block does
//     not apply to a guest that exists), never reported missing. Its
//     desired entry belongs under the host of the node it is on now; the
//     agent there manages it from the moment it appears there.
//   - on this node (it arrived between the guest list and this read): it
//     is managed from the next tick; nothing is planned for it now.
//   - nowhere: it does not exist, and is planned as before (created when
//     its entry says how, otherwise an error "not found on this host").
//
// The list is read only when a desired guest is absent, once at observe
// time and again after the tick's actions if one the tick acted on left
// meanwhile. When it cannot be read, an absent guest is planned as before
// and its status says why the agent could not tell whether it moved; a
// create of it is refused by the create check, which needs the same list.

// locate fills t.elsewhere for the desired guests observed does not list.
// again reads /cluster/resources anew when such a guest is not located
// yet (after the tick's actions).
func (t *tick) locate(ctx context.Context, observed []guest.Observed, again bool) {
	e := t.e
	here := make(map[int]bool, len(observed))
	for _, g := range observed {
		here[g.VMID] = true
	}
	var absent []int
	for vmid := range t.want.Guests {
		if !here[vmid] {
			if _, known := t.elsewhere[vmid]; !known {
				absent = append(absent, vmid)
			}
		}
	}
	if len(absent) == 0 {
		return
	}
	if t.resources == nil || again {
		rs, err := e.PVE.ClusterResources(ctx, "vm")
		if err != nil {
			t.clusterErr = err.Error()
			e.log().Warn("reading /cluster/resources to locate guests absent from this node failed", "err", err)
			return
		}
		t.resources, t.clusterErr = rs, ""
	}
	if t.elsewhere == nil {
		t.elsewhere = map[int]string{}
	}
	for _, vmid := range absent {
		for _, r := range t.resources {
			if r.VMID == vmid && (r.Type == "qemu" || r.Type == "lxc") && r.Node != "" {
				t.elsewhere[vmid] = r.Node
				break
			}
		}
	}
}

// planOptions is the engine's plan options with what locate found.
func (t *tick) planOptions() plan.Options {
	o := t.e.Plan
	o.Elsewhere = t.elsewhere
	o.Node = t.e.Node
	return o
}

// noteLocation adjusts the statuses locate bears on: a guest "moved" to
// this very node arrived during the tick and is converging; a guest not
// found here whose whereabouts could not be read says so.
func (t *tick) noteLocation(grs []GuestReport) {
	for i := range grs {
		gr := &grs[i]
		switch {
		case gr.Phase == PhaseMoved && gr.Node == t.e.Node:
			gr.Phase, gr.Node = PhaseConverging, ""
			gr.Err = "arrived on this node while the agent observed it; managed from the next tick"
		case gr.Phase == PhaseError && gr.Err == "not found on this host" && t.clusterErr != "":
			gr.Err = fmt.Sprintf("not found on this host, and GET /cluster/resources failed, so whether it moved to another node is unknown: %s", t.clusterErr)
		}
	}
}
