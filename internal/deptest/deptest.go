// Package deptest keeps steward's pure packages pure. Planning,
// classification, normalization, desired-state validation and the wire
// types do computation only; a test in each calls CheckPure, which fails
// when the package imports an I/O package directly or pulls networking or
// process execution into its dependency graph (as tailscale's deps_test.go
// files do).
package deptest

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

// direct lists packages a pure package's non-test files may not import. A
// trailing slash bans the whole tree.
var direct = []string{"os", "os/", "io/ioutil", "io/fs", "path/filepath", "syscall", "net", "net/",
	"database/", "plugin", "unsafe", "log", "log/slog", "log/syslog"}

// anywhere lists packages that may not appear in the dependency graph at
// all.
var anywhere = []string{"net", "net/http", "os/exec", "database/sql", "crypto/tls", "log/syslog", "plugin"}

// pureNet are the net packages that only parse and format.
var pureNet = map[string]bool{"net/netip": true, "net/url": true}

func banned(path string, list []string) bool {
	if pureNet[path] {
		return false
	}
	for _, b := range list {
		if path == b || strings.HasSuffix(b, "/") && strings.HasPrefix(path, b) {
			return true
		}
	}
	return false
}

// CheckPure checks the package in the test's working directory (the
// package under test). It needs the go tool, which `go test` provides.
func CheckPure(t *testing.T) {
	t.Helper()
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
			if banned(p, direct) {
				t.Errorf("%s imports %q; this package must stay pure (move the I/O to a caller or a subpackage)", f, p)
			}
		}
	}
	if checked == 0 {
		t.Fatal("deptest: no non-test Go files to check")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.CommandContext(t.Context(), goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("deptest: go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 2 {
		t.Fatalf("deptest: go list -deps gave %q; want the package and its dependencies", out)
	}
	for _, d := range deps {
		if banned(d, anywhere) {
			t.Errorf("dependency graph contains %q; this package must stay pure", d)
		}
	}
}
