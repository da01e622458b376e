package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
)

// observe is the first step: the two guest lists plus one config read per
// guest that desired state or a signed job names; nothing per unmanaged
// guest. Each signed job is parsed here, once; the gate decides on it in
// the signed-jobs step. Ops whose outcome a previous tick could not learn
// are resolved now, before their guest is mutated again (not in a
// plan-only pass).
func (t *tick) observe(ctx context.Context, jobs []signedop.Job) error {
	e := t.e
	names := map[int]bool{}
	for vmid := range t.want.Guests {
		names[vmid] = true
	}
	t.parsed = signedop.ParseJobs(jobs)
	t.rep = Report{Host: e.Host, Node: e.Node, Time: e.now(), Want: t.want}
	t.rep.Jobs = make([]JobReport, len(jobs))
	for i, pj := range t.parsed {
		t.rep.Jobs[i] = JobReport{Name: pj.Job.Name}
		if pj.Err == nil && pj.Payload.Host == e.Host {
			names[pj.Payload.VMID] = true
		}
	}
	if e.Journal != nil {
		// Read before the guests are: an op that ends from now on ended
		// after this observation (reconcileKey).
		t.epochs = e.Journal.LastEnded()
	}
	actual, err := e.observe(ctx, names, cloneSources(t.want))
	if err != nil {
		return err
	}
	t.actual, t.rep.Observed = actual, actual
	t.rep.Unmanaged, t.rep.UnmanagedDigests = e.readUnmanaged(ctx, actual, names)
	if !t.planOnly {
		t.blocked = e.resolveLeftovers(ctx)
	}
	t.byID = make(map[int]guest.Observed, len(actual))
	for _, g := range actual {
		t.byID[g.VMID] = g
	}
	t.locate(ctx, actual, false)
	return nil
}

// cloneSources maps each desired guest with a clone block to the vmid it
// is cloned from; nil when there is none.
func cloneSources(want *desired.Host) map[int]int {
	var out map[int]int
	for vmid, g := range want.Guests {
		if g != nil && g.Create.IsClone() {
			if out == nil {
				out = map[int]int{}
			}
			out[vmid] = g.Create.Clone
		}
	}
	return out
}

// observe reads both guest lists and the configs (with their pending
// keys) of the named guests: 2 + one request per named guest. The config
// of a clone's source (sources: new vmid -> source) is read too while the
// new guest does not exist: what a clone makes depends on it (the storage
// a full clone fills, whether a cloned container is privileged).
func (e *Engine) observe(ctx context.Context, names map[int]bool, sources map[int]int) ([]guest.Observed, error) {
	var out []guest.Observed
	for _, k := range []guest.Kind{guest.QEMU, guest.LXC} {
		list, err := e.PVE.Guests(ctx, e.Node, k)
		if err != nil {
			return nil, fmt.Errorf("engine: listing %s guests on node %s: %w", k, e.Node, err)
		}
		for _, g := range list {
			out = append(out, guest.Observed{VMID: g.VMID, Kind: k, Name: g.Name, Status: g.Status, Lock: g.Lock, Template: g.Template})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	if len(sources) > 0 {
		listed := make(map[int]bool, len(out))
		for _, g := range out {
			listed[g.VMID] = true
		}
		read := maps.Clone(names)
		if read == nil {
			read = map[int]bool{}
		}
		for vmid, src := range sources {
			if !listed[vmid] {
				read[src] = true
			}
		}
		names = read
	}

	limit := e.ReadConcurrency
	if limit <= 0 {
		limit = 4
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := range out {
		if !names[out[i].VMID] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(g *guest.Observed) {
			defer wg.Done()
			defer func() { <-sem }()
			// One GET …/pending, not GET …/config: the same single request
			// per guest gives the config as written (what plans compare
			// against), its digest, and which keys wait for a restart.
			pc, err := e.PVE.ConfigWithPending(ctx, e.Node, g.Kind, g.VMID)
			if err != nil {
				g.ConfigErr = err.Error()
				if pve.IsNotFound(err) {
					// Listed, then gone: it left this node (a migration
					// ended, HA moved it) between the two reads.
					g.VMID = -1
				}
				return
			}
			g.Config, g.Digest, g.Pending, g.Current = pc.Config.Values, pc.Config.Digest, pc.Pending, pc.Current
		}(&out[i])
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(out, func(g guest.Observed) bool { return g.VMID == -1 }), nil
}

// mergeObserved returns actual with the guests in touched replaced by what
// after says of them (dropped where after no longer lists them), sorted by
// vmid.
func mergeObserved(actual, after []guest.Observed, touched map[int]bool) []guest.Observed {
	out := make([]guest.Observed, 0, len(actual))
	for _, g := range actual {
		if !touched[g.VMID] {
			out = append(out, g)
		}
	}
	for _, g := range after {
		if touched[g.VMID] {
			out = append(out, g)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].VMID < out[j].VMID })
	return out
}
