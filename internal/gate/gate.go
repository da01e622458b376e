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
	"maps"
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
	// AwaitingSignatures: a signed job whose every signature verifies
	// but whose distinct signers are fewer than the policy needs. It is
	// incomplete, not wrong: it stays pending (its nonce unspent) and is
	// judged again when it arrives with more signatures.
	AwaitingSignatures = "awaiting_signatures"
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
	// awaiting are the payloads of signed jobs held for more signatures
	// (Await), by action key + digest: offered for their action instead
	// of a fresh payload, so co-signers sign the same bytes.
	awaiting map[string]signedop.Payload
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
	// Code is the signedop rejection code when Outcome is Rejected.
	Code string
	// Job is the id of the signed job decided on (DecideJob); empty for
	// unsigned actions.
	Job string
	// Payload is the canonical payload to sign when Outcome is
	// PendingSignature, and Offer the same payload as a value (so no
	// consumer parses it again).
	Payload []byte
	Offer   signedop.Payload
	// Permit is valid when Outcome is Allowed.
	Permit Permit
	// Shortfall says what a job AwaitingSignatures lacks: the role, how
	// many signers it needs and who signed already.
	Shortfall *signedop.Shortfall
	// Quorum is what the policy asks of a payload offered
	// (PendingSignature): how many distinct signers of which role; nil
	// when no signers are configured.
	Quorum *signedop.Requirement
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
	if a.Op == action.Destroy && classify.Protected(actual) && a.Params[classify.ProtectedParam] != "1" {
		// The payload offered states the protection, so the signer sees
		// it and the signed job passes ProtectionMismatch.
		a.Params = maps.Clone(a.Params)
		if a.Params == nil {
			a.Params = map[string]string{}
		}
		a.Params[classify.ProtectedParam] = "1"
		d.Action = a
	}
	p, err := g.pendingPayload(a, v.Reason)
	if err != nil {
		d.Reason = fmt.Sprintf("%s (cannot build a payload to sign: %v)", v.Reason, err)
	} else {
		d.Payload, d.Offer = p.Canonical(), p
	}
	if g.Verifier != nil {
		q := g.Verifier.Requirement(a.Op)
		d.Quorum = &q
	}
	g.log(d)
	return d
}

// Target is the guest a signed job names, as the tick observed it.
type Target struct {
	// Guest is the observed guest; nil when no guest has the job's vmid.
	Guest *guest.Observed
	// Provenance is what the agent's journal proves about the guest.
	Provenance classify.Provenance
	// Spent reports whether a nonce is already committed (by the journal,
	// or by a job allowed earlier in the same tick); it is called once,
	// only for a job that would otherwise be allowed with a nonce. Nil
	// means no nonce is known spent beyond the verifier's nonce store (the
	// caller holds the guest back for another reason).
	Spent func(nonce string) bool
}

// DecideJob is the gate's one decision on a signed job, parsed once per
// tick: every refusal is made here, in this order: a payload that does
// not parse, a job for another host, a guest whose config could not be
// read, a job for another kind of guest, then decideParsed's checks
// (staleness, signatures, policy, the nonce store), then a nonce t.Spent
// reports committed. The decision carries the job's id and, when refused,
// a signedop rejection code.
func (g *Gate) DecideJob(pj signedop.ParsedJob, t Target) Decision {
	d := g.decideJob(pj, t)
	d.Job = pj.ID
	g.log(d)
	return d
}

func (g *Gate) decideJob(pj signedop.ParsedJob, t Target) Decision {
	if pj.Err != nil {
		return Decision{Outcome: Rejected, Code: pj.ErrCode, Reason: pj.Err.Error()}
	}
	p := pj.Payload
	a := ActionOf(p)
	refuse := func(code, reason string) Decision {
		return Decision{Action: a, Outcome: Rejected, Code: code, Reason: reason}
	}
	if p.Host != g.Host {
		return refuse(signedop.CodeWrongHost, fmt.Sprintf("signed for host %q, this agent is %q", p.Host, g.Host))
	}
	var cfg guest.Config
	digest := ""
	if o := t.Guest; o != nil {
		if o.ConfigErr != "" {
			return refuse(signedop.CodeConfigUnreadable, "guest config unreadable: "+o.ConfigErr)
		}
		if p.Kind != o.Kind {
			return refuse(signedop.CodeWrongKind, fmt.Sprintf("signed for a %s guest, but guest %d is %s", p.Kind, o.VMID, o.Kind))
		}
		cfg, digest = o.Config, o.Digest
	}
	d := g.decideParsed(pj, cfg, digest, t.Provenance)
	if n := d.Permit.Nonce(); d.Outcome == Allowed && n != "" && t.Spent != nil && t.Spent(n) {
		d.Outcome, d.Code, d.Reason, d.Permit = Rejected, signedop.CodeReplayed, Replayed(n).Error(), Permit{}
	}
	return d
}

// decideParsed gates the action a parsed signed job carries. The job's
// payload must parse; its action is classified like any other; a
// destructive action runs only when the verifier authorizes the job for
// exactly that action on currentDigest (the guest's config digest read
// just now). A benign action in a signed job runs without consuming the
// signature.
//
// Every job, benign or not, must first be signedop.Admissible (a known op,
// a validity window no longer than the verifier's MaxTTL, a digest where
// the op needs one): the same check the operator's tools make.
//
// It does not spend the nonce (see Permit.Nonce); it refuses a job whose
// nonce the verifier's nonce store already holds (spent before the journal
// recorded nonces, or by this agent since). Refusing a nonce the journal
// shows committed is DecideJob's.
func (g *Gate) decideParsed(pj signedop.ParsedJob, actual guest.Config, currentDigest string, prov classify.Provenance) Decision {
	if pj.Err != nil {
		return Decision{Outcome: Rejected, Code: pj.ErrCode, Reason: pj.Err.Error()}
	}
	p := pj.Payload
	a := ActionOf(p)
	v := classify.Classify(a, actual, prov)
	d := Decision{Action: a, Verdict: v}
	// The checks `steward op payload`, `sign` and `verify` make too, for
	// every job whatever its class.
	var maxTTL time.Duration
	if g.Verifier != nil {
		maxTTL = g.Verifier.MaxTTL
	}
	if err := signedop.Admissible(p, maxTTL); err != nil {
		d.Outcome, d.Code, d.Reason = Rejected, signedop.RejectionCode(err), err.Error()
		return d
	}
	if why := classify.ProtectionMismatch(a, actual); why != "" {
		d.Outcome, d.Code, d.Reason = Rejected, signedop.CodeWrongParams, why
		return d
	}
	if v.Class == classify.Benign {
		if code, reason := staleJob(a, actual, currentDigest); reason != "" {
			d.Outcome, d.Code, d.Reason = Rejected, code, reason
			return d
		}
		d.Outcome, d.Reason = Allowed, v.Reason
		d.Permit = Permit{action: a, verdict: v}
		return d
	}
	if g.Verifier == nil {
		d.Outcome, d.Code, d.Reason = Rejected, signedop.CodeNoSignersConfigured, "no signers configured on this agent (set --allowed-signers): destructive ops never run"
		return d
	}
	auth, err := g.Verifier.CheckParsed(pj, g.Host, a, currentDigest)
	var rj *signedop.Rejection
	if errors.As(err, &rj) && rj.Shortfall != nil {
		// Valid so far, only incomplete: held for more signatures, its
		// nonce unspent, unless that nonce is spent already (then more
		// signatures cannot make it run).
		if g.Verifier.Nonces != nil && g.Verifier.Nonces.Used(p.Nonce) {
			err = Replayed(p.Nonce)
			d.Outcome, d.Reason, d.Code = Rejected, err.Error(), signedop.CodeReplayed
			return d
		}
		d.Outcome, d.Code, d.Reason, d.Shortfall = AwaitingSignatures, signedop.CodeInsufficientSigners, rj.Shortfall.String(), rj.Shortfall
		return d
	}
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
		d.Outcome, d.Reason, d.Code = Rejected, err.Error(), signedop.RejectionCode(err)
		if d.Code == "" {
			d.Reason = "verification failed: " + err.Error()
		}
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
	if p, ok := g.awaiting[key]; ok && now.Before(p.Expires) && !now.Before(p.NotBefore) {
		return p, nil
	}
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

// Await replaces the set of payloads held for more signatures (the
// payloads of the jobs decided AwaitingSignatures this tick): while one
// is valid, Decide offers it for its action and digest instead of any
// other, so the next operator signs the bytes that already carry the
// first signatures rather than a fresh payload that would start over. A
// payload for another host is ignored.
func (g *Gate) Await(ps []signedop.Payload) {
	m := map[string]signedop.Payload{}
	for _, p := range ps {
		if p.Host != g.Host {
			continue
		}
		a := ActionOf(p)
		m[a.Key()+"@"+a.Digest] = p
	}
	g.mu.Lock()
	g.awaiting = m
	g.mu.Unlock()
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

// staleJob says why a benign job may not run on the guest as it is now,
// with its rejection code, or "". A job runs unsigned only because it was judged benign against the
// config it names: a config write, resize or snapshot job must name the
// guest's current digest (so the write passes it and PVE refuses it if the
// guest changed), and may not target a guest that does not exist (where
// every disk slot would look empty). Run-state jobs need the guest; a
// create or clone needs none.
func staleJob(a action.Action, actual guest.Config, currentDigest string) (code, reason string) {
	switch a.Op {
	case action.Create, action.Clone:
		return "", ""
	case action.Start, action.Shutdown, action.Stop, action.Reboot:
		if actual == nil {
			return signedop.CodeNoSuchGuest, fmt.Sprintf("guest %d does not exist on this host", a.VMID)
		}
		return "", ""
	}
	if actual == nil {
		return signedop.CodeNoSuchGuest, fmt.Sprintf("guest %d does not exist on this host; a %s job needs the guest it was made for", a.VMID, a.Op)
	}
	if a.Digest != currentDigest {
		return signedop.CodeStaleDigest, fmt.Sprintf("job made against config digest %q, guest %d now has %q: refused (stale_digest), a job is judged only on the state it names", a.Digest, a.VMID, currentDigest)
	}
	return "", ""
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
// The destructive part's payload is bound to actual's digest. The benign
// part changes that digest when it runs, so the engine offers the held
// part's payload only after gating it again on the config the benign write
// left (a payload bound to the old digest would be refused as stale).
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
