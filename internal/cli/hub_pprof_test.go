package cli

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func TestHubPprofLoopbackOnly(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:6060", "nonsense"} {
		_, _, err := startHubPprof(addr, log)
		var ue *UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), HubPprofEnv) {
			t.Errorf("startHubPprof(%q): got %v; want a usage error naming %s", addr, err, HubPprofEnv)
		}
	}
	addr, stop, err := startHubPprof("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	stop()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/pprof/cmdline: %d", resp.StatusCode)
	}
	if _, err := http.Get("http://" + addr + "/debug/pprof/"); err == nil {
		t.Fatal("profiles still served after stop")
	}
}
