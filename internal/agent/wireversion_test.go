package agent_test

import (
	"bytes"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/steward-pve/steward/internal/hub"
	"github.com/steward-pve/steward/internal/hub/store"
	"github.com/steward-pve/steward/internal/wire"
)

// headerless drops the wire version header, as a hub of wire version 1
// answers.
type headerless struct{ http.ResponseWriter }

func (w headerless) WriteHeader(code int) {
	w.Header().Del(wire.VersionHeader)
	w.ResponseWriter.WriteHeader(code)
}

// TestAgentFallsBackToWireVersion1: a hub that reads only wire version 1
// (it names no version and refuses a report with guests[].observed, as
// an older hub's strict decoder does) gets version 1 reports: the
// agent's first refused report is sent again at once without the newer
// fields, and the host keeps reporting.
func TestAgentFallsBackToWireVersion1(t *testing.T) {
	h := &testHub{t: t, dbPath: filepath.Join(t.TempDir(), "hub.db"), opTok: hub.NewToken("stwo_")}
	var refused atomic.Int64
	h.wrap = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/report") {
				body, _ := io.ReadAll(r.Body)
				if bytes.Contains(body, []byte(`"observed"`)) || bytes.Contains(body, []byte(`"provenance"`)) {
					refused.Add(1)
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusBadRequest)
					io.WriteString(w, `{"error":"wire: decoding report: json: unknown field \"observed\"","code":"bad_report"}`)
					return
				}
				r.Body = io.NopCloser(bytes.NewReader(body))
			}
			next.ServeHTTP(headerless{w}, r)
		})
	}
	h.start()
	if err := h.st.CreateOperator(t.Context(), "alice", store.HashToken(h.opTok)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.stop)
	srv := startSim(t) // its sample guests are unmanaged: a version 2 report would carry their configs
	ha := runHubAgent(t, h, srv, t.TempDir(), h.joinToken("pve"), "")
	eventually(t, "a stored report after the fallback", func() bool {
		_, err := h.st.LastReport(t.Context(), "pve")
		return err == nil && ha.tickCount() >= 3
	})
	rep := h.lastReport("pve")
	if len(rep.Guests) == 0 {
		t.Fatal("the stored report lists no guests")
	}
	for _, g := range rep.Guests {
		if g.Observed != nil {
			t.Errorf("guest %d reported observed config to a version 1 hub", g.VMID)
		}
	}
	if n := refused.Load(); n != 1 {
		t.Errorf("the version 1 hub refused %d reports; want exactly 1 (the agent then sends version 1)", n)
	}
}
