package desired

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
)

// doc101 is a document with guest 101 of kind (none when "") whose config
// block is cfg (lines indented by ten spaces); config keys start at line 9
// with a kind, line 8 without.
func doc101(kind, cfg string) string {
	s := "apiVersion: steward/v1\nkind: Fleet\nhosts:\n  pve-a:\n    guests:\n      101:\n"
	if kind != "" {
		s += "        kind: " + kind + "\n"
	}
	return s + "        config:\n" + cfg
}

func TestParseSchemaErrors(t *testing.T) {
	const p = "hosts.pve-a.guests.101.config."
	tests := []struct {
		name, kind, cfg string
		want            []string // substrings of the error
	}{
		{"integer as a word", "qemu", "          cores: two\n", []string{
			"desired: line 9: " + p + "cores: invalid value for a qemu guest: type check ('integer') failed - got 'two'",
			"PVE's schema: cores <integer> (1 - N) (The number of cores per socket.)"}},
		{"float for an integer", "lxc", "          cores: 2.5\n", []string{
			"line 9: " + p + "cores: invalid value for an lxc guest: type check ('integer') failed - got '2.5'",
			"cores <integer> (1 - 8192)"}},
		{"qemu memory with a unit", "qemu", "          memory: 2G\n", []string{
			"line 9: " + p + "memory: invalid value for a qemu guest: invalid format - memory.current: type check ('integer') failed - got '2G'",
			"memory [current=]<integer> (Memory properties.)"}},
		{"lxc memory with a unit", "lxc", "          memory: 2G\n", []string{
			"line 9: " + p + "memory: invalid value for an lxc guest: type check ('integer') failed - got '2G'",
			"memory <integer> (16 - N) (Amount of RAM for the container in MB.)"}},
		{"lxc memory below the minimum", "lxc", "          memory: 8\n", []string{
			p + "memory: invalid value for an lxc guest: value must have a minimum value of 16"}},
		{"misspelt key", "qemu", "          corse: 2\n", []string{
			"line 9: " + p + "corse: unknown config key for a qemu guest: PVE's qemu schema has no \"corse\"; did you mean \"cores\"?"}},
		{"misspelt key, kind not pinned", "", "          memroy: 2048\n", []string{
			"line 8: " + p + "memroy: unknown config key: neither qemu nor lxc guests have \"memroy\" in PVE's schema; did you mean \"memory\"?"}},
		{"key of the other kind", "qemu", "          rootfs: local-lvm:8\n", []string{
			p + "rootfs: unknown config key for a qemu guest"}},
		{"index out of range", "qemu", "          scsi31: local-lvm:8\n", []string{
			p + "scsi31: unknown config key for a qemu guest: PVE's qemu schema has no \"scsi31\"; scsi[n] keys run from scsi0 to scsi30"}},
		{"index not canonical", "lxc", "          net01: name=eth0\n", []string{p + "net01: unknown config key for an lxc guest"}},
		{"lxc cores above the maximum", "lxc", "          cores: 99999999999999999999\n", []string{
			p + "cores: invalid value for an lxc guest: value must have a maximum value of 8192"}},
		{"qemu memory 1e308", "qemu", "          memory: 1e308\n", []string{
			p + "memory: invalid value for a qemu guest: invalid format - memory.current: type check ('integer') failed - got '1e308'"}},
		{"lxc memory 1e308", "lxc", "          memory: 1e308\n", []string{
			p + "memory: invalid value for an lxc guest: type check ('integer') failed - got '1e308'"}},
		{"memory 1e308, kind not pinned", "", "          memory: 1e308\n", []string{
			p + "memory: invalid value for qemu guests: invalid format - memory.current: type check ('integer') failed - got '1e308'",
			"and for lxc guests: type check ('integer') failed - got '1e308'"}},
		{"number above the maximum", "qemu", "          cpulimit: 1e308\n", []string{
			p + "cpulimit: invalid value for a qemu guest: value must have a maximum value of 128", "cpulimit <number> (0 - 128)"}},
		{"same problem in both kinds", "", "          cores: two\n", []string{
			p + "cores: invalid value for qemu and lxc guests: type check ('integer') failed - got 'two'; qemu: PVE's schema: cores <integer> (1 - N)",
			"lxc: PVE's schema: cores <integer> (1 - 8192)"}},
		{"only lxc has the key", "", "          swap: lots\n", []string{
			p + "swap: invalid value for an lxc guest: type check ('integer') failed - got 'lots'", "(qemu guests have no swap key)"}},
		{"not a boolean", "qemu", "          onboot: maybe\n", []string{
			p + "onboot: invalid value for a qemu guest: type check ('boolean') failed - got 'maybe'"}},
		{"property string: unknown option", "qemu", "          net0: virtio,brigde=vmbr0\n", []string{
			p + "net0: invalid value for a qemu guest: invalid format - invalid key in comma-separated list property: brigde"}},
		{"property string: option out of range", "qemu", "          net0: virtio,bridge=vmbr0,tag=5000\n", []string{
			p + "net0: invalid value for a qemu guest: invalid format - net0.tag: value must have a maximum value of 4094"}},
		{"property string: required option missing", "lxc", "          net0: bridge=vmbr0\n", []string{
			p + "net0: invalid value for an lxc guest: invalid format - net0.name: property is missing and it is not optional"}},
		{"property string: bad disk size", "lxc", "          rootfs: local-lvm:vm-101-disk-0,size=huge\n", []string{
			p + "rootfs: invalid value for an lxc guest: invalid format - rootfs.size: invalid format - value does not look like a valid disk size: huge"}},
		{"enumeration", "qemu", "          ostype: windows\n", []string{
			p + "ostype: invalid value for a qemu guest: value 'windows' does not have a value in the enumeration"}},
		// API call parameters are not config keys.
		{"delete", "qemu", "          delete: net1\n", []string{p + "delete: key cannot be managed: an API call parameter"}},
		{"revert", "lxc", "          revert: cores\n", []string{p + "revert: key cannot be managed"}},
		{"skiplock", "qemu", "          skiplock: 1\n", []string{p + "skiplock: key cannot be managed"}},
		{"node", "qemu", "          node: pve\n", []string{p + "node: key cannot be managed"}},
		{"vmid", "lxc", "          vmid: 101\n", []string{p + "vmid: key cannot be managed"}},
		{"digest", "qemu", "          digest: abc\n", []string{p + "digest: key cannot be managed"}},
		{"import-working-storage", "qemu", "          import-working-storage: local\n", []string{p + "import-working-storage: unknown config key for a qemu guest"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := Parse([]byte(doc101(tt.kind, tt.cfg)))
			if err == nil {
				t.Fatalf("Parse: got nil error, doc %#v; want an error", doc)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got error\n%s\nwant it to contain\n%s", err, w)
				}
			}
			if strings.Count(err.Error(), "\n") != 0 {
				t.Errorf("got a multi-line error %q; want one line for one key", err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Line == 0 || fe.Path == "" {
				t.Errorf("got %#v; want a *FieldError with a path and a line", fe)
			}
		})
	}
}

func TestParseSchemaValid(t *testing.T) {
	tests := []struct{ kind, cfg string }{
		{"qemu", "          cores: 4\n          sockets: 2\n          memory: 4096\n          balloon: 0\n          onboot: 1\n          cpulimit: 1.5\n          net0: virtio,bridge=vmbr0,firewall=1\n          scsi0: local-lvm:vm-105-disk-0,size=100G\n          name: web\n          startup: order=1,up=30\n"},
		{"qemu", "          memory: current=2048\n          cores: 99999999999999999999\n"}, // PVE's qemu schema has no maximum
		{"lxc", "          cores: 2\n          memory: 2048\n          swap: 512\n          onboot: true\n          cpulimit: 1.5\n          net0: name=eth0,bridge=vmbr0,ip=dhcp\n          rootfs: local-lvm:vm-101-disk-0,size=8G\n          mp0: local-lvm:vm-101-disk-1,mp=/data,size=10G\n          hostname: web\n"},
		{"", "          cores: 2\n          memory: 2048\n          onboot: yes\n"},
		{"", "          swap: 512\n"},                 // lxc only: decided when the host reports the kind
		{"", "          net0: virtio,bridge=vmbr0\n"}, // qemu only
	}
	for _, tt := range tests {
		if _, err := Parse([]byte(doc101(tt.kind, tt.cfg))); err != nil {
			t.Errorf("kind %q config\n%s: Parse: %v", tt.kind, tt.cfg, err)
		}
	}
}

func TestCheckKind(t *testing.T) {
	doc, err := Parse([]byte(doc101("", "          cores: 2\n          swap: 512\n          net0: name=eth0,bridge=vmbr0\n")))
	if err != nil {
		t.Fatal(err)
	}
	g := doc.ForHost("pve-a").Guests[101]
	if err := g.CheckKind(guest.LXC); err != nil {
		t.Errorf("CheckKind(lxc) = %v; want nil", err)
	}
	err = g.CheckKind(guest.QEMU)
	if err == nil {
		t.Fatal("CheckKind(qemu) = nil; want errors for swap and net0")
	}
	for _, w := range []string{
		"desired: line 10: hosts.pve-a.guests.101.config.net0: invalid value for a qemu guest: invalid format - invalid key in comma-separated list property: name",
		"desired: line 9: hosts.pve-a.guests.101.config.swap: unknown config key for a qemu guest",
		"pin kind: to say which kind this guest is",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("CheckKind(qemu) = %q; want it to contain %q", err, w)
		}
	}

	// A guest built in Go is checked on demand, with paths but no lines.
	built := &Guest{Config: map[string]string{"swap": "512", "cores": "2"}}
	if err := built.CheckKind(guest.QEMU); err == nil || !strings.Contains(err.Error(), "desired: config.swap: unknown config key for a qemu guest") {
		t.Errorf("built CheckKind(qemu) = %v; want the swap key refused", err)
	}
	if err := built.CheckKind(guest.LXC); err != nil {
		t.Errorf("built CheckKind(lxc) = %v; want nil", err)
	}
	// A pinned guest was checked when parsed; a nil guest manages nothing.
	pinned := &Guest{Kind: guest.LXC, Config: map[string]string{"swap": "512"}}
	if err := pinned.CheckKind(guest.QEMU); err != nil {
		t.Errorf("pinned CheckKind(qemu) = %v; want nil (a kind mismatch is the planner's error)", err)
	}
	var none *Guest
	if err := none.CheckKind(guest.QEMU); err != nil {
		t.Errorf("nil CheckKind = %v; want nil", err)
	}
}

func TestValidateBuiltDocumentSchema(t *testing.T) {
	d := &Document{APIVersion: APIVersion, Kind: DocumentKind, Hosts: map[string]*Host{"pve-a": {Guests: map[int]*Guest{
		101: {Kind: guest.QEMU, Config: map[string]string{"cores": "two", "corse": "2"}},
		102: {Config: map[string]string{"swap": "512"}}, // valid for lxc
	}}}}
	err := d.Validate()
	if err == nil {
		t.Fatal("Validate: got nil; want errors")
	}
	for _, w := range []string{
		"desired: hosts.pve-a.guests.101.config.cores: invalid value for a qemu guest: type check ('integer') failed - got 'two'",
		"desired: hosts.pve-a.guests.101.config.corse: unknown config key for a qemu guest",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("got %q; want it to contain %q", err, w)
		}
	}
	if strings.Contains(err.Error(), "guests.102") {
		t.Errorf("got %q; want guest 102 (valid for lxc, kind not pinned) accepted", err)
	}
}

// TestIntegersAreExact is the regression test for integers that reached PVE
// as something else: cores 99999999999999999999 as 100000000000000000000
// and memory 1e308 as a 309-digit integer.
func TestIntegersAreExact(t *testing.T) {
	doc, err := Parse([]byte(doc101("qemu", "          cores: 99999999999999999999\n")))
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.ForHost("pve-a").Guests[101].Config["cores"]; got != "99999999999999999999" {
		t.Errorf("cores = %q; want the operator's digits 99999999999999999999", got)
	}
	for _, kind := range []string{"qemu", "lxc", ""} {
		_, err := Parse([]byte(doc101(kind, "          memory: 1e308\n")))
		if err == nil || !strings.Contains(err.Error(), "type check ('integer') failed - got '1e308'") {
			t.Errorf("kind %q: memory: 1e308: got %v; want refused as not an integer", kind, err)
		}
	}
	if _, err := Parse([]byte(doc101("lxc", "          cores: 99999999999999999999\n"))); err == nil || !strings.Contains(err.Error(), "maximum value of 8192") {
		t.Errorf("lxc cores 99999999999999999999: got %v; want refused by the maximum 8192", err)
	}
	// JSON is parsed as YAML: the same literal text, the same result.
	j := `{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve-a":{"guests":{"101":{"kind":"qemu","config":{"cores":99999999999999999999,"cpulimit":1.50}}}}}}`
	doc, err = Parse([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	if got := doc.ForHost("pve-a").Guests[101].Config; got["cores"] != "99999999999999999999" || got["cpulimit"] != "1.50" {
		t.Errorf("JSON config = %v; want cores 99999999999999999999 and cpulimit 1.50 exactly", got)
	}
}

// BenchmarkCheckKind measures the per-tick cost of checking a guest whose
// kind is not pinned: recorded when parsed, computed when built in Go.
func BenchmarkCheckKind(b *testing.B) {
	doc, err := Parse([]byte(doc101("", "          cores: 2\n          memory: 2048\n          onboot: 1\n          cpulimit: 1.5\n")))
	if err != nil {
		b.Fatal(err)
	}
	parsed := doc.ForHost("pve-a").Guests[101]
	built := &Guest{Config: parsed.Config}
	for name, g := range map[string]*Guest{"parsed": parsed, "built": built} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := g.CheckKind(guest.QEMU); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestParseFileNamesTheFile(t *testing.T) {
	_, err := ParseFile("/etc/steward/fleet.yaml", []byte(doc101("qemu", "          corse: 2\n")))
	if err == nil || !strings.HasPrefix(err.Error(), "desired: /etc/steward/fleet.yaml:9: hosts.pve-a.guests.101.config.corse: unknown config key") {
		t.Errorf("ParseFile error = %v; want it to start with desired: FILE:LINE: PATH", err)
	}
	doc, err := ParseFile("fleet.yaml", []byte(doc101("", "          swap: 512\n")))
	if err != nil {
		t.Fatal(err)
	}
	err = doc.ForHost("pve-a").Guests[101].CheckKind(guest.QEMU)
	if err == nil || !strings.HasPrefix(err.Error(), "desired: fleet.yaml:8: hosts.pve-a.guests.101.config.swap: unknown config key for a qemu guest") {
		t.Errorf("CheckKind error = %v; want it to name the file and line", err)
	}
}

// The README's desired-state examples stay valid as the checks grow.
func TestREADMEExamplesParse(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, block := range strings.Split(string(data), "```")[1:] {
		i := strings.Index(block, "apiVersion: steward/v1")
		if i < 0 {
			continue
		}
		end := strings.Index(block[i:], "\nYAML")
		if end < 0 {
			end = len(block) - i
		}
		n++
		if _, err := Parse([]byte(block[i : i+end])); err != nil {
			t.Errorf("README example %d does not parse: %v\n%s", n, err, block[i:i+end])
		}
	}
	if n < 2 {
		t.Errorf("found %d README examples; want at least 2 (the quick start and the desired-state section)", n)
	}
}

// json.Unmarshal into a Document is Parse: exact numbers, the schema check.
func TestUnmarshalJSONIsParse(t *testing.T) {
	var d Document
	in := `{"apiVersion":"steward/v1","kind":"Fleet","hosts":{"pve-a":{"guests":{"101":{"kind":"qemu","config":{"cores":99999999999999999999,"cpulimit":1.50,"onboot":true}}}}}}`
	if err := json.Unmarshal([]byte(in), &d); err != nil {
		t.Fatal(err)
	}
	cfg := d.ForHost("pve-a").Guests[101].Config
	if cfg["cores"] != "99999999999999999999" || cfg["cpulimit"] != "1.50" || cfg["onboot"] != "1" {
		t.Errorf("config = %v; want cores 99999999999999999999, cpulimit 1.50, onboot 1", cfg)
	}
	bad := strings.Replace(in, `"cores":99999999999999999999`, `"corse":2`, 1)
	var d2 Document
	err := json.Unmarshal([]byte(bad), &d2)
	var fe *FieldError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "config.corse: unknown config key for a qemu guest") {
		t.Errorf("misspelt key: err = %v; want a *FieldError naming config.corse", err)
	}
	if d2.Hosts != nil {
		t.Errorf("document changed by a failed unmarshal: %#v", d2)
	}
}
