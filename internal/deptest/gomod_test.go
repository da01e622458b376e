package deptest

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// requirement is one module line of go.mod's require blocks.
type requirement struct {
	path     string
	indirect bool
	line     int
}

// parseRequires reads the require directives of a go.mod (block and
// single-line forms).
func parseRequires(t *testing.T, data []byte) (module string, reqs []requirement) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(data))
	inBlock := false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		code, comment, _ := strings.Cut(line, "//")
		f := strings.Fields(code)
		switch {
		case len(f) == 2 && f[0] == "module":
			module = f[1]
		case len(f) == 2 && f[0] == "require" && f[1] == "(":
			inBlock = true
		case inBlock && len(f) == 1 && f[0] == ")":
			inBlock = false
		case inBlock && len(f) == 2, len(f) == 3 && f[0] == "require":
			path := f[0]
			if !inBlock {
				path = f[1]
			}
			reqs = append(reqs, requirement{path: path, indirect: strings.TrimSpace(comment) == "indirect", line: n})
		}
	}
	if module == "" {
		t.Fatal("go.mod has no module directive")
	}
	return module, reqs
}

// TestGoModMarksDirectDependencies holds go.mod to what `go mod tidy`
// writes: a module that steward's packages (or their tests) import is a
// direct requirement, never "// indirect", and a requirement not marked
// indirect is really imported. Readers of go.mod, and tools that audit
// dependencies, rely on the marks.
func TestGoModMarksDirectDependencies(t *testing.T) {
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	module, reqs := parseRequires(t, data)
	if len(reqs) == 0 {
		t.Fatal("go.mod requires nothing; want at least cobra and yaml")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.CommandContext(t.Context(), goTool, "list", "-f",
		`{{join .Imports "\n"}}{{"\n"}}{{join .TestImports "\n"}}{{"\n"}}{{join .XTestImports "\n"}}`, "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imported := map[string]string{} // module -> one importing package path
	for _, imp := range strings.Fields(string(out)) {
		first, _, _ := strings.Cut(imp, "/")
		if !strings.Contains(first, ".") || imp == module || strings.HasPrefix(imp, module+"/") {
			continue // standard library or steward itself
		}
		best := ""
		for _, r := range reqs {
			if (imp == r.path || strings.HasPrefix(imp, r.path+"/")) && len(r.path) > len(best) {
				best = r.path
			}
		}
		if best == "" {
			t.Errorf("package %s is imported but its module is not required in go.mod; run go mod tidy", imp)
			continue
		}
		imported[best] = imp
	}
	for _, r := range reqs {
		_, direct := imported[r.path]
		switch {
		case direct && r.indirect:
			t.Errorf("go.mod:%d: %s is marked // indirect but steward imports %s from it; run go mod tidy", r.line, r.path, imported[r.path])
		case !direct && !r.indirect:
			t.Errorf("go.mod:%d: %s is not marked // indirect but no steward package imports it; run go mod tidy", r.line, r.path)
		}
	}
}
