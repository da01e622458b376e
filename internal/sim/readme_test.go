package sim

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// controlRowRE is a row of the README's control API table:
// | `METHOD /_sim/path` | `body` or nothing | effect |
var controlRowRE = regexp.MustCompile("^\\| `(GET|POST|PUT|DELETE) (/_sim/[^`]+)` \\| (?:`([^`]*)`)? *\\|")

// TestReadmeControlAPI keeps the README's control API table true: every
// documented request, with its documented body, succeeds in table order,
// and every control endpoint the simulator serves is documented.
func TestReadmeControlAPI(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	// A cluster, so that the HA rows have a node to move a guest to; the
	// other rows act on the default node "pve" as on a single node.
	ts := startSim(t, Options{Nodes: []string{"pve", "pve-b"}})
	documented := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		m := controlRowRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		method, path, body := m[1], m[2], m[3]
		documented[method+" "+path] = true
		req, _ := http.NewRequest(method, ts.url+strings.ReplaceAll(path, "{vmid}", "900"), strings.NewReader(body))
		r := ts.send(req, ts.s.Token())
		if r.err != nil || r.status != 200 {
			t.Errorf("README: %s %s %s: got %d %s %v; want 200", method, path, body, r.status, r.raw, r.err)
		}
	}
	for _, ep := range []string{"GET /_sim/mutations", "POST /_sim/guests", "PUT /_sim/guests/{vmid}/lock", "PUT /_sim/guests/{vmid}/ha", "POST /_sim/guests/{vmid}/ha/migrate", "POST /_sim/pools", "PUT /_sim/faults"} {
		if !documented[ep] {
			t.Errorf("README does not document control endpoint %s", ep)
		}
	}
	if g, ok := ts.s.Guest(900); !ok || g.Lock != "backup" {
		t.Errorf("after the README's requests guest 900 is %+v; want it added and locked", g)
	}
	if f := ts.s.currentFaults(); f.TaskFailRate != 0.1 {
		t.Errorf("after the README's requests task_fail_rate = %v; want 0.1", f.TaskFailRate)
	}
}
