package signedop

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/allowedsigners"
	"github.com/steward-pve/steward/internal/nonce"
	"github.com/steward-pve/steward/internal/signedop/spec"
	"golang.org/x/crypto/ssh"
)

// Signer is one distinct key that signed a job.
type Signer struct {
	Principal   string   // the principal credited for the policy (first listed if none was needed)
	Fingerprint string   // SHA256:... of the signing key (the certificate's key for a certificate)
	Roles       []string // roles of all the key's principals
}

// Authorization is a verified, policy-satisfying signed job.
type Authorization struct {
	Signers []Signer
	Nonce   string
	Payload Payload
}

// Defaults for Verifier fields left zero.
const (
	DefaultMaxSkew       = 5 * time.Minute
	DefaultMaxTTL        = spec.DefaultMaxTTL
	DefaultMaxSignatures = 16
)

// NonceStore holds the nonces of signed jobs that ran, until they expire
// (package nonce's Store is the agent's). Methods are safe for concurrent
// use and do not block on anything but local storage.
type NonceStore interface {
	// Use records nonce as spent until expires. A nonce already held is
	// an error wrapping nonce.ErrReplayed; a store with no room left, one
	// wrapping nonce.ErrFull.
	Use(nonce string, expires time.Time) error
	// Used reports whether nonce is held (spent and not yet expired).
	Used(nonce string) bool
	// Full reports whether Use would fail for lack of room.
	Full() bool
}

// Verifier decides whether signed jobs authorize actions. Its fields are
// set once before use; Authorize is then safe for concurrent use.
type Verifier struct {
	// Signers is the allowed_signers set; nil or empty rejects every job.
	Signers *allowedsigners.Set
	// Policy is the signing policy; the zero Policy is DefaultPolicy.
	Policy Policy
	// Nonces records consumed nonces; Authorize rejects every job when nil.
	Nonces NonceStore
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// MaxSkew is the clock skew tolerated at both ends of a payload's
	// validity window; 0 means DefaultMaxSkew.
	MaxSkew time.Duration
	// MaxTTL is the longest validity window accepted (not_before to
	// expires); 0 means DefaultMaxTTL. It bounds how long nonces are held.
	MaxTTL time.Duration
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

func (v *Verifier) skew() time.Duration {
	if v.MaxSkew > 0 {
		return v.MaxSkew
	}
	return DefaultMaxSkew
}

// Authorize verifies that job authorizes exactly action a on host, with
// the guest's config digest now currentDigest, and consumes the job's
// nonce. It returns the authorization, or a *Rejection whose code says
// which rule failed first. Checks, in order: signers configured; payload
// canonical and version 1; Admissible (a known op, the window no longer
// than MaxTTL, a digest where the op needs one); op, host, vmid, kind,
// params and digest equal to the action's; digest equal to currentDigest;
// now within [not_before−MaxSkew, expires+MaxSkew) (Window); every signature well-formed, in Namespace, sha256/sha512, not
// SHA-1 RSA, with user presence for FIDO keys, cryptographically valid and
// by a key allowed_signers accepts now for Namespace (any bad signature
// rejects the job); distinct keys whose principals hold the roles the
// policy asks for a.Op; then the nonce is recorded durably until expires +
// MaxSkew. Nothing is consumed unless every check passes, and a nonce
// already recorded is rejected as "replayed".
func (v *Verifier) Authorize(job Job, host string, a action.Action, currentDigest string) (Authorization, error) {
	auth, err := v.Check(job, host, a, currentDigest)
	if err != nil {
		return Authorization{}, err
	}
	if v.Nonces == nil {
		return Authorization{}, reject(CodeNonceStoreError, "no nonce store is configured; signed operations cannot run")
	}
	p := auth.Payload
	switch err := v.Nonces.Use(p.Nonce, p.Expires.Add(v.skew())); {
	case err == nil:
	case errors.Is(err, nonce.ErrReplayed):
		return Authorization{}, reject(CodeReplayed, "nonce %s was already used: this signed operation has run (or was authorized) before; sign a new payload", p.Nonce)
	case errors.Is(err, nonce.ErrFull):
		return Authorization{}, reject(CodeNonceStoreFull, "the agent's nonce store is full of unexpired nonces; retry after older signed operations expire")
	default:
		return Authorization{}, reject(CodeNonceStoreError, "recording nonce failed: %v", err)
	}
	return auth, nil
}

// Requirement returns what the verifier's policy asks of op: how many
// distinct signers of which role.
func (v *Verifier) Requirement(op action.Op) Requirement {
	policy := v.Policy
	if policy.Require == nil && policy.Roles == nil {
		policy = DefaultPolicy()
	}
	return policy.Requirement(op)
}

// Check performs every check of Authorize except consuming the nonce. It
// is for showing a verdict (steward op verify) and must never be the
// reason an action runs: a job that passes Check may be a replay.
func (v *Verifier) Check(job Job, host string, a action.Action, currentDigest string) (Authorization, error) {
	if v.Signers.Len() == 0 {
		return Authorization{}, reject(CodeNoSignersConfigured, "no signers are configured on this agent (empty allowed_signers), so destructive operations never run")
	}
	return v.CheckParsed(ParseJob(job), host, a, currentDigest)
}

// CheckParsed is Check on a job already parsed (ParseJob), so a tick reads
// each payload once.
func (v *Verifier) CheckParsed(pj ParsedJob, host string, a action.Action, currentDigest string) (Authorization, error) {
	if v.Signers.Len() == 0 {
		return Authorization{}, reject(CodeNoSignersConfigured, "no signers are configured on this agent (empty allowed_signers), so destructive operations never run")
	}
	if pj.Err != nil {
		return Authorization{}, reject(pj.ErrCode, "%s", strings.TrimPrefix(pj.Err.Error(), "signedop: "))
	}
	job, p := pj.Job, pj.Payload
	if err := Admissible(p, v.maxTTL()); err != nil {
		return Authorization{}, err
	}
	if err := p.Matches(host, a); err != nil {
		var me *MismatchError
		errors.As(err, &me)
		code := map[string]string{"op": CodeWrongOp, "host": CodeWrongHost, "vmid": CodeWrongVMID,
			"kind": CodeWrongKind, "params": CodeWrongParams, "digest": CodeStaleDigest}[me.Field]
		return Authorization{}, reject(code, "signed payload %s is %s but the action's is %s", me.Field, me.Signed, me.Want)
	}
	if p.Digest != currentDigest {
		return Authorization{}, reject(CodeStaleDigest, "guest %d's config changed since signing (signed against digest %q, now %q); review and sign again", p.VMID, p.Digest, currentDigest)
	}
	now := v.now()
	from, until, skew := v.Window(p)
	switch {
	case now.Before(from):
		return Authorization{}, reject(CodeNotYetValid, "payload is not valid before %s (agent time %s, skew allowed %v)", p.NotBefore.Format(TimeLayout), now.UTC().Format(TimeLayout), skew)
	case !now.Before(until):
		return Authorization{}, reject(CodeExpired, "payload expired at %s (agent time %s, skew allowed %v)", p.Expires.Format(TimeLayout), now.UTC().Format(TimeLayout), skew)
	}
	if len(job.Signatures) == 0 {
		return Authorization{}, reject(CodeNoSignatures, "the job carries no signatures")
	}
	if len(job.Signatures) > DefaultMaxSignatures {
		return Authorization{}, reject(CodeTooManySignatures, "the job carries %d signatures; at most %d allowed", len(job.Signatures), DefaultMaxSignatures)
	}
	type keyInfo struct {
		fp         string
		principals []string
	}
	var keys []keyInfo
	for i, raw := range job.Signatures {
		at := func(err error) error {
			r := err.(*Rejection)
			return &Rejection{Code: r.Code, Reason: fmt.Sprintf("signature %d: %s", i+1, r.Reason)}
		}
		sig, err := ParseSignature(raw)
		if err != nil {
			return Authorization{}, at(err)
		}
		if err := VerifySignature(sig, job.Payload); err != nil {
			return Authorization{}, at(err)
		}
		principals, err := v.Signers.Find(sig.PublicKey, sig.Namespace, now)
		if err != nil {
			return Authorization{}, at(signerRejection(err))
		}
		fp := ssh.FingerprintSHA256(plainKey(sig.PublicKey))
		j := slices.IndexFunc(keys, func(k keyInfo) bool { return k.fp == fp })
		if j < 0 {
			keys = append(keys, keyInfo{fp: fp})
			j = len(keys) - 1
		}
		for _, pr := range principals {
			if !slices.Contains(keys[j].principals, pr) {
				keys[j].principals = append(keys[j].principals, pr)
			}
		}
	}
	policy := v.Policy
	if policy.Require == nil && policy.Roles == nil {
		policy = DefaultPolicy()
	}
	req := policy.Requirement(p.Op)
	// Credit each distinct key to at most one principal holding the role,
	// and each principal at most once: a maximum bipartite matching (keys
	// and principals are few), so one person with two keys and one key
	// listed for two people both count once.
	eligible := make([][]string, len(keys))
	for i, k := range keys {
		for _, pr := range k.principals {
			if slices.Contains(policy.RolesOf(pr), req.Role) {
				eligible[i] = append(eligible[i], pr)
			}
		}
	}
	owner := map[string]int{} // principal → key index
	var try func(i int, seen map[string]bool) bool
	try = func(i int, seen map[string]bool) bool {
		for _, pr := range eligible[i] {
			if seen[pr] {
				continue
			}
			seen[pr] = true
			if j, taken := owner[pr]; !taken || try(j, seen) {
				owner[pr] = i
				return true
			}
		}
		return false
	}
	credited := make([]string, len(keys))
	matched := 0
	for i := range keys {
		if try(i, map[string]bool{}) {
			matched++
		}
	}
	for pr, i := range owner {
		credited[i] = pr
	}
	if matched < req.Count {
		sf := &Shortfall{Role: req.Role, Need: req.Count}
		for i, k := range keys {
			if credited[i] != "" {
				sf.Signed = append(sf.Signed, credited[i])
			} else if len(k.principals) > 0 {
				sf.Others = append(sf.Others, k.principals[0])
			} else {
				sf.Others = append(sf.Others, k.fp)
			}
		}
		r := reject(CodeInsufficientSigners, "op %s needs %d distinct signer(s) with role %q; got %d (from %d distinct key(s)): %s", p.Op, req.Count, req.Role, matched, len(keys), sf)
		r.Shortfall = sf
		return Authorization{}, r
	}
	auth := Authorization{Nonce: p.Nonce, Payload: p}
	for i, k := range keys {
		s := Signer{Principal: credited[i], Fingerprint: k.fp}
		if s.Principal == "" && len(k.principals) > 0 {
			s.Principal = k.principals[0]
		}
		for _, pr := range k.principals {
			for _, r := range policy.RolesOf(pr) {
				if !slices.Contains(s.Roles, r) {
					s.Roles = append(s.Roles, r)
				}
			}
		}
		auth.Signers = append(auth.Signers, s)
	}
	return auth, nil
}

func signerRejection(err error) *Rejection {
	msg := strings.TrimPrefix(err.Error(), "allowedsigners: ")
	switch {
	case errors.Is(err, allowedsigners.ErrNamespace):
		return reject(CodeWrongNamespace, "%s", msg)
	case errors.Is(err, allowedsigners.ErrNotYetValid):
		return reject(CodeSignerNotYetValid, "%s", msg)
	case errors.Is(err, allowedsigners.ErrExpired):
		return reject(CodeSignerExpired, "%s", msg)
	case errors.Is(err, allowedsigners.ErrCertificate):
		return reject(CodeBadCertificate, "%s", msg)
	default:
		return reject(CodeUnknownSigner, "%s", msg)
	}
}
