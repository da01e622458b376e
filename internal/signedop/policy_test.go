package signedop_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/signedop"
)

func TestParsePolicy(t *testing.T) {
	p, err := signedop.ParsePolicy([]byte(`
roles:
  alice@example.com: [operator]
  bob@example.com: [operator, admin]
require:
  destroy: {role: operator, count: 2}
  snapshot_rollback: {role: admin, count: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		op   action.Op
		want signedop.Requirement
	}{
		{action.Destroy, signedop.Requirement{Role: "operator", Count: 2}},
		{action.SnapshotRollback, signedop.Requirement{Role: "admin", Count: 1}},
		{action.SetConfig, signedop.Requirement{Role: "operator", Count: 1}}, // "*" defaulted
		{"unknown_op", signedop.Requirement{Role: "operator", Count: 1}},
	}
	for _, tt := range tests {
		if got := p.Requirement(tt.op); got != tt.want {
			t.Errorf("Requirement(%s): got %+v; want %+v", tt.op, got, tt.want)
		}
	}
	if got := p.RolesOf("bob@example.com"); !slices.Equal(got, []string{"operator", "admin"}) {
		t.Errorf("RolesOf(bob): got %v", got)
	}
	if got := p.RolesOf("carol@example.com"); len(got) != 0 {
		t.Errorf("RolesOf(unlisted) with a roles section: got %v; want none", got)
	}

	for _, empty := range []string{"", "\n", "# only a comment\n"} {
		d, err := signedop.ParsePolicy([]byte(empty))
		if err != nil {
			t.Fatalf("ParsePolicy(%q): %v", empty, err)
		}
		if got := d.Requirement(action.Destroy); got != (signedop.Requirement{Role: "operator", Count: 1}) {
			t.Errorf("default Requirement: got %+v", got)
		}
		if got := d.RolesOf("anyone"); !slices.Equal(got, []string{"operator"}) {
			t.Errorf("default RolesOf: got %v; want [operator]", got)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct{ name, in, wantSub string }{
		{"unknown top-level field", "requires: {}\n", "requires"},
		{"unknown requirement field", "require:\n  destroy: {role: operator, count: 1, quorum: 2}\n", "quorum"},
		{"misspelled op", "require:\n  destory: {role: operator, count: 1}\n", "destory"},
		{"zero count", "require:\n  destroy: {role: operator, count: 0}\n", "count 0"},
		{"empty role", "require:\n  destroy: {count: 1}\n", "role is empty"},
		{"empty role in roles", "roles:\n  alice: ['']\n", "empty role"},
		{"two documents", "roles: {}\n---\nroles: {}\n", "more than one"},
		{"not a map", "- a\n", "policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := signedop.ParsePolicy([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantSub) || !strings.HasPrefix(err.Error(), "signedop: policy") {
				t.Fatalf("got %v; want error prefixed signedop: policy containing %q", err, tt.wantSub)
			}
		})
	}
}
