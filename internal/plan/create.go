package plan

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
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
// it is an error. src is the clone source as the host lists it (nil when
// it does not, or for a create from scratch).
func missing(steps []Step, st *GuestStatus, id int, g *desired.Guest, src *guest.Observed) []Step {
	if g.Create == nil {
		st.Phase, st.Err = Error, "not found on this host"
		return steps
	}
	step, err := CloneOrCreateStep(id, g, src)
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

// CreateStep is CloneOrCreateStep without knowing the clone's source.
func CreateStep(id int, g *desired.Guest) (Step, string) {
	return CloneOrCreateStep(id, g, nil)
}

// CloneOrCreateStep returns the step that creates desired guest id as its
// create block says, or why it cannot be planned. src is the clone's
// source as the host lists it, nil when unknown.
//
// A clone is action.Clone with Params "source" (the vmid cloned), "full",
// "storage", "pool" and the new guest's name ("name" for QEMU, "hostname"
// for a container) as PVE's clone call takes them; a container's clone
// also carries classify.UnprivilegedParam from src's config (absent when
// src's config was not read; PVE's clone takes no such parameter, the
// agent checks it against the source right before it clones). The managed config
// follows on the next tick. A container is cloned from a container: a
// source the host lists as another kind is an error. From scratch it is
// action.Create with the managed config (its keys not ignored, values as
// a config write sends them, description, tags) plus the disks, "pool",
// and for a container "ostemplate", "storage" and unprivileged=1 unless
// config sets unprivileged: PVE takes all of them at creation, so the new
// guest matches desired state at once. The step's one Change is Key
// CreateKey, From "", To how it is created.
func CloneOrCreateStep(id int, g *desired.Guest, src *guest.Observed) (Step, string) {
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
		if src != nil && src.Kind != g.Kind {
			return Step{}, fmt.Sprintf("cannot clone: source %d is a %s guest and this one is %s; a %s guest is cloned from a %s template", c.Clone, src.Kind, g.Kind, g.Kind, g.Kind)
		}
		p["source"] = strconv.Itoa(c.Clone)
		if c.Full != nil {
			p["full"] = "0"
			if *c.Full {
				p["full"] = "1"
			}
		}
		set("storage", c.Storage)
		set("pool", c.Pool)
		nameKey := "name"
		if g.Kind == guest.LXC {
			nameKey = "hostname"
			if src != nil && src.Config != nil {
				p[classify.UnprivilegedParam] = "0"
				if normalize.Equal(guest.LXC, "unprivileged", "1", src.Config["unprivileged"]) {
					p[classify.UnprivilegedParam] = "1"
				}
			}
		}
		name := c.Name
		if name == "" && !g.Ignored(nameKey) {
			name = g.Config[nameKey]
		}
		set(nameKey, name)
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
