package plan

// The plain planner Diff was optimized from, kept as an oracle:
// TestDiffMatchesReference checks that Diff gives exactly its results.

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/propstr"
)

func refDiff(want *desired.Host, actual []guest.Observed, opts Options) Plan {
	if want == nil || len(want.Guests) == 0 {
		return Plan{}
	}
	timeout := opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	secs := strconv.FormatInt(int64((timeout+time.Second-1)/time.Second), 10)

	byID := make(map[int]int, len(actual)) // vmid -> index in actual, -1 = duplicate
	for i := range actual {
		if _, dup := byID[actual[i].VMID]; dup {
			byID[actual[i].VMID] = -1
			continue
		}
		byID[actual[i].VMID] = i
	}

	vmids := make([]int, 0, len(want.Guests))
	for id := range want.Guests {
		vmids = append(vmids, id)
	}
	slices.Sort(vmids)

	p := Plan{Guests: make([]GuestStatus, 0, len(vmids))}
	var d refDiffer
	for _, id := range vmids {
		g := want.Guests[id]
		if g == nil {
			g = &desired.Guest{}
		}
		st := GuestStatus{VMID: id}
		idx, ok := byID[id]
		switch {
		case !ok:
			st.Phase, st.Err = Error, "not found on this host"
		case idx < 0:
			st.Phase, st.Err = Error, "listed more than once by PVE; refusing to act on an ambiguous vmid"
		default:
			st.Lock = actual[idx].Lock
			p.Steps = d.guest(p.Steps, &st, g, &actual[idx], secs)
		}
		p.Guests = append(p.Guests, st)
	}
	return p
}

// refDiffer holds scratch space reused across guests.
type refDiffer struct {
	keys []string
	tags []string
	buf  []byte
}

// tagsEqual reports whether the desired tag set equals PVE's tags value
// without allocating in the common case: the desired tags are sorted and
// de-duplicated in scratch space and joined as normalize writes tags.
// Tags containing a separator (only possible in a Document built in Go)
// take normalize's general path.
func (d *refDiffer) tagsEqual(kind guest.Kind, tags []string, have string) bool {
	d.tags = append(d.tags[:0], tags...)
	for _, t := range d.tags {
		if t == "" || strings.ContainsAny(t, ";, \t\r\n") {
			return normalize.Equal(kind, "tags", strings.Join(tags, ";"), have)
		}
	}
	slices.Sort(d.tags)
	d.tags = slices.Compact(d.tags)
	d.buf = d.buf[:0]
	for i, t := range d.tags {
		if i > 0 {
			d.buf = append(d.buf, ';')
		}
		d.buf = append(d.buf, t...)
	}
	return string(d.buf) == normalize.Value(kind, "tags", have)
}

// guest plans one guest found on the host, appending its steps to steps and
// filling st.
func (d *refDiffer) guest(steps []Step, st *GuestStatus, g *desired.Guest, a *guest.Observed, timeout string) []Step {
	if g.Kind != "" && g.Kind != a.Kind {
		st.Phase = Error
		st.Err = "kind mismatch: desired " + string(g.Kind) + ", actual " + string(a.Kind)
		return steps
	}
	if err := g.CheckKind(a.Kind); err != nil {
		st.Phase = Error
		st.Err = "desired config is invalid for this " + string(a.Kind) + " guest; nothing is planned for it: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		return steps
	}
	managesConfig := len(g.Config) > 0 || g.Description != nil || g.Tags != nil
	if managesConfig {
		switch {
		case a.ConfigErr != "":
			st.Phase, st.Err = Error, "config could not be read: "+a.ConfigErr
			return steps
		case a.Config == nil:
			st.Phase, st.Err = Error, "config was not read"
			return steps
		case a.Digest == "":
			st.Phase, st.Err = Error, "config has no digest; refusing to write without PVE's concurrent-change check"
			return steps
		}
	}

	// One backing array for the config changes, the drift and the state
	// step's change: len(keys) config changes at most, plus "state".
	var changes, all, cfgChanges []Change
	var params map[string]string
	var deletes []string
	var resizes []Step
	var grows []bool
	set := func(key, from, to, param string) {
		if all == nil {
			all = make([]Change, 0, len(g.Config)+3)
		}
		all = append(all, Change{Key: key, From: from, To: to})
		if params == nil {
			params = make(map[string]string, len(g.Config)+2)
		}
		if opts, want, have, hasHave, ok := sizeChange(a.Kind, key, to, sizeRef(a, key, from)); ok {
			// The size is a resize; the config write keeps the rest, by
			// the next tick after a grow.
			grow := hasHave && want > have
			if !grow && !normalize.Equal(a.Kind, key, opts, from) {
				params[key] = normalize.Param(a.Kind, key, opts, from)
				cfgChanges = append(cfgChanges, Change{Key: key, From: from, To: params[key]})
			}
			was := ""
			if hasHave {
				was = propstr.FormatSize(have)
			}
			resizes = append(resizes, Step{
				Action:  action.Action{Op: action.Resize, VMID: a.VMID, Kind: a.Kind, Params: map[string]string{"disk": key, "size": propstr.FormatSize(want)}, Digest: a.Digest},
				Changes: []Change{{Key: key, From: was, To: propstr.FormatSize(want)}},
			})
			grows = append(grows, grow)
			return
		}
		cfgChanges = append(cfgChanges, Change{Key: key, From: from, To: to})
		if to == "" {
			deletes = append(deletes, key)
		} else {
			params[key] = param
		}
	}
	// Config keys, description and tags in one key order.
	d.keys = d.keys[:0]
	for k := range g.Config {
		d.keys = append(d.keys, k)
	}
	if g.Description != nil {
		d.keys = append(d.keys, "description")
	}
	if g.Tags != nil {
		d.keys = append(d.keys, "tags")
	}
	slices.Sort(d.keys)
	d.keys = slices.Compact(d.keys) // config.description in a Document built in Go
	for _, k := range d.keys {
		if g.Ignored(k) {
			continue
		}
		have := a.Config[k]
		var want string
		switch {
		case k == "description" && g.Description != nil:
			want = *g.Description
		case k == "tags" && g.Tags != nil:
			if d.tagsEqual(a.Kind, g.Tags, have) {
				continue
			}
			want = normalize.Value(a.Kind, "tags", strings.Join(g.Tags, ";"))
		default:
			want = g.Config[k]
		}
		if normalize.Equal(a.Kind, k, want, have) {
			continue
		}
		set(k, have, want, normalize.Param(a.Kind, k, want, have))
	}
	changes = all[:len(all):len(all)]

	// Run state, from the guest list.
	var stateChange *Change
	var stateOp action.Op
	if g.State != "" && !g.Ignored("state") && string(g.State) != a.Status {
		switch {
		case a.Template && g.State == desired.Running:
			st.Phase, st.Err = Error, "is a template; templates cannot be started"
		case g.State == desired.Running && a.Status == "stopped":
			stateOp = action.Start
		case g.State == desired.Stopped && a.Status == "running":
			stateOp = action.Shutdown
		default:
			st.Phase = Error
			st.Err = "run state " + strconv.Quote(a.Status) + " cannot be converged to " + string(g.State)
		}
		stateChange = &Change{Key: "state", From: a.Status, To: string(g.State)}
	}

	drift := changes
	if stateChange != nil {
		all = append(all, *stateChange)
		drift = all
	}
	st.Drift = drift

	if g.EffectiveMode() == desired.Observe {
		if st.Phase != Error {
			if len(drift) > 0 {
				st.Phase = DriftObserved
			} else {
				st.Phase = InSync
			}
		}
		return steps
	}

	if len(changes) > 0 {
		if len(deletes) > 0 {
			params["delete"] = strings.Join(deletes, ",")
		}
		if len(params) > 0 {
			steps = append(steps, Step{
				Action:  action.Action{Op: action.SetConfig, VMID: a.VMID, Kind: a.Kind, Params: params, Digest: a.Digest},
				Changes: cfgChanges,
			})
		}
		// Only the first write passes the planned digest; a grow after a
		// write goes without, a held resize keeps it.
		written := len(params) > 0
		for i, r := range resizes {
			if grows[i] {
				if written {
					r.Action.Digest = ""
				}
				written = true
			}
			steps = append(steps, r)
		}
	}
	if stateOp != "" {
		var sp map[string]string
		if stateOp == action.Shutdown {
			sp = map[string]string{"timeout": timeout}
		}
		steps = append(steps, Step{
			Action:  action.Action{Op: stateOp, VMID: a.VMID, Kind: a.Kind, Params: sp},
			Changes: drift[len(drift)-1:],
		})
	}
	if st.Phase != Error {
		if len(changes) > 0 || stateOp != "" {
			st.Phase = Converging
		} else {
			st.Phase = InSync
		}
	}
	return steps
}
