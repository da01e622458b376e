package spec

import (
	"fmt"
	"slices"
	"time"

	"github.com/steward-pve/steward/internal/action"
)

// Rejection codes of Admissible.
const (
	CodeUnknownOp     = "unknown_op"
	CodeMissingDigest = "missing_digest"
)

// DefaultMaxTTL is the longest validity window (not_before to expires) an
// agent accepts unless configured otherwise.
const DefaultMaxTTL = 7 * 24 * time.Hour

// KnownOps returns the ops an agent can run, in a fixed order. A payload
// for any other op is refused (CodeUnknownOp).
func KnownOps() []action.Op { return slices.Clone(knownOps) }

// NeedsDigest reports whether a payload for op must name the guest's
// config digest: every op on an existing guest whose config or data it
// reads or changes (config, resize, destroy, the snapshot ops, and a
// migration, which moves the guest's disks as its config names them). Start,
// shutdown, stop and reboot act on run state only, and a create's guest does not
// exist yet.
func NeedsDigest(op action.Op) bool {
	switch op {
	case action.SetConfig, action.Resize, action.Destroy, action.SnapshotCreate, action.SnapshotRollback, action.SnapshotDelete, action.Migrate:
		return true
	}
	return false
}

// Admissible checks what about a payload needs no signature, no clock and
// no guest: its op is one the agent knows, its validity window (not_before
// to expires) is at most maxTTL (0 means DefaultMaxTTL), and an op that
// needs a digest (NeedsDigest) names one. It returns nil or a *Rejection.
//
// The agent's gate and verifier call it for every signed job, and
// `steward op payload`, `sign` and `verify` call it too, so the operator's
// tools refuse exactly what the agent refuses, with the same codes and
// reasons.
func Admissible(p Payload, maxTTL time.Duration) error {
	if maxTTL <= 0 {
		maxTTL = DefaultMaxTTL
	}
	if !slices.Contains(knownOps, p.Op) {
		return &Rejection{Code: CodeUnknownOp, Reason: fmt.Sprintf("op %q is not one this agent can run (known: %v)", p.Op, knownOps)}
	}
	if ttl := p.Expires.Sub(p.NotBefore); ttl > maxTTL {
		return &Rejection{Code: CodeTTLTooLong, Reason: fmt.Sprintf("payload is valid for %v; this agent accepts at most %v", ttl, maxTTL)}
	}
	if p.Digest == "" && NeedsDigest(p.Op) {
		return &Rejection{Code: CodeMissingDigest, Reason: fmt.Sprintf("op %s acts on guest %d's current config, so the payload must name its config digest (the \"digest\" PVE returns with the guest's config; `steward op payload --digest`)", p.Op, p.VMID)}
	}
	return nil
}
