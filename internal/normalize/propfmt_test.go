package normalize

import (
	"testing"

	"github.com/steward-pve/steward/internal/propstr"
)

// formats are the property-string formats of the tables, by name.
var formats = map[string]*propFormat{
	"qemuNet": qemuNet, "lxcNet": lxcNet, "qemuDrive": qemuDrive, "lxcMount": lxcMount,
	"qemuMemory": qemuMemory, "qemuAgent": qemuAgent, "startupOrder": startupOrder, "lxcFeatures": lxcFeatures,
}

// refOpts is parseOpts written the plain way, from propstr.Parse and the
// format's field maps: the reference that the compiled index, the alias and
// model resolution and the specs must agree with.
func refOpts(f *propFormat, v string) ([]opt, bool) {
	ps, err := propstr.Parse(v, f.defaultKey)
	if err != nil {
		return nil, false
	}
	var out []opt
	for _, p := range ps {
		k := p.Key
		if a, ok := f.aliases[k]; ok {
			k = a
		} else if f.modelKeys[k] {
			if f.defaultKey != "" {
				out = append(out, opt{f.defaultKey, k})
			}
			k = f.modelValue
		}
		out = append(out, opt{k, p.Value})
	}
	seen := map[string]bool{}
	for _, o := range out {
		if seen[o.key] {
			return nil, false
		}
		seen[o.key] = true
	}
	return out, true
}

// refSpec is the spec of key from the format's field maps.
func refSpec(f *propFormat, key string) optSpec {
	var s optSpec
	switch {
	case f.upper[key]:
		s.kind = upperValue
	case f.sizes[key]:
		s.kind = sizeValue
	case f.ints[key]:
		s.kind = intValue
	case f.bools[key]:
		s.kind = boolValue
	}
	s.def, s.hasDef = f.defaults[key]
	s.optional = f.optional[key]
	return s
}

func checkOpts(t *testing.T, name string, f *propFormat, v string) {
	t.Helper()
	var buf [16]opt
	got, okGot := f.parseOpts(v, buf[:0])
	want, okWant := refOpts(f, v)
	if okGot != okWant {
		t.Fatalf("%s parseOpts(%q): got ok=%v; want %v", name, v, okGot, okWant)
	}
	if len(got) != len(want) {
		t.Fatalf("%s parseOpts(%q): got %d options; want %d", name, v, len(got), len(want))
	}
	for i := range got {
		if got[i].key != want[i].key || got[i].val != want[i].val {
			t.Fatalf("%s parseOpts(%q)[%d]: got %s=%s; want %s=%s", name, v, i, got[i].key, got[i].val, want[i].key, want[i].val)
		}
		s, r := f.spec(got[i].key), refSpec(f, got[i].key)
		if s.kind != r.kind || s.def != r.def || s.hasDef != r.hasDef || s.optional != r.optional {
			t.Fatalf("%s parseOpts(%q): option %q has spec %+v; want %+v", name, v, got[i].key, *s, r)
		}
	}
}

func TestParseOptsMatchesReference(t *testing.T) {
	vals := []string{
		"virtio=BC:24:11:20:4E:3F,bridge=vmbr0,firewall=1", "virtio,bridge=vmbr0", "e1000-82540em=aa:bb:cc:dd:ee:ff",
		"virtio=BC:24:11:20:4E:3F,macaddr=BC:24:11:20:4E:3F", "model=virtio,macaddr=x,link_down=0",
		"local-lvm:vm-1-disk-0,discard=on,size=32G,ssd=1", "volume=local:1,size=8G", "file=a,volume=b",
		"bps_rd_length=5,iops_wr_length=3", "enabled=1,freeze-fs-on-backup=0", "1,guest-fsfreeze=1,type=isa",
		"current=4096", "4096", "order=2,up=30", "nesting=1,keyctl=1", "", ",", " , a=1 ,", "a=", "=b", "x y=1",
		"name=eth0,hwaddr=bc:24:11:00:00:01,bridge=vmbr0,type=veth", "local:100/vm-100-disk-0.raw,mp=/mnt,size=4G",
	}
	for name, f := range formats {
		for _, v := range vals {
			checkOpts(t, name, f, v)
		}
	}
}

// FuzzParseOpts checks parseOpts against the plain reference for every
// table format.
func FuzzParseOpts(f *testing.F) {
	for _, s := range []string{"virtio=BC:24:11:20:4E:3F,bridge=vmbr0", "local-lvm:vm-1-disk-0,size=32G,volume=x",
		"enabled=1,guest-fsfreeze=1", "e1000=aa,macaddr=bb", ",,", "k=1,k=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for name, pf := range formats {
			checkOpts(t, name, pf, v)
		}
	})
}

func TestIndex(t *testing.T) {
	m := map[string]int{}
	for i, k := range []string{"a", "b", "ab", "ba", "net", "nets", "scsi", "sata", "size", "ssd", "e1000", "e1000e", "x-vga"} {
		m[k] = i + 1
	}
	ix := newIndex(m)
	for k, v := range m {
		if got, ok := ix.get(k); !ok || got != v {
			t.Errorf("get(%q): got %d, %v; want %d, true", k, got, ok, v)
		}
	}
	for _, k := range []string{"", "c", "abc", "ne", "e100", "x-vg"} {
		if got, ok := ix.get(k); ok {
			t.Errorf("get(%q): got %d, true; want absent", k, got)
		}
	}
	var empty index[int]
	if _, ok := empty.get("a"); ok {
		t.Error("zero index: get(\"a\") found a key; want absent")
	}
}
