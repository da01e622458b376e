package hub

import (
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/desired"
)

// FuzzValidDesired: whatever an operator PUTs, an accepted document is
// JSON that parses again and names no host but the one in the path.
func FuzzValidDesired(f *testing.F) {
	f.Add([]byte(docA))
	f.Add([]byte(strings.ReplaceAll(docA, "pve-a", "pve-b")))
	f.Add([]byte(`{"hosts":{"pve-a":{"guests":{"101":{"kind":"qemu","config":{"memory":2048}}}}}}`))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := validDesired("pve-a", body)
		if err != nil {
			return
		}
		doc, err := desired.Parse(out)
		if err != nil {
			t.Fatalf("accepted %q; its stored form %s does not parse: %v", body, out, err)
		}
		for id := range doc.Hosts {
			if id != "pve-a" {
				t.Fatalf("accepted %q naming host %q", body, id)
			}
		}
	})
}

// FuzzQueryHeaders: the wait parameter and If-Match either fail or give a
// value in range.
func FuzzQueryHeaders(f *testing.F) {
	for _, s := range []string{"", "90s", "30", "1h", "-1", `"3"`, "W/\"2\"", "*", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := parseWait(s); err == nil && (d < 0 || d > MaxWait) {
			t.Fatalf("parseWait(%q) = %v, outside 0..%v", s, d, MaxWait)
		}
		if g, err := parseIfMatch(s); err == nil && g < -1 {
			t.Fatalf("parseIfMatch(%q) = %d", s, g)
		}
	})
}
