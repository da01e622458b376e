package signedop_test

import (
	"os"
	"path/filepath"
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

// Policy errors read like desired-state ones: exact line, the entry's
// path, what was expected; one "signedop: policy" prefix, never stacked.
func TestParsePolicyErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"unknown top-level field", "requires: {}\n", "signedop: policy: line 1: requires: unknown field (want roles, require)"},
		{"unknown requirement field", "require:\n  destroy: {role: operator, count: 1, quorum: 2}\n",
			"signedop: policy: line 2: require.destroy.quorum: unknown field (want role, count)"},
		{"misspelled op", "require:\n  destory: {role: operator, count: 1}\n",
			`signedop: policy: line 2: require.destory: unknown op (want one of start, shutdown, stop, reboot, config, resize, create, clone, destroy, snapshot, snapshot_rollback, snapshot_delete, migrate, or "*" for any op)`},
		{"zero count", "require:\n  destroy:\n    role: operator\n    count: 0\n", `signedop: policy: line 4: require.destroy.count: want an integer from 1 to 100, got "0"`},
		{"count not a number", "require:\n  destroy: {role: operator, count: two}\n", `signedop: policy: line 2: require.destroy.count: want an integer from 1 to 100, got "two"`},
		{"missing role", "require:\n  destroy: {count: 1}\n", "signedop: policy: line 2: require.destroy: role is missing; want the role whose holders may sign, e.g. {role: operator, count: 1}"},
		{"empty role in roles", "roles:\n  alice: ['']\n", `signedop: policy: line 2: roles.alice[0]: want a role name (a non-empty string), got ""`},
		{"roles not a list", "roles:\n  alice: operator\n", `signedop: policy: line 2: roles.alice: want a list of role names like [operator], got "operator"`},
		{"duplicate op", "require:\n  destroy: {role: a, count: 1}\n  destroy: {role: b, count: 1}\n", "signedop: policy: line 3: require.destroy: duplicate key (first at line 2)"},
		{"two documents", "roles: {}\n---\nroles: {}\n", "signedop: policy: line 2: more than one YAML document; put the whole policy in one"},
		{"not a map", "- a\n", "signedop: policy: line 1: want a mapping with the fields roles and require, got a list"},
		{"unclosed flow mapping", "roles:\n  alice: [operator]\nrequire:\n  destroy: {role: operator, count: 2\n",
			"signedop: policy: line 4: invalid YAML: did not find expected ',' or '}'"},
		{"alias", "require:\n  destroy: &r {role: operator, count: 2}\n  snapshot_delete: *r\n", "signedop: policy: line 2: require.destroy: anchors and aliases are not supported; write the value out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := signedop.ParsePolicy([]byte(tt.in))
			if err == nil {
				t.Fatal("got no error")
			}
			first := strings.SplitN(err.Error(), "\n", 2)[0]
			if first != tt.want {
				t.Errorf("got  %s\nwant %s", first, tt.want)
			}
		})
	}
}

// A policy read from a file names the file once, and each problem.
func TestReadPolicyFileErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte("require:\n  destory: {role: operator, count: 1}\n  destroy: {role: operator, count: 0}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := signedop.ReadPolicyFile(p)
	if err == nil {
		t.Fatal("got no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %q; want two problems", err)
	}
	for i, want := range []string{"signedop: policy " + p + ": line 2: require.destory: unknown op", "signedop: policy " + p + ": line 3: require.destroy.count: want an integer"} {
		if !strings.HasPrefix(lines[i], want) {
			t.Errorf("problem %d: got %q; want prefix %q", i+1, lines[i], want)
		}
		if strings.Count(lines[i], "policy:")+strings.Count(lines[i], "signedop:") != 1 {
			t.Errorf("problem %d: %q stacks prefixes", i+1, lines[i])
		}
	}
}

// FuzzParsePolicy: any input either parses into a valid policy or fails
// with PolicyErrors that each carry a line; nothing panics.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"", "roles:\n  alice: [operator]\nrequire:\n  destroy: {role: operator, count: 2}\n",
		"require:\n  destroy: {role: operator, count: 0}\n", "- a\n", "a: &x 1\nb: *x\n", "{a: 1\n", "roles: {a: [b, c]}\n---\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := signedop.ParsePolicy(b)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "signedop: policy: ") {
					t.Fatalf("error line %q lacks the single prefix", line)
				}
			}
			return
		}
		if verr := p.Validate(); verr != nil {
			t.Fatalf("ParsePolicy accepted %q, but Validate says %v", b, verr)
		}
	})
}
