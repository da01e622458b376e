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

	// Compiled from the fields above by compile.
	opts index[*optSpec]
	// resolving has bit filterBit(k) set for every alias and model key k,
	// so parsing looks up only the keys that may need resolving.
	resolving  uint64
	compiledOK bool
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
	if f.compiledOK {
		return
	}
	opts := map[string]*optSpec{}
	spec := func(k string) *optSpec {
		if s := opts[k]; s != nil {
			return s
		}
		s := &optSpec{}
		opts[k] = s
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
	for k, s := range opts {
		if s.alias != "" || s.model {
			f.resolving |= filterBit(k)
		}
	}
	f.opts = newIndex(opts)
	f.compiledOK = true
}

// filterBit is k's bit in propFormat.resolving.
func filterBit(k string) uint64 {
	if k == "" {
		return 0
	}
	return 1 << ((uint(k[0]) + 13*uint(len(k))) & 63)
}

// spec returns the spec of option key (never nil).
func (f *propFormat) spec(key string) *optSpec {
	if s, ok := f.opts.get(key); ok {
		return s
	}
	return &noSpec
}

// keyChar marks the bytes of an option key: [A-Za-z0-9_.-].
var keyChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.'
	}
	return t
}()

// opt is a parsed option, its key resolved (aliases, model keys); its spec
// is looked up only when needed (spec), which is rare when comparing.
type opt struct{ key, val string }

// findOpt returns the index of key in os, or -1.
func findOpt(os []opt, key string) int {
	for i := range os {
		if os[i].key == key {
			return i
		}
	}
	return -1
}

// parseOpts is parse; see there.
func (f *propFormat) parseOpts(v string, buf []opt) ([]opt, bool) {
	out := buf
	for start := 0; start < len(v); {
		end := strings.IndexByte(v[start:], ',')
		if end < 0 {
			end = len(v)
		} else {
			end += start
		}
		part := v[start:end]
		start = end + 1
		if part == "" || !isNonBlankStart(part[0]) && strings.TrimSpace(part) == "" {
			continue
		}
		var k, val string
		if eq := strings.IndexByte(part, '='); eq < 0 {
			if f.defaultKey == "" {
				return nil, false
			}
			k, val = f.defaultKey, part
		} else if k, val = part[:eq], part[eq+1:]; k == "" || val == "" || !validOptKey(k) {
			return nil, false
		}
		if f.resolving&filterBit(k) != 0 {
			if s, ok := f.opts.get(k); ok {
				switch {
				case s.alias != "":
					k = s.alias
				case s.model:
					if f.defaultKey != "" {
						out = append(out, opt{f.defaultKey, k})
					}
					k = f.modelValue
				}
			}
		}
		out = append(out, opt{k, val})
	}
	// Duplicates (also via aliases: "virtio=MAC,macaddr=MAC") are invalid.
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[i].key == out[j].key {
				return nil, false
			}
		}
	}
	return out, true
}

// isNonBlankStart reports whether a part starting with byte c certainly is
// not all white space (c is ASCII and not a space).
func isNonBlankStart(c byte) bool {
	return c < 0x80 && c != ' ' && (c < '\t' || c > '\r')
}

// parse splits v into options appended to buf, following propstr.Parse's
// rules (split on commas, skip blank parts, a bare part is the default key,
// key=value needs both, keys are [A-Za-z0-9_.-]+, no duplicates), then
// resolves aliases and model keys. Values are left raw. It allocates nothing
// when buf has room. ok is false when v is not a valid property string;
// TestParseMatchesPropstr keeps it in step with propstr.Parse.
func (f *propFormat) parse(v string, buf []propstr.Prop) ([]propstr.Prop, bool) {
	var ob [16]opt
	os, ok := f.parseOpts(v, ob[:0])
	if !ok {
		return nil, false
	}
	for _, o := range os {
		buf = append(buf, propstr.Prop{Key: o.key, Value: o.val})
	}
	return buf, true
}

func validOptKey(k string) bool {
	for i := 0; i < len(k); i++ {
		if !keyChar[k[i]] {
			return false
		}
	}
	return k != ""
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

// canon writes the canonical form: default-valued options dropped, values
// canonical, every option as key=value, sorted by key with the default key
// first. An invalid property string is returned verbatim.
func (f *propFormat) canon(v string) string {
	var buf [16]opt
	os, ok := f.parseOpts(v, buf[:0])
	if !ok {
		return v
	}
	os = slices.DeleteFunc(os, func(o opt) bool {
		s := f.spec(o.key)
		return s.hasDef && optEqual(s, o.val, s.def)
	})
	for i := range os {
		os[i].val = canonOpt(f.spec(os[i].key), os[i].val)
	}
	slices.SortFunc(os, func(a, b opt) int {
		switch {
		case a.key == f.defaultKey:
			return -1
		case b.key == f.defaultKey:
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	var b strings.Builder
	for i, o := range os {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(o.key)
		b.WriteByte('=')
		b.WriteString(o.val)
	}
	return b.String()
}

// match compares desired and actual option by option: an option missing on
// one side equals its default; an optional option desired does not name is
// not compared. Invalid strings compare verbatim.
func (f *propFormat) match(desired, actual string) bool {
	var bufD, bufA [16]opt
	d, okD := f.parseOpts(desired, bufD[:0])
	a, okA := f.parseOpts(actual, bufA[:0])
	if !okD || !okA {
		return desired == actual
	}
	var named uint64 // bit i: a[i] is named by desired (up to 64 options)
	for i := range d {
		p := &d[i]
		j := findOpt(a, p.key)
		if j < 0 {
			if s := f.spec(p.key); !(s.hasDef && optEqual(s, p.val, s.def)) {
				return false
			}
			continue
		}
		if j < 64 {
			named |= 1 << j
		}
		if p.val != a[j].val && !optEqual(f.spec(p.key), p.val, a[j].val) {
			return false
		}
	}
	for i := range a {
		q := &a[i]
		if i < 64 && named&(1<<i) != 0 || i >= 64 && findOpt(d, q.key) >= 0 {
			continue // compared above
		}
		if s := f.spec(q.key); s.optional || s.hasDef && optEqual(s, q.val, s.def) {
			continue
		}
		return false
	}
	return true
}

// carry appends to desired the optional options that actual has and desired
// does not name. Invalid strings give desired unchanged.
func (f *propFormat) carry(desired, actual string) string {
	var bufD, bufA [16]opt
	d, okD := f.parseOpts(desired, bufD[:0])
	a, okA := f.parseOpts(actual, bufA[:0])
	if !okD || !okA {
		return desired
	}
	out := desired
	for i := range a {
		q := &a[i]
		if !f.spec(q.key).optional || findOpt(d, q.key) >= 0 {
			continue
		}
		if out != "" {
			out += ","
		}
		out += q.key + "=" + q.val
	}
	return out
}
