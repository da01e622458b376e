package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

// ctCloneDoc clones the container template 9001 into 140 (how: the
// create block), sets it up and starts it.
func ctCloneDoc(how string) string {
	return `apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      140:
        kind: lxc
        state: running
        description: cloned container
        tags: [web]
        create: ` + how + `
        config:
          hostname: ct-140
          cores: 2
          memory: 1024
          nameserver: 1.1.1.1
          searchdomain: example.com
`
}

// A container cloned from a template converges like a QEMU clone: the
// clone (with its hostname), then the managed config and the start, then
// nothing; the clone is unprivileged as its template.
func TestCloneCTConverges(t *testing.T) {
	for _, tc := range []struct{ name, how, rootfs string }{
		{"linked", "{clone: 9001}", "local-lvm:vm-140-disk-0,size=8G"},
		{"full", "{clone: 9001, full: true, storage: local-lvm}", "local-lvm:vm-140-disk-0,size=8G"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, sim.Options{Templates: true})
			doc := ctCloneDoc(tc.how)
			n, rep := converge(t, h, doc, 5)
			if n != 2 {
				t.Errorf("ticks that changed something = %d; want 2 (clone, then config and start)", n)
			}
			if m := h.mutations(); !slices.Equal(m, []string{"clone 9001", "config 140", "start 140"}) {
				t.Errorf("mutations = %v; want clone, config, start", m)
			}
			clone := h.srv.Sim.Mutations()[0]
			if clone.Params["hostname"] != "ct-140" || clone.Params["unprivileged"] != "" || clone.Path != "/nodes/pve/lxc/9001/clone" {
				t.Errorf("clone call %s %v; want hostname ct-140 and no unprivileged parameter (PVE takes none)", clone.Path, clone.Params)
			}
			inSync(t, rep, 140)
			g, _ := h.srv.Sim.Guest(140)
			if g.Kind != guest.LXC || g.Status != "running" || g.Config["rootfs"] != tc.rootfs || g.Config["unprivileged"] != "1" ||
				g.Config["hostname"] != "ct-140" || g.Config["nameserver"] != "1.1.1.1" || g.Config["tags"] != "web" || g.Config["template"] != "" {
				t.Errorf("guest 140 = %s %v; want a running unprivileged clone set up as desired", g.Status, g.Config)
			}
			if p := h.j.Provenance(140); !p.CreatedByAgent || !p.Created || !p.Started {
				t.Errorf("provenance = %+v; want created by the agent, then started", p)
			}
			if tpl, _ := h.srv.Sim.Guest(sim.TemplateCTVMID); tpl.Lock != "" {
				t.Errorf("template left locked %q", tpl.Lock)
			}
			h.open()
			if rep := h.tick(mustParse(t, doc)); len(rep.Results) != 0 || len(rep.Pending) != 0 {
				t.Errorf("after restart: results %+v, pending %+v; want none (no drift after creation)", rep.Results, rep.Pending)
			}
		})
	}
}

// privilegedTemplate is a container template without unprivileged: 1.
func privilegedTemplate(vmid int) sim.GuestSpec {
	return lxcGuest(vmid, false, map[string]string{"template": "1", "rootfs": fmt.Sprintf("local-lvm:base-%d-disk-0,size=8G", vmid)})
}

// A clone of a privileged template would be a privileged container: held
// for a signature (the payload says unprivileged=0), and once signed it
// runs exactly once.
func TestCloneCTPrivilegedHeldThenSigned(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true}, privilegedTemplate(9002))
	env := signingEnv(t)
	useVerifier(h, env)
	doc := ctCloneDoc("{clone: 9002}")
	want := mustParse(t, doc)
	rep := h.tick(want)
	if len(h.mutations()) != 0 || len(rep.Pending) != 1 || rep.Guests[0].Phase != engine.PhasePendingSignature {
		t.Fatalf("mutations %v, pending %+v, guests %+v; want the clone held for a signature", h.mutations(), rep.Pending, rep.Guests)
	}
	d := rep.Pending[0]
	if d.Action.Op != action.Clone || d.Action.Params["unprivileged"] != "0" || !strings.Contains(d.Verdict.Reason, "container 9002 is privileged") {
		t.Fatalf("pending %+v (%s); want the clone of 9002 with unprivileged=0, held as privileged", d.Action, d.Verdict.Reason)
	}
	// Without a signature it never runs.
	rep = h.tick(want, unsignedJob(env, d.Action))
	if len(h.mutations()) != 0 {
		t.Fatalf("unsigned job ran: %v", h.mutations())
	}
	job := signedop.Job{Payload: d.Payload, Signatures: [][]byte{env.Sign(d.Payload, env.Alice.Signer)}}
	rep = h.tick(want, job)
	if len(rep.Rejected) != 0 {
		t.Fatalf("signed job rejected: %+v", rep.Rejected)
	}
	if m := h.mutations(); !slices.Equal(m, []string{"clone 9002"}) {
		t.Fatalf("mutations %v; want the signed clone once", m)
	}
	if g, _ := h.srv.Sim.Guest(140); g.Config["unprivileged"] != "" || g.Config["hostname"] != "ct-140" {
		t.Errorf("clone config %v; want a privileged container (as signed) named ct-140", g.Config)
	}
	h.tick(want, job)
	if n := len(slices.DeleteFunc(h.mutations(), func(m string) bool { return m != "clone 9002" })); n != 1 {
		t.Errorf("replayed job: %d clones; want 1 (%v)", n, h.mutations())
	}
}

// flipsSource answers the re-read of the clone's source (GuestConfig)
// with a privileged container: the template changed between the plan and
// the clone.
type flipsSource struct {
	engine.Reader
	vmid int
}

func (f flipsSource) GuestConfig(ctx context.Context, node string, kind guest.Kind, vmid int) (pve.GuestConfig, error) {
	c, err := f.Reader.GuestConfig(ctx, node, kind, vmid)
	if err == nil && vmid == f.vmid {
		c.Values["unprivileged"] = "0"
	}
	return c, err
}

// A clone planned as unprivileged whose source is privileged when the
// agent re-reads it right before the call is not run, and nothing is
// journaled for it.
func TestCloneCTSourceChangedNotRun(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	h.eng.PVE = flipsSource{Reader: h.client, vmid: sim.TemplateCTVMID}
	rep := h.tick(mustParse(t, ctCloneDoc("{clone: 9001}")))
	if len(h.mutations()) != 0 {
		t.Fatalf("mutations %v; want none", h.mutations())
	}
	if len(rep.Results) != 1 || rep.Results[0].Err == nil || !strings.Contains(rep.Results[0].Err.Error(), "no longer unprivileged") {
		t.Fatalf("results %+v; want the clone refused as its source is no longer unprivileged", rep.Results)
	}
	if p := h.j.Provenance(140); p.CreatedByAgent || p.CreateFailed {
		t.Errorf("provenance %+v; a clone that never ran gives none", p)
	}
	if ops := h.j.InFlight(); len(ops) != 0 {
		t.Errorf("in flight: %+v; want nothing journaled", ops)
	}
}

// A container is cloned from a container template and a QEMU guest from
// a QEMU template: the other way round is an error, never a call.
func TestCloneKindMismatch(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	for _, tc := range []struct{ kind, src string }{{"lxc", "9000"}, {"qemu", "9001"}} {
		rep := h.tick(mustParse(t, fmt.Sprintf(`apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      150:
        kind: %s
        create: {clone: %s}
`, tc.kind, tc.src)))
		g := rep.Guests[0]
		if g.Phase != engine.PhaseError || !strings.Contains(g.Err, "cannot clone: source "+tc.src) || len(rep.Results) != 0 {
			t.Errorf("%s from %s: guest %+v, results %+v; want an error and no action", tc.kind, tc.src, g, rep.Results)
		}
	}
	if m := h.mutations(); len(m) != 0 {
		t.Errorf("mutations %v; want none", m)
	}
}

// PVE locks a container template for the whole of each clone and refuses
// another clone of it meanwhile; the agent runs the clones of one
// template one after another (the template's queue), so several in one
// tick all succeed at the first try.
func TestCloneCTSeveralFromOneTemplate(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true, CloneDuration: 30 * time.Millisecond})
	var b strings.Builder
	b.WriteString("apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve:\n    guests:\n")
	for id := 141; id <= 144; id++ {
		fmt.Fprintf(&b, "      %d:\n        kind: lxc\n        create: {clone: 9001}\n        config: {hostname: ct-%d}\n", id, id)
	}
	rep := h.tick(mustParse(t, b.String()))
	clones := 0
	for _, r := range rep.Results {
		if r.Err != nil {
			t.Errorf("%s failed: %v", r.Action, r.Err)
		}
		if r.Action.Op == action.Clone {
			clones++
		}
	}
	if clones != 4 || !slices.Equal(h.mutations(), []string{"clone 9001", "clone 9001", "clone 9001", "clone 9001"}) {
		t.Fatalf("clones %d, mutations %v; want four clones in the first tick", clones, h.mutations())
	}
	for id := 141; id <= 144; id++ {
		if g, ok := h.srv.Sim.Guest(id); !ok || g.Config["hostname"] != fmt.Sprintf("ct-%d", id) || g.Lock != "" {
			t.Errorf("guest %d: %+v (found %v)", id, g, ok)
		}
	}
}

// A container clone whose task fails leaves nothing and unlocks the
// template; the next attempt clones again and converges.
func TestCloneCTTaskFailureRetried(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	doc := ctCloneDoc("{clone: 9001, full: true}")
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	rep := h.tick(mustParse(t, doc))
	h.srv.Sim.SetFaults(sim.Faults{})
	if len(rep.Results) != 1 || rep.Results[0].Err == nil {
		t.Fatalf("results %+v; want the clone task's failure reported", rep.Results)
	}
	if _, ok := h.srv.Sim.Guest(140); ok {
		t.Fatal("a failed clone left guest 140")
	}
	if tpl, _ := h.srv.Sim.Guest(sim.TemplateCTVMID); tpl.Lock != "" {
		t.Fatalf("a failed clone left the template locked %q", tpl.Lock)
	}
	h.passBackoff()
	converge(t, h, doc, 5)
	if m := h.mutations(); !slices.Equal(m, []string{"clone 9001", "config 140", "start 140"}) {
		t.Errorf("mutations = %v; want one clone that succeeded, then config and start", m)
	}
}

// A container clone interrupted at every crash point runs exactly once:
// recovery finds its vzclone task on the template or proves it never
// started.
func TestCloneCTSurvivesCrash(t *testing.T) {
	doc := ctCloneDoc("{clone: 9001, full: true, storage: local-lvm}")
	for _, point := range []string{crashpoint.BeforeBegin, crashpoint.AfterBegin, crashpoint.AfterTaskReturned,
		crashpoint.AfterTaskRecorded, crashpoint.AfterCall, crashpoint.AfterEnd} {
		t.Run(point, func(t *testing.T) {
			h := newHarness(t, sim.Options{Templates: true})
			ctx, cancel := context.WithCancel(t.Context())
			crashAt(t, point, cancel)
			h.eng.Tick(ctx, mustParse(t, doc), nil)
			crashpoint.SetHook(nil)
			h.open()
			_, rep := converge(t, h, doc, 5)
			inSync(t, rep, 140)
			if m := h.mutations(); !slices.Equal(m, []string{"clone 9001", "config 140", "start 140"}) {
				t.Fatalf("mutations = %v; want the clone exactly once", m)
			}
			if got := h.j.InFlight(); len(got) != 0 {
				t.Errorf("ops left in flight: %+v", got)
			}
			if p := h.j.Provenance(140); !p.CreatedByAgent {
				t.Errorf("provenance %+v; want the guest the agent's", p)
			}
		})
	}
}

// A container clone interrupted before its task was known, whose guest
// now exists under PVE's create lock (a clone still running, or one that
// died), is not taken for the agent's and is never run again.
func TestInterruptedCloneCTFindsLockedGuest(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	doc := ctCloneDoc("{clone: 9001}")
	ctx, cancel := context.WithCancel(t.Context())
	crashAt(t, crashpoint.AfterBegin, cancel)
	h.eng.Tick(ctx, mustParse(t, doc), nil)
	crashpoint.SetHook(nil)
	spec := lxcGuest(140, false, nil)
	spec.Lock = "create"
	if err := h.srv.Sim.AddGuest(spec); err != nil {
		t.Fatal(err)
	}
	h.open()
	if got := h.j.InFlight(); len(got) != 0 {
		t.Fatalf("ops left in flight: %+v", got)
	}
	if p := h.j.Provenance(140); p.CreatedByAgent {
		t.Errorf("provenance %+v; a guest found locked is not provably the agent's", p)
	}
	h.tick(mustParse(t, doc))
	if slices.Contains(h.mutations(), "clone 9001") {
		t.Errorf("mutations %v; the clone must not run again", h.mutations())
	}
}

// The hub's plan judges a container clone as the agent does: the report
// carries the template's unprivileged (the clone inherits it), so the
// clone of an unprivileged template is benign there too, and that of a
// privileged one held.
func TestHubPlanOfCloneCTMatchesAgent(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string
	}{{"9001", "benign"}, {"9002", "destructive"}} {
		h := newHarness(t, sim.Options{Templates: true, CloneDuration: time.Hour}, privilegedTemplate(9002))
		want := mustParse(t, ctCloneDoc("{clone: "+tc.src+"}"))
		rep, err := h.eng.PlanOnly(t.Context(), want, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.DecodeReport(mustEncode(t, rep.Wire()))
		if err != nil {
			t.Fatal(err)
		}
		agent := ""
		for _, st := range rep.Plan.Steps {
			if st.Action.Op == action.Clone {
				agent = string(classify.Classify(st.Action, nil, classify.Provenance{}).Class)
			}
		}
		hubClass := ""
		for _, st := range hub.PlanReport("pve", 1, want, got).Steps {
			if st.Action.Op == "clone" {
				hubClass = st.Class
			}
		}
		if agent != tc.want || hubClass != tc.want {
			t.Errorf("clone of %s: agent %q, hub %q; want both %q", tc.src, agent, hubClass, tc.want)
		}
	}
}

// A full container clone allocates its template's mount points on the
// target storage: the agent reads the template's config and holds a clone
// that would fill the storage past its headroom threshold.
func TestCloneCTFullHeldByHeadroom(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	used, _ := h.srv.Sim.StorageUsed("local-lvm")
	h.eng.Headroom = map[string]float64{"local-lvm": float64(used+4<<30) / 374538165248} // room for 4 GiB, the rootfs is 8
	rep := h.tick(mustParse(t, ctCloneDoc("{clone: 9001, full: true, storage: local-lvm}")))
	if len(h.mutations()) != 0 || len(rep.Pending) != 1 || !strings.Contains(rep.Pending[0].Reason, "storage headroom") {
		var why []string
		for _, d := range rep.Pending {
			why = append(why, d.Action.String()+": "+d.Reason)
		}
		t.Fatalf("mutations %v, pending %q; want the full clone held by the storage headroom", h.mutations(), why)
	}
	// A linked clone allocates nothing up front and runs.
	rep = h.tick(mustParse(t, ctCloneDoc("{clone: 9001}")))
	if m := h.mutations(); !slices.Equal(m, []string{"clone 9001"}) {
		t.Fatalf("mutations %v, %d pending; want the linked clone run", m, len(rep.Pending))
	}
}

// A container clone that failed and left remains: the agent destroys them
// (benign only because its journal proves they are its own failure,
// unchanged) and clones again.
func TestFailedCloneCTRemainsCleanedUp(t *testing.T) {
	h := newHarness(t, sim.Options{Templates: true})
	doc := ctCloneDoc("{clone: 9001}")
	want := mustParse(t, doc)
	h.srv.Sim.SetFaults(sim.Faults{TaskFailRate: 1})
	h.eng.PVE = leavesRemains{Reader: h.client, sim: h.srv.Sim, spec: lxcGuest(140, false, nil), once: new(sync.Once)}
	h.tick(want)
	h.srv.Sim.SetFaults(sim.Faults{})
	h.eng.PVE = h.client
	if p := h.j.Provenance(140); !p.CreateFailed || p.RemainsDigest == "" {
		t.Fatalf("provenance %+v; want the failed clone's remains recorded", p)
	}
	h.passBackoff()
	if rep := h.tick(want); !slices.Equal(h.mutations(), []string{"destroy 140"}) {
		t.Fatalf("mutations %v (guests %+v); want the remains destroyed", h.mutations(), rep.Guests)
	}
	converge(t, h, doc, 5)
	if m := h.mutations(); !slices.Equal(m, []string{"destroy 140", "clone 9001", "config 140", "start 140"}) {
		t.Errorf("mutations = %v; want the remains destroyed, then the clone converged", m)
	}
}
