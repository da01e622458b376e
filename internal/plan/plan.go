// Package plan computes what steward must do on one host: a pure function
// from the host's desired state and its observed guests to an ordered list
// of actions, plus a status per desired guest.
//
// Rules (Diff):
//
//   - Only guests the desired state names are considered, and of those only
//     the fields it names; every other guest and key is never touched.
//   - Values are compared after normalization (package normalize), so PVE's
//     round-trip forms never read as drift.
//   - Steps are ordered by vmid; for one guest the config step comes before
//     the run-state step, so a guest starts with its new config.
//   - One config action per guest carries every changed key: Params are the
//     PVE form values to set (normalize.Param: booleans as 0/1, a net
//     device keeps its current MAC when desired names none; description and
//     tags as PVE's keys "description" and "tags", tags joined with ';'),
//     plus "delete" for a description or tag set managed as empty. Its Digest is the config
//     digest it was planned against, so a concurrent change fails the write.
//   - A disk or mount point whose desired value names the volume it holds
//     now with another size= is resized, not written: PVE's size= is
//     informational and a config write never grows a volume. The size
//     becomes a resize step (Params "disk" and the absolute "size", as
//     propstr.FormatSize writes it) after the guest's config step. If
//     other options of the value differ too, a grow resizes first and the
//     options are planned by the next tick, against the size PVE then
//     records; beside a shrink (which the classifier holds for a
//     signature) they are written now, with the size PVE has. Only the
//     guest's first write
//     carries its Digest; a grow after another write carries none, since
//     each write changes the digest (PVE refuses a shrink against the
//     volume's real size regardless).
//   - state running on a stopped guest plans a start; state stopped on a
//     running guest plans a shutdown with Params["timeout"] in seconds (the
//     executor shuts down gracefully, then stops).
//   - A kind that does not match the real guest is an Error with no action,
//     never a recreate. So is a guest whose kind desired state does not pin
//     and whose config PVE's schema refuses for the kind the host reports
//     (desired.Guest.CheckKind): nothing PVE would reject is planned.
//   - A desired guest absent from the host is created when its entry has a
//     create block (CreateStep: one create or clone step; the next ticks
//     plan its config, then its run state, as for any guest); in observe
//     mode that is reported as drift. Without a create block it is an
//     Error "not found on this host". Whether the vmid is free in the
//     whole cluster is the caller's check (the planner sees one host).
//   - A desired guest absent from the host that Options.Elsewhere shows
//     on another node of the cluster has moved (a migration, HA): Phase
//     Moved with the node, no step, never a create nor an error. Its
//     entry belongs under the host of that node now.
//   - A guest the host lists whose entry names another node of the
//     cluster (node:, Options.Node being this host's node) gets one
//     migrate step to that node and nothing else this tick (migrate.go);
//     a guest under PVE's migrate lock gets nothing at all.
//   - A guest whose config is needed (it manages config, description or
//     tags) but could not be read (ConfigErr), was not read (nil Config) or
//     has no digest gets an Error and no action at all, not even a run-state
//     action: the state step is ordered after the config step it may depend
//     on. A guest managing only its run state does not need its config and
//     is planned from the guest list alone.
//   - Values are compared with the config as written (PVE's pending values
//     applied), so a change PVE keeps pending until a restart is never
//     written again. Managed keys still pending (guest.Observed.Pending)
//     are listed in GuestStatus.Pending; with nothing else to do the phase
//     is PendingRestart. With restart: allowed, a running guest that has
//     nothing to write and no run-state change gets a reboot (Params
//     "timeout", the shutdown timeout), which applies them; config is
//     written one tick, the reboot follows the next, so a change PVE took
//     live never costs a reboot. A reboot applies every pending change of
//     the guest, managed or not.
//   - mode observe plans nothing; the drift is reported with Phase
//     DriftObserved (or PendingRestart when only pending keys remain).
//   - Keys in ignore (config keys, "description", "tags" or "state") are
//     neither reported nor corrected.
//   - A template whose desired state is running, or a guest in a run state
//     other than running or stopped (e.g. paused), gets an Error for its run
//     state; its config is still planned.
//   - A locked guest is planned as usual (the executor handles lock errors);
//     its lock is reported in its status.
//   - An empty desired host gives an empty plan.
//
// The package is pure (no I/O); Diff and Render are safe for concurrent use.
package plan

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
)

// DefaultShutdownTimeout is the graceful shutdown timeout when
// Options.ShutdownTimeout is not set.
const DefaultShutdownTimeout = 180 * time.Second

// Options tune Diff. The zero value uses the defaults.
type Options struct {
	// ShutdownTimeout is how long a graceful shutdown may take before the
	// executor stops the guest; <= 0 means DefaultShutdownTimeout. It is
	// sent to PVE in whole seconds, rounded up.
	ShutdownTimeout time.Duration
	// Elsewhere holds the guests the cluster lists on other nodes (GET
	// /cluster/resources), vmid -> node. A desired guest the host does
	// not list but Elsewhere does has moved (migrated, or moved by HA):
	// Phase Moved with its Node, and no step at all, never a create. Nil
	// means nothing is known of other nodes.
	Elsewhere map[int]string
	// Node is the PVE node this host's guests are on. A guest it lists
	// whose desired entry names another node (desired.Guest.Node) is
	// migrated there (see migrate.go). "" plans no migration.
	Node string
}

// Phase is a desired guest's sync status.
type Phase string

const (
	// InSync: every managed field matches.
	InSync Phase = "in_sync"
	// Converging: actions were planned to correct drift.
	Converging Phase = "converging"
	// DriftObserved: the guest is in observe mode and differs.
	DriftObserved Phase = "drift_observed"
	// PendingRestart: every managed field is written, but PVE keeps some
	// of them pending until the guest restarts (GuestStatus.Pending), and
	// no restart is planned (restart: never, observe mode, or the guest is
	// stopped).
	PendingRestart Phase = "pending_restart"
	// Error: the guest cannot be planned (Err says why); see the package
	// doc for which errors still allow actions.
	Error Phase = "error"
	// Moved: the guest is not on this host's node but on another node of
	// its cluster (GuestStatus.Node); nothing is planned for it here.
	Moved Phase = "moved"
)

// Change is one managed field that differs: Key is the PVE config key (or
// "state"), From the actual value ("" = absent), To the desired value ("" =
// remove). Values are raw, as PVE returned them and as desired state wrote
// them.
type Change struct {
	Key, From, To string
}

// Step is one action with the changes it makes, for rendering.
type Step struct {
	Action  action.Action
	Changes []Change
}

// GuestStatus is the outcome of planning one desired guest.
type GuestStatus struct {
	VMID  int
	Phase Phase
	// Drift is every managed field that differs (corrected or not), config
	// keys in key order then "state".
	Drift []Change
	// Err says what is wrong when Phase is Error.
	Err string
	// Lock is the guest's PVE lock ("" when unlocked or not found).
	Lock string
	// Pending lists the managed keys whose written value PVE keeps
	// pending until the guest restarts (see guest.Observed.Pending).
	Pending []string
	// Node is the node a Moved guest is on now; "" otherwise.
	Node string
}

// Plan is the result of Diff: Steps to execute in order, and one status per
// desired guest, ordered by vmid. Drift and Changes slices share backing
// arrays (a guest's Drift with its steps' Changes, and different guests'
// slices with each other); each slice's capacity ends at its length, so
// appending to one copies, but treat a Plan as read-only.
type Plan struct {
	Steps  []Step
	Guests []GuestStatus
}

// Diff plans the host: want is its desired state (nil or empty plans
// nothing), actual its observed guests. It does not modify its arguments;
// the returned Plan shares no maps with them except that Change values are
// the strings of actual and want.
func Diff(want *desired.Host, actual []guest.Observed, opts Options) Plan {
	if want == nil || len(want.Guests) == 0 {
		return Plan{}
	}
	timeout := opts.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	secs := strconv.FormatInt(int64((timeout+time.Second-1)/time.Second), 10)

	// Desired guests by vmid, and actual guests sorted by vmid, merged:
	// no map lookups per guest.
	ids := make([]int, 0, len(want.Guests))
	gs := make([]*desired.Guest, 0, len(want.Guests))
	for id, g := range want.Guests {
		ids = append(ids, id)
		gs = append(gs, g)
	}
	wo := order(ids)
	aids := make([]int, len(actual))
	for i := range actual {
		aids[i] = actual[i].VMID
	}
	ao := order(aids)

	p := Plan{Guests: make([]GuestStatus, 0, len(ids))}
	var d differ
	j := 0
	for k, w := range wo {
		pos := uint32(w)
		id, g := ids[pos], gs[pos]
		if g == nil {
			g = &desired.Guest{}
		}
		st := GuestStatus{VMID: id}
		for j < len(ao) && aids[uint32(ao[j])] < id {
			j++
		}
		switch {
		case j == len(ao) || aids[uint32(ao[j])] != id:
			if node, ok := opts.Elsewhere[id]; ok {
				st.Phase, st.Node = Moved, node
				break
			}
			var src *guest.Observed
			if c := g.Create; c.IsClone() {
				src = findObserved(actual, aids, ao, c.Clone)
			}
			p.Steps = missing(p.Steps, &st, id, g, src)
		case j+1 < len(ao) && aids[uint32(ao[j+1])] == id:
			st.Phase, st.Err = Error, "listed more than once by PVE; refusing to act on an ambiguous vmid"
		default:
			a := &actual[uint32(ao[j])]
			st.Lock = a.Lock
			d.done, d.left = k, len(ids)-k
			if wantsMigration(g, a, opts.Node) {
				var handled bool
				if p.Steps, handled = d.migrateStep(p.Steps, &st, g, a, opts.Node, secs); handled {
					break
				}
			}
			p.Steps = d.guest(p.Steps, &st, g, a, secs)
			if wantsMigration(g, a, opts.Node) && g.EffectiveMode() == desired.Observe {
				st.Drift = append(slices.Clip(st.Drift), Change{Key: "node", From: opts.Node, To: g.Node})
				if st.Phase != Error {
					st.Phase = DriftObserved
				}
			}
		}
		p.Guests = append(p.Guests, st)
	}
	return p
}

// findObserved is the guest of actual with vmid id, or nil (nil too when
// PVE lists it more than once); aids are actual's vmids, ao their order.
func findObserved(actual []guest.Observed, aids []int, ao []uint64, id int) *guest.Observed {
	i, _ := slices.BinarySearchFunc(ao, id, func(k uint64, id int) int { return cmp.Compare(aids[uint32(k)], id) })
	if i == len(ao) || aids[uint32(ao[i])] != id || (i+1 < len(ao) && aids[uint32(ao[i+1])] == id) {
		return nil
	}
	return &actual[uint32(ao[i])]
}

// order returns the positions of ids sorted by id, each in the low 32 bits
// of an element. When every id fits in 32 bits (PVE's vmids do) it sorts
// packed id<<32|position keys, several times faster than sorting with a
// comparison function. len(ids) must be below 2^32.
func order(ids []int) []uint64 {
	keys := make([]uint64, len(ids))
	for i, id := range ids {
		if id < 0 || id > math.MaxUint32 {
			for i := range keys {
				keys[i] = uint64(i)
			}
			// Other ids (not PVE's): positions sorted by id, then position.
			slices.SortFunc(keys, func(a, b uint64) int { return cmp.Or(cmp.Compare(ids[a], ids[b]), cmp.Compare(a, b)) })
			return keys
		}
		keys[i] = uint64(id)<<32 | uint64(i)
	}
	slices.Sort(keys)
	return keys
}

// differ holds scratch space reused across guests.
type differ struct {
	done    int       // guests planned before this one
	left    int       // guests left to plan, this one included
	vals    []pending // managed keys and values, before comparing
	pending []pending // managed keys that differ
	tags    []string
	buf     []byte
	slab    []Change // changes are carved from it, see take
}

// grow makes room in steps for the steps of this guest (1 or 2). Once a
// sample of guests is planned it grows by what the guests left will add
// at the rate seen so far, plus an eighth, and by at least half (doubling
// before that); never beyond the two steps per guest the guests left can
// add. A large plan is thus allocated about once, and in total never more
// than three times its size.
func (d *differ) grow(steps []Step) []Step {
	if cap(steps)-len(steps) >= 2 {
		return steps
	}
	n := len(steps)
	by := max(n, 8)
	if d.done >= 64 {
		est := n * d.left / d.done
		by = max(n/2, est+est/8, 8)
	}
	return slices.Grow(steps, min(by, 2*d.left))
}

// pending is a managed key with its actual (from) and desired (to) values
// and, once compared, its normalization row.
type pending struct {
	key, from, to string
	row           *normalize.Row
}

// slabSize is how many Changes one allocation holds.
const slabSize = 512

// take returns n zeroed Changes with length and capacity n, carved from a
// shared slab to save an allocation per guest (appending to the result
// copies, so guests never share elements).
func (d *differ) take(n int) []Change {
	if n > slabSize/4 {
		return make([]Change, n)
	}
	if len(d.slab) < n {
		d.slab = make([]Change, slabSize)
	}
	c := d.slab[:n:n]
	d.slab = d.slab[n:]
	return c
}

// tagsEqual reports whether the desired tag set equals PVE's tags value
// without allocating in the common case: the desired tags are sorted and
// de-duplicated in scratch space and joined as normalize writes tags.
// Tags containing a separator (only possible in a Document built in Go)
// take normalize's general path.
func (d *differ) tagsEqual(kind guest.Kind, tags []string, have string) bool {
	d.tags = append(d.tags[:0], tags...)
	for _, t := range d.tags {
		if t == "" || hasTagSep(t) {
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

// hasTagSep reports whether t contains a character PVE takes as a tag
// separator.
func hasTagSep(t string) bool {
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case ';', ',', ' ', '\t', '\r', '\n':
			return true
		}
	}
	return false
}

// guest plans one guest found on the host, appending its steps to steps and
// filling st.
func (d *differ) guest(steps []Step, st *GuestStatus, g *desired.Guest, a *guest.Observed, timeout string) []Step {
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

	// Managed keys and their values, unordered: desired config keys, with
	// description and tags taken from their own fields when set. The
	// actual values are all looked up first, back to back, so that the
	// cache misses on a cold config map overlap; then they are compared.
	d.vals = d.vals[:0]
	for k, want := range g.Config {
		if k == "description" && g.Description != nil || k == "tags" && g.Tags != nil || g.Ignored(k) {
			continue
		}
		d.vals = append(d.vals, pending{key: k, from: a.Config[k], to: want})
	}
	var descHave, tagsHave string
	manageDesc := g.Description != nil && !g.Ignored("description")
	if manageDesc {
		descHave = a.Config["description"]
	}
	manageTags := g.Tags != nil && !g.Ignored("tags")
	if manageTags {
		tagsHave = a.Config["tags"]
	}

	tbl := normalize.For(a.Kind)
	d.pending = d.pending[:0]
	for _, v := range d.vals {
		if v.to == v.from {
			continue
		}
		v.row = tbl.Lookup(v.key)
		if !v.row.Equal(v.to, v.from) {
			d.pending = append(d.pending, v)
		}
	}
	if manageDesc {
		want := *g.Description
		if r := tbl.Lookup("description"); !r.Equal(want, descHave) {
			d.pending = append(d.pending, pending{"description", descHave, want, r})
		}
	}
	if manageTags && !d.tagsEqual(a.Kind, g.Tags, tagsHave) {
		r := tbl.Lookup("tags")
		want := normalize.Value(a.Kind, "tags", strings.Join(g.Tags, ";"))
		if !r.Equal(want, tagsHave) {
			d.pending = append(d.pending, pending{"tags", tagsHave, want, r})
		}
	}
	if len(d.pending) > 1 {
		slices.SortFunc(d.pending, func(x, y pending) int { return strings.Compare(x.key, y.key) })
	}

	// Managed keys PVE keeps pending until a restart.
	var waiting []string
	for _, k := range a.Pending {
		if g.Ignored(k) {
			continue
		}
		if _, ok := g.Config[k]; ok || (k == "description" && manageDesc) || (k == "tags" && manageTags) {
			waiting = append(waiting, k)
		}
	}
	st.Pending = waiting

	// Run state, from the guest list.
	var stateOp action.Op
	stateChanged := false
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
		stateChanged = true
	}

	// One backing array for the drift: config changes in key order, then
	// the state change.
	n := len(d.pending)
	var drift, changes []Change
	if stateChanged {
		drift = d.take(n + 1)
		drift[n] = Change{Key: "state", From: a.Status, To: string(g.State)}
	} else if n > 0 {
		drift = d.take(n)
	}
	if n > 0 {
		changes = drift[:n:n]
	}
	for i, pc := range d.pending {
		drift[i] = Change{Key: pc.key, From: pc.from, To: pc.to}
	}
	st.Drift = drift

	if g.EffectiveMode() == desired.Observe {
		if st.Phase != Error {
			switch {
			case len(drift) > 0:
				st.Phase = DriftObserved
			case len(waiting) > 0:
				st.Phase = PendingRestart
			default:
				st.Phase = InSync
			}
		}
		return steps
	}

	reboot := len(waiting) > 0 && len(changes) == 0 && stateOp == "" && st.Phase != Error &&
		a.Status == "running" && g.EffectiveRestart() == desired.RestartAllowed
	if len(changes) > 0 || stateOp != "" || reboot {
		steps = d.grow(steps)
	}
	if len(changes) > 0 {
		params := make(map[string]string, len(changes))
		var deletes []string
		var resizes []sizeStep
		var cfgChanges []Change // set once a size moved to a resize step
		for i, pc := range d.pending {
			if opts, want, have, hasHave, ok := sizeChange(a.Kind, pc.key, pc.to, sizeRef(a, pc.key, pc.from)); ok {
				if cfgChanges == nil {
					cfgChanges = append(make([]Change, 0, len(changes)), changes[:i]...)
				}
				r := resizeStep(a, pc.key, want, have, hasHave)
				// A grow runs now and the key's other options wait for the
				// next tick, planned against the size PVE then records (see
				// resize.go); beside a held resize they are written now.
				if !r.grows && !pc.row.Equal(opts, pc.from) {
					v := pc.row.Param(opts, pc.from) // keeps the size PVE has
					params[pc.key] = v
					cfgChanges = append(cfgChanges, Change{Key: pc.key, From: pc.from, To: v})
				}
				resizes = append(resizes, r)
				continue
			}
			if cfgChanges != nil {
				cfgChanges = append(cfgChanges, changes[i])
			}
			if pc.to == "" {
				deletes = append(deletes, pc.key)
			} else {
				params[pc.key] = pc.row.Param(pc.to, pc.from)
			}
		}
		if cfgChanges == nil {
			cfgChanges = changes
		}
		if len(deletes) > 0 {
			params["delete"] = strings.Join(deletes, ",")
		}
		if len(params) > 0 {
			steps = append(steps, Step{
				Action:  action.Action{Op: action.SetConfig, VMID: a.VMID, Kind: a.Kind, Params: params, Digest: a.Digest},
				Changes: cfgChanges[:len(cfgChanges):len(cfgChanges)],
			})
		}
		// Each write changes the digest, so only the guest's first write
		// can pass the one it was planned against. A grow after it goes
		// without (PVE refuses a shrink against the volume's real size
		// whatever the config says); a shrink or a grow from an unknown
		// size is held for a signature, which binds the digest.
		digest := a.Digest
		if len(params) > 0 {
			digest = ""
		}
		for _, r := range resizes {
			if r.grows {
				r.Action.Digest, digest = digest, ""
			}
			steps = append(steps, r.Step)
		}
	}
	if stateOp != "" {
		var sp map[string]string
		if stateOp == action.Shutdown {
			sp = map[string]string{"timeout": timeout}
		}
		steps = append(steps, Step{
			Action:  action.Action{Op: stateOp, VMID: a.VMID, Kind: a.Kind, Params: sp},
			Changes: drift[n : n+1 : n+1],
		})
	}
	if reboot {
		rc := make([]Change, len(waiting))
		for i, k := range waiting {
			rc[i] = Change{Key: k, From: "pending", To: "applied by reboot"}
		}
		steps = append(steps, Step{
			Action:  action.Action{Op: action.Reboot, VMID: a.VMID, Kind: a.Kind, Params: map[string]string{"timeout": timeout}},
			Changes: rc,
		})
	}
	if st.Phase != Error {
		switch {
		case len(changes) > 0 || stateOp != "" || reboot:
			st.Phase = Converging
		case len(waiting) > 0:
			st.Phase = PendingRestart
		default:
			st.Phase = InSync
		}
	}
	return steps
}
