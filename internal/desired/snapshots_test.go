package desired

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSnapshots(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  *Snapshots
		every time.Duration
	}{
		{"daily", "        snapshots: {every: 24h, keep: 7, vmstate: false}\n", &Snapshots{Every: "24h", Keep: 7}, 24 * time.Hour},
		{"normalized", "        kind: qemu\n        snapshots: {every: 1440m, keep: 3, vmstate: true}\n", &Snapshots{Every: "24h", Keep: 3, VMState: true}, 24 * time.Hour},
		{"days", "        snapshots:\n          every: 7d\n          keep: 4\n", &Snapshots{Every: "168h", Keep: 4}, 7 * 24 * time.Hour},
		{"hours and minutes", "        snapshots: {every: 90m, keep: 1}\n", &Snapshots{Every: "1h30m", Keep: 1}, 90 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse([]byte(createHead + tt.in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			got := doc.ForHost("pve-a").Guests[120].Snapshots
			if !reflect.DeepEqual(got, tt.want) || got.Interval() != tt.every {
				t.Fatalf("got %+v (interval %s); want %+v (%s)", got, got.Interval(), tt.want, tt.every)
			}
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b) // JSON is YAML: what the hub stores parses back the same
			if err != nil {
				t.Fatalf("re-parsing %s: %v", b, err)
			}
			if g := back.ForHost("pve-a").Guests[120].Snapshots; !reflect.DeepEqual(g, tt.want) {
				t.Errorf("after a JSON round trip: %+v; want %+v", g, tt.want)
			}
		})
	}
}

// Bad snapshot schedules name the file, the line and the path.
func TestParseSnapshotsErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"no every", "        snapshots: {keep: 7}\n", "fleet.yaml:7: hosts.pve-a.guests.120.snapshots.every: missing"},
		{"no keep", "        snapshots: {every: 24h}\n", "fleet.yaml:7: hosts.pve-a.guests.120.snapshots.keep: missing"},
		{"bad every", "        snapshots: {every: daily, keep: 7}\n", "fleet.yaml:7: hosts.pve-a.guests.120.snapshots.every: invalid interval \"daily\""},
		{"too often", "        snapshots:\n          every: 5m\n          keep: 7\n", "fleet.yaml:8: hosts.pve-a.guests.120.snapshots.every: interval 5m is shorter than the minimum 1h"},
		{"keep zero", "        snapshots: {every: 24h, keep: 0}\n", "snapshots.keep: keep 0 out of range; want 1..100"},
		{"keep huge", "        snapshots: {every: 24h, keep: 1000}\n", "snapshots.keep: keep 1000 out of range"},
		{"keep not a number", "        snapshots: {every: 24h, keep: seven}\n", "snapshots.keep: want a whole number"},
		{"keep quoted", "        snapshots: {every: 24h, keep: \"7\"}\n", "snapshots.keep: want a whole number"},
		{"vmstate on lxc", "        kind: lxc\n        snapshots: {every: 24h, keep: 7, vmstate: true}\n", "fleet.yaml:8: hosts.pve-a.guests.120.snapshots.vmstate: containers have no vmstate"},
		{"vmstate kind unpinned", "        snapshots: {every: 24h, keep: 7, vmstate: true}\n", "snapshots.vmstate: vmstate is for qemu guests only: set kind: qemu"},
		{"vmstate not a boolean", "        snapshots: {every: 24h, keep: 7, vmstate: yes please}\n", "snapshots.vmstate: want true or false"},
		{"unknown field", "        snapshots: {every: 24h, keep: 7, prefix: x}\n", "fleet.yaml:7: hosts.pve-a.guests.120.snapshots.prefix: unknown field (want every, keep, vmstate)"},
		{"null", "        snapshots:\n", "hosts.pve-a.guests.120.snapshots: null is not a snapshot schedule"},
		{"list", "        snapshots: [24h]\n", "snapshots: want a snapshot schedule (a mapping), got a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFile("fleet.yaml", []byte(createHead+tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want it to contain %q", err, tt.want)
			}
		})
	}
}
