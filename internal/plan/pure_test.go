package plan

import (
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// ioImports may not be imported directly by a pure package's non-test files.
var ioImports = []string{"os", "os/", "io/ioutil", "io/fs", "path/filepath", "syscall", "net", "net/", "database/", "plugin", "unsafe"}

// ioDeps may not appear anywhere in a pure package's dependency graph.
var ioDeps = []string{"net", "net/http", "os/exec", "database/sql", "crypto/tls", "log/syslog", "plugin"}

func banned(path string, list []string) bool {
	for _, b := range list {
		if strings.HasSuffix(b, "/") && strings.HasPrefix(path, b) || path == b {
			return true
		}
	}
	return false
}

// TestPure keeps this package free of I/O: no direct import of an I/O
// package, and no networking or process execution anywhere below it (as
// tailscale's deps_test.go does).
func TestPure(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if banned(p, ioImports) {
				t.Errorf("%s imports %q; this package must stay pure (move I/O to a subpackage)", f, p)
			}
		}
	}
	if checked == 0 {
		t.Fatal("found no non-test Go files to check")
	}

	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "list", "-deps", ".")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("go list -deps gave %q; want this package and its dependencies", out)
	}
	for _, d := range deps {
		if banned(d, ioDeps) {
			t.Errorf("dependency graph contains %q; this package must stay pure", d)
		}
	}
}
