// Package propstr parses and formats Proxmox VE property strings, the
// comma-separated "key=value" lists PVE uses for disks, mount points, network
// devices and many other config values, e.g.
//
//	local-lvm:vm-101-disk-0,cache=none,size=32G
//	virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1
//
// It follows PVE::JSONSchema::parse_property_string (pve-common): the string
// is split on every comma (PVE has no quoting or escaping in property
// strings, so a value can never contain a comma), parts that are empty or
// whitespace only are skipped, a part "key=value" needs a non-empty key
// without '=' and a non-empty value (which may contain '='), and a part
// without '=' is the value of the format's default key (such as "file" for
// QEMU drives or "volume" for container mount points). Unlike PVE, which
// returns an unordered hash, Parse keeps the parts in order so Format can
// reproduce the input.
//
// Sizes follow PVE::JSONSchema::parse_size and format_size: an optional unit
// K, M, G or T (upper case only, powers of 1024) after a decimal number.
//
// The package is pure: it does no I/O and is safe for concurrent use.
package propstr

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strings"
)

// Prop is one key=value element of a property string.
type Prop struct{ Key, Value string }

// ErrSyntax is wrapped by every error Parse, ParseSize and Volume return, so
// callers can tell "malformed input" from other failures with errors.Is.
var ErrSyntax = errors.New("propstr: syntax error")

// Parse splits the property string s into its elements, in order. An element
// without '=' is stored under defaultKey; an empty defaultKey means the format
// has none, and such an element is then an error, as in PVE. A key that
// occurs twice (including defaultKey given both bare and as "key=") is an
// error. Keys must consist of letters, digits, '_', '-' and '.', the
// characters PVE's format keys use; PVE rejects any other key as not defined
// in its format.
//
// An invalid non-empty defaultKey is an error. The result is nil for a
// string with no elements. Errors wrap ErrSyntax,
// quote the offending part and never panic on any input.
func Parse(s, defaultKey string) ([]Prop, error) {
	if defaultKey != "" && !validKey(defaultKey) {
		return nil, fmt.Errorf("%w: invalid default key %q (letters, digits, '_', '-', '.' only)", ErrSyntax, defaultKey)
	}
	var props []Prop
	seen := make(map[string]bool, 8)
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, hasEq := strings.Cut(part, "=")
		if !hasEq {
			if defaultKey == "" {
				return nil, fmt.Errorf("%w: value %q without key, and the format has no default key", ErrSyntax, part)
			}
			k, v = defaultKey, part
		} else {
			if k == "" || v == "" {
				return nil, fmt.Errorf("%w: %q needs a non-empty key and value (key=value)", ErrSyntax, part)
			}
			if !validKey(k) {
				return nil, fmt.Errorf("%w: invalid key %q in %q (letters, digits, '_', '-', '.' only)", ErrSyntax, k, part)
			}
		}
		if seen[k] {
			return nil, fmt.Errorf("%w: duplicate key %q", ErrSyntax, k)
		}
		seen[k] = true
		props = append(props, Prop{Key: k, Value: v})
	}
	return props, nil
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}

// Get returns the value stored under key and whether it is present.
func Get(props []Prop, key string) (string, bool) {
	for _, p := range props {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Format writes props as "k1=v1,k2=v2", in order, every element with its
// key. It does not validate: Check reports props Format cannot represent
// (a value with a comma, an empty key or value, a duplicate key).
func Format(props []Prop) string {
	return FormatWithDefault(props, "")
}

// FormatWithDefault is Format, except that the element keyed defaultKey is
// written first and bare (without "key="), as PVE writes drives and mount
// points ("local-lvm:vm-101-disk-0,size=32G"). When that value contains '='
// or is whitespace only it is written with its key, because bare it would
// read back differently. An empty defaultKey means none.
func FormatWithDefault(props []Prop, defaultKey string) string {
	var b strings.Builder
	n := 0
	if defaultKey != "" {
		if v, ok := Get(props, defaultKey); ok {
			if strings.Contains(v, "=") || strings.TrimSpace(v) == "" {
				b.WriteString(defaultKey)
				b.WriteByte('=')
			}
			b.WriteString(v)
			n++
		}
	}
	for _, p := range props {
		if defaultKey != "" && p.Key == defaultKey {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
		n++
	}
	return b.String()
}

// Check reports whether Format can write props so that Parse reads back the
// same elements: keys valid and unique, values non-empty and without commas.
func Check(props []Prop) error {
	seen := make(map[string]bool, len(props))
	for _, p := range props {
		if !validKey(p.Key) {
			return fmt.Errorf("%w: invalid key %q (letters, digits, '_', '-', '.' only)", ErrSyntax, p.Key)
		}
		if seen[p.Key] {
			return fmt.Errorf("%w: duplicate key %q", ErrSyntax, p.Key)
		}
		seen[p.Key] = true
		if p.Value == "" {
			return fmt.Errorf("%w: key %q has an empty value", ErrSyntax, p.Key)
		}
		if strings.Contains(p.Value, ",") {
			return fmt.Errorf("%w: value of %q contains a comma, which property strings cannot represent", ErrSyntax, p.Key)
		}
	}
	return nil
}

var units = [...]struct {
	suffix byte
	mult   int64
}{{'K', 1 << 10}, {'M', 1 << 20}, {'G', 1 << 30}, {'T', 1 << 40}}

// ParseSize parses a PVE size such as "32G", "2252M", "380K", "1T", "1.5G"
// or "512" (bytes) into bytes, as PVE's parse_size does: digits, optionally a
// '.' and more digits, optionally one upper-case unit K, M, G or T (powers
// of 1024); a fractional byte count is truncated. Anything else (lower-case
// units, signs, spaces, "GB", values above math.MaxInt64) is an error
// wrapping ErrSyntax.
func ParseSize(s string) (int64, error) {
	num := s
	mult := int64(1)
	if n := len(s); n > 0 {
		for _, u := range units {
			if s[n-1] == u.suffix {
				num, mult = s[:n-1], u.mult
				break
			}
		}
	}
	intPart, frac, hasDot := strings.Cut(num, ".")
	if !allDigits(intPart) || (hasDot && !allDigits(frac)) {
		return 0, fmt.Errorf("%w: size %q is not a number with an optional unit K, M, G or T (e.g. 32G)", ErrSyntax, s)
	}
	if !hasDot {
		// Fast path, exact: digits times a power of two.
		if len(intPart) <= 18 {
			var v int64
			for i := 0; i < len(intPart); i++ {
				v = v*10 + int64(intPart[i]-'0')
			}
			if v <= math.MaxInt64/mult {
				return v * mult, nil
			}
		}
	}
	var r big.Rat
	if _, ok := r.SetString(num); !ok {
		return 0, fmt.Errorf("%w: size %q is not a number", ErrSyntax, s)
	}
	r.Mul(&r, new(big.Rat).SetInt64(mult))
	q := new(big.Int).Quo(r.Num(), r.Denom()) // truncates, as Perl's int()
	if !q.IsInt64() {
		return 0, fmt.Errorf("%w: size %q is too large (max %d bytes)", ErrSyntax, s, int64(math.MaxInt64))
	}
	return q.Int64(), nil
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// FormatSize writes n bytes as PVE's format_size does: in the largest unit
// K, M, G or T that divides n exactly, else in bytes without a unit
// (0 → "0", 1024 → "1K", 2361393152 → "2252M"). A negative n is written in
// bytes.
func FormatSize(n int64) string {
	if n <= 0 {
		return fmt.Sprint(n)
	}
	for i := len(units) - 1; i >= 0; i-- {
		if n%units[i].mult == 0 {
			return fmt.Sprintf("%d%c", n/units[i].mult, units[i].suffix)
		}
	}
	return fmt.Sprint(n)
}

// Volume extracts the volume and size of a disk or mount-point value such as
// "local-lvm:vm-101-disk-0,size=32G" or "vmstore:subvol-101-disk-0,size=30G".
// defaultKey is the format's default key ("file" for QEMU drives, "volume"
// for container rootfs and mount points). QEMU drives accept "volume" as an
// alias of "file" and PVE lets the later one win silently, so Volume treats
// "file" and "volume" as the same key and rejects a value giving both.
//
// hasSize reports whether a size= element is present; size is 0 when it is
// not. It is an error (wrapping ErrSyntax) when the value does not parse,
// names no volume, or has a size= that ParseSize rejects.
func Volume(value, defaultKey string) (volume string, size int64, hasSize bool, err error) {
	props, err := Parse(value, defaultKey)
	if err != nil {
		return "", 0, false, err
	}
	vf, okF := Get(props, "file")
	vv, okV := Get(props, "volume")
	switch {
	case okF && okV:
		return "", 0, false, fmt.Errorf("%w: %q names its volume twice (file and volume)", ErrSyntax, value)
	case okF:
		volume = vf
	case okV:
		volume = vv
	default:
		if defaultKey != "" && defaultKey != "file" && defaultKey != "volume" {
			volume, okF = Get(props, defaultKey)
		}
		if !okF {
			return "", 0, false, fmt.Errorf("%w: %q names no volume", ErrSyntax, value)
		}
	}
	if s, ok := Get(props, "size"); ok {
		size, err = ParseSize(s)
		if err != nil {
			return "", 0, false, err
		}
		hasSize = true
	}
	return volume, size, hasSize, nil
}
