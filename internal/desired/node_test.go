package desired

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseNode(t *testing.T) {
	for _, n := range []string{"pve-b", "PVE2", "n", "7", "node-01-rack-3"} {
		t.Run(n, func(t *testing.T) {
			doc, err := ParseFile("fleet.yaml", []byte(createHead+"        node: "+n+"\n"))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := doc.ForHost("pve-a").Guests[120].Node; got != n {
				t.Fatalf("node = %q; want %q", got, n)
			}
			b, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse(b) // what the hub stores parses back the same
			if err != nil {
				t.Fatalf("re-parsing %s: %v", b, err)
			}
			if got := back.ForHost("pve-a").Guests[120].Node; got != n {
				t.Errorf("after a JSON round trip: %q; want %q", got, n)
			}
		})
	}
	doc, err := Parse([]byte(createHead + "        kind: qemu\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.ForHost("pve-a").Guests[120].Node; got != "" {
		t.Errorf("node unset: %q; want \"\"", got)
	}
}

// A bad node: names the file, the line and the path, and PVE's grammar.
func TestParseNodeErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "        node: \"\"\n", "fleet.yaml:7: hosts.pve-a.guests.120.node: empty node name; omit node: to leave the guest's node unmanaged"},
		{"null", "        node:\n", "fleet.yaml:7: hosts.pve-a.guests.120.node: want a string, got null"},
		{"list", "        node: [pve-b]\n", "hosts.pve-a.guests.120.node: want a string, got a list"},
		{"underscore", "        kind: lxc\n        node: pve_b\n", "fleet.yaml:8: hosts.pve-a.guests.120.node: invalid node name \"pve_b\"; PVE node names are letters, digits and inner '-' (pve-node format)"},
		{"leading dash", "        node: -pve\n", "hosts.pve-a.guests.120.node: invalid node name \"-pve\""},
		{"trailing dash", "        node: pve-\n", "hosts.pve-a.guests.120.node: invalid node name \"pve-\""},
		{"dotted", "        node: pve.example.com\n", "invalid node name \"pve.example.com\""},
		{"too long", "        node: " + strings.Repeat("a", 254) + "\n", "node name longer than 253 characters"},
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

// One vmid under several hosts names one node or none.
func TestNodeAcrossHosts(t *testing.T) {
	head := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n"
	ok := []string{
		"  pve-a:\n    guests:\n      120: {node: pve-b}\n  pve-b:\n    guests:\n      120: {node: pve-b}\n",
		"  pve-a:\n    guests:\n      120: {node: pve-b}\n  pve-b:\n    guests:\n      120: {kind: qemu}\n",
		"  pve-a:\n    guests:\n      120: {node: pve-b}\n      121: {node: pve-c}\n",
	}
	for i, in := range ok {
		if _, err := ParseFile("fleet.yaml", []byte(head+in)); err != nil {
			t.Errorf("document %d: %v", i, err)
		}
	}
	_, err := ParseFile("fleet.yaml", []byte(head+"  pve-a:\n    guests:\n      120: {node: pve-b}\n  pve-b:\n    guests:\n      120:\n        node: pve-c\n"))
	want := "fleet.yaml:10: hosts.pve-b.guests.120.node: guest 120 is named with node pve-c here and node pve-b under host pve-a"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v; want it to contain %q", err, want)
	}
	// The same check for a document built in Go.
	d := &Document{APIVersion: APIVersion, Kind: DocumentKind, Hosts: map[string]*Host{
		"a": {Guests: map[int]*Guest{300: {Node: "x"}}},
		"b": {Guests: map[int]*Guest{300: {Node: "y"}}},
		"c": {Guests: map[int]*Guest{300: {Node: "bad_name"}}},
	}}
	err = d.Validate()
	for _, w := range []string{"hosts.b.guests.300.node: guest 300 is named with node y here and node x under host a", "hosts.c.guests.300.node: invalid node name \"bad_name\""} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Validate: %v; want it to contain %q", err, w)
		}
	}
}
