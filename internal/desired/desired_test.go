package desired

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

func ptr(s string) *string { return &s }

func TestParseFleetFile(t *testing.T) {
	data, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(data)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Document{
		APIVersion: "steward/v1",
		Kind:       "Fleet",
		Hosts: map[string]*Host{
			"pve-a": {Guests: map[int]*Guest{
				101: {
					Kind:        guest.LXC,
					Mode:        Enforce,
					State:       Running,
					Restart:     RestartAllowed,
					Description: ptr("web frontend\n"),
					Tags:        []string{"prod", "web"},
					Config: map[string]string{
						"cores":    "2",
						"memory":   "2048",
						"onboot":   "1",
						"cpulimit": "1.5",
						"net0":     "name=eth0,bridge=vmbr0,ip=dhcp",
					},
					Ignore: []string{"net0"},
				},
				102: {Kind: guest.QEMU, State: Stopped},
				103: {},
			}},
			"pve-b": {},
		},
	}
	if !reflect.DeepEqual(doc, want) {
		gj, _ := json.MarshalIndent(doc, "", " ")
		wj, _ := json.MarshalIndent(want, "", " ")
		t.Fatalf("got %s; want %s", gj, wj)
	}
	if got := doc.ForHost("pve-a").Guests[101].EffectiveMode(); got != Enforce {
		t.Errorf("EffectiveMode: got %q; want enforce", got)
	}
	if got := doc.ForHost("pve-a").Guests[102].EffectiveMode(); got != Enforce {
		t.Errorf("EffectiveMode of unset mode: got %q; want enforce", got)
	}
	if got := doc.ForHost("pve-a").Guests[102].EffectiveRestart(); got != RestartNever {
		t.Errorf("EffectiveRestart of unset restart: got %q; want never", got)
	}
}

func TestParseJSON(t *testing.T) {
	in := `{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve-a":{"guests":{"101":{"kind":"qemu","mode":"observe","tags":[],"description":"","config":{"memory":4096,"numa":false,"name":"db"}}}}}}`
	doc, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	g := doc.ForHost("pve-a").Guests[101]
	if g == nil {
		t.Fatal("guest 101 missing")
	}
	if g.Mode != Observe || g.Kind != guest.QEMU {
		t.Errorf("got mode %q kind %q; want observe qemu", g.Mode, g.Kind)
	}
	if g.Tags == nil || len(g.Tags) != 0 {
		t.Errorf("got tags %#v; want non-nil empty (managed: no tags)", g.Tags)
	}
	if g.Description == nil || *g.Description != "" {
		t.Errorf("got description %v; want pointer to empty", g.Description)
	}
	wantCfg := map[string]string{"memory": "4096", "numa": "0", "name": "db"}
	if !reflect.DeepEqual(g.Config, wantCfg) {
		t.Errorf("got config %v; want %v", g.Config, wantCfg)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "   \n\n", "# only a comment\n# another\n", "~\n", "null", "---\n"} {
		t.Run(strings.ReplaceAll(in, "\n", `\n`), func(t *testing.T) {
			doc, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", in, err)
			}
			if doc == nil || !doc.IsEmpty() {
				t.Fatalf("got %#v; want empty document", doc)
			}
			h := doc.ForHost("pve-a")
			if h == nil || len(h.Guests) != 0 {
				t.Fatalf("ForHost: got %#v; want empty host", h)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	const head = "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101:\n"
	tests := []struct {
		name string
		in   string
		want []string // substrings, each must appear in the error
	}{
		{"unknown guest field", head + "        confg: {}\n", []string{"desired: line 7: hosts.pve-a.guests.101.confg: unknown field"}},
		{"unknown top field", "apiVersion: steward/v1\nkind: Fleet\nhostz: {}\n", []string{"line 3: hostz: unknown field"}},
		{"unknown host field", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guest: {}\n", []string{"hosts.pve-a.guest: unknown field"}},
		{"missing header", "hosts:\n  pve-a: {}\n", []string{"apiVersion: missing", "kind: missing"}},
		{"wrong header", "apiVersion: steward/v2\nkind: Fleets\n", []string{"line 1: apiVersion: unsupported value \"steward/v2\"", "line 2: kind: unsupported value \"Fleets\""}},
		{"bad kind", head + "        kind: vm\n", []string{"hosts.pve-a.guests.101.kind: invalid value \"vm\""}},
		{"bad mode", head + "        mode: dry\n", []string{"guests.101.mode: invalid value \"dry\""}},
		{"bad state", head + "        state: paused\n", []string{"guests.101.state: invalid value \"paused\""}},
		{"bad restart", head + "        restart: always\n", []string{"guests.101.restart: invalid value \"always\"; want never or allowed"}},
		{"vmid too small", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      99: {}\n", []string{"line 6: hosts.pve-a.guests.99: vmid 99 out of range"}},
		{"vmid too big", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      1000000000: {}\n", []string{"guests.1000000000: vmid 1000000000 out of range"}},
		{"vmid not a number", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      web: {}\n", []string{"guests.web: invalid vmid \"web\""}},
		{"vmid leading zero", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      \"0101\": {}\n", []string{"invalid vmid \"0101\""}},
		{"duplicate vmid", head + "        state: running\n      101: {}\n", []string{"line 8: hosts.pve-a.guests.101: duplicate key (first at line 6)"}},
		{"config description", head + "        config: {description: x}\n", []string{"guests.101.config.description: key cannot be managed: manage it with the guest-level description field"}},
		{"config tags", head + "        config: {tags: a}\n", []string{"config.tags: key cannot be managed"}},
		{"config digest", head + "        config: {digest: abc}\n", []string{"config.digest: key cannot be managed: computed by PVE"}},
		{"config lock", head + "        config: {lock: backup}\n", []string{"config.lock: key cannot be managed"}},
		{"config bad key", head + "        config: {\"Cores!\": 2}\n", []string{"config.Cores!: invalid key"}},
		{"config one-letter key", head + "        config: {c: 2}\n", []string{"config.c: invalid key"}},
		{"config list value", head + "        config:\n          net0: [a, b]\n", []string{"line 8: hosts.pve-a.guests.101.config.net0: want a scalar value", "got a list"}},
		{"config map value", head + "        config:\n          net0: {a: b}\n", []string{"config.net0: want a scalar value"}},
		{"config null value", head + "        config:\n          cores:\n", []string{"config.cores: want a scalar value", "got null"}},
		{"config empty value", head + "        config:\n          name: \"\"\n", []string{"config.name: empty value"}},
		{"config newline value", head + "        config:\n          name: \"a\\nb\"\n", []string{"config.name: value contains a newline"}},
		{"config inf", head + "        config:\n          cpulimit: .inf\n", []string{"config.cpulimit: invalid number"}},
		{"config nan", head + "        config:\n          cpulimit: .nan\n", []string{"config.cpulimit: invalid number"}},
		{"config hex", head + "        config:\n          cores: 0x10\n", []string{"line 8: hosts.pve-a.guests.101.config.cores: number \"0x10\" is not plain decimal (YAML reads it as 16)"}},
		{"config octal", head + "        config:\n          cores: 017\n", []string{"config.cores: number \"017\" is not plain decimal (YAML reads it as 15)"}},
		{"config leading zero", head + "        config:\n          cores: 08\n", []string{"config.cores: number \"08\" is not plain decimal"}},
		{"config separators", head + "        config:\n          memory: 1_024\n", []string{"config.memory: number \"1_024\" is not plain decimal"}},
		{"tags not list", head + "        tags: prod\n", []string{"guests.101.tags: want a list of tags"}},
		{"bad tag", head + "        tags: [ok, \"bad tag\"]\n", []string{"guests.101.tags[1]: invalid tag \"bad tag\""}},
		{"tag list item", head + "        tags: [[a]]\n", []string{"tags[0]: want a string, got a list"}},
		{"ignore bad key", head + "        ignore: [\"x y\"]\n", []string{"guests.101.ignore[0]: invalid key"}},
		{"description null", head + "        description: ~\n", []string{"guests.101.description: null is not a description"}},
		{"description map", head + "        description: {a: b}\n", []string{"guests.101.description: want a string, got a mapping"}},
		{"guest is a list", head[:len(head)-1] + " [a]\n", []string{"hosts.pve-a.guests.101: want a guest (a mapping), got a list"}},
		{"bad host id", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  \"-pve\": {}\n", []string{"line 4: hosts.-pve: invalid host id"}},
		{"alias", "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  a: &h {}\n  b: *h\n", []string{"line 5: hosts.b: anchors and aliases are not supported"}},
		{"merge key", head + "        <<: {kind: lxc}\n", []string{"merge keys (<<) are not supported"}},
		{"two documents", "apiVersion: steward/v1\nkind: Fleet\n---\napiVersion: steward/v1\n", []string{"line 3", "more than one YAML document"}},
		{"syntax error", "apiVersion: steward/v1\nkind: [\n", []string{"desired: line ", "invalid YAML"}},
		{"document is a list", "- a\n", []string{"(document): want the document (a mapping), got a list"}},
		{"several errors", head + "        kind: vm\n        state: on\n        confg: 1\n", []string{"kind: invalid value", "state: invalid value", "confg: unknown field"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse: got nil error, doc %#v; want error containing %q", doc, tt.want)
			}
			if doc != nil {
				t.Errorf("got non-nil document with error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error %q; want it to contain %q", err, w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("got %T; want a *FieldError in the chain", err)
			} else if fe.Path == "" && fe.Line == 0 {
				t.Errorf("FieldError %q names neither a path nor a line", fe)
			}
		})
	}
}

func TestParseSeveralErrorsAreAllReported(t *testing.T) {
	in := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101: {kind: vm, mode: x}\n      102: {confg: 1}\n"
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("got nil error; want three errors")
	}
	u, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("got %T; want a joined error", err)
	}
	if got := len(u.Unwrap()); got != 3 {
		t.Fatalf("got %d errors (%v); want 3", got, err)
	}
}

func TestParseConfigScalars(t *testing.T) {
	tests := []struct{ key, yaml, want string }{
		{"cores", "2", "2"},
		{"cores", "+5", "5"},
		{"balloon", "-0", "0"},
		{"cpulimit", "1.5", "1.5"},
		{"cpulimit", "1.50", "1.50"}, // the operator's digits, not a float's
		{"cpulimit", "1e1", "1e1"},
		{"onboot", "true", "1"},
		{"onboot", "false", "0"},
		{"onboot", "yes", "1"}, // YAML 1.2 reads a string; onboot is boolean in PVE's schema
		{"onboot", "Off", "0"},
		{"onboot", "'on'", "1"}, // quoted or JSON strings too: the key decides
		{"name", "yes", "yes"},  // a string key keeps the string
		{"cores", "\"2\"", "2"},
		{"net0", "'virtio,bridge=vmbr0'", "virtio,bridge=vmbr0"},
		// Exact: a float64 round trip would make these 100000000000000000000
		// and 18446744073709551616.
		{"cores", "99999999999999999999", "99999999999999999999"},
		{"cores", "18446744073709551617", "18446744073709551617"},
	}
	for _, tt := range tests {
		t.Run(tt.key+"="+tt.yaml, func(t *testing.T) {
			in := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n      100:\n        config:\n          " + tt.key + ": " + tt.yaml + "\n"
			doc, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := doc.ForHost("h").Guests[100].Config[tt.key]; got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestValidateBuiltDocument(t *testing.T) {
	ok := &Document{APIVersion: APIVersion, Kind: DocumentKind, Hosts: map[string]*Host{
		"pve-a": {Guests: map[int]*Guest{101: {Kind: guest.LXC, Config: map[string]string{"cores": "2"}}}},
		"pve-b": nil,
	}}
	if err := ok.Validate(); err != nil {
		t.Errorf("valid document: got %v; want nil", err)
	}
	var nilDoc *Document
	if err := nilDoc.Validate(); err != nil {
		t.Errorf("nil document: got %v; want nil", err)
	}
	if err := (&Document{}).Validate(); err != nil {
		t.Errorf("empty document: got %v; want nil", err)
	}
	bad := &Document{APIVersion: APIVersion, Kind: DocumentKind, Hosts: map[string]*Host{
		"pve-a": {Guests: map[int]*Guest{
			5:   {},
			101: {Kind: "vm", Config: map[string]string{"digest": "x"}, Tags: []string{""}},
		}},
	}}
	err := bad.Validate()
	if err == nil {
		t.Fatal("invalid document: got nil; want errors")
	}
	for _, w := range []string{
		"desired: hosts.pve-a.guests.5: vmid 5 out of range",
		"hosts.pve-a.guests.101.kind: invalid value",
		"hosts.pve-a.guests.101.config.digest: key cannot be managed",
		"hosts.pve-a.guests.101.tags[0]: empty tag",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q; want it to contain %q", err, w)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(j)
	if err != nil {
		t.Fatalf("Parse(json.Marshal(doc)): %v\n%s", err, j)
	}
	// Empty guests and hosts marshal as {} and come back as empty values.
	if !reflect.DeepEqual(again, doc) {
		t.Errorf("got %#v; want %#v", again, doc)
	}
}

func TestForHost(t *testing.T) {
	var nilDoc *Document
	if h := nilDoc.ForHost("x"); h == nil || len(h.Guests) != 0 {
		t.Errorf("nil doc: got %#v; want empty host", h)
	}
	doc := &Document{Hosts: map[string]*Host{"a": nil, "b": {Guests: map[int]*Guest{100: {}}}}}
	if h := doc.ForHost("a"); h == nil || len(h.Guests) != 0 {
		t.Errorf("nil host entry: got %#v; want empty host", h)
	}
	if h := doc.ForHost("missing"); h == nil || len(h.Guests) != 0 {
		t.Errorf("missing host: got %#v; want empty host", h)
	}
	if h := doc.ForHost("b"); len(h.Guests) != 1 {
		t.Errorf("host b: got %d guests; want 1", len(h.Guests))
	}
}

func TestEmptyProvider(t *testing.T) {
	doc, err := Empty{}.Desired(t.Context())
	if err != nil || doc == nil || !doc.IsEmpty() {
		t.Fatalf("got %#v, %v; want empty document, nil", doc, err)
	}
}

func TestGuestIgnored(t *testing.T) {
	g := &Guest{Ignore: []string{"net0"}}
	if !g.Ignored("net0") || g.Ignored("net1") {
		t.Errorf("Ignored: got net0=%v net1=%v; want true false", g.Ignored("net0"), g.Ignored("net1"))
	}
}

func TestParseErrorCountIsBounded(t *testing.T) {
	in := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  h:\n    guests:\n" + strings.Repeat("      1: {}\n", 500)
	_, err := Parse([]byte(in))
	if err == nil {
		t.Fatal("got nil error; want errors")
	}
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	if len(errs) != maxErrors+1 {
		t.Fatalf("got %d errors; want %d (capped) plus a summary", len(errs), maxErrors)
	}
	if last := errs[len(errs)-1].Error(); !strings.Contains(last, "and 450 more errors") {
		t.Errorf("got last error %q; want a count of the 450 errors left out", last)
	}
}
