package signedop

import (
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/signedop/spec"
)

// Rejection codes of Admissible (see package spec).
const (
	CodeUnknownOp     = spec.CodeUnknownOp
	CodeMissingDigest = spec.CodeMissingDigest
)

// KnownOps is spec.KnownOps.
func KnownOps() []action.Op { return spec.KnownOps() }

// NeedsDigest is spec.NeedsDigest.
func NeedsDigest(op action.Op) bool { return spec.NeedsDigest(op) }

// Admissible is spec.Admissible: the payload checks the agent makes before
// anything else, shared with the operator's tools.
func Admissible(p Payload, maxTTL time.Duration) error { return spec.Admissible(p, maxTTL) }

// Window returns the times between which the verifier accepts p: from
// not_before minus the clock-skew allowance (inclusive) until expires plus
// the allowance (exclusive), and the allowance itself.
func (v *Verifier) Window(p Payload) (from, until time.Time, skew time.Duration) {
	skew = v.skew()
	return p.NotBefore.Add(-skew), p.Expires.Add(skew), skew
}

func (v *Verifier) maxTTL() time.Duration {
	if v.MaxTTL > 0 {
		return v.MaxTTL
	}
	return DefaultMaxTTL
}
