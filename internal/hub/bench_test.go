package hub

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/steward-pve/steward/internal/wire"
)

// benchPost posts body to path with token b.N times over one keep-alive
// client, failing on any status but 200.
func benchPost(b *testing.B, url, path, token string, body []byte) {
	b.Helper()
	c := &http.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req, _ := http.NewRequest("POST", url+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
}

// BenchmarkHeartbeat is one agent heartbeat through the whole hub
// (authentication, hash check, in-memory last-seen, control envelope)
// over loopback HTTP; BenchmarkBaselineHealthz is the same HTTP round
// trip to the hub's trivial health handler, its same-run baseline.
func BenchmarkHeartbeat(b *testing.B) {
	e := newEnv(b)
	tok := e.enroll("pve-a")
	body, _ := wire.EncodeReport(report("pve-a"))
	e.must(200, "POST", "/v1/agent/hosts/pve-a/report", tok, body, nil)
	benchPost(b, e.url, "/v1/agent/hosts/pve-a/heartbeat", tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body)))
}

// BenchmarkReport is one changed full report (stored durably before
// the answer) of a host with 20 guests.
func BenchmarkReport(b *testing.B) {
	e := newEnv(b)
	tok := e.enroll("pve-a")
	rep := report("pve-a")
	for i := range 20 {
		rep.Guests = append(rep.Guests, wire.Guest{VMID: 100 + i, Kind: "qemu", Status: "running", Digest: "d",
			Config: map[string]string{"cores": "2", "memory": "4096", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0"}})
	}
	body, _ := wire.EncodeReport(rep)
	benchPost(b, e.url, "/v1/agent/hosts/pve-a/report", tok, body)
}

func BenchmarkBaselineHealthz(b *testing.B) {
	e := newEnv(b)
	c := &http.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		resp, err := c.Get(e.url + "/healthz")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
