package propstr

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixtureConfig reads a config response from the in-repo PVE fixtures.
func fixtureConfig(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "pve", "testdata", "fixtures", name))
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Data map[string]any }
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return env.Data
}

func TestParseFixtures(t *testing.T) {
	tests := []struct {
		file, key, defaultKey string
		want                  []Prop
	}{
		{"gp-pve7-lxc-config.json", "rootfs", "volume", []Prop{{"volume", "vmstore:subvol-101-disk-0"}, {"size", "30G"}}},
		{"gp-pve7-lxc-config.json", "mp0", "volume", []Prop{{"volume", "/mnt/foo/bar"}, {"mp", "/storage"}}},
		{"gp-pve7-lxc-config.json", "net0", "", []Prop{{"name", "eth0"}, {"bridge", "vmbr0"}, {"firewall", "1"}, {"hwaddr", "5D:CF:BD:B2:C5:39"}, {"ip", "dhcp"}, {"type", "veth"}}},
		{"gp-pve7-lxc-config.json", "features", "", []Prop{{"fuse", "1"}, {"mknod", "1"}, {"nesting", "1"}}},
		{"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json", "scsi0", "file", []Prop{{"file", "local-lvm:vm-107-disk-0"}, {"size", "32G"}}},
		{"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json", "ide2", "file", []Prop{{"file", "none"}, {"media", "cdrom"}}},
		{"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json", "net0", "", []Prop{{"virtio", "A2:7B:45:48:9C:E5"}, {"bridge", "vmbr0"}, {"tag", "103"}}},
		{"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json", "boot", "legacy", []Prop{{"order", "net0;ide2;scsi0"}}},
		{"unattributed/qemu-config.pve7.creation-qemu-6.2.0.json", "smbios1", "", []Prop{{"uuid", "3ae878b3-a77e-4a4a-adc6-14ee88350d36"}, {"manufacturer", "MTIz"}, {"product", "MTIz"}, {"version", "MTIz"}, {"serial", "MTIz"}, {"sku", "MTIz"}, {"family", "MTIz"}, {"base64", "1"}}},
		{"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json", "scsi0", "file", []Prop{{"file", "ceph-pool-nvme-01:vm-555-disk-0"}, {"discard", "on"}, {"size", "50G"}, {"ssd", "1"}}},
		{"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json", "ide2", "file", []Prop{{"file", "ceph-pool-nvme-01:vm-555-cloudinit"}, {"media", "cdrom"}}},
		{"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json", "agent", "enabled", []Prop{{"enabled", "1"}}},
		{"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json", "ipconfig0", "", []Prop{{"ip", "10.2.16.80/21"}, {"gw", "10.2.16.1"}}},
		{"unattributed/qemu-config.pve8.4-or-9.creation-qemu-9.2.0.json", "cicustom", "", []Prop{{"user", "nfs-snippets:snippets/ci-custom-empty-snippet.yaml"}}},
		{"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json", "ide2", "file", []Prop{{"file", "local:iso/seed-111.iso"}, {"media", "cdrom"}, {"size", "380K"}}},
		{"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json", "scsi0", "file", []Prop{{"file", "vmdata-1:vm-111-disk-0"}, {"size", "2252M"}}},
		{"unattributed/qemu-config.pve9.creation-qemu-10.0.2.json", "net0", "", []Prop{{"virtio", "BC:24:11:9F:E0:D5"}, {"bridge", "vmbr0"}}},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file)+"/"+tt.key, func(t *testing.T) {
			raw, ok := fixtureConfig(t, tt.file)[tt.key].(string)
			if !ok {
				t.Fatalf("fixture has no string %q", tt.key)
			}
			got, err := Parse(raw, tt.defaultKey)
			if err != nil {
				t.Fatalf("Parse(%q): %v", raw, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q) = %v; want %v", raw, got, tt.want)
			}
			// PVE writes drives and mount points with the default key
			// bare and first, so formatting must reproduce those byte for
			// byte. (PVE keeps other strings as the user wrote them: the
			// agent's "enabled=1" is read back equal but formatted "1".)
			f := FormatWithDefault(got, tt.defaultKey)
			if tt.key == "agent" {
				if back := mustParse(t, f, tt.defaultKey); !reflect.DeepEqual(back, got) {
					t.Errorf("Parse(FormatWithDefault) = %v; want %v", back, got)
				}
			} else if f != raw {
				t.Errorf("FormatWithDefault = %q; want %q", f, raw)
			}
		})
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name, in, def string
		want          []Prop
		wantErr       string
	}{
		{"empty", "", "file", nil, ""},
		{"only commas and spaces", " , ,, ", "file", nil, ""},
		{"default key later", "size=4G,local:100/x.raw", "file", []Prop{{"size", "4G"}, {"file", "local:100/x.raw"}}, ""},
		{"explicit default key", "file=local-lvm:vm-1-disk-0,size=1G", "file", []Prop{{"file", "local-lvm:vm-1-disk-0"}, {"size", "1G"}}, ""},
		{"value containing equals", "user=a=b", "", []Prop{{"user", "a=b"}}, ""},
		{"spaces kept in value", "description=a b", "", []Prop{{"description", "a b"}}, ""},
		{"duplicate key", "size=1G,size=2G", "file", nil, `duplicate key "size"`},
		{"two bare values", "a,b", "file", nil, `duplicate key "file"`},
		{"bare and explicit default", "local:x,file=local:y", "file", nil, `duplicate key "file"`},
		{"bare without default", "dhcp", "", nil, "without key"},
		{"empty value", "size=", "file", nil, "non-empty key and value"},
		{"empty key", "=1G", "file", nil, "non-empty key and value"},
		{"key with space", " size=1G", "file", nil, "invalid key"},
		{"key with quote", `"size"=1G`, "file", nil, "invalid key"},
		{"quoted value containing comma is split as PVE does", `a="x,y"`, "", nil, "without key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in, tt.def)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrSyntax) {
					t.Fatalf("Parse(%q) error = %v; want ErrSyntax containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q) = %#v; want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestGet(t *testing.T) {
	props := []Prop{{"file", "none"}, {"media", "cdrom"}}
	if v, ok := Get(props, "media"); !ok || v != "cdrom" {
		t.Errorf("Get(media) = %q, %v; want cdrom, true", v, ok)
	}
	if v, ok := Get(props, "size"); ok || v != "" {
		t.Errorf("Get(size) = %q, %v; want \"\", false", v, ok)
	}
	if _, ok := Get(nil, "x"); ok {
		t.Error("Get(nil) found a key; want none")
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name  string
		props []Prop
		def   string
		want  string
	}{
		{"no default", []Prop{{"a", "1"}, {"b", "2"}}, "", "a=1,b=2"},
		{"default moved first and bare", []Prop{{"size", "1G"}, {"file", "local:x"}}, "file", "local:x,size=1G"},
		{"blank default keeps key", []Prop{{"file", " "}}, "file", "file= "},
		{"default with equals keeps key", []Prop{{"file", "a=b"}, {"size", "1G"}}, "file", "file=a=b,size=1G"},
		{"default absent", []Prop{{"size", "1G"}}, "file", "size=1G"},
		{"empty", nil, "file", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatWithDefault(tt.props, tt.def); got != tt.want {
				t.Errorf("FormatWithDefault = %q; want %q", got, tt.want)
			}
		})
	}
	if got, want := Format([]Prop{{"file", "x"}, {"size", "1G"}}), "file=x,size=1G"; got != want {
		t.Errorf("Format = %q; want %q", got, want)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		props   []Prop
		wantErr bool
	}{
		{"ok", []Prop{{"file", "local:x"}, {"size", "1G"}}, false},
		{"comma in value", []Prop{{"a", "x,y"}}, true},
		{"empty value", []Prop{{"a", ""}}, true},
		{"blank value is representable", []Prop{{"a", "  "}}, false},
		{"bad key", []Prop{{"a b", "1"}}, true},
		{"duplicate", []Prop{{"a", "1"}, {"a", "2"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.props)
			if (err != nil) != tt.wantErr {
				t.Errorf("Check(%v) = %v; want error %v", tt.props, err, tt.wantErr)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"512", 512, false},
		{"0", 0, false},
		{"380K", 380 << 10, false},
		{"2252M", 2252 << 20, false},
		{"32G", 32 << 30, false},
		{"1T", 1 << 40, false},
		{"1.5G", 3 << 29, false},
		{"0.5K", 512, false},
		{"1.7", 1, false}, // Perl int() truncates
		{"8388607T", 8388607 << 40, false},
		{"8388608T", 0, true}, // 2^63 overflows int64
		{"99999999999999999999", 0, true},
		{"9223372036854775807", math.MaxInt64, false},
		{"9223372036854775808", 0, true},
		{"999999999999999999", 999999999999999999, false},
		{"999999999999999999K", 0, true},
		{"0000000000000000000001K", 1024, false},
		{"32g", 0, true},
		{"32GB", 0, true},
		{"+1G", 0, true},
		{"-1G", 0, true},
		{" 1G", 0, true},
		{"1.G", 0, true},
		{".5G", 0, true},
		{"G", 0, true},
		{"", 0, true},
		{"1e3", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.wantErr {
				if err == nil || !errors.Is(err, ErrSyntax) {
					t.Fatalf("ParseSize(%q) = %d, %v; want ErrSyntax", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{1023, "1023"},
		{1024, "1K"},
		{380 << 10, "380K"},
		{2252 << 20, "2252M"},
		{1536 << 20, "1536M"},
		{32 << 30, "32G"},
		{1 << 40, "1T"},
		{1025 << 30, "1025G"},
		{2048 << 40, "2048T"},
		{math.MaxInt64, "9223372036854775807"},
		{-5, "-5"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := FormatSize(tt.in); got != tt.want {
				t.Errorf("FormatSize(%d) = %q; want %q", tt.in, got, tt.want)
			}
			if tt.in >= 0 {
				back, err := ParseSize(tt.want)
				if err != nil || back != tt.in {
					t.Errorf("ParseSize(FormatSize(%d)) = %d, %v; want %d", tt.in, back, err, tt.in)
				}
			}
		})
	}
}

func TestVolume(t *testing.T) {
	tests := []struct {
		name, in, def string
		vol           string
		size          int64
		hasSize       bool
		wantErr       bool
	}{
		{"qemu disk", "local-lvm:vm-107-disk-0,size=32G", "file", "local-lvm:vm-107-disk-0", 32 << 30, true, false},
		{"qemu disk options", "ceph-pool-nvme-01:vm-555-disk-0,discard=on,size=50G,ssd=1", "file", "ceph-pool-nvme-01:vm-555-disk-0", 50 << 30, true, false},
		{"cdrom none", "none,media=cdrom", "file", "none", 0, false, false},
		{"lxc rootfs", "vmstore:subvol-101-disk-0,size=30G", "volume", "vmstore:subvol-101-disk-0", 30 << 30, true, false},
		{"bind mount", "/mnt/foo/bar,mp=/storage", "volume", "/mnt/foo/bar", 0, false, false},
		{"qemu volume alias", "volume=local:x,size=1G", "file", "local:x", 1 << 30, true, false},
		{"new allocation", "local-lvm:32", "file", "local-lvm:32", 0, false, false},
		{"file and volume", "local:x,volume=local:y", "file", "", 0, false, true},
		{"no volume", "size=1G", "file", "", 0, false, true},
		{"bad size", "local:x,size=1g", "file", "", 0, false, true},
		{"bad syntax", "local:x,size=", "file", "", 0, false, true},
		{"other default key", "/dev/sdb,uid=0", "path", "/dev/sdb", 0, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vol, size, hasSize, err := Volume(tt.in, tt.def)
			if tt.wantErr {
				if err == nil || !errors.Is(err, ErrSyntax) {
					t.Fatalf("Volume(%q) = %q, %d, %v, %v; want ErrSyntax", tt.in, vol, size, hasSize, err)
				}
				return
			}
			if err != nil || vol != tt.vol || size != tt.size || hasSize != tt.hasSize {
				t.Errorf("Volume(%q) = %q, %d, %v, %v; want %q, %d, %v", tt.in, vol, size, hasSize, err, tt.vol, tt.size, tt.hasSize)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"local-lvm:vm-101-disk-0,size=32G",
		"none,media=cdrom",
		"virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1",
		"vmstore:subvol-101-disk-0,size=30G",
		"/mnt/foo/bar,mp=/storage",
		"ceph-pool-nvme-01:vm-555-disk-0,discard=on,size=50G,ssd=1",
		"file=a=b,size=1G", " , ,", "a,b", "=x", "x=",
	} {
		f.Add(s, "file")
		f.Add(s, "")
	}
	f.Fuzz(func(t *testing.T, s, def string) {
		props, err := Parse(s, def)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) error %v does not wrap ErrSyntax", s, err)
			}
			return
		}
		if err := Check(props); err != nil {
			t.Fatalf("Parse(%q) = %q, which Check rejects: %v", s, props, err)
		}
		for _, d := range []string{"", def} {
			out := FormatWithDefault(props, d)
			back, err := Parse(out, def)
			if err != nil {
				t.Fatalf("Parse(FormatWithDefault(%q, %q) = %q): %v", props, d, out, err)
			}
			if !sameSet(props, back) {
				t.Fatalf("round trip of %q via %q: got %q; want %q", s, out, back, props)
			}
		}
		if def == "" || len(props) == 0 || props[0].Key == def {
			if out := FormatWithDefault(props, def); !reflect.DeepEqual(mustParse(t, out, def), props) {
				t.Fatalf("order not preserved for %q via %q", s, out)
			}
		}
		// ParseSize and Volume must not panic on any value.
		for _, p := range props {
			_, _ = ParseSize(p.Value)
		}
		_, _, _, _ = Volume(s, def)
	})
}

func mustParse(t *testing.T, s, def string) []Prop {
	t.Helper()
	p, err := Parse(s, def)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sameSet(a, b []Prop) bool {
	if len(a) != len(b) {
		return false
	}
	m := make(map[string]string, len(a))
	for _, p := range a {
		m[p.Key] = p.Value
	}
	for _, p := range b {
		if v, ok := m[p.Key]; !ok || v != p.Value {
			return false
		}
	}
	return true
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"32G", "2252M", "380K", "1T", "512", "1.5G", "8388608T", "", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d; want non-negative", s, n)
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("ParseSize(FormatSize(%d)) = %d, %v; want %d", n, back, err, n)
		}
	})
}
