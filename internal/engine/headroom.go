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
	var why []string
	for _, sid := range slices.Sorted(maps.Keys(allocs)) {
		u, err := t.storageUsage(ctx, sid)
		if err != nil {
			unreadable = true
			why = append(why, fmt.Sprintf("cannot read the usage of storage %s (GET /nodes/%s/storage/%s/status: %v; the agent's token needs Datastore.Audit on /storage/%s)",
				sid, t.e.Node, sid, err, sid))
			continue
		}
		u.Used += t.allocated[sid]
		if f := classify.Headroom(u, allocs[sid], t.e.threshold(sid)); f != "" {
			why = append(why, f)
		}
	}
	return strings.Join(why, "; "), unreadable
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
	for sid, n := range classify.Allocations(a, actual, source) {
		if t.allocated == nil {
			t.allocated = map[string]int64{}
		}
		t.allocated[sid] += n
	}
}

// storageUsage reads storage sid's status once a tick.
func (t *tick) storageUsage(ctx context.Context, sid string) (classify.StorageUsage, error) {
	if u, ok := t.storages[sid]; ok {
		return u, nil
	}
	st, err := t.e.PVE.StorageStatus(ctx, t.e.Node, sid)
	if err != nil {
		return classify.StorageUsage{}, err
	}
	u := classify.StorageUsage{Storage: sid, Total: st.Total, Used: st.Used}
	if t.storages == nil {
		t.storages = map[string]classify.StorageUsage{}
	}
	t.storages[sid] = u
	return u, nil
}
