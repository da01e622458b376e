package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/crashpoint"
	"github.com/steward-pve/steward/internal/executor"
	"github.com/steward-pve/steward/internal/gate"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/guestq"
	"github.com/steward-pve/steward/internal/journal"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/pve"
)

// submit queues p on its guest's queue and returns the index of its
// Result; job is a signed job's id, file its file name in the log. An
// action on a held or backing-off guest, and every action of a plan-only
// pass, is recorded skipped instead.
func (t *tick) submit(p gate.Permit, source Source, job, file, idem string) int {
	e := t.e
	a := p.Action()
	r := Result{Action: a, Source: source, Job: job, Class: p.Verdict().Class}
	skip := func(s Skip, why string) int {
		r.Skip, r.Skipped = s, why
		t.rep.Results = append(t.rep.Results, r)
		return len(t.rep.Results) - 1
	}
	if why, ok := t.blocked[a.VMID]; ok {
		return skip(SkipHeld, why)
	}
	if ok, next := e.Backoff.Ready(a.VMID); !ok {
		why := "backing off until " + next.Format(time.RFC3339)
		if r := e.lastRefusal(a.VMID); r != "" {
			why += " after: " + r
		}
		return skip(SkipBackoff, why)
	}
	if t.planOnly {
		return skip(SkipPlanOnly, "dry run")
	}
	t.rep.Results = append(t.rep.Results, r)
	idx := len(t.rep.Results) - 1
	out := new(executor.Outcome)
	tk, err := e.Queue.Submit(guestq.Job{VMID: queueLane(a), Key: idem, Run: func(ctx context.Context) error {
		o, err := e.execute(ctx, p, source, file, idem)
		*out = o
		return err
	}})
	if err != nil {
		t.rep.Results[idx].Err = err
		return idx
	}
	t.subs = append(t.subs, submitted{idx: idx, ticket: tk, out: out})
	return idx
}

// queueLane is the vmid whose queue a runs on: its guest's, except for a
// container clone, which runs on its source's. pve-container's clone_vm
// locks the source (lock: disk) from the call until its task ends and
// refuses any other clone of it meanwhile ("CT is locked (disk)"), so
// clones of one container template are one source's mutations, one at a
// time and in order, rather than calls that fail and back off. (A QEMU
// clone takes only a shared lock on a template that does not run:
// clones of it run in parallel, each on its new guest's queue.)
func queueLane(a action.Action) int {
	if a.Op == action.Clone && a.Kind == guest.LXC {
		if src, err := strconv.Atoi(a.Params["source"]); err == nil {
			return src
		}
	}
	return a.VMID
}

// act is the fourth step: it waits for every submitted action, feeds the
// guests' backoff, and settles each signed job's fate.
func (t *tick) act(ctx context.Context) {
	e := t.e
	for _, s := range t.subs {
		err := s.ticket.Wait(ctx)
		r := &t.rep.Results[s.idx]
		if err == nil {
			r.Outcome = *s.out
		}
		r.Err = err
		if errors.Is(err, errAlreadyDone) {
			r.Err, r.Skip, r.Skipped = nil, SkipDone, "already completed (idempotency key)"
		}
		switch {
		case r.Err == nil:
			e.Backoff.Success(r.Action.VMID)
			e.clearRefusal(r.Action.VMID)
		case ctx.Err() != nil:
		default:
			e.Backoff.Failure(r.Action.VMID)
		}
	}
	for i, ri := range t.jobResults {
		e.jobOutcome(&t.rep.Jobs[i], t.rep.Results[ri], jobKey(t.parsed[i].Job))
	}
}

var errAlreadyDone = errors.New("engine: op with this idempotency key already completed")

// execute runs one permitted action, journaled: begin is durable before
// PVE is called, the UPID as soon as it is known, end when the outcome is.
func (e *Engine) execute(ctx context.Context, p gate.Permit, source Source, file, idem string) (executor.Outcome, error) {
	a := p.Action()
	id := randomID()
	if res, done := e.Journal.Completed(idem); done && !res.Retry {
		if res.OK || source == SourceSigned {
			// Done, or a signed op that failed conclusively: its
			// signature is spent and only a new one may try again.
			return executor.Outcome{}, errAlreadyDone
		}
		// An earlier attempt of this intent failed: this is a new
		// attempt, journaled as such. (An attempt that ended with Retry
		// did not run; the new one keeps its key.)
		idem += "/retry:" + id
	}
	log := e.log().With("op", id, "vmid", a.VMID, "action", a.Op, "source", source)
	if file != "" {
		log = log.With("job_file", file)
	}
	if err := e.recheckSource(ctx, a); err != nil {
		log.Warn("op not started: its source is not what it was judged on", "err", err)
		return executor.Outcome{}, err
	}
	if err := e.recheckDigest(ctx, a); err != nil {
		// Nothing is journaled or spent: a signed job stays runnable.
		log.Warn("op not started: re-reading the guest failed", "err", err, "retryable", pve.IsRetryable(err))
		return executor.Outcome{}, err
	}
	op := journal.Op{ID: id, Time: e.now(), Source: string(source), Host: e.Host, Action: a, IdemKey: idem, Signers: p.Signers(),
		Nonce: p.Nonce(), NonceExpires: p.NonceExpires()}
	crashpoint.Hit(crashpoint.BeforeBegin)
	e.setActive(op.ID, true)
	defer e.setActive(op.ID, false)
	if err := e.Journal.Begin(op); err != nil {
		switch {
		case errors.Is(err, journal.ErrDone):
			return executor.Outcome{}, errAlreadyDone
		case errors.Is(err, journal.ErrNonceSpent):
			return executor.Outcome{}, fmt.Errorf("engine: %s not run: %w", a, gate.Replayed(op.Nonce))
		}
		return executor.Outcome{}, fmt.Errorf("engine: journal begin for %s: %w (op not started)", a, err)
	}
	crashpoint.Hit(crashpoint.AfterBegin)
	// Parameter values stay out of logs (a config write may carry a
	// secret such as a cloud-init password); the journal has them.
	log.Info("op begin", "keys", slices.Sorted(maps.Keys(a.Params)), "signers", op.Signers)

	out, err := e.Exec.Run(ctx, a, func(u pve.UPID) error {
		crashpoint.Hit(crashpoint.AfterTaskReturned)
		err := e.Journal.Task(op.ID, u.String())
		crashpoint.Hit(crashpoint.AfterTaskRecorded)
		return err
	})
	crashpoint.Hit(crashpoint.AfterCall)
	if err != nil {
		err = e.migrateFailure(ctx, a, err)
	}

	var unknown *pve.OutcomeUnknownError
	if errors.As(err, &unknown) || (err != nil && ctx.Err() != nil) {
		// The request may have reached PVE. Resolve it the way crash
		// recovery would, with a fresh context: never re-send blindly.
		op.UPID = out.UPID
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		res, upid, rerr := e.resolve(rctx, op)
		cancel()
		if rerr == nil && out.UPID == "" && upid != "" {
			if terr := e.Journal.Task(op.ID, upid); terr != nil {
				return out, fmt.Errorf("engine: journaling the task of %s: %w", a, terr)
			}
		}
		if rerr != nil {
			log.Error("op outcome unknown; left in flight, resolved before guest is mutated again", "err", err, "resolve_err", rerr)
			return out, fmt.Errorf("engine: outcome of %s unknown (%v); resolved at the next tick before the guest is changed again", a, err)
		}
		if !res.OK {
			if perr := e.restoreProtectionAfter(ctx, a); perr != nil {
				log.Error("op failed and the protection flag it cleared is not back; left in flight, restored before the guest is mutated again", "err", perr)
				return out, fmt.Errorf("engine: %s: %s; restoring the protection flag: %w", a, res.Resolution, perr)
			}
		}
		if eerr := e.Journal.End(op.ID, res); eerr != nil {
			return out, fmt.Errorf("engine: journal end: %w", eerr)
		}
		e.recordSpent(p, res)
		if !res.OK {
			return out, fmt.Errorf("engine: %s: %s", a, res.Resolution)
		}
		return out, nil
	}

	res := journal.Result{OK: err == nil, ExitStatus: out.ExitStatus}
	if err != nil {
		res.Error = err.Error()
		// PVE's answer proves nothing ran: the intent may run again.
		res.Retry = pve.IsRetryable(err)
		if (a.Op == action.Create || a.Op == action.Clone) && out.UPID != "" {
			res.RemainsDigest = e.remains(ctx, a)
		}
		if perr := e.restoreProtectionAfter(ctx, a); perr != nil {
			// Left in flight: recovery restores it (settle) before the
			// op ends and before the guest is mutated again.
			log.Error("op failed and the protection flag it cleared is not back; left in flight", "err", err, "restore_err", perr)
			return out, fmt.Errorf("engine: %s failed (%v); restoring the protection flag: %w", a, err, perr)
		}
	}
	if eerr := e.Journal.End(op.ID, res); eerr != nil {
		return out, fmt.Errorf("engine: journal end for %s: %w", a, eerr)
	}
	crashpoint.Hit(crashpoint.AfterEnd)
	e.recordSpent(p, res)
	if err != nil {
		log.Warn("op failed", "err", err, "retry", res.Retry)
		if res.Retry {
			return out, fmt.Errorf("%w (PVE did not run it; retried with backoff)", err)
		}
		return out, err
	}
	log.Info("op end", "upid", out.UPID, "exitstatus", out.ExitStatus)
	return out, nil
}

// recordSpent adds the nonce of a signed op that ended without Retry to
// the nonce store, the index derived from the journal.
func (e *Engine) recordSpent(p gate.Permit, res journal.Result) {
	if res.Retry || p.Nonce() == "" {
		return
	}
	if err := e.Gate.RecordSpent(p); err != nil {
		e.log().Warn("recording a spent nonce in the nonce store failed; the journal still holds it", "err", err)
	}
}

func (e *Engine) setActive(id string, on bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.active == nil {
		e.active = map[string]bool{}
	}
	if on {
		e.active[id] = true
	} else {
		delete(e.active, id)
	}
}

func (e *Engine) isActive(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active[id]
}

// recheckDigest re-reads the guest's config right before an action whose
// PVE call cannot carry a digest (destroy, snapshot rollback, delete and
// create, migrate) and refuses to run it when the config changed since the action
// was planned or signed: what was authorized was that action on that
// state. (Config writes and resizes pass the digest to PVE instead.)
func (e *Engine) recheckDigest(ctx context.Context, a action.Action) error {
	switch a.Op {
	case action.Destroy, action.SnapshotRollback, action.SnapshotDelete, action.SnapshotCreate, action.Migrate:
	default:
		return nil
	}
	if a.Digest == "" {
		return nil
	}
	cfg, err := e.PVE.GuestConfig(ctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return fmt.Errorf("engine: re-reading guest %d before %s: %w (not run)", a.VMID, a.Op, err)
	}
	if cfg.Digest != a.Digest {
		return fmt.Errorf("engine: guest %d changed since %s was authorized (config digest %s, now %s); not run, a new signature is needed",
			a.VMID, a.Op, a.Digest, cfg.Digest)
	}
	return nil
}

// errSourceChanged is recheckSource's refusal.
var errSourceChanged = errors.New("engine: clone source changed")

// recheckSource re-reads a container clone's source right before the
// clone and refuses it when the action claims an unprivileged container
// (classify.UnprivilegedParam "1", which is what made it benign) and the
// source is not unprivileged: the clone inherits the source's
// unprivileged, and a privileged container needs a signature. Nothing is
// journaled; the action is planned again from what PVE then says.
func (e *Engine) recheckSource(ctx context.Context, a action.Action) error {
	if a.Op != action.Clone || a.Kind != guest.LXC || a.Params[classify.UnprivilegedParam] != "1" {
		return nil
	}
	src, err := strconv.Atoi(a.Params["source"])
	if err != nil {
		return fmt.Errorf("engine: clone %d: source %q is not a vmid (not run)", a.VMID, a.Params["source"])
	}
	cfg, err := e.PVE.GuestConfig(ctx, e.Node, guest.LXC, src)
	if err != nil {
		return fmt.Errorf("engine: re-reading clone source %d before cloning it into %d: %w (not run)", src, a.VMID, err)
	}
	if !normalize.Equal(guest.LXC, "unprivileged", "1", cfg.Values["unprivileged"]) {
		return fmt.Errorf("%w: container %d is no longer unprivileged (unprivileged %q), and its clone %d would be privileged; not run, planned again (a privileged clone needs a signature)",
			errSourceChanged, src, cfg.Values["unprivileged"], a.VMID)
	}
	return nil
}

// remains reads what a failed create left behind: the config digest of the
// guest if PVE kept one, else "". Read right after the failure, it is what
// later lets the agent clean up its own remains (and nothing else).
func (e *Engine) remains(ctx context.Context, a action.Action) string {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	cfg, err := e.PVE.GuestConfig(rctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return ""
	}
	return cfg.Digest
}

// restoreProtectionAfter is restoreProtection once an op's call returned:
// it runs even when ctx ended meanwhile, for at most 30 seconds.
func (e *Engine) restoreProtectionAfter(ctx context.Context, a action.Action) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return e.restoreProtection(ctx, a)
}

// restoreProtection puts back PVE's protection flag that a protected
// destroy (classify.ProtectedParam) cleared, when the destroy did not
// happen: the guest still exists without the flag. Any other action, or
// a guest gone or still protected, needs nothing. PVE writes a config's
// keys sorted, so the restored config is byte-for-byte the one the
// destroy was signed on and has its digest again: the signed job stays
// runnable when the op ended with Retry.
func (e *Engine) restoreProtection(ctx context.Context, a action.Action) error {
	if a.Op != action.Destroy || a.Params[classify.ProtectedParam] != "1" {
		return nil
	}
	_, _, exists, err := e.guestStatus(ctx, a.VMID, a.Kind)
	if err != nil || !exists {
		return err
	}
	cfg, err := e.PVE.GuestConfig(ctx, e.Node, a.Kind, a.VMID)
	if err != nil {
		return err
	}
	if classify.Protected(guest.Config(cfg.Values)) {
		return nil
	}
	_, err = e.Exec.Client.SetConfig(ctx, e.Node, a.Kind, a.VMID, pve.ConfigChange{Set: map[string]string{"protection": "1"}, Digest: cfg.Digest})
	if err == nil {
		e.log().Info("protection flag restored after a protected destroy that did not happen", "vmid", a.VMID)
	}
	return err
}
