package spec

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/steward-pve/steward/internal/action"
)

// DefaultRole is the role every allowed signer holds when a policy names
// no roles, and the role the default requirement asks for.
const DefaultRole = "operator"

// Requirement is what one op needs: Count distinct signers holding Role.
type Requirement struct {
	Role  string `yaml:"role"`
	Count int    `yaml:"count"`
}

// Policy says which roles each signer holds and how many distinct signers
// of which role each op needs. The zero Policy is DefaultPolicy.
//
// The file form (YAML, strict: unknown fields are errors):
//
//	roles:                  # principal (as written in allowed_signers, or a certificate principal) → roles
//	  alice@example.com: [operator]
//	  bob@example.com: [operator, admin]
//	require:                # op name or "*" → requirement
//	  "*": {role: operator, count: 1}
//	  destroy: {role: operator, count: 2}
//
// Without a roles section every allowed signer is an operator; with one,
// principals it does not list hold no role. Ops not listed in require fall
// back to "*", and "*" defaults to one operator.
type Policy struct {
	Roles   map[string][]string    // principal → roles; nil: every signer is DefaultRole
	Require map[string]Requirement // op or "*" → requirement
}

// DefaultPolicy is the policy when no policy file exists: any destructive op
// needs one signature from any allowed signer.
func DefaultPolicy() Policy {
	return Policy{Require: map[string]Requirement{"*": {Role: DefaultRole, Count: 1}}}
}

var knownOps = []action.Op{action.Start, action.Shutdown, action.Stop, action.Reboot, action.SetConfig, action.Resize,
	action.Create, action.Clone, action.Destroy, action.SnapshotCreate, action.SnapshotRollback, action.SnapshotDelete, action.Migrate}

// Validate checks that every requirement names a known op or "*", a
// non-empty role and a count of at least 1, and every role is non-empty.
func (p Policy) Validate() error {
	for _, op := range slices.Sorted(maps.Keys(p.Require)) {
		r := p.Require[op]
		if op != "*" && !slices.Contains(knownOps, action.Op(op)) {
			return fmt.Errorf("signedop: policy: require.%s: unknown op (known: %v, or \"*\")", op, knownOps)
		}
		if r.Role == "" {
			return fmt.Errorf("signedop: policy: require.%s: role is empty", op)
		}
		if r.Count < 1 || r.Count > 100 {
			return fmt.Errorf("signedop: policy: require.%s: count %d; want 1 to 100", op, r.Count)
		}
	}
	for _, pr := range slices.Sorted(maps.Keys(p.Roles)) {
		if pr == "" {
			return errors.New("signedop: policy: roles: empty principal")
		}
		for _, r := range p.Roles[pr] {
			if r == "" {
				return fmt.Errorf("signedop: policy: roles.%s: empty role", pr)
			}
		}
	}
	return nil
}

// Requirement returns what op needs: its own entry, else "*", else one
// DefaultRole signature.
func (p Policy) Requirement(op action.Op) Requirement {
	if r, ok := p.Require[string(op)]; ok {
		return r
	}
	if r, ok := p.Require["*"]; ok {
		return r
	}
	return Requirement{Role: DefaultRole, Count: 1}
}

// RolesOf returns the roles principal holds.
func (p Policy) RolesOf(principal string) []string {
	if p.Roles == nil {
		return []string{DefaultRole}
	}
	return p.Roles[principal]
}
