package deptest

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestOnlyCLIImportsCobra keeps command-line handling at the edge: cobra
// (flag parsing and command dispatch) may be imported by internal/cli and
// by main packages only, so the daemon (internal/agent), the engine and the
// hub stay usable as libraries without a command line. Test files count.
func TestOnlyCLIImportsCobra(t *testing.T) {
	root := filepath.Join("..", "..")
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "list", "-f",
		`{{.ImportPath}} {{.Name}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		checked++
		pkg, name := f[0], f[1]
		if name == "main" || strings.HasSuffix(pkg, "/internal/cli") {
			continue
		}
		for _, imp := range f[2:] {
			if imp == "github.com/spf13/cobra" || strings.HasPrefix(imp, "github.com/spf13/cobra/") {
				t.Errorf("%s imports %s; only internal/cli and main packages may (move the flag handling to internal/cli)", pkg, imp)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("go list listed %d packages; want the whole module:\n%s", checked, out)
	}
}
