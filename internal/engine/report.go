package engine

import (
	"context"
	"github.com/steward-pve/steward/internal/classify"
	"maps"
	"slices"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/plan"
	"github.com/steward-pve/steward/internal/signedop"
)

// JobReport is the fate of one signed job presented to a tick.
type JobReport struct {
	Name   string        // the job's Name (its payload file), for messages
	Action action.Action // what the job asks for; zero when its payload does not parse
	Status JobStatus
	Reason string // why it was rejected, failed or is waiting; how a completed job ended
	// Shortfall is set for a job waiting for more signatures: who signed
	// and how many of which role it needs.
	Shortfall *signedop.Shortfall
}

// JobStatus says what became of a signed job this tick.
type JobStatus string

// Job statuses. JobRan, JobFailed and JobCompleted are final: the job will
// never run again, and its file may leave the inbox. JobRejected and
// JobWaiting are not: a rejected job may become valid (a missing signature
// arrives, say) and a waiting one runs at a later tick.
const (
	JobRan       JobStatus = "ran"       // it ran this tick and succeeded
	JobFailed    JobStatus = "failed"    // it ran this tick and failed conclusively; only a new signature may try again
	JobCompleted JobStatus = "completed" // it ran (or failed conclusively) before this tick; not run again
	JobRejected  JobStatus = "rejected"  // refused: bad payload or signature, stale, another host...
	JobWaiting   JobStatus = "waiting"   // not run this tick (more signatures needed, backoff, an unresolved op, a retryable failure, dry run)
)

// Final reports whether s means the job will never run again.
func (s JobStatus) Final() bool { return s == JobRan || s == JobFailed || s == JobCompleted }

// jobOutcome sets jr from the result of the job's submitted action: ran,
// failed conclusively (its journal entry ended without Retry), or still
// waiting to run.
func (e *Engine) jobOutcome(jr *JobReport, r Result, idem string) {
	switch {
	case r.Skip == SkipDone:
		jr.Status, jr.Reason = JobCompleted, "already completed"
		if res, done := e.Journal.Completed(idem); done {
			jr.Reason = completion(res)
		}
	case r.Skip != NotSkipped:
		jr.Status, jr.Reason = JobWaiting, r.Skipped
	case r.Err == nil:
		jr.Status, jr.Reason = JobRan, ""
	default:
		jr.Status, jr.Reason = JobWaiting, r.Err.Error()
		if e.Journal != nil {
			if res, done := e.Journal.Completed(idem); done && !res.Retry {
				jr.Status = JobFailed
			}
		}
	}
}

// completion describes how a journaled op ended, for a job found
// completed before this tick.
func completion(res journal.Result) string {
	switch {
	case res.OK && res.ExitStatus != "":
		return "ran before (task " + res.ExitStatus + ")"
	case res.OK:
		return "ran before"
	case res.Error != "":
		return "failed before: " + res.Error
	}
	return "failed before: " + res.Resolution
}

// Summary counts what one tick did, for the one line the agent logs per
// tick and for the exit status of `steward agent --once`.
type Summary struct {
	Managed int // desired guests of this host
	// Phases counts the guests in each phase (in_sync, converging,
	// pending_signature, error, ...).
	Phases           map[string]int
	Changed          int // guests at least one action ran on
	PendingSignature int // guests holding an action for a signature
	Failed           int // guests in phase error (an action failed, or the guest cannot be planned)
	ActionsFailed    int // actions that failed
	JobsRan          int // signed jobs that ran this tick
	JobsRejected     int // signed jobs refused this tick
	JobsFailed       int // signed jobs that ran and failed this tick
	JobsAwaiting     int // signed jobs held for more signatures this tick
}

// Summary counts r's guests, actions and jobs.
func (r Report) Summary() Summary {
	s := Summary{Managed: len(r.Guests), Phases: map[string]int{}}
	for _, g := range r.Guests {
		s.Phases[g.Phase]++
		if g.Changed {
			s.Changed++
		}
	}
	s.PendingSignature = s.Phases[PhasePendingSignature]
	s.Failed = s.Phases[PhaseError]
	for _, res := range r.Results {
		if res.Err != nil {
			s.ActionsFailed++
		}
	}
	for _, j := range r.Jobs {
		switch j.Status {
		case JobRan:
			s.JobsRan++
		case JobRejected:
			s.JobsRejected++
		case JobFailed:
			s.JobsFailed++
		case JobWaiting:
			if j.Shortfall != nil {
				s.JobsAwaiting++
			}
		}
	}
	return s
}

// report is the last step. The guests the tick acted on are read again:
// what is reported, and what a held action's payload is bound to, is the
// state those actions left. A change that mixes benign and destructive
// keys thus offers its payload against the digest its benign part
// produced, so the first payload offered is the one the agent will
// accept. Then the held decisions are recorded and each desired guest's
// status derived.
func (t *tick) report(ctx context.Context) {
	e := t.e
	final := t.rep.Plan
	touched := map[int]bool{}
	for _, s := range t.subs {
		touched[t.rep.Results[s.idx].Action.VMID] = true
	}
	if len(touched) > 0 {
		after, err := e.observe(ctx, touched, nil)
		if err != nil {
			e.log().Warn("re-reading the guests changed this tick failed; reporting them as first observed", "err", err)
		} else {
			t.rep.Observed = mergeObserved(t.actual, after, touched)
			t.locate(ctx, t.rep.Observed, true)
			final = plan.Diff(t.want, t.rep.Observed, t.planOptions())
			for vmid := range touched {
				delete(t.held, vmid)
			}
			for _, g := range after {
				if touched[g.VMID] {
					t.byID[g.VMID] = g
				}
			}
			// A guest this tick created is fresh now: its next config
			// write is judged as the next tick will judge it.
			t.freshness(ctx, final.Steps)
			// Storage usage is read again: it now includes what ran.
			t.storages, t.allocated = nil, nil
			for _, st := range final.Steps {
				a := st.Action
				if !touched[a.VMID] {
					continue
				}
				cfg := t.byID[a.VMID].Config
				prov := t.provenance(a.VMID, a.Digest)
				prov.Headroom, _ = t.headroom(ctx, a, cfg)
				for _, d := range e.Gate.DecideSplit(a, cfg, prov) {
					if d.Outcome != gate.Allowed {
						t.held[a.VMID] = append(t.held[a.VMID], d)
					}
				}
			}
		}
	}
	for _, vmid := range slices.Sorted(maps.Keys(t.held)) {
		for _, d := range t.held[vmid] {
			e.recordDecision(d, t.planOnly, "")
			t.rep.Pending = append(t.rep.Pending, d)
		}
	}
	t.rep.Guests = e.guestReports(t.rep, final, t.held)
	for i := range t.rep.Guests {
		gr := &t.rep.Guests[i]
		gr.Snapshots = t.snaps[gr.VMID]
		if g, ok := t.byID[gr.VMID]; ok {
			p := t.provenance(gr.VMID, g.Digest)
			gr.Provenance = classify.Provenance{CreatedByAgent: p.CreatedByAgent, CreateFailed: p.CreateFailed, Fresh: p.Fresh}
		}
	}
	t.noteLocation(t.rep.Guests)
}

// guestReports derives each desired guest's status from final, the plan
// of the state after the tick's actions, the tick's results and the
// actions held for a signature.
func (e *Engine) guestReports(rep Report, final plan.Plan, pending map[int][]gate.Decision) []GuestReport {
	failed := map[int]Result{}
	ran := map[int]bool{}
	for _, r := range rep.Results {
		if r.Err != nil || r.Skip.Blocks() {
			failed[r.Action.VMID] = r
		} else if r.Skip == NotSkipped {
			ran[r.Action.VMID] = true
		}
	}
	out := make([]GuestReport, 0, len(final.Guests))
	for _, gs := range final.Guests {
		gr := GuestReport{VMID: gs.VMID, Drift: gs.Drift, Err: gs.Err, Pending: gs.Pending, Changed: ran[gs.VMID]}
		switch {
		case gs.Phase == plan.Moved:
			// Moved wins over an action that failed this tick: it failed
			// because the guest left (a write to its config on this node
			// finds no config once it is on another).
			gr.Phase, gr.Node, gr.Err = PhaseMoved, gs.Node, ""
		case gs.Phase == plan.Error:
			gr.Phase = PhaseError
		case gs.Phase == plan.DriftObserved:
			gr.Phase = PhaseDriftObserved
		case len(pending[gs.VMID]) > 0:
			gr.Phase = PhasePendingSignature
		case failed[gs.VMID].Action.Op != "":
			r := failed[gs.VMID]
			gr.Phase = PhaseError
			if r.Err != nil {
				gr.Err = r.Err.Error()
			} else {
				gr.Err = r.Skipped
			}
			_, gr.NextRetry = e.Backoff.Ready(gs.VMID)
		case gs.Phase == plan.Converging:
			gr.Phase = PhaseConverging
		case gs.Phase == plan.PendingRestart:
			gr.Phase = PhasePendingRestart
		default:
			gr.Phase = PhaseInSync
		}
		out = append(out, gr)
	}
	return out
}
