// Package normalize compares PVE config values the way PVE means them, so
// that PVE's round-trip quirks never read as drift: an LXC description that
// comes back with a trailing newline, tags re-sorted and re-separated,
// booleans as 0/1, QEMU memory as "4096" or "current=4096", disk sizes as
// "32G" or "32768M", property-string options in any order or with their
// default values spelled out, MAC addresses in either case.
//
// There is one table per guest kind (qemu, lxc). A row matches a config key
// exactly ("memory") or by PVE's indexed notation ("net[n]" matches net0,
// net1, ...) and says how to canonicalize its values, how to compare a
// desired value with an actual one, and what PVE assumes when the key is
// absent. Keys without a row compare verbatim. Extending normalization is
// adding a row (and a test with the forms PVE really returns).
//
// Contract: Value is idempotent (Value(Value(v)) == Value(v)); Equal is true
// whenever the raw strings are equal; neither panics on any input (a value
// that does not parse as its row expects is compared verbatim; numbers and
// booleans are trimmed first).
//
// The package is pure (no I/O) and safe for concurrent use.
package normalize

import (
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// Row is how one config key (or indexed family of keys) is normalized.
type Row struct {
	// Key is an exact PVE config key ("cores") or an indexed pattern in
	// PVE's schema notation ("net[n]": the prefix followed by decimal
	// digits).
	Key string
	// Canon returns the canonical form of a value; nil means verbatim.
	Canon func(v string) string
	// Match, when set, decides equality of a desired and an actual value
	// instead of comparing canonical forms. It is used where desired state
	// may leave part of a value unmanaged (a net device without a MAC).
	Match func(desired, actual string) bool
	// Default is the value PVE assumes when the key is absent from the
	// config ("" = none). An absent key then equals its default.
	Default string
	// Carry, when set, returns the value to write for desired given the
	// actual value: it keeps from actual what desired leaves unmanaged (the
	// MAC of a net device, so a write does not make PVE generate a new one).
	Carry func(desired, actual string) string
	// WriteCanon says the canonical form is valid PVE input and is what a
	// write should send (booleans as 0/1, tags joined with ';'). Otherwise
	// a write sends the desired value verbatim.
	WriteCanon bool

	format *propFormat // the property-string format, for Dropped
}

// Table is the set of rows for one guest kind. It is immutable once built
// and safe for concurrent use.
type Table struct {
	exact   map[string]*Row
	indexed map[string]*Row // by prefix of "prefix[n]"
	// fast copies of exact and indexed for Lookup.
	fastExact, fastIndexed index[*Row]
}

// NewTable builds a table. It panics on an empty key or a duplicate, which
// are programming errors in a row list.
func NewTable(rows ...Row) *Table {
	t := &Table{exact: map[string]*Row{}, indexed: map[string]*Row{}}
	for i := range rows {
		r := &rows[i]
		if prefix, ok := strings.CutSuffix(r.Key, "[n]"); ok {
			if prefix == "" || t.indexed[prefix] != nil {
				panic("normalize: bad or duplicate indexed row " + r.Key)
			}
			t.indexed[prefix] = r
			continue
		}
		if r.Key == "" || t.exact[r.Key] != nil {
			panic("normalize: bad or duplicate row " + r.Key)
		}
		t.exact[r.Key] = r
	}
	t.fastExact = newIndex(t.exact)
	t.fastIndexed = newIndex(t.indexed)
	return t
}

// Lookup returns the row for key, or nil when the key has none. A nil
// table has no rows.
func (t *Table) Lookup(key string) *Row {
	if t == nil {
		return nil
	}
	if r, _ := t.fastExact.get(key); r != nil {
		return r
	}
	i := len(key)
	for i > 0 && key[i-1] >= '0' && key[i-1] <= '9' {
		i--
	}
	if i == len(key) || i == 0 {
		return nil
	}
	r, _ := t.fastIndexed.get(key[:i])
	return r
}

// For returns the table of a guest kind, or nil for an unknown kind (whose
// values then compare verbatim).
func For(kind guest.Kind) *Table {
	switch kind {
	case guest.QEMU:
		return qemuTable
	case guest.LXC:
		return lxcTable
	}
	return nil
}

func lookup(kind guest.Kind, key string) *Row {
	return For(kind).Lookup(key)
}

// Value returns the canonical form of value v of key on a guest of kind.
// An empty v is the key's absence and gives the row's default, if any.
func Value(kind guest.Kind, key, v string) string {
	r := lookup(kind, key)
	if r == nil {
		return v
	}
	return r.value(v)
}

func (r *Row) value(v string) string {
	if v != "" && r.Canon != nil {
		v = r.Canon(v)
	}
	if v == "" && r.Default != "" {
		// Absent (or blank, which PVE does not store) is the default.
		v = r.Default
		if r.Canon != nil {
			v = r.Canon(v)
		}
	}
	return v
}

// Equal reports whether desired and actual values of key on a guest of kind
// mean the same to PVE. An empty actual means the key is absent from the
// config and equals the key's PVE default, if the row has one.
func Equal(kind guest.Kind, key, desired, actual string) bool {
	if desired == actual {
		return true
	}
	return lookup(kind, key).Equal(desired, actual)
}

// Equal is the package-level Equal for this row's key: whether desired and
// actual mean the same to PVE, an empty actual being the row's default. A
// nil row (a key without a row) compares verbatim. Looking the row up once
// (Table.Lookup) and calling its methods saves repeated lookups.
func (r *Row) Equal(desired, actual string) bool {
	if desired == actual {
		return true
	}
	if r == nil {
		return false
	}
	if actual == "" {
		actual = r.Default
		if desired == actual {
			return true
		}
	}
	if r.Match != nil {
		return r.Match(desired, actual)
	}
	return r.value(desired) == r.value(actual)
}

// Param returns the value to send to PVE to set key to desired on a guest
// whose current value is actual ("" = absent): the canonical form where the
// row says it is valid PVE input (booleans 0/1, tags); for property strings
// the desired value plus the options it leaves unmanaged, taken from actual
// (a net device's MAC, a disk's size), so writing a net device without a MAC
// keeps its MAC; the desired value verbatim otherwise.
func Param(kind guest.Kind, key, desired, actual string) string {
	return lookup(kind, key).Param(desired, actual)
}

// Param is the package-level Param for this row's key: the value to send to
// PVE to set it to desired when its current value is actual ("" = absent).
// A nil row (a key without a row) gives desired verbatim.
func (r *Row) Param(desired, actual string) string {
	switch {
	case r == nil:
		return desired
	case r.WriteCanon:
		return r.value(desired)
	case r.Carry != nil && actual != "":
		return r.Carry(desired, actual)
	}
	return desired
}

// Dropped returns the options of actual, the current value of key, that a
// write of desired removes: the options desired does not name, except
// those a write keeps (a net device's MAC, a disk's size: see Param) and
// those at PVE's default, as "key=value" in actual's order. It is nil for
// keys that are not property strings and for values that do not parse.
// Plans name these drops, so that omitting an option in desired state
// (iothread=1 on a disk, say) is a change an operator sees.
func Dropped(kind guest.Kind, key, desired, actual string) []string {
	r := lookup(kind, key)
	if r == nil || r.format == nil || desired == "" || actual == "" {
		return nil
	}
	f := r.format
	var bufD, bufA [16]opt
	d, okD := f.parseOpts(desired, bufD[:0])
	a, okA := f.parseOpts(actual, bufA[:0])
	if !okD || !okA {
		return nil
	}
	var out []string
	for _, q := range a {
		if findOpt(d, q.key) >= 0 {
			continue
		}
		if s := f.spec(q.key); s.optional || s.hasDef && optEqual(s, q.val, s.def) {
			continue
		}
		out = append(out, q.key+"="+q.val)
	}
	return out
}
