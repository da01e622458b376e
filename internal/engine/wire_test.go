package engine_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/engine"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/sim"
	"github.com/steward-pve/steward/internal/wire"
)

// reportFields says, for every leaf of engine.Report, where Wire puts it
// (or why it has no place of its own). A field added to the engine's
// report fails TestWireCoversEveryField until it is converted and listed.
var reportFields = map[string]string{
	"Host": "host", "Node": "facts.node", "Time": "time",
	"Observed.VMID": "guests.vmid", "Observed.Kind": "guests.kind", "Observed.Name": "guests.name",
	"Observed.Status": "guests.status", "Observed.Lock": "guests.lock", "Observed.Template": "guests.template",
	"Observed.Config":                  "guests.config (the managed keys, normalized)",
	"Observed.Digest":                  "guests.digest",
	"Observed.ConfigErr":               "guests.config_error",
	"Unmanaged":                        "guests.observed (the adoptable keys of unmanaged guests, normalized)",
	"UnmanagedDigests":                 "guests.digest of unmanaged guests (the digest of the config read for guests.observed)",
	"Guests.Provenance.CreatedByAgent": "sync.provenance.created_by_agent",
	"Guests.Provenance.CreateFailed":   "sync.provenance.create_failed",
	"Guests.Provenance.Fresh":          "sync.provenance.fresh",
	"Guests.Provenance.Headroom":       "never set on a guest's provenance (a per-action finding, in the pending reason)",
	"Guests.Provenance.Snapshot":       "never set on a guest's provenance (a per-action finding, judged by the agent)",
	"Want":                             "guests.config (which keys are managed)",
	"Plan.Steps.Action.Op":             "planned steps become actions (run or skipped) or pending",
	"Plan.Steps.Action.VMID":           "as Plan.Steps.Action.Op", "Plan.Steps.Action.Kind": "as Plan.Steps.Action.Op",
	"Plan.Steps.Action.Params": "as Plan.Steps.Action.Op", "Plan.Steps.Action.Digest": "as Plan.Steps.Action.Op",
	"Plan.Steps.Changes.Key":  "sync.drift (a step's changes are its guest's drift)",
	"Plan.Steps.Changes.From": "sync.drift", "Plan.Steps.Changes.To": "sync.drift",
	"Plan.Guests.VMID": "sync.vmid", "Plan.Guests.Phase": "sync.phase (via Guests.Phase)",
	"Plan.Guests.Drift.Key": "sync.drift", "Plan.Guests.Drift.From": "sync.drift", "Plan.Guests.Drift.To": "sync.drift",
	"Plan.Guests.Err": "sync.reason (via Guests.Err)", "Plan.Guests.Lock": "sync.lock",
	"Guests.VMID": "sync.vmid", "Guests.Phase": "sync.phase", "Guests.Drift.Key": "sync.drift.key",
	"Guests.Drift.From": "sync.drift.from", "Guests.Drift.To": "sync.drift.to", "Guests.Err": "sync.reason",
	"Guests.NextRetry":       "sync.next_retry",
	"Guests.Snapshots.Every": "sync.snapshots.every", "Guests.Snapshots.Keep": "sync.snapshots.keep",
	"Guests.Snapshots.Own.Name": "sync.snapshots.snapshots.name", "Guests.Snapshots.Own.Taken": "sync.snapshots.snapshots.taken",
	"Guests.Snapshots.LastTaken": "sync.snapshots.last_taken", "Guests.Snapshots.NextDue": "sync.snapshots.next_due",
	"Guests.Snapshots.Held": "sync.snapshots.held", "Guests.Snapshots.Note": "sync.snapshots.note",
	"Guests.Node":         "sync.node",
	"Plan.Guests.Node":    "sync.node (via Guests.Node)",
	"Guests.Pending":      "sync.pending",
	"Observed.Pending":    "sync.pending (the managed keys among them, via Guests.Pending)",
	"Observed.Current":    "agent-local: the values the guest runs with, read to plan a resize of a pending disk; the hub sees the config as written (guests.config) and sync.pending",
	"Plan.Guests.Pending": "sync.pending (via Guests.Pending)",
	"Results.Action.Op":   "actions.action.op", "Results.Action.VMID": "actions.action.vmid",
	"Results.Action.Kind": "actions.action.kind", "Results.Action.Params": "actions.action.params",
	"Results.Action.Digest": "actions.action.digest", "Results.Source": "actions.source", "Results.Job": "actions.job",
	"Results.Class": "actions.class", "Results.Outcome.UPID": "actions.upid",
	"Results.Outcome.ExitStatus": "actions.exit_status", "Results.Outcome.Warnings": "actions.warnings",
	"Results.Err": "actions.error", "Results.Skipped": "actions.skipped",
	"Results.Skip":      "actions.skipped (the agent-local kind of the reason the text gives)",
	"Pending.Action.Op": "pending.action.op", "Pending.Action.VMID": "pending.action.vmid",
	"Pending.Action.Kind": "pending.action.kind", "Pending.Action.Params": "pending.action.params",
	"Pending.Action.Digest":  "pending.action.digest",
	"Pending.Verdict.Class":  "always destructive: a benign action is never pending",
	"Pending.Verdict.Reason": "pending.reason (the decision's reason is the verdict's, or says why no payload could be built)",
	"Pending.Verdict.Keys":   "pending.destroys",
	"Pending.Outcome":        "always pending_signature",
	"Pending.Reason":         "pending.reason", "Pending.Payload": "pending.payload",
	"Pending.Offer.Version": "pending.payload (Offer is Payload parsed)", "Pending.Offer.Op": "pending.payload",
	"Pending.Offer.Host": "pending.payload", "Pending.Offer.VMID": "pending.payload", "Pending.Offer.Kind": "pending.payload",
	"Pending.Offer.Params": "pending.payload", "Pending.Offer.Digest": "pending.payload", "Pending.Offer.Nonce": "pending.payload",
	"Pending.Offer.NotBefore": "pending.payload", "Pending.Offer.Expires": "pending.payload", "Pending.Offer.Reason": "pending.payload",
	"Rejected.Offer.Version": "always empty: only pending decisions offer a payload", "Rejected.Offer.Op": "as Rejected.Offer.Version",
	"Rejected.Offer.Host": "as Rejected.Offer.Version", "Rejected.Offer.VMID": "as Rejected.Offer.Version", "Rejected.Offer.Kind": "as Rejected.Offer.Version",
	"Rejected.Offer.Params": "as Rejected.Offer.Version", "Rejected.Offer.Digest": "as Rejected.Offer.Version", "Rejected.Offer.Nonce": "as Rejected.Offer.Version",
	"Rejected.Offer.NotBefore": "as Rejected.Offer.Version", "Rejected.Offer.Expires": "as Rejected.Offer.Version", "Rejected.Offer.Reason": "as Rejected.Offer.Version",
	"Pending.Permit":     "always the zero permit: a held action is not permitted",
	"Rejected.Action.Op": "rejected.action.op", "Rejected.Action.VMID": "rejected.action.vmid",
	"Rejected.Action.Kind": "rejected.action.kind", "Rejected.Action.Params": "rejected.action.params",
	"Rejected.Action.Digest":  "rejected.action.digest",
	"Rejected.Verdict.Class":  "how a refused job would have been classified is not reported; why it was refused is",
	"Rejected.Verdict.Reason": "as Rejected.Verdict.Class", "Rejected.Verdict.Keys": "as Rejected.Verdict.Class",
	"Rejected.Outcome": "always rejected", "Rejected.Reason": "rejected.reason",
	"Rejected.Code": "rejected.code", "Rejected.Job": "rejected.job",
	"Pending.Code": "always empty: a held action is not refused", "Pending.Job": "always empty: signed jobs are never pending",
	"Rejected.Payload": "always empty: only pending decisions carry a payload",
	"Rejected.Permit":  "always the zero permit",
	"Guests.Changed":   "actions (a guest with an action that ran without error or skip)",
	"Jobs.Name":        "agent-local (the job's file); the hub knows a job by its id (actions.job, rejected.job)",
	"Jobs.Action.Op":   "actions.action or rejected.action of the job", "Jobs.Action.VMID": "as Jobs.Action.Op",
	"Jobs.Action.Kind": "as Jobs.Action.Op", "Jobs.Action.Params": "as Jobs.Action.Op", "Jobs.Action.Digest": "as Jobs.Action.Op",
	"Jobs.Status":            "actions (ran, failed, skipped) and rejected; a job completed before this tick was reported by the tick that ran it",
	"Jobs.Reason":            "actions.error, actions.skipped or rejected.reason",
	"Pending.Shortfall.Role": "always nil: only a signed job awaits more signatures; a pending action has no job",
	"Pending.Shortfall.Need": "as Pending.Shortfall.Role", "Pending.Shortfall.Signed": "as Pending.Shortfall.Role",
	"Pending.Shortfall.Others": "as Pending.Shortfall.Role",
	"Pending.Quorum.Role":      "pending.quorum.role", "Pending.Quorum.Count": "pending.quorum.need",
	"Rejected.Shortfall.Role": "always nil: a job awaiting signatures is not rejected (Jobs.Shortfall)",
	"Rejected.Shortfall.Need": "as Rejected.Shortfall.Role", "Rejected.Shortfall.Signed": "as Rejected.Shortfall.Role",
	"Rejected.Shortfall.Others": "as Rejected.Shortfall.Role",
	"Rejected.Quorum.Role":      "always nil: only a payload offered states its quorum", "Rejected.Quorum.Count": "as Rejected.Quorum.Role",
	"Jobs.Shortfall.Role": "the job's result (wire.JobResult.Quorum, posted by the agent's hub source), not the report",
	"Jobs.Shortfall.Need": "as Jobs.Shortfall.Role", "Jobs.Shortfall.Signed": "as Jobs.Shortfall.Role",
	"Jobs.Shortfall.Others": "in the job result's reason only",
}

// leaves lists the leaf field paths of t: struct fields are followed,
// slices and pointers to structs are looked through, and everything else
// (maps, times, errors, structs without exported fields) is a leaf.
func leaves(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	exported := 0
	if t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Time]() {
		for f := range t.Fields() {
			if f.IsExported() {
				exported++
			}
		}
	}
	if exported == 0 || strings.HasPrefix(prefix, "Want") {
		*out = append(*out, prefix)
		return
	}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		p := f.Name
		if prefix != "" {
			p = prefix + "." + f.Name
		}
		leaves(f.Type, p, out)
	}
}

func TestWireCoversEveryField(t *testing.T) {
	var got []string
	leaves(reflect.TypeFor[engine.Report](), "", &got)
	for _, p := range got {
		if reportFields[p] == "" {
			t.Errorf("engine.Report field %s has no place in the wire report: convert it in Report.Wire and list it in reportFields", p)
		}
	}
	for p := range reportFields {
		if !slices.Contains(got, p) {
			t.Errorf("reportFields lists %s, which engine.Report no longer has", p)
		}
	}
}

// TestWireConversion converts a report with every field set and checks
// each value arrives, and that the wire report survives its encoding.
func TestWireConversion(t *testing.T) {
	t0 := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	desc := "web frontend"
	rep := engine.Report{
		Host: "pve-a", Node: "node1", Time: t0,
		Observed: []guest.Observed{
			{VMID: 101, Kind: guest.QEMU, Name: "web", Status: "running", Lock: "backup", Digest: "d101",
				Config: guest.Config{"cores": "2", "onboot": "1", "net0": "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0", "description": "web frontend\n", "scsi0": "local:1,size=8G"}},
			{VMID: 102, Kind: guest.LXC, Name: "db", Status: "stopped", Template: true, ConfigErr: "500 got timeout"},
			{VMID: 103, Kind: guest.QEMU, Name: "other", Status: "running"},
		},
		Want: &desired.Host{Guests: map[int]*desired.Guest{
			101: {Config: map[string]string{"cores": "4", "onboot": "yes", "net0": "virtio,bridge=vmbr0", "memory": "1024"}, Description: &desc, Ignore: []string{"net0"}},
			102: {Config: map[string]string{"cores": "1"}},
		}},
		Plan: plan.Plan{Guests: []plan.GuestStatus{{VMID: 101, Phase: plan.Converging, Lock: "backup"}, {VMID: 102, Phase: plan.Error, Err: "config unreadable"}}},
		Guests: []engine.GuestReport{
			{VMID: 101, Phase: engine.PhaseConverging, Drift: []plan.Change{{Key: "cores", From: "2", To: "4"}}},
			{VMID: 102, Phase: engine.PhaseError, Err: "config unreadable", NextRetry: t0.Add(time.Minute)},
		},
		Results: []engine.Result{
			{Action: action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"cores": "4"}, Digest: "d101"},
				Source: "reconcile", Class: classify.Benign, Outcome: executor.Outcome{UPID: "UPID:node1:1:2:3:qmconfig:101:u@pve!t:", ExitStatus: "WARNINGS: 2", Warnings: 2}},
			{Action: action.Action{Op: action.Destroy, VMID: 103, Kind: guest.QEMU}, Source: "signed", Job: wire.JobID([]byte("p")), Class: classify.Destructive,
				Err: errors.New("task failed: storage gone")},
			{Action: action.Action{Op: action.Start, VMID: 102, Kind: guest.LXC}, Source: "reconcile", Class: classify.Benign, Skipped: "backing off"},
		},
		Pending: []gate.Decision{{Action: action.Action{Op: action.SetConfig, VMID: 101, Kind: guest.QEMU, Params: map[string]string{"delete": "scsi0"}, Digest: "d101"},
			Verdict: classify.Verdict{Class: classify.Destructive, Reason: "deletes scsi0", Keys: []string{"scsi0"}},
			Outcome: gate.PendingSignature, Reason: "deletes scsi0", Payload: []byte("{\"payload\":1}\n")}},
		Rejected: []gate.Decision{
			{Outcome: gate.Rejected, Reason: "signedop: payload is not canonical"},
			{Action: action.Action{Op: action.Destroy, VMID: 103, Kind: guest.QEMU, Digest: "old"}, Outcome: gate.Rejected, Reason: "stale",
				Code: signedop.CodeStaleDigest, Job: wire.JobID([]byte("q"))},
		},
	}
	want := wire.Report{
		Host: "pve-a", Time: t0, Facts: wire.Facts{Node: "node1"},
		Guests: []wire.Guest{
			{VMID: 101, Kind: "qemu", Name: "web", Status: "running", Lock: "backup", Digest: "d101",
				Config: map[string]string{"cores": "2", "onboot": "1", "memory": "512", "description": "web frontend"}},
			{VMID: 102, Kind: "lxc", Name: "db", Status: "stopped", Template: true, ConfigError: "500 got timeout"},
			{VMID: 103, Kind: "qemu", Name: "other", Status: "running"},
		},
		Sync: []wire.Sync{
			{VMID: 101, Phase: wire.PhaseConverging, Lock: "backup", Drift: []wire.Change{{Key: "cores", From: "2", To: "4"}}},
			{VMID: 102, Phase: wire.PhaseError, Reason: "config unreadable", NextRetry: t0.Add(time.Minute)},
		},
		Actions: []wire.ActionResult{
			{Action: wire.Action{Op: "config", VMID: 101, Kind: "qemu", Params: map[string]string{"cores": "4"}, Digest: "d101"}, Source: "reconcile", Class: "benign",
				UPID: "UPID:node1:1:2:3:qmconfig:101:u@pve!t:", ExitStatus: "WARNINGS: 2", Warnings: 2},
			{Action: wire.Action{Op: "destroy", VMID: 103, Kind: "qemu"}, Source: "signed", Job: wire.JobID([]byte("p")), Class: "destructive", Error: "task failed: storage gone"},
			{Action: wire.Action{Op: "start", VMID: 102, Kind: "lxc"}, Source: "reconcile", Class: "benign", Skipped: "backing off"},
		},
		Pending: []wire.Pending{{Action: wire.Action{Op: "config", VMID: 101, Kind: "qemu", Params: map[string]string{"delete": "scsi0"}, Digest: "d101"},
			Reason: "deletes scsi0", Destroys: []string{"scsi0"}, Payload: []byte("{\"payload\":1}\n")}},
		Rejected: []wire.Rejection{
			{Reason: "signedop: payload is not canonical"},
			{Action: &wire.Action{Op: "destroy", VMID: 103, Kind: "qemu", Digest: "old"}, Reason: "stale", Code: "stale_digest", Job: wire.JobID([]byte("q"))},
		},
	}
	got := rep.Wire()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Wire():\n got %+v\nwant %+v", got, want)
	}
	b, err := wire.EncodeReport(got)
	if err != nil {
		t.Fatal(err)
	}
	back, err := wire.DecodeReport(b)
	if err != nil {
		t.Fatalf("the wire report of a tick does not decode: %v", err)
	}
	if !reflect.DeepEqual(back, want) {
		t.Errorf("JSON round trip:\n got %+v\nwant %+v", back, want)
	}
}

// TestWireFromRealTick: what a tick against the simulator reports is a
// valid wire report carrying its guests, drift, pending payload and
// refused jobs.
func TestWireFromRealTick(t *testing.T) {
	h := newHarness(t, sim.Options{},
		sim.GuestSpec{VMID: 101, Kind: guest.QEMU, Name: "web", Config: map[string]string{"cores": "1", "scsi0": "local-lvm:vm-101-disk-0,size=8G", "scsi1": "local-lvm:vm-101-disk-1,size=8G"}},
		sim.GuestSpec{VMID: 102, Kind: guest.LXC, Name: "ct", Running: true})
	want := mustParse(t, `
apiVersion: steward/v1
kind: Fleet
hosts:
  pve:
    guests:
      101:
        kind: qemu
        config: {cores: 2}
      102:
        kind: lxc
        state: running
`)
	payload, err := signedop.NewPayload("pve", action.Action{Op: action.Destroy, VMID: 101, Kind: guest.QEMU, Digest: "stale"}, time.Now(), time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	rep := h.tick(want, signedop.Job{Payload: []byte("not json")}, signedop.Job{Payload: payload.Canonical()})
	w := rep.Wire()
	b, err := wire.EncodeReport(w)
	if err != nil {
		t.Fatal(err)
	}
	back, err := wire.DecodeReport(b)
	if err != nil {
		t.Fatalf("a real tick's wire report is refused: %v", err)
	}
	if !reflect.DeepEqual(back, w) {
		t.Errorf("round trip changed the report:\n got %+v\nwant %+v", back, w)
	}
	if w.Host != "pve" || w.Facts.Node != h.srv.Sim.Node() || len(w.Guests) != 2 {
		t.Fatalf("host %q node %q guests %d; want pve, %s, 2", w.Host, w.Facts.Node, len(w.Guests), h.srv.Sim.Node())
	}
	// Guest 101 is reported as the tick's config write left it.
	if g := w.Guests[0]; g.VMID != 101 || g.Name != "web" || g.Config["cores"] != "2" || g.Config["scsi0"] != "" || g.Digest == "" {
		t.Errorf("guest 101 on the wire: %+v; want its name, digest and only the managed key cores=2", g)
	}
	if len(w.Sync) != 2 || w.Sync[0].Phase != wire.PhaseInSync || w.Sync[1].Phase != wire.PhaseInSync {
		t.Errorf("sync: %+v; want 101 and 102 in_sync", w.Sync)
	}
	if len(w.Rejected) != 2 || w.Rejected[0].Action != nil || w.Rejected[1].Action == nil || w.Rejected[1].Action.Op != "destroy" {
		t.Fatalf("rejected: %+v; want the unparsable job without an action, then the destroy", w.Rejected)
	}
	if r := w.Rejected[0]; r.Code != signedop.CodeBadPayload || r.Job != wire.JobID([]byte("not json")) {
		t.Errorf("unparsable job refused with code %q job %.8s; want bad_payload and its id", r.Code, r.Job)
	}
	if r := w.Rejected[1]; r.Code != signedop.CodeNoSignersConfigured || r.Job != wire.JobID(payload.Canonical()) {
		t.Errorf("destroy refused with code %q job %.8s; want no_signers_configured and its id", r.Code, r.Job)
	}
	jr := wire.JobResultsOf(w)
	if len(jr.Results) != 2 || jr.Results[1].State != wire.JobRejected {
		t.Errorf("job results %+v; want both jobs rejected", jr.Results)
	}
}
