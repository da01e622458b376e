package plan

import (
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
)

// CreateKey is the Change key of a create or clone step and of the drift
// of a guest that does not exist yet.
const CreateKey = "create"

// missing plans a desired guest the host does not list. With a create
// block (and in enforce mode) it is created: one create or clone step,
// after which later ticks find the guest and plan its config and run state
// as for any other. Without one, or with a kind that cannot be created,
// it is an error.
func missing(steps []Step, st *GuestStatus, id int, g *desired.Guest) []Step {
	if g.Create == nil {
		st.Phase, st.Err = Error, "not found on this host"
		return steps
	}
	step, err := CreateStep(id, g)
	if err != "" {
		st.Phase, st.Err = Error, err
		return steps
	}
	st.Drift = step.Changes
	if g.EffectiveMode() == desired.Observe {
		st.Phase = DriftObserved
		return steps
	}
	st.Phase = Converging
	return append(steps, step)
}

// CreateStep returns the step that creates desired guest id as its create
// block says, or why it cannot be planned. A clone is action.Clone with
// Params "source" (the vmid cloned), "full", "storage", "name" and
// "pool" as PVE's clone call takes them; the managed config follows on
// the next tick. From scratch it is action.Create with the managed config
// (its keys not ignored, values as a config write sends them,
// description, tags) plus the disks, "pool", and for a container
// "ostemplate", "storage" and unprivileged=1 unless config sets
// unprivileged: PVE takes all of them at creation, so the new guest
// matches desired state at once. The step's one Change is Key CreateKey,
// From "", To how it is created.
func CreateStep(id int, g *desired.Guest) (Step, string) {
	c := g.Create
	if g.Kind != guest.QEMU && g.Kind != guest.LXC {
		return Step{}, "cannot create: desired state does not pin the guest's kind (kind: qemu or lxc)"
	}
	p := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	changes := []Change{{Key: CreateKey, To: c.String()}}
	if c.IsClone() {
		p["source"] = strconv.Itoa(c.Clone)
		if c.Full != nil {
			p["full"] = "0"
			if *c.Full {
				p["full"] = "1"
			}
		}
		set("storage", c.Storage)
		set("pool", c.Pool)
		name := c.Name
		if name == "" && !g.Ignored("name") {
			name = g.Config["name"]
		}
		set("name", name)
		return Step{Action: action.Action{Op: action.Clone, VMID: id, Kind: g.Kind, Params: p}, Changes: changes}, ""
	}
	for k, v := range g.Config {
		if g.Ignored(k) || k == "description" || k == "tags" {
			continue
		}
		p[k] = normalize.Param(g.Kind, k, v, "")
	}
	if g.Description != nil && !g.Ignored("description") {
		set("description", *g.Description)
	}
	if g.Tags != nil && !g.Ignored("tags") {
		tags := slices.Clone(g.Tags)
		slices.Sort(tags)
		set("tags", strings.Join(slices.Compact(tags), ";"))
	}
	for k, v := range c.Disks {
		p[k] = v
	}
	set("pool", c.Pool)
	if g.Kind == guest.LXC {
		set("ostemplate", c.OSTemplate)
		set("storage", c.Storage)
		if _, ok := p["unprivileged"]; !ok {
			p["unprivileged"] = "1"
		}
	}
	return Step{Action: action.Action{Op: action.Create, VMID: id, Kind: g.Kind, Params: p}, Changes: changes}, ""
}
