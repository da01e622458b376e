package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/propstr"
	"github.com/steward-pve/steward/internal/pve"
)

// Creating guests (desired.Create). The planner, which sees one host,
// plans a create or clone step for a desired guest the host does not list;
// before the tick runs one, the engine checks what only PVE can say:
//
//   - the vmid is free in the whole cluster (GET /cluster/resources): PVE
//     cannot reserve an id and nextid races, so a vmid another node (or
//     anyone) holds is refused, reported with the holder, and tried again
//     only after the guest's backoff;
//   - every cicustom snippet a create or config write names exists (GET
//     …/storage/{storage}/content/{volume}), so a guest is never set up to
//     fail at its first start.
//
// A create that failed and left remains (a guest still exactly as the
// agent saw it right after the failure, within ProvisionCleanupWindow) is
// destroyed first, benign by the journal's provenance, and created again
// on a later tick. A guest the agent created (or cloned) and that has not
// run since is "fresh": the keys a create takes (cloud-init, boot, ...)
// are benign on its config too, which is how a clone gets its cloud-init
// settings on the tick after the clone task.

// freshness computes, for every guest a config step of this tick touches,
// whether it is fresh (see classify.Provenance.Fresh): the journal holds
// its successful create or clone and no start or reboot since, it is
// stopped, and PVE's task list shows no start of it by anyone since its
// creation. A failed read counts as not fresh.
func (t *tick) freshness(ctx context.Context, steps []plan.Step) {
	e := t.e
	t.fresh = map[int]bool{}
	for _, st := range steps {
		vmid := st.Action.VMID
		if st.Action.Op != action.SetConfig || e.Journal == nil {
			continue
		}
		if _, done := t.fresh[vmid]; done {
			continue
		}
		t.fresh[vmid] = false
		p := e.Journal.Provenance(vmid)
		g, ok := t.byID[vmid]
		if !p.CreatedByAgent || !p.Created || p.Started || !ok || g.Status != "stopped" {
			continue
		}
		tasks, err := e.PVE.Tasks(ctx, e.Node, pve.TaskQuery{VMID: vmid, Source: "all", Since: p.At.Truncate(time.Second)})
		if err != nil {
			e.log().Warn("reading the task list of a new guest failed; its create-time keys are judged as on any guest", "vmid", vmid, "err", err)
			continue
		}
		started := false
		for _, tk := range tasks {
			if slices.Contains(startTypes, tk.UPID.Type) && tk.UPID.ID == fmt.Sprint(vmid) {
				started = true
			}
		}
		t.fresh[vmid] = !started
	}
}

// startTypes are the task types that run a guest.
var startTypes = []string{"qmstart", "vzstart", "qmreboot", "vzreboot", "hastart", "qmresume", "vzresume"}

// provenance is Engine.provenance with this tick's freshness.
func (t *tick) provenance(vmid int, digest string) classify.Provenance {
	p := t.e.provenance(vmid, digest)
	p.Fresh = t.fresh[vmid] && p.CreatedByAgent
	return p
}

// cleanups replaces the steps of each desired guest with a create block
// that is the remains of the agent's own failed create (see
// Engine.provenance) with one destroy of them; the guest is created again
// once they are gone. Its status says so.
func (t *tick) cleanups(p *plan.Plan) {
	e := t.e
	remains := map[int]guest.Observed{}
	for vmid, g := range t.want.Guests {
		a, ok := t.byID[vmid]
		if g == nil || g.Create == nil || g.EffectiveMode() != desired.Enforce || !ok || a.Digest == "" {
			continue
		}
		if e.provenance(vmid, a.Digest).CreateFailed {
			remains[vmid] = a
		}
	}
	if len(remains) == 0 {
		return
	}
	var steps []plan.Step
	for _, st := range p.Steps {
		if _, ok := remains[st.Action.VMID]; !ok {
			steps = append(steps, st)
		}
	}
	for i := range p.Guests {
		gs := &p.Guests[i]
		a, ok := remains[gs.VMID]
		if !ok {
			continue
		}
		ch := []plan.Change{{Key: plan.CreateKey, From: "remains of a failed create", To: "destroyed, then created again"}}
		steps = append(steps, plan.Step{
			Action:  action.Action{Op: action.Destroy, VMID: a.VMID, Kind: a.Kind, Params: map[string]string{"purge": "1"}, Digest: a.Digest},
			Changes: ch,
		})
		gs.Phase, gs.Err, gs.Drift = plan.Converging, "", ch
	}
	slices.SortStableFunc(steps, func(x, y plan.Step) int { return x.Action.VMID - y.Action.VMID })
	p.Steps = steps
}

// precheck says why a permitted reconcile action must not run now (a
// create whose vmid is taken in the cluster, a cicustom snippet that does
// not exist), or "". It reads PVE only for those actions.
func (t *tick) precheck(ctx context.Context, a action.Action) string {
	if a.Op == action.Migrate {
		return t.precheckMigrate(ctx, a)
	}
	if a.Op == action.Create || a.Op == action.Clone {
		if why := t.vmidTaken(ctx, a.VMID); why != "" {
			return why
		}
	}
	if v, ok := a.Params["cicustom"]; ok && (a.Op == action.Create || a.Op == action.SetConfig) {
		return t.e.snippetsMissing(ctx, v)
	}
	return ""
}

// vmidTaken says who holds vmid in the cluster, or "".
func (t *tick) vmidTaken(ctx context.Context, vmid int) string {
	e := t.e
	if t.resources == nil {
		rs, err := e.PVE.ClusterResources(ctx, "vm")
		if err != nil {
			return fmt.Sprintf("not created: cannot check that vmid %d is free in the cluster (GET /cluster/resources: %v); tried again after backoff", vmid, err)
		}
		t.resources = rs
	}
	for _, r := range t.resources {
		if r.VMID != vmid {
			continue
		}
		what := r.Type
		if r.Name != "" {
			what += " " + fmt.Sprintf("%q", r.Name)
		}
		return fmt.Sprintf("not created: vmid %d is taken in the cluster (%s on node %s); PVE cannot reserve a vmid, so the agent never creates over one: give this guest another vmid in desired state, or move it to the host of node %s",
			vmid, what, r.Node, r.Node)
	}
	return ""
}

// snippetsMissing says which cicustom snippet of value v does not exist
// (or cannot be checked), or "".
func (e *Engine) snippetsMissing(ctx context.Context, v string) string {
	props, err := propstr.Parse(v, "")
	if err != nil {
		return fmt.Sprintf("cicustom %q does not parse: %v", v, err)
	}
	for _, p := range props {
		_, err := e.PVE.VolumeInfo(ctx, e.Node, p.Value)
		if err == nil {
			continue
		}
		var ae *pve.APIError
		if errors.As(err, &ae) && ae.StatusCode == 403 {
			sid, _, _ := strings.Cut(p.Value, ":")
			return fmt.Sprintf("cicustom %s=%s: the agent's token may not read the snippet to check it exists (it needs Datastore.Allocate on /storage/%s); not written", p.Key, p.Value, sid)
		}
		return fmt.Sprintf("cicustom %s=%s: no such snippet on node %s (%v); upload it to the storage's snippets first; not written", p.Key, p.Value, e.Node, err)
	}
	return ""
}

// refuse records a permitted action the precheck refused: reported as the
// guest's error with why, and the guest backs off (the same check would
// fail again at once).
func (t *tick) refuse(a action.Action, class classify.Class, why string) {
	e := t.e
	e.Backoff.Failure(a.VMID)
	e.mu.Lock()
	if e.refusals == nil {
		e.refusals = map[int]string{}
	}
	e.refusals[a.VMID] = why
	e.mu.Unlock()
	e.log().Warn("action refused before it ran", "vmid", a.VMID, "action", a.Op, "why", why)
	t.rep.Results = append(t.rep.Results, Result{Action: a, Source: SourceReconcile, Class: class, Err: errors.New("engine: " + why)})
}

// lastRefusal is why the guest's last action was refused by the
// precheck, or "" (cleared once an action on it succeeds).
func (e *Engine) lastRefusal(vmid int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refusals[vmid]
}

func (e *Engine) clearRefusal(vmid int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.refusals, vmid)
}
