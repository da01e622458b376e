package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"

	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// signedJobs is the second step: the gate decides on each signed job, in
// one place (wrong host, wrong kind, unreadable config, stale digest,
// replay...), and what it allows is submitted. A job the journal shows
// completed is reported so and never run again. A job that lacks only
// signatures (gate.AwaitingSignatures) is reported waiting, and its
// payload is what the gate offers for that action until more signatures
// arrive.
func (t *tick) signedJobs(ctx context.Context) {
	e := t.e
	nonces := map[string]bool{} // nonces of the signed jobs submitted this tick
	var awaiting []signedop.Payload
	defer func() {
		if !t.planOnly {
			e.Gate.Await(awaiting)
		}
	}()
	for i, pj := range t.parsed {
		jr := &t.rep.Jobs[i]
		if pj.Err == nil {
			jr.Action = gate.ActionOf(pj.Payload)
		}
		if e.Journal != nil && pj.Err == nil {
			if res, done := e.Journal.Completed(jobKey(pj.Job)); done && !res.Retry {
				// This job ran, or failed conclusively (a destructive one
				// also spent its nonce), before this tick: it is reported
				// as such and never run again.
				jr.Status, jr.Reason = JobCompleted, completion(res)
				continue
			}
		}
		tg := gate.Target{}
		if pj.Err == nil {
			var cfg guest.Config
			if g, exists := t.byID[pj.Payload.VMID]; exists {
				tg.Guest = &g
				tg.Provenance = e.provenance(g.VMID, g.Digest)
				cfg = g.Config
			} else {
				tg.Provenance = e.provenance(pj.Payload.VMID, "")
			}
			// A benign allocation past a storage's headroom runs only
			// with a verified signature, as a destructive op would.
			tg.Provenance.Headroom, _ = t.headroom(ctx, gate.ActionOf(pj.Payload), cfg)
			if _, held := t.blocked[pj.Payload.VMID]; !held {
				// An op of a held guest is unresolved (possibly this job's
				// own): submit reports the guest held; nothing is spent or
				// refused. Otherwise a nonce the journal committed, or one
				// allowed earlier this tick, is a replay.
				tg.Spent = func(n string) bool {
					spent := nonces[n]
					if !spent && e.Journal != nil {
						_, spent = e.Journal.NonceSpent(n)
					}
					nonces[n] = true
					return spent
				}
			}
		}
		d := e.Gate.DecideJob(pj, tg)
		if d.Action.Op != "" {
			e.recordDecision(d, t.planOnly, pj.Job.Name)
		}
		if d.Outcome == gate.AwaitingSignatures {
			// Incomplete, not refused: it waits for more signatures,
			// its nonce unspent, and its payload is the one offered for
			// the action meanwhile.
			jr.Status, jr.Reason, jr.Shortfall = JobWaiting, d.Reason, d.Shortfall
			awaiting = append(awaiting, pj.Payload)
			continue
		}
		if d.Outcome != gate.Allowed {
			t.rep.Rejected = append(t.rep.Rejected, d)
			jr.Status, jr.Reason = JobRejected, d.Reason
			if d.Action.Op != "" {
				jr.Action = d.Action
			}
			continue
		}
		t.jobResults[i] = t.submit(d.Permit, SourceSigned, pj.ID, pj.Job.Name, jobKey(pj.Job))
		t.signedVMIDs[d.Action.VMID] = true
	}
}

// jobKey is the idempotency key of a signed job: the hash of its exact
// payload bytes. Not the nonce alone: a job anyone can write (an unsigned
// benign one) could then claim the nonce of an operator's pending payload
// and make the agent skip the real job.
func jobKey(j signedop.Job) string {
	sum := sha256.Sum256(j.Payload)
	return "signed:" + hex.EncodeToString(sum[:16])
}
