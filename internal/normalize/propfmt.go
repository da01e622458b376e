package normalize

import (
	"slices"
	"strings"

	"github.com/steward-pve/steward/internal/propstr"
)

// propFormat describes one property-string format.
type propFormat struct {
	defaultKey string            // key of a bare element ("" = none)
	aliases    map[string]string // alias -> key
	bools      map[string]bool   // boolean options
	sizes      map[string]bool   // size options (32G = 32768M)
	ints       map[string]bool   // integer options
	upper      map[string]bool   // case-insensitive options written upper case (MACs)
	defaults   map[string]string // option -> canonical default value, dropped when equal
	// optional options are not managed when the desired value omits them
	// (a net device's MAC, a disk's informational size).
	optional map[string]bool
	// modelKeys are option keys that mean model=<key>,<modelValue>=<value>
	// (QEMU net: "virtio=BC:24:..." is model virtio with that MAC).
	modelKeys  map[string]bool
	modelValue string

	opts map[string]*optSpec // compiled from the fields above
}

type valueKind uint8

const (
	verbatim valueKind = iota
	boolValue
	intValue
	sizeValue
	upperValue
)

// optSpec is everything known about one option key, so that parsing looks
// each option up once.
type optSpec struct {
	alias    string // non-empty: this key is an alias of alias
	model    bool   // a model key (see propFormat.modelKeys)
	kind     valueKind
	def      string
	hasDef   bool
	optional bool
}

func set(keys ...string) map[string]bool {
	m := make(map[string]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

func compiled(f *propFormat) *propFormat {
	f.compile()
	return f
}

func (f *propFormat) compile() {
	if f.opts != nil {
		return
	}
	f.opts = map[string]*optSpec{}
	spec := func(k string) *optSpec {
		if s := f.opts[k]; s != nil {
			return s
		}
		s := &optSpec{}
		f.opts[k] = s
		return s
	}
	for a, k := range f.aliases {
		spec(a).alias = k
	}
	for k := range f.modelKeys {
		spec(k).model = true
	}
	for k := range f.bools {
		spec(k).kind = boolValue
	}
	for k := range f.ints {
		spec(k).kind = intValue
	}
	for k := range f.sizes {
		spec(k).kind = sizeValue
	}
	for k := range f.upper {
		spec(k).kind = upperValue
	}
	for k, d := range f.defaults {
		s := spec(k)
		s.def, s.hasDef = d, true
	}
	for k := range f.optional {
		spec(k).optional = true
	}
}

// parse splits v into options appended to buf, following propstr.Parse's
// rules (split on commas, skip blank parts, a bare part is the default key,
// key=value needs both, keys are [A-Za-z0-9_.-]+, no duplicates), then
// resolves aliases and model keys. Values are left raw. It allocates nothing
// when buf has room. ok is false when v is not a valid property string;
// TestParseMatchesPropstr keeps it in step with propstr.Parse.
func (f *propFormat) parse(v string, buf []propstr.Prop) ([]propstr.Prop, bool) {
	out := buf
	rest := v
	for rest != "" {
		var part string
		part, rest, _ = strings.Cut(rest, ",")
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, val, hasEq := strings.Cut(part, "=")
		if !hasEq {
			if f.defaultKey == "" {
				return nil, false
			}
			k, val = f.defaultKey, part
		} else if k == "" || val == "" || !validOptKey(k) {
			return nil, false
		}
		if s := f.opts[k]; s != nil {
			switch {
			case s.alias != "":
				k = s.alias
			case s.model:
				if f.defaultKey != "" {
					out = append(out, propstr.Prop{Key: f.defaultKey, Value: k})
				}
				k = f.modelValue
			}
		}
		out = append(out, propstr.Prop{Key: k, Value: val})
	}
	// Duplicates (also via aliases: "virtio=MAC,macaddr=MAC") are invalid.
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[i].Key == out[j].Key {
				return nil, false
			}
		}
	}
	return out, true
}

func validOptKey(k string) bool {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return k != ""
}

func (f *propFormat) spec(key string) *optSpec {
	if s := f.opts[key]; s != nil {
		return s
	}
	return &noSpec
}

var noSpec optSpec

// canonOpt returns the canonical form of an option value.
func canonOpt(s *optSpec, v string) string {
	switch s.kind {
	case boolValue:
		return canonBool(v)
	case intValue:
		return canonInt(v)
	case sizeValue:
		if n, ok := parseSize(v); ok {
			return propstr.FormatSize(n)
		}
	case upperValue:
		return strings.ToUpper(v)
	}
	return v
}

// optEqual compares two option values by meaning, without allocating in
// the common cases.
func optEqual(s *optSpec, a, b string) bool {
	if a == b {
		return true
	}
	switch s.kind {
	case boolValue:
		return canonBool(a) == canonBool(b)
	case intValue:
		return canonInt(a) == canonInt(b)
	case sizeValue:
		x, okX := parseSize(a)
		y, okY := parseSize(b)
		return okX && okY && x == y
	case upperValue:
		return strings.EqualFold(a, b)
	}
	return false
}

// parseSize is propstr.ParseSize with an allocation-free fast path for
// integral sizes.
func parseSize(v string) (int64, bool) {
	n, mult := v, int64(1)
	if l := len(v); l > 0 {
		switch v[l-1] {
		case 'K':
			n, mult = v[:l-1], 1<<10
		case 'M':
			n, mult = v[:l-1], 1<<20
		case 'G':
			n, mult = v[:l-1], 1<<30
		case 'T':
			n, mult = v[:l-1], 1<<40
		}
	}
	if isPlainInt(n) || n == "0" {
		var x int64
		for i := 0; i < len(n); i++ {
			x = x*10 + int64(n[i]-'0')
		}
		if x <= (1<<62)/mult {
			return x * mult, true
		}
	}
	x, err := propstr.ParseSize(v)
	return x, err == nil
}

// isDefault reports whether option p has its format's default value.
func (f *propFormat) isDefault(p propstr.Prop) bool {
	s := f.spec(p.Key)
	return s.hasDef && optEqual(s, p.Value, s.def)
}

// canon writes the canonical form: default-valued options dropped, values
// canonical, every option as key=value, sorted by key with the default key
// first. An invalid property string is returned verbatim.
func (f *propFormat) canon(v string) string {
	var buf [16]propstr.Prop
	ps, ok := f.parse(v, buf[:0])
	if !ok {
		return v
	}
	ps = slices.DeleteFunc(ps, f.isDefault)
	for i := range ps {
		ps[i].Value = canonOpt(f.spec(ps[i].Key), ps[i].Value)
	}
	slices.SortFunc(ps, func(a, b propstr.Prop) int {
		switch {
		case a.Key == f.defaultKey:
			return -1
		case b.Key == f.defaultKey:
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	return b.String()
}

// match compares desired and actual option by option: an option missing on
// one side equals its default; an optional option desired does not name is
// not compared. Invalid strings compare verbatim.
func (f *propFormat) match(desired, actual string) bool {
	var bufD, bufA [16]propstr.Prop
	d, okD := f.parse(desired, bufD[:0])
	a, okA := f.parse(actual, bufA[:0])
	if !okD || !okA {
		return desired == actual
	}
	for _, p := range d {
		s := f.spec(p.Key)
		av, found := propstr.Get(a, p.Key)
		if !found {
			if !(s.hasDef && optEqual(s, p.Value, s.def)) {
				return false
			}
			continue
		}
		if !optEqual(s, p.Value, av) {
			return false
		}
	}
	for _, q := range a {
		if _, found := propstr.Get(d, q.Key); found {
			continue // compared above
		}
		s := f.spec(q.Key)
		if s.optional || s.hasDef && optEqual(s, q.Value, s.def) {
			continue
		}
		return false
	}
	return true
}

// carry appends to desired the optional options that actual has and desired
// does not name. Invalid strings give desired unchanged.
func (f *propFormat) carry(desired, actual string) string {
	var bufD, bufA [16]propstr.Prop
	d, okD := f.parse(desired, bufD[:0])
	a, okA := f.parse(actual, bufA[:0])
	if !okD || !okA {
		return desired
	}
	out := desired
	for _, q := range a {
		if !f.spec(q.Key).optional {
			continue
		}
		if _, named := propstr.Get(d, q.Key); named {
			continue
		}
		if out != "" {
			out += ","
		}
		out += q.Key + "=" + q.Value
	}
	return out
}
