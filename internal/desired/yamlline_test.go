package desired

import (
	"strings"
	"testing"
)

// Issue 8 §6: a YAML syntax error names the exact line. yaml.v3's parser
// errors name the line before (0-based); the fault here is the flow
// mapping opened on line 6 and never closed.
func TestSyntaxErrorLineIsExact(t *testing.T) {
	doc := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {state: running\n"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "line 6: ") || !strings.Contains(err.Error(), "invalid YAML") {
		t.Fatalf("got %v; want an invalid YAML error at line 6", err)
	}
}
