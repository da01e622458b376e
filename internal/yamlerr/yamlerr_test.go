package yamlerr

import (
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/deptest"
)

func TestPure(t *testing.T) { deptest.CheckPure(t) }

// Each input's fault is on the line given: the line a person would go to.
func TestSyntaxLineIsExact(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
	}{
		{"unclosed flow mapping (parser)", "roles:\n  alice: [operator]\nrequire:\n  destroy: {role: operator, count: 2\n", 4},
		{"unclosed flow sequence (parser)", "roles:\n  alice: [operator\nrequire:\n  x: 1\n", 2},
		{"key at the wrong indentation (parser)", "roles:\n  alice: [operator]\n require:\n  x: 1\n", 3},
		{"mapping in a sequence (parser)", "a:\n  - x\n  y: 1\n", 2},
		// A construct on the first line: yaml.v3 names the 0-based line
		// where it found the problem (the end of input, on line 2).
		{"flow mapping on the first line (parser)", "{a: 1\n", 2},
		{"tab indentation (scanner)", "roles:\n\talice: [operator]\n", 2},
		{"mapping value in a scalar (scanner)", "a: 1\nb: 2\n  c: 3\n", 3},
		{"unterminated quote (scanner)", "roles:\n  alice: \"unterminated\nrequire: {}\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n yaml.Node
			err := yaml.Unmarshal([]byte(tt.in), &n)
			if err == nil {
				t.Fatal("no syntax error")
			}
			line, msg := Syntax(err)
			if line != tt.line {
				t.Errorf("got line %d (%q, from %q); want %d", line, msg, err, tt.line)
			}
			if msg == "" || msg[:5] == "yaml:" || msg[:5] == "line " {
				t.Errorf("got message %q; want the bare problem", msg)
			}
		})
	}
}
