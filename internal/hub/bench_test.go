package hub

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/hub/store"
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

// BenchmarkHeartbeatFleet is BenchmarkHeartbeat in a fleet of 2,000
// enrolled hosts that have all reported (a database of realistic size,
// its pages not all in one cache), each heartbeat from another host.
// Compare it with BenchmarkBaselineHealthz.
func BenchmarkHeartbeatFleet(b *testing.B) {
	const hosts = 2000
	e := newEnv(b)
	ctx := b.Context()
	toks := make([]string, hosts)
	bodies := make([][]byte, hosts)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < hosts; i += 32 {
				id := fmt.Sprintf("pve-%05d", i)
				join, tok := NewToken("stwj_"), NewToken("stwh_")
				if err := e.st.CreateJoinToken(ctx, id, store.HashToken(join), time.Now().Add(time.Hour)); err != nil {
					b.Error(err)
					return
				}
				if _, err := e.st.Enroll(ctx, store.HashToken(join), store.HashToken(tok)); err != nil {
					b.Error(err)
					return
				}
				body, _ := wire.EncodeReport(report(id))
				if err := e.st.PutReport(ctx, id, body, ReportHash(body)); err != nil {
					b.Error(err)
					return
				}
				toks[i], bodies[i] = tok, fmt.Appendf(nil, `{"hash":%q}`, ReportHash(body))
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	c := &http.Client{}
	b.ReportAllocs()
	b.ResetTimer()
	for n := range b.N {
		i := n * 7919 % hosts // a stride: consecutive requests far apart in the table
		req, _ := http.NewRequest("POST", fmt.Sprintf("%s/v1/agent/hosts/pve-%05d/heartbeat", e.url, i), bytes.NewReader(bodies[i]))
		req.Header.Set("Authorization", "Bearer "+toks[i])
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("heartbeat of pve-%05d: %d", i, resp.StatusCode)
		}
	}
}
