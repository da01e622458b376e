package tlspin

import (
	"crypto/sha256"
	"strings"
	"testing"
)

func TestParseFormat(t *testing.T) {
	sum := sha256.Sum256([]byte("cert"))
	s := Format(sum[:])
	if len(s) != 95 || strings.ToUpper(s) != s || strings.Count(s, ":") != 31 {
		t.Fatalf("Format = %q; want 32 upper-case hex bytes joined by colons", s)
	}
	for _, in := range []string{s, strings.ToLower(s), strings.ReplaceAll(s, ":", ""), "  " + s + "\n"} {
		got, err := Parse(in)
		if err != nil || got != sum {
			t.Errorf("Parse(%q) = %x, %v; want %x", in, got, err, sum)
		}
	}
	for _, in := range []string{"", "AB:CD", s + ":00", strings.Replace(s, "A", "G", 1), "SHA256:abc"} {
		if _, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) accepted a malformed fingerprint", in)
		}
	}
}
