package pveschema

import (
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

// GuestConfig is the schema of one guest kind's config keys: the
// parameters of PUT /nodes/{node}/{kind}/{vmid}/config that are also
// properties of what GET …/config returns. Taking both sides keeps out the
// API call parameters the PUT accepts but a config never holds (node, vmid,
// delete, revert, skiplock, force, background_delay, ...), and keeps the
// keys PVE computes but also lets a caller set (digest, lock): a caller
// that must not manage those refuses them itself.
//
// A GuestConfig is immutable and safe for concurrent use.
type GuestConfig struct {
	Kind   string // "qemu" or "lxc"
	method *Method
	keys   map[string]bool // schema spellings ("net[n]") that are config keys
	names  []string        // keys, sorted
}

// guestConfigPaths are the config endpoints whose PUT defines a kind's keys.
var guestConfigPaths = map[string]string{
	"qemu": "/nodes/{node}/qemu/{vmid}/config",
	"lxc":  "/nodes/{node}/lxc/{vmid}/config",
}

// GuestConfig returns the config-key schema of kind ("qemu" or "lxc"). It
// errs for another kind, or if the embedded schema lacks the kind's config
// endpoints (a corrupt apidata.json). The result is built once per Schema.
func (s *Schema) GuestConfig(kind string) (*GuestConfig, error) {
	s.configOnce.Do(s.buildConfigs)
	c, ok := s.configs[kind]
	if !ok {
		if _, known := guestConfigPaths[kind]; !known {
			return nil, fmt.Errorf("pveschema: unknown guest kind %q; want qemu or lxc", kind)
		}
		return nil, fmt.Errorf("pveschema: the embedded schema has no config endpoint for %s guests; restore apidata.json from pve-docs", kind)
	}
	return c, nil
}

func (s *Schema) buildConfigs() {
	s.configs = map[string]*GuestConfig{}
	for kind, path := range guestConfigPaths {
		put, ok1 := s.Method("PUT", path)
		get, ok2 := s.Method("GET", path)
		if !ok1 || !ok2 {
			continue
		}
		c := &GuestConfig{Kind: kind, method: put, keys: map[string]bool{}}
		for _, name := range get.returns.Properties {
			if _, ok := put.Params[name]; ok {
				c.keys[name] = true
				c.names = append(c.names, name)
			}
		}
		s.configs[kind] = c
	}
}

// Keys returns the config keys as the schema spells them ("net[n]" for
// numbered ones), sorted. The slice is newly allocated.
func (c *GuestConfig) Keys() []string {
	return append([]string(nil), c.names...)
}

// Key returns the schema of config key name (a concrete name: "cores",
// "net0"; a numbered key's index must be canonical decimal within PVE's
// range), or nil when name is not a config key of this kind.
func (c *GuestConfig) Key(name string) *Param {
	p := c.method.param(name)
	if p == nil || !c.keys[p.Name] {
		return nil
	}
	return p
}

// Check validates v, as a form-encoded request would carry it, for
// config key name, the way PVE's check_prop does (type, format and property
// string, pattern, lengths, bounds, enumeration), and returns PVE's message
// with any trailing newline removed, or "" when the value is valid. Bounds
// are also compared exactly, not only in floating point as PVE does, so a
// value that only rounds to a bound is refused too (values whose exponent
// exceeds ±10000 are compared in floating point only). A name that is not a
// config key gives PVE's "not defined in schema" message.
func (c *GuestConfig) Check(name, v string) string {
	p := c.Key(name)
	if p == nil {
		return "property is not defined in schema and the schema does not allow additional properties"
	}
	if msg := checkValue(value{kind: kindScalar, s: v}, p, name); msg != "" {
		return strings.TrimRight(msg, "\n")
	}
	return exactBounds(p, v)
}

// exactBounds compares a number-looking value with p's bounds exactly;
// checkValue already refused whatever floating point shows out of range.
func exactBounds(p *Param, s string) string {
	if p.Maximum == nil && p.Minimum == nil || !numberRE.MatchString(s) {
		return ""
	}
	s = strings.TrimSuffix(s, "\n")
	// Only a value equal to a bound in floating point can be out of range
	// exactly; the others were decided by checkValue.
	f, err := strconv.ParseFloat(s, 64)
	atBound := err == nil && (p.Maximum != nil && f == *p.Maximum || p.Minimum != nil && f == *p.Minimum)
	if !atBound || !exponentSmall(s) {
		return ""
	}
	v, ok := new(big.Rat).SetString(s)
	if !ok {
		return ""
	}
	if p.Maximum != nil {
		if m, ok := new(big.Rat).SetString(p.maxText); ok && v.Cmp(m) > 0 {
			return "value must have a maximum value of " + p.maxText
		}
	}
	if p.Minimum != nil {
		if m, ok := new(big.Rat).SetString(p.minText); ok && v.Cmp(m) < 0 {
			return "value must have a minimum value of " + p.minText
		}
	}
	return ""
}

// exponentSmall reports whether a number's decimal exponent is within
// ±10000, so that an exact rational of it stays small.
func exponentSmall(s string) bool {
	i := strings.IndexAny(s, "eE")
	if i < 0 {
		return true
	}
	e := strings.TrimLeft(s[i+1:], "+-")
	e = strings.TrimLeft(e, "0")
	if len(e) > 5 {
		return false
	}
	n, err := strconv.Atoi("0" + e)
	return err == nil && n <= 10000
}
