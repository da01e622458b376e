package normalize

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/propstr"
)

const (
	Q = guest.QEMU
	L = guest.LXC
)

// roundTripCase is a value that differs as a string but means the same to
// PVE: desired as an operator writes it (or as PVE accepts it), actual as
// PVE returns it. testdata/roundtrip.json holds them; every row of both
// tables must have at least one. Package plan's tests use the same file to
// prove such guests plan nothing.
type roundTripCase struct {
	Kind    guest.Kind `json:"kind"`
	Key     string     `json:"key"`
	Desired string     `json:"desired"`
	Actual  string     `json:"actual"`
	Note    string     `json:"note,omitempty"`
}

func loadRoundTrip(tb testing.TB) []roundTripCase {
	tb.Helper()
	data, err := os.ReadFile("testdata/roundtrip.json")
	if err != nil {
		tb.Fatal(err)
	}
	var cs []roundTripCase
	if err := json.Unmarshal(data, &cs); err != nil {
		tb.Fatalf("testdata/roundtrip.json: %v", err)
	}
	if len(cs) == 0 {
		tb.Fatal("testdata/roundtrip.json has no cases")
	}
	return cs
}

func TestEqualRoundTripForms(t *testing.T) {
	for _, c := range loadRoundTrip(t) {
		t.Run(string(c.Kind)+"/"+c.Key+"/"+c.Desired, func(t *testing.T) {
			if !Equal(c.Kind, c.Key, c.Desired, c.Actual) {
				t.Errorf("Equal(%s, %s, %q, %q) = false; want true (Value: %q vs %q)", c.Kind, c.Key, c.Desired, c.Actual,
					Value(c.Kind, c.Key, c.Desired), Value(c.Kind, c.Key, c.Actual))
			}
			if r := lookup(c.Kind, c.Key); r != nil && r.Match == nil {
				if d, a := Value(c.Kind, c.Key, c.Desired), Value(c.Kind, c.Key, c.Actual); d != a {
					t.Errorf("Value: got %q and %q; want the same canonical form", d, a)
				}
			}
		})
	}
}

// TestEveryRowTested fails when a row is added without a round-trip case.
func TestEveryRowTested(t *testing.T) {
	for kind, table := range map[guest.Kind]*Table{Q: qemuTable, L: lxcTable} {
		covered := map[*Row]bool{}
		for _, c := range loadRoundTrip(t) {
			if c.Kind == kind && c.Desired != c.Actual {
				if r := table.Lookup(c.Key); r != nil {
					covered[r] = true
				}
			}
		}
		check := func(r *Row) {
			if !covered[r] {
				t.Errorf("%s row %q has no case in testdata/roundtrip.json with PVE's round-trip forms", kind, r.Key)
			}
		}
		for _, r := range table.exact {
			check(r)
		}
		for _, r := range table.indexed {
			check(r)
		}
	}
}

func TestDrift(t *testing.T) {
	tests := []struct {
		kind            guest.Kind
		key             string
		desired, actual string
	}{
		{L, "description", "web", "web frontend\n"},
		{Q, "description", "a\n\nb", "a\nb"},
		{Q, "tags", "prod", "prod;web"},
		{Q, "tags", "", "prod"},
		{Q, "onboot", "1", "0"},
		{Q, "onboot", "1", ""},
		{Q, "acpi", "0", ""},
		{Q, "cores", "4", "2"},
		{Q, "cores", "2", ""}, // default 1
		{L, "cores", "2", ""}, // LXC has no default: all host cores
		{Q, "cpulimit", "0.5", "0.25"},
		{Q, "memory", "4096", "current=2048"},
		{Q, "memory", "4096", "8192"},
		{L, "memory", "1024", "512"},
		{Q, "net0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0", "virtio=BC:24:11:20:4E:40,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr1", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "e1000,bridge=vmbr0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr0,firewall=1", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0"},
		{Q, "net0", "virtio,bridge=vmbr0", "virtio=BC:24:11:20:4E:3F,bridge=vmbr0,tag=5"},
		{L, "net0", "name=eth0,bridge=vmbr0,ip=dhcp", "name=eth0,bridge=vmbr0,firewall=1,hwaddr=5D:CF:BD:B2:C5:39,ip=dhcp,type=veth"},
		{Q, "scsi0", "local-lvm:vm-107-disk-0,size=64G", "local-lvm:vm-107-disk-0,size=32G"},
		{Q, "scsi0", "local-lvm:vm-107-disk-1,size=32G", "local-lvm:vm-107-disk-0,size=32G"},
		{Q, "scsi0", "local-lvm:vm-107-disk-0,ssd=1", "local-lvm:vm-107-disk-0,size=32G"},
		{L, "rootfs", "vmstore:subvol-101-disk-0,size=40G", "vmstore:subvol-101-disk-0,size=30G"},
		{Q, "agent", "1", ""},
		{Q, "agent", "1", "enabled=1,fstrim_cloned_disks=1"},
		{L, "features", "nesting=1", "fuse=1,nesting=1"},
		{Q, "name", "web", "Web"},
		{Q, "unknown-key", "1", "true"}, // no row: verbatim
	}
	for _, tt := range tests {
		t.Run(string(tt.kind)+"/"+tt.key+"/"+tt.desired, func(t *testing.T) {
			if Equal(tt.kind, tt.key, tt.desired, tt.actual) {
				t.Errorf("Equal(%s, %s, %q, %q) = true; want false (a real difference)", tt.kind, tt.key, tt.desired, tt.actual)
			}
		})
	}
}

func TestValue(t *testing.T) {
	tests := []struct {
		kind    guest.Kind
		key, in string
		want    string
	}{
		{Q, "memory", "current=4096", "4096"},
		{Q, "tags", "web,prod,web", "prod;web"},
		{L, "description", "x\r\n", "x"},
		{Q, "onboot", "yes", "1"},
		{Q, "onboot", "", "0"},
		{Q, "net0", "virtio=bc:24:11:20:4e:3f,firewall=0,bridge=vmbr0", "model=virtio,bridge=vmbr0,macaddr=BC:24:11:20:4E:3F"},
		{Q, "scsi0", "local-lvm:vm-1-disk-0,size=32768M", "file=local-lvm:vm-1-disk-0,size=32G"},
		{Q, "scsi0", "not,a,,valid=", "not,a,,valid="}, // invalid: verbatim
		{Q, "cores", "abc", "abc"},
		{Q, "cpulimit", "NaN", "NaN"},
		{"", "cores", "2.0", "2.0"}, // unknown kind: verbatim
	}
	for _, tt := range tests {
		t.Run(tt.key+"/"+tt.in, func(t *testing.T) {
			if got := Value(tt.kind, tt.key, tt.in); got != tt.want {
				t.Errorf("Value(%s, %s, %q): got %q; want %q", tt.kind, tt.key, tt.in, got, tt.want)
			}
		})
	}
}

func TestParam(t *testing.T) {
	tests := []struct {
		kind            guest.Kind
		key, in, actual string
		want            string
	}{
		{Q, "onboot", "true", "0", "1"},
		{L, "unprivileged", "no", "", "0"},
		{Q, "tags", "web, prod", "a", "prod;web"},
		{L, "description", "hello\n", "x", "hello\n"},         // verbatim
		{Q, "memory", "current=4096", "2048", "current=4096"}, // verbatim
		{Q, "name", "web", "db", "web"},
		// A net device written without a MAC keeps its MAC.
		{Q, "net0", "virtio,bridge=vmbr1", "virtio=BC:24:11:9F:E0:D5,bridge=vmbr0", "virtio,bridge=vmbr1,macaddr=BC:24:11:9F:E0:D5"},
		{Q, "net0", "e1000,bridge=vmbr0", "virtio=BC:24:11:9F:E0:D5,bridge=vmbr0", "e1000,bridge=vmbr0,macaddr=BC:24:11:9F:E0:D5"},
		{Q, "net0", "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr1", "virtio=BC:24:11:9F:E0:D5,bridge=vmbr0", "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr1"},
		{Q, "net1", "virtio,bridge=vmbr1", "", "virtio,bridge=vmbr1"}, // new device: PVE picks a MAC
		{L, "net0", "name=eth0,bridge=vmbr1", "name=eth0,bridge=vmbr0,hwaddr=5D:CF:BD:B2:C5:39,type=veth", "name=eth0,bridge=vmbr1,hwaddr=5D:CF:BD:B2:C5:39"},
		// A disk written without its informational size keeps it.
		{Q, "scsi0", "local-lvm:vm-1-disk-0,ssd=1", "local-lvm:vm-1-disk-0,size=32G", "local-lvm:vm-1-disk-0,ssd=1,size=32G"},
		{Q, "net0", "not,,valid=", "virtio=BC:24:11:9F:E0:D5", "not,,valid="},
	}
	for _, tt := range tests {
		if got := Param(tt.kind, tt.key, tt.in, tt.actual); got != tt.want {
			t.Errorf("Param(%s, %s, %q, %q): got %q; want %q", tt.kind, tt.key, tt.in, tt.actual, got, tt.want)
		}
		if tt.actual != "" && !Equal(tt.kind, tt.key, tt.in, Param(tt.kind, tt.key, tt.in, tt.actual)) {
			t.Errorf("Param(%s, %s, %q, %q) = %q does not Equal the desired value", tt.kind, tt.key, tt.in, tt.actual, Param(tt.kind, tt.key, tt.in, tt.actual))
		}
	}
}

func TestLookup(t *testing.T) {
	tests := []struct {
		key  string
		want string // row key, "" = none
	}{
		{"net0", "net[n]"},
		{"net31", "net[n]"},
		{"net", ""},
		{"netx", ""},
		{"0", ""},
		{"memory", "memory"},
		{"scsi30", "scsi[n]"},
		{"efidisk0", "efidisk0"},
		{"efidisk1", ""},
		{"whatever", ""},
	}
	for _, tt := range tests {
		r := qemuTable.Lookup(tt.key)
		got := ""
		if r != nil {
			got = r.Key
		}
		if got != tt.want {
			t.Errorf("Lookup(%q): got row %q; want %q", tt.key, got, tt.want)
		}
	}
}

func TestNewTablePanicsOnDuplicate(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("NewTable with a duplicate row did not panic")
		}
	}()
	NewTable(Row{Key: "a1"}, Row{Key: "a1"})
}

// FuzzValue checks that normalization never panics, is idempotent, that
// Equal agrees with itself on identical input, and that a written value
// (Param) reads back as in sync.
func FuzzValue(f *testing.F) {
	for _, c := range loadRoundTrip(f) {
		f.Add(string(c.Kind), c.Key, c.Desired, c.Actual)
	}
	f.Fuzz(func(t *testing.T, kind, key, a, b string) {
		k := guest.Kind(kind)
		va := Value(k, key, a)
		if again := Value(k, key, va); again != va {
			t.Fatalf("Value not idempotent for %s %s %q: %q then %q", k, key, a, va, again)
		}
		if !Equal(k, key, a, a) {
			t.Fatalf("Equal(%q, %q) = false for identical values", a, a)
		}
		_ = Equal(k, key, a, b)
		// Convergence: once PVE stores what Param writes, nothing drifts.
		if w := Param(k, key, a, b); !Equal(k, key, a, w) {
			t.Fatalf("Param(%s, %s, %q, %q) = %q, which does not Equal the desired value", k, key, a, b, w)
		}
	})
}

// FuzzParseMatchesPropstr keeps normalize's allocation-free property-string
// parser in step with propstr.Parse, the reference implementation.
func FuzzParseMatchesPropstr(f *testing.F) {
	for _, s := range []string{"virtio=BC:24:11:20:4E:3F,bridge=vmbr0", "local-lvm:vm-1-disk-0,size=32G", "a,b", ",,", "k=", "=v", "a=b=c", "k=1,k=2", "x y=1", " , a=1 ,"} {
		f.Add(s, "")
		f.Add(s, "file")
	}
	f.Fuzz(func(t *testing.T, s, defaultKey string) {
		if defaultKey != "" && !validOptKey(defaultKey) {
			return
		}
		s = strings.TrimSpace(s)
		pf := compiled(&propFormat{defaultKey: defaultKey})
		got, okGot := pf.parse(s, nil)
		want, err := propstr.Parse(s, defaultKey)
		if okGot != (err == nil) {
			t.Fatalf("parse(%q, %q): ok=%v; propstr.Parse error %v", s, defaultKey, okGot, err)
		}
		if okGot && !slices.Equal(got, want) {
			t.Fatalf("parse(%q, %q): got %v; propstr.Parse %v", s, defaultKey, got, want)
		}
	})
}

// FuzzCanonFastPaths checks the allocation-free fast paths of description
// and tags against the plain definitions.
func FuzzCanonFastPaths(f *testing.F) {
	for _, s := range []string{"", "a", "a\n", "a \n \nb", "a\r\nb", "prod;web", "web;prod", "a;;b", "a;", ";a", "b;a;a", "a b", "x\t\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		lines := strings.Split(strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\r", "\n"), "\n")
		for i, l := range lines {
			lines[i] = strings.TrimRight(l, " \t\v\f")
		}
		if got, want := canonDescription(v), strings.TrimRight(strings.Join(lines, "\n"), "\n"); got != want {
			t.Fatalf("canonDescription(%q): got %q; want %q", v, got, want)
		}
		tags := strings.FieldsFunc(v, isTagSep)
		slices.Sort(tags)
		if got, want := canonTags(v), strings.Join(slices.Compact(tags), ";"); got != want {
			t.Fatalf("canonTags(%q): got %q; want %q", v, got, want)
		}
	})
}
