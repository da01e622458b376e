package classify

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestPureImports keeps the package pure: its non-test files may import
// only the standard library's computation packages listed here, never an
// I/O package (os, net, io, log, syscall, time, ...).
func TestPureImports(t *testing.T) {
	allowed := map[string]bool{
		"errors": true, "fmt": true, "math": true, "math/big": true,
		"strings": true, "strconv": true, "slices": true, "sort": true,
		"unicode": true, "unicode/utf8": true, "iter": true, "maps": true,
		"github.com/steward-pve/steward/internal/action":  true,
		"github.com/steward-pve/steward/internal/guest":   true,
		"github.com/steward-pve/steward/internal/propstr": true,
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !allowed[path] {
				t.Errorf("%s imports %q; want only pure packages %v", name, path, allowed)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files checked")
	}
}
