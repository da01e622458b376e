package pve

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// Benchmarks report ratios against baselines measured in the same run:
//
//	go test -run XXX -bench . -benchmem ./internal/pve/
//
// BenchmarkDecodeConfig vs BenchmarkDecodeConfigBaselineMap (plain
// encoding/json into map[string]any), and BenchmarkClientGuestConfig vs
// BenchmarkClientBaselineRawGET (net/http GET of the same body over the
// same loopback TLS server, body discarded).

func qemuConfigData(b *testing.B) []byte {
	var env envelope[json.RawMessage]
	if err := json.Unmarshal(fixture(b, "unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json"), &env); err != nil {
		b.Fatal(err)
	}
	return env.Data
}

func BenchmarkDecodeConfig(b *testing.B) {
	data := qemuConfigData(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		gc, err := DecodeConfig(data)
		if err != nil || len(gc.Values) != 22 {
			b.Fatalf("DecodeConfig = %d keys, %v", len(gc.Values), err)
		}
	}
}

func BenchmarkDecodeConfigBaselineMap(b *testing.B) {
	data := qemuConfigData(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil || len(m) != 23 {
			b.Fatalf("Unmarshal = %d keys, %v", len(m), err)
		}
	}
}

func benchBody(b *testing.B) []byte {
	return fixture(b, "unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json")
}

func BenchmarkClientGuestConfig(b *testing.B) {
	body := benchBody(b)
	_, c := newServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write(body)
	}))
	ctx := b.Context()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			gc, err := c.GuestConfig(ctx, "pve", guest.QEMU, 555)
			if err != nil || gc.Digest == "" {
				b.Errorf("GuestConfig = %v, %v", gc, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkClientBaselineRawGET(b *testing.B) {
	body := benchBody(b)
	srv, _ := newServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Write(body)
	}))
	hc := srv.Client()
	url := srv.URL + "/api2/json/nodes/pve/qemu/555/config"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := hc.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}
