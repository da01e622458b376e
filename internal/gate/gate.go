// Package gate is the reversibility gate: every mutation, whatever its
// source (reconcile, signed jobs, recovery), passes here before it can reach
// the executor. Benign actions are permitted. Destructive actions are
// permitted only with a signed job that the verifier accepts for exactly
// that action on exactly the guest's current state; otherwise they become
// pending_signature, carrying the canonical payload an operator would sign.
//
// A Permit can only be made by this package, and the engine executes only
// Permits: there is no other path from a planned action to PVE.
package gate

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/signedop"
)

// Verdicts a Decision can carry.
const (
	Allowed          = "allowed"           // benign, or destructive with a valid signature
	PendingSignature = "pending_signature" // destructive, no valid signature presented
	Rejected         = "rejected"          // a signed job was presented and refused
)

// Gate decides whether actions may run on host Host. Safe for concurrent
// use. Its only state is a cache of pending payloads, so that an action
// held tick after tick offers the same payload (same nonce and window)
// until half its TTL has passed, and operators are not asked to sign a
// moving target.
type Gate struct {
	Host string
	// Verifier checks signed jobs. Nil means no signers are configured:
	// destructive actions never run.
	Verifier *signedop.Verifier
	// PayloadTTL is how long a pending payload stays signable; default 24h.
	PayloadTTL time.Duration
	Now        func() time.Time // default time.Now
	Logger     *slog.Logger     // nil: no logging

	mu      sync.Mutex
	pending map[string]signedop.Payload // action key + digest → payload offered
}

// Permit is the gate's authorization to execute one action. The zero
// Permit authorizes nothing.
type Permit struct {
	action  action.Action
	verdict classify.Verdict
	signers []string // fingerprints, for signed actions
	nonce   string
	expires time.Time // when the nonce stops mattering: the job's expiry plus skew
}

// Action returns the permitted action.
func (p Permit) Action() action.Action { return p.action }

// Verdict returns the classification the permit was granted under.
func (p Permit) Verdict() classify.Verdict { return p.verdict }

// Signers returns the fingerprints of the operators who authorized a
// destructive action; empty for benign ones.
func (p Permit) Signers() []string { return append([]string(nil), p.signers...) }

// Nonce returns the signed job's nonce; empty for unsigned actions.
// The permit does not spend it: the engine commits it durably in the
// same journal record that commits the action to run.
func (p Permit) Nonce() string { return p.nonce }

// NonceExpires returns when the nonce stops mattering (the job's expiry
// plus the verifier's clock skew); zero for unsigned actions.
func (p Permit) NonceExpires() time.Time { return p.expires }

// Valid reports whether p was issued by a Gate.
func (p Permit) Valid() bool { return p.action.Op != "" }

// Decision is the gate's answer for one action.
type Decision struct {
	Action  action.Action
	Verdict classify.Verdict
	Outcome string // Allowed, PendingSignature or Rejected
	Reason  string // why, for humans: the classifier's reason, or the rejection
	// Payload is the canonical payload to sign when Outcome is
	// PendingSignature.
	Payload []byte
	// Permit is valid when Outcome is Allowed.
	Permit Permit
}

// Decide gates an action that carries no signature (reconcile, recovery).
// actual is the guest's current config (nil when it does not exist) and
// prov comes from the agent's own journal.
func (g *Gate) Decide(a action.Action, actual guest.Config, prov classify.Provenance) Decision {
	v := classify.Classify(a, actual, prov)
	d := Decision{Action: a, Verdict: v, Reason: v.Reason}
	if v.Class == classify.Benign {
		d.Outcome = Allowed
		d.Permit = Permit{action: a, verdict: v}
		g.log(d)
		return d
	}
	d.Outcome = PendingSignature
	p, err := g.pendingPayload(a, v.Reason)
	if err != nil {
		d.Reason = fmt.Sprintf("%s (cannot build a payload to sign: %v)", v.Reason, err)
	} else {
		d.Payload = p.Canonical()
	}
	g.log(d)
	return d
}

// DecideSigned gates the action a signed job carries. The job's payload
// must parse; its action is classified like any other; a destructive action
// runs only when the verifier authorizes the job for exactly that action on
// currentDigest (the guest's config digest read just now). A benign action
// in a signed job runs without consuming the signature.
//
// DecideSigned does not spend the nonce (see Permit.Nonce); it refuses a
// job whose nonce the verifier's nonce store already holds (spent before
// the journal recorded nonces, or by this agent since). The caller must
// refuse a nonce its journal shows committed.
func (g *Gate) DecideSigned(job signedop.Job, actual guest.Config, currentDigest string, prov classify.Provenance) Decision {
	p, err := signedop.ParsePayload(job.Payload)
	if err != nil {
		d := Decision{Outcome: Rejected, Reason: err.Error()}
		g.log(d)
		return d
	}
	a := ActionOf(p)
	v := classify.Classify(a, actual, prov)
	d := Decision{Action: a, Verdict: v}
	if v.Class == classify.Benign {
		if reason := staleJob(a, actual, currentDigest); reason != "" {
			d.Outcome, d.Reason = Rejected, reason
			g.log(d)
			return d
		}
		d.Outcome, d.Reason = Allowed, v.Reason
		d.Permit = Permit{action: a, verdict: v}
		g.log(d)
		return d
	}
	if g.Verifier == nil {
		d.Outcome, d.Reason = Rejected, "no signers configured on this agent (set --allowed-signers): destructive ops never run"
		g.log(d)
		return d
	}
	auth, err := g.Verifier.Check(job, g.Host, a, currentDigest)
	switch {
	case err != nil:
	case g.Verifier.Nonces == nil:
		err = &signedop.Rejection{Code: signedop.CodeNonceStoreError, Reason: "no nonce store is configured; signed operations cannot run"}
	case g.Verifier.Nonces.Used(p.Nonce):
		err = Replayed(p.Nonce)
	case g.Verifier.Nonces.Full():
		err = &signedop.Rejection{Code: signedop.CodeNonceStoreFull, Reason: "the agent's nonce store is full of unexpired nonces; retry after older signed operations expire"}
	}
	if err != nil {
		d.Outcome, d.Reason = Rejected, err.Error()
		var rej *signedop.Rejection
		if !errors.As(err, &rej) {
			d.Reason = "verification failed: " + err.Error()
		}
		g.log(d)
		return d
	}
	fps := make([]string, 0, len(auth.Signers))
	for _, s := range auth.Signers {
		fps = append(fps, s.Fingerprint)
	}
	d.Outcome, d.Reason = Allowed, v.Reason
	skew := g.Verifier.MaxSkew
	if skew <= 0 {
		skew = signedop.DefaultMaxSkew
	}
	d.Permit = Permit{action: a, verdict: v, signers: fps, nonce: p.Nonce, expires: p.Expires.Add(skew)}
	g.log(d)
	return d
}

// Replayed is the rejection of a job whose nonce is already spent.
func Replayed(nonce string) error {
	return &signedop.Rejection{Code: signedop.CodeReplayed,
		Reason: fmt.Sprintf("nonce %s was already used: this signed operation has run (or conclusively failed) before; sign a new payload", nonce)}
}

// RecordSpent adds the nonce of p, whose op ran or conclusively failed, to
// the verifier's nonce store: an index derived from the journal, which is
// the record that commits a signed job. ErrReplayed (already held) is not
// an error.
func (g *Gate) RecordSpent(p Permit) error {
	if p.nonce == "" || g.Verifier == nil || g.Verifier.Nonces == nil {
		return nil
	}
	return g.RecordNonce(p.nonce, p.expires)
}

// RecordNonce adds nonce, spent until expires, to the verifier's nonce
// store (see RecordSpent); an expired nonce or one already held is a no-op.
func (g *Gate) RecordNonce(n string, expires time.Time) error {
	if g.Verifier == nil || g.Verifier.Nonces == nil || !g.now().Before(expires) {
		return nil
	}
	if err := g.Verifier.Nonces.Use(n, expires); err != nil && !errors.Is(err, nonce.ErrReplayed) {
		return err
	}
	return nil
}

// pendingPayload returns the payload offered for a: the one offered before
// for the same action on the same digest while it has more than half its
// TTL left, else a fresh one (new nonce and window).
func (g *Gate) pendingPayload(a action.Action, reason string) (signedop.Payload, error) {
	key := a.Key() + "@" + a.Digest
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.pending[key]; ok && now.Before(p.Expires.Add(-g.ttl()/2)) && !now.Before(p.NotBefore) {
		return p, nil
	}
	p, err := signedop.NewPayload(g.Host, a, now, g.ttl(), "steward: "+reason)
	if err != nil {
		return p, err
	}
	if g.pending == nil {
		g.pending = map[string]signedop.Payload{}
	}
	for k, old := range g.pending { // keep the cache bounded by what is still signable
		if !now.Before(old.Expires) {
			delete(g.pending, k)
		}
	}
	g.pending[key] = p
	return p, nil
}

// Remember makes a payload offered before (read back from disk after a
// restart) the one Decide offers again for its action and digest, while it
// has more than half its TTL left. A payload for another host is ignored.
func (g *Gate) Remember(p signedop.Payload) {
	if p.Host != g.Host {
		return
	}
	a := ActionOf(p)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending == nil {
		g.pending = map[string]signedop.Payload{}
	}
	g.pending[a.Key()+"@"+a.Digest] = p
}

// staleJob says why a benign job may not run on the guest as it is now, or
// "". A job runs unsigned only because it was judged benign against the
// config it names: a config write, resize or snapshot job must name the
// guest's current digest (so the write passes it and PVE refuses it if the
// guest changed), and may not target a guest that does not exist (where
// every disk slot would look empty). Run-state jobs need the guest; a
// create needs none.
func staleJob(a action.Action, actual guest.Config, currentDigest string) string {
	switch a.Op {
	case action.Create:
		return ""
	case action.Start, action.Shutdown, action.Stop:
		if actual == nil {
			return fmt.Sprintf("guest %d does not exist on this host", a.VMID)
		}
		return ""
	}
	if actual == nil {
		return fmt.Sprintf("guest %d does not exist on this host; a %s job needs the guest it was made for", a.VMID, a.Op)
	}
	if a.Digest != currentDigest {
		return fmt.Sprintf("job made against config digest %q, guest %d now has %q: refused (stale_digest), a job is judged only on the state it names", a.Digest, a.VMID, currentDigest)
	}
	return ""
}

// ActionOf returns the action a payload authorizes.
func ActionOf(p signedop.Payload) action.Action {
	return action.Action{Op: p.Op, VMID: p.VMID, Kind: p.Kind, Params: p.Params, Digest: p.Digest}
}

func (g *Gate) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

func (g *Gate) ttl() time.Duration {
	if g.PayloadTTL > 0 {
		return g.PayloadTTL
	}
	return 24 * time.Hour
}

func (g *Gate) log(d Decision) {
	if g.Logger == nil {
		return
	}
	g.Logger.Debug("gate decision", "vmid", d.Action.VMID, "op", d.Action.Op, "class", d.Verdict.Class,
		"outcome", d.Outcome, "reason", d.Reason, "signers", d.Permit.signers)
}

// DecideSplit gates a config write key by key: when it mixes benign and
// destructive keys, the benign keys become one action that is allowed and
// the destructive keys (with any delete of them) another that waits for a
// signature, so harmless drift keeps converging while the dangerous part
// is held. Any other action, or a config write that is wholly benign or
// wholly destructive, gets the single Decide decision.
//
// The destructive part's payload is bound to the current digest; when the
// benign part runs first, the digest changes and the next tick offers a new
// payload (an old one is then refused as stale, never applied).
func (g *Gate) DecideSplit(a action.Action, actual guest.Config, prov classify.Provenance) []Decision {
	whole := g.Decide(a, actual, prov)
	if whole.Outcome == Allowed || a.Op != action.SetConfig {
		return []Decision{whole}
	}
	benign := action.Action{Op: a.Op, VMID: a.VMID, Kind: a.Kind, Digest: a.Digest, Params: map[string]string{}}
	rest := action.Action{Op: a.Op, VMID: a.VMID, Kind: a.Kind, Digest: a.Digest, Params: map[string]string{}}
	for k, v := range a.Params {
		if k == "delete" {
			continue
		}
		one := action.Action{Op: a.Op, VMID: a.VMID, Kind: a.Kind, Digest: a.Digest, Params: map[string]string{k: v}}
		if classify.Classify(one, actual, prov).Class == classify.Benign {
			benign.Params[k] = v
		} else {
			rest.Params[k] = v
		}
	}
	var keepDel, restDel []string
	for _, k := range a.DeleteKeys() {
		one := action.Action{Op: a.Op, VMID: a.VMID, Kind: a.Kind, Digest: a.Digest, Params: map[string]string{"delete": k}}
		if classify.Classify(one, actual, prov).Class == classify.Benign {
			keepDel = append(keepDel, k)
		} else {
			restDel = append(restDel, k)
		}
	}
	if len(keepDel) > 0 {
		benign.Params["delete"] = strings.Join(keepDel, ",")
	}
	if len(restDel) > 0 {
		rest.Params["delete"] = strings.Join(restDel, ",")
	}
	if len(benign.Params) == 0 || len(rest.Params) == 0 {
		return []Decision{whole}
	}
	b := g.Decide(benign, actual, prov)
	if b.Outcome != Allowed {
		// Keys benign alone but not together: hold the whole write.
		return []Decision{whole}
	}
	return []Decision{b, g.Decide(rest, actual, prov)}
}
