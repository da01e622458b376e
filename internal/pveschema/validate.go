package pveschema

import (
	"encoding/json"
	"errors"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Errors maps a parameter name (as the request spelled it, e.g. "net0", or a
// property-string path "net0.bridge" inside nested messages) to PVE's
// message. A nil or empty Errors means the request is valid. PVE answers a
// non-empty Errors with 400 "Parameter verification failed." and this map
// as the body's "errors".
type Errors map[string]string

// add records msg for path, joining with an existing message by a literal
// backslash-n, as PVE's add_error does (join('\n', ...) in single quotes).
func (e Errors) add(path, msg string) {
	if path == "" {
		path = "_root"
	}
	if old, ok := e[path]; ok && old != "" {
		e[path] = old + `\n` + msg
		return
	}
	e[path] = msg
}

// valueKind classifies a Perl scalar as PVE's check_type sees it.
type valueKind int

const (
	kindUndef  valueKind = iota // missing or JSON null
	kindScalar                  // plain string/number
	kindBool                    // JSON true/false (a JSON::PP::Boolean ref)
	kindArray                   // JSON array (ARRAY ref)
	kindHash                    // JSON object (HASH ref)
)

type value struct {
	kind valueKind
	s    string // kindScalar: the Perl string value
}

// refName is what Perl's ref() returns, used in "got ARRAY" messages.
func (v value) refName() string {
	switch v.kind {
	case kindBool:
		return "JSON::PP::Boolean"
	case kindArray:
		return "ARRAY"
	case kindHash:
		return "HASH"
	}
	return ""
}

func toValue(x any) value {
	switch t := x.(type) {
	case nil:
		return value{kind: kindUndef}
	case string:
		return value{kind: kindScalar, s: t}
	case json.Number:
		return value{kind: kindScalar, s: numberText(t)}
	case bool:
		return value{kind: kindBool}
	case []any, []string:
		return value{kind: kindArray}
	case map[string]any:
		return value{kind: kindHash}
	case float64:
		return value{kind: kindScalar, s: perlNV(t)}
	case float32:
		return value{kind: kindScalar, s: perlNV(float64(t))}
	case int:
		return value{kind: kindScalar, s: strconv.Itoa(t)}
	case int64:
		return value{kind: kindScalar, s: strconv.FormatInt(t, 10)}
	case uint64:
		return value{kind: kindScalar, s: strconv.FormatUint(t, 10)}
	}
	return value{kind: kindHash}
}

// Validate checks params against the method's parameter schema as PVE's
// PVE::JSONSchema::validate does and returns one message per offending
// parameter; nil means valid. params are the merged path, query and body
// parameters: a string value is taken as form/query encoded (booleans must
// be "0" or "1"); json.Number, bool, []any, map[string]any and nil come from
// a JSON body (nil counts as absent). params is not modified. Validate never
// panics and is safe for concurrent use.
func (m *Method) Validate(params map[string]any) Errors {
	var errs Errors
	lazy := func() Errors {
		if errs == nil {
			errs = Errors{}
		}
		return errs
	}
	// Schema properties first, as check_object does: missing ones.
	for name, p := range m.Params {
		if p.Numbered {
			continue // numbered keys are optional; checked with the values below
		}
		if v, ok := params[name]; !ok || v == nil {
			if !p.Optional && p.Alias == "" {
				lazy().add(name, "property is missing and it is not optional")
			}
		}
	}
	for name, raw := range params {
		v := toValue(raw)
		p := m.param(name)
		if p == nil {
			// Even an undefined value of an unknown key is an additional
			// property in PVE (check_object walks keys %$value).
			if !m.AdditionalProperties {
				lazy().add(name, "property is not defined in schema and the schema does not allow additional properties")
			}
			continue
		}
		if v.kind == kindUndef {
			continue // already reported above if required
		}
		if p.Requires != "" {
			if r, ok := params[p.Requires]; !ok || r == nil {
				lazy().add(p.Requires, "missing property - '"+name+"' requires this property")
			}
		}
		if msg := checkValue(v, p, name); msg != "" {
			lazy().add(name, msg)
		}
	}
	return errs
}

// param resolves a concrete request key to its schema parameter: an exact
// name, or "net7" to "net[n]" when 7 is a canonical index within range.
func (m *Method) param(name string) *Param {
	if p, ok := m.Params[name]; ok && !p.Numbered {
		return p
	}
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 {
		return nil
	}
	p, ok := m.Params[name[:i]+"[n]"]
	if !ok {
		return nil
	}
	idx := name[i:]
	if len(idx) > 1 && idx[0] == '0' {
		return nil
	}
	n, err := strconv.Atoi(idx)
	if err != nil || (p.IndexMax >= 0 && n > p.IndexMax) {
		return nil
	}
	return p
}

var (
	integerRE = regexp.MustCompile(`^[+-]?[0-9]+\n?$`)
	numberRE  = regexp.MustCompile(`^[+-]?([0-9]+\.[0-9]+|[0-9]+\.|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\n?$`)
)

// checkType is PVE's check_type for one type name; it returns the error
// message or "".
func checkType(t string, v value) string {
	switch t {
	case "", "any":
		return ""
	case "null":
		return "type check ('null') failed - value is not null"
	case "array":
		if v.kind != kindArray {
			return "type check ('array') failed"
		}
		return ""
	case "object":
		if v.kind != kindHash {
			return "type check ('object') failed"
		}
		return ""
	}
	if v.kind != kindScalar {
		if t == "boolean" && v.kind == kindBool {
			return ""
		}
		return "type check ('" + t + "') failed - got " + v.refName()
	}
	switch t {
	case "boolean":
		if v.s != "0" && v.s != "1" {
			return "type check ('boolean') failed - got '" + v.s + "'"
		}
	case "integer":
		if !integerRE.MatchString(v.s) {
			return "type check ('integer') failed - got '" + v.s + "'"
		}
	case "number":
		if !numberRE.MatchString(v.s) {
			return "type check ('number') failed - got '" + v.s + "'"
		}
	}
	return ""
}

// checkValue is PVE's check_prop for a defined value: type, format,
// pattern, maxLength, minLength, maximum, minimum, enumeration.
func checkValue(v value, p *Param, path string) string {
	switch len(p.types) {
	case 0:
	case 1:
		if msg := checkType(p.types[0], v); msg != "" {
			return msg
		}
	default:
		ok := false
		for _, t := range p.types {
			if checkType(t, v) == "" {
				ok = true
				break
			}
		}
		if !ok {
			return "type check ('" + strings.Join(p.types, "|") + "') failed"
		}
	}
	if v.kind != kindScalar {
		return "" // refs get no further checks
	}
	s := v.s
	if p.PropFormat != nil {
		if msg := parsePropertyString(p.PropFormat, p.propKeys, s, path); msg != "" {
			return "invalid format - " + msg
		}
	} else if p.Format != "" {
		if msg := checkFormat(p.Format, s); msg != "" {
			return "invalid format - " + msg
		}
	}
	if p.patternRE != nil && !p.patternRE.MatchString(s) {
		return "value does not match the regex pattern"
	}
	if p.MaxLength != nil && utf8.RuneCountInString(s) > *p.MaxLength {
		return "value may only be " + strconv.Itoa(*p.MaxLength) + " characters long"
	}
	if p.MinLength != nil && utf8.RuneCountInString(s) < *p.MinLength {
		return "value must be at least " + strconv.Itoa(*p.MinLength) + " characters long"
	}
	if (p.Maximum != nil || p.Minimum != nil) && numberRE.MatchString(s) {
		// Out of float64's range is ±Inf, as Perl's numification gives.
		f, err := strconv.ParseFloat(strings.TrimSuffix(s, "\n"), 64)
		if err == nil || errors.Is(err, strconv.ErrRange) {
			if p.Maximum != nil && f > *p.Maximum {
				return "value must have a maximum value of " + p.maxText
			}
			if p.Minimum != nil && f < *p.Minimum {
				return "value must have a minimum value of " + p.minText
			}
		}
	}
	if p.Enum != nil {
		for _, e := range p.Enum {
			if e == s {
				return ""
			}
		}
		return "value '" + s + "' does not have a value in the enumeration '" + strings.Join(p.Enum, ", ") + "'"
	}
	return ""
}

// splitPropPart matches a property-string part against Perl's
// m/^([^=]+)=(.+)$/: a non-empty key before the first "=", and a non-empty
// value without newlines except one final newline (which is dropped).
func splitPropPart(part string) (k, v string, ok bool) {
	i := strings.IndexByte(part, '=')
	if i <= 0 {
		return "", "", false
	}
	v = strings.TrimSuffix(part[i+1:], "\n")
	if v == "" || strings.IndexByte(v, '\n') >= 0 {
		return "", "", false
	}
	return part[:i], v, true
}

// parsePropertyString is PVE's parse_property_string followed by the
// check_object it runs; it returns the text PVE's exception stringifies to
// ("format error\n<path.key>: <msg>\n..." or a die message ending in "\n"),
// or "" if data is valid.
func parsePropertyString(format map[string]*Param, propKeys []string, data, path string) string {
	res := map[string]string{}
	defaultKey := ""
	for _, part := range strings.Split(data, ",") {
		if strings.Trim(part, " \t\n\r\f\v") == "" {
			continue
		}
		if k, v, ok := splitPropPart(part); ok {
			if _, dup := res[k]; dup {
				return "duplicate key in comma-separated list property: " + k + "\n"
			}
			sch := format[k]
			if sch != nil && sch.Alias != "" {
				if sch.KeyAlias != "" {
					if _, dup := res[sch.KeyAlias]; dup {
						return "key alias '" + sch.KeyAlias + "' is already defined\n"
					}
					res[sch.KeyAlias] = k
				}
				k = sch.Alias
				sch = format[k]
			}
			if sch == nil {
				return "invalid key in comma-separated list property: " + k + "\n"
			}
			if sch.Type == "boolean" {
				if b, ok := parseBoolean(v); ok {
					v = b
				}
			}
			res[k] = v
		} else if !strings.Contains(part, "=") {
			if defaultKey != "" {
				return "duplicate key in comma-separated list property: " + defaultKey + "\n"
			}
			for _, k := range propKeys {
				if format[k].DefaultKey {
					defaultKey = k
					if old, ok := res[k]; !ok || old == "" || old == "0" {
						res[k] = part
						break
					}
					return "duplicate key in comma-separated list property: " + k + "\n"
				}
			}
			if defaultKey == "" {
				return "value without key, but schema does not define a default key\n"
			}
		} else {
			return "missing key in comma-separated list property\n"
		}
	}
	errs := Errors{}
	for _, k := range propKeys {
		sub := format[k]
		v, ok := res[k]
		if !ok {
			if !sub.Optional && sub.Alias == "" {
				errs.add(joinPath(path, k), "property is missing and it is not optional")
			}
			continue
		}
		sp := "" // built only when needed: nested formats and errors
		if sub.PropFormat != nil {
			sp = joinPath(path, k)
		}
		if msg := checkValue(value{kind: kindScalar, s: v}, sub, sp); msg != "" {
			errs.add(joinPath(path, k), msg)
		}
	}
	for k := range res {
		if _, ok := format[k]; !ok {
			errs.add(joinPath(path, k), "property is not defined in schema and the schema does not allow additional properties")
		}
	}
	if len(errs) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("format error\n")
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(k + ": " + errs[k] + "\n")
	}
	return b.String()
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func sortedKeys(m map[string]*Param) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// parseBoolean is PVE's parse_boolean for property-string sub-values.
func parseBoolean(s string) (string, bool) {
	t := strings.ToLower(strings.TrimSuffix(s, "\n"))
	switch t {
	case "1", "on", "yes", "true":
		return "1", true
	case "0", "off", "no", "false":
		return "0", true
	}
	return "", false
}
