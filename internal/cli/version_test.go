package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

// Issue 8 §6: `steward --version` works and prints what `steward version`
// prints.
func TestVersionFlag(t *testing.T) {
	out, _, err := runCLI(t, "--version")
	if err != nil {
		t.Fatalf("steward --version: %v", err)
	}
	cmd, _, err := runCLI(t, "version")
	if err != nil {
		t.Fatalf("steward version: %v", err)
	}
	if !strings.HasPrefix(out, "steward "+Version+" (commit ") || out != cmd {
		t.Errorf("--version printed %q, version printed %q; want the same line with the commit", out, cmd)
	}
}

// `steward version` names the commit from the build info, and says when
// the tree had uncommitted changes.
func TestVersionLineCommit(t *testing.T) {
	bi := &debug.BuildInfo{Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "4472e2e0c0ffee"}, {Key: "vcs.modified", Value: "false"}}}
	if got := versionLine(bi); !strings.Contains(got, "(commit 4472e2e0c0ffee)") {
		t.Errorf("got %q; want the commit", got)
	}
	bi.Settings[1].Value = "true"
	if got := versionLine(bi); !strings.Contains(got, "(commit 4472e2e0c0ffee with uncommitted changes)") {
		t.Errorf("got %q; want the commit marked modified", got)
	}
	if got := versionLine(nil); !strings.Contains(got, "(commit unknown)") {
		t.Errorf("got %q; want commit unknown without build info", got)
	}
}
