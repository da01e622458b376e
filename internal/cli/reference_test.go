package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCommandReferenceIsCurrent keeps docs/commands.md from drifting: it
// must be exactly what the generator writes from the CLI's own help.
func TestCommandReferenceIsCurrent(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "commands.md")
	committed, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading the command reference: %v; generate it with `go generate ./internal/cli` (or `go run ./docs/gen`) and commit it", err)
	}
	var b bytes.Buffer
	if err := WriteReference(&b); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(committed, b.Bytes()) {
		return
	}
	got, want := strings.Split(string(committed), "\n"), strings.Split(b.String(), "\n")
	line := 0
	for line < len(got) && line < len(want) && got[line] == want[line] {
		line++
	}
	g, w := "(end of file)", "(end of file)"
	if line < len(got) {
		g = got[line]
	}
	if line < len(want) {
		w = want[line]
	}
	t.Fatalf("docs/commands.md is out of date with the CLI's help (first difference at line %d):\n  committed: %s\n  generated: %s\nRegenerate it with `go generate ./internal/cli` (or `go run ./docs/gen` from the repository root) and commit the result.", line+1, g, w)
}

// TestCommandReferenceContent checks what a reader of the reference relies
// on: every command has a section, every flag a row with its environment
// variable and default.
func TestCommandReferenceContent(t *testing.T) {
	var b bytes.Buffer
	if err := WriteReference(&b); err != nil {
		t.Fatal(err)
	}
	ref := b.String()
	n := 0
	root := Tree()
	for _, c := range root.Commands() {
		n++
		if !strings.Contains(ref, "\n## "+c.CommandPath()+"\n") {
			t.Errorf("reference has no section for %q", c.CommandPath())
		}
		for _, s := range c.Commands() {
			if !strings.Contains(ref, "\n## "+s.CommandPath()+"\n") {
				t.Errorf("reference has no section for %q", s.CommandPath())
			}
		}
	}
	if n < 5 {
		t.Fatalf("command tree has %d commands; want agent, hub, sim, op, version, help, completion...", n)
	}
	for _, want := range []string{
		"| `--pve-url string` | `STEWARD_PVE_URL` | `https://127.0.0.1:8006` | PVE API base URL |",
		"| `--state-dir string` | `STEWARD_STATE_DIR` | `/var/lib/steward` |",
		"| `-v, --version` |  |  | version for steward |",
		"(default &lt;state-dir&gt;/jobs; must exist when set)",
		"- [steward op sign](#steward-op-sign)",
		"\n```text\nsteward sim [flags]\n```\n",
	} {
		if !strings.Contains(ref, want) {
			t.Errorf("reference lacks %q", want)
		}
	}
}

// TestPortableDefault: a default derived from the generating user's home or
// XDG directories must not make the committed reference machine-specific.
func TestPortableDefault(t *testing.T) {
	t.Setenv("HOME", "/home/alice")
	t.Setenv("XDG_CONFIG_HOME", "/srv/cfg")
	for _, tc := range []struct{ in, want string }{
		{"/home/alice/.local/share/steward", "~/.local/share/steward"},
		{"/srv/cfg/steward/config.yaml", "$XDG_CONFIG_HOME/steward/config.yaml"},
		{"/var/lib/steward", "/var/lib/steward"},
		{"127.0.0.1:8440", "127.0.0.1:8440"},
	} {
		if got := portableDefault(tc.in); got != tc.want {
			t.Errorf("portableDefault(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestDedent(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"  a\n    b\n  c", "a\n  b\nc"},
		{"\n\n  a\n  b\n", "a\nb"},
		{"a\n  b", "a\n  b"},
		{"\tx\n\n\ty", "x\n\ny"},
		{"", ""},
	} {
		if got := dedent(tc.in); got != tc.want {
			t.Errorf("dedent(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}
