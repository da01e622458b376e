package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
)

// threshold is the headroom threshold of storage sid: Engine.Headroom's
// entry for it, else its "*" entry, else classify.DefaultHeadroom.
func (e *Engine) threshold(sid string) float64 {
	if f, ok := e.Headroom[sid]; ok {
		return f
	}
	if f, ok := e.Headroom["*"]; ok {
		return f
	}
	return classify.DefaultHeadroom
}

// headroom checks the storage a reconcile or signed action allocates on
// (classify.Allocations) against its usage, as PVE reports it now plus
// what actions allowed earlier this tick allocate, and returns the
// finding that holds the action for a signature (classify.Headroom), or
// "". unreadable is set when a storage's usage could not be read: the
// action is then held too (unknown is never judged safe), with why.
func (t *tick) headroom(ctx context.Context, a action.Action, actual guest.Config) (finding string, unreadable bool) {
	var source guest.Config
	if a.Op == action.Clone {
		if id, err := strconv.Atoi(a.Params["source"]); err == nil {
			source = t.byID[id].Config
		}
	}
	allocs := classify.Allocations(a, actual, source)
	node := allocNode(t.e.Node, a)
	var why []string
	for _, sid := range slices.Sorted(maps.Keys(allocs)) {
		u, shared, err := t.storageUsage(ctx, node, sid)
		if err != nil {
			unreadable = true
			why = append(why, fmt.Sprintf("cannot read the usage of storage %s (GET /nodes/%s/storage/%s/status: %v; the agent's token needs Datastore.Audit on /storage/%s)",
				sid, node, sid, err, sid))
			continue
		}
		if shared && a.Op == action.Migrate {
			continue // a migration copies nothing to shared storage
		}
		if node != t.e.Node {
			u.Storage = sid + " on node " + node
		}
		u.Used += t.allocated[node+"/"+sid]
		if f := classify.Headroom(u, allocs[sid], t.e.threshold(sid)); f != "" {
			why = append(why, f)
		}
	}
	return strings.Join(why, "; "), unreadable
}

// allocNode is the node whose storage action a allocates on: a
// migration's target, otherwise this node.
func allocNode(here string, a action.Action) string {
	if a.Op == action.Migrate && a.Params["target"] != "" {
		return a.Params["target"]
	}
	return here
}

// allocate counts what an allowed action allocates, so later actions of
// the same tick are judged on the storage as it will be.
func (t *tick) allocate(a action.Action, actual guest.Config) {
	var source guest.Config
	if a.Op == action.Clone {
		if id, err := strconv.Atoi(a.Params["source"]); err == nil {
			source = t.byID[id].Config
		}
	}
	node := allocNode(t.e.Node, a)
	for sid, n := range classify.Allocations(a, actual, source) {
		if t.allocated == nil {
			t.allocated = map[string]int64{}
		}
		t.allocated[node+"/"+sid] += n
	}
}

// storageUsage reads the status of storage sid on node once a tick, and
// whether it is shared.
func (t *tick) storageUsage(ctx context.Context, node, sid string) (classify.StorageUsage, bool, error) {
	key := node + "/" + sid
	if u, ok := t.storages[key]; ok {
		return u, t.shared[key], nil
	}
	st, err := t.e.PVE.StorageStatus(ctx, node, sid)
	if err != nil {
		return classify.StorageUsage{}, false, err
	}
	u := classify.StorageUsage{Storage: sid, Total: st.Total, Used: st.Used}
	if t.storages == nil {
		t.storages, t.shared = map[string]classify.StorageUsage{}, map[string]bool{}
	}
	t.storages[key], t.shared[key] = u, st.Shared
	return u, st.Shared, nil
}
