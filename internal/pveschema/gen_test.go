package pveschema

import (
	"math"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// This file derives valid parameter values from the schema itself, so the
// endpoint tests below prove "accepts exactly the schema's parameters"
// without a hand-written list of parameters.

// formatSamples holds one valid value per format this package checks. A
// checked format without a sample fails TestFormatSamplesComplete.
var formatSamples = map[string]string{
	"string":               "x",
	"pve-node":             "pve",
	"pve-vmid":             "101",
	"pve-configid":         "net0",
	"pve-storage-id":       "local-lvm",
	"pve-bridge-id":        "vmbr0",
	"mac-addr":             "BC:24:11:2E:5A:01",
	"urlencoded":           "ssh-ed25519%20AAAA",
	"pve-tag":              "prod",
	"pve-task-status-type": "ok",
	"dns-name":             "web1.example.com",
	"ipv4":                 "192.0.2.10",
	"ipv6":                 "2001:db8::10",
	"ip":                   "192.0.2.10",
	"address":              "192.0.2.10",
	"CIDRv4":               "192.0.2.0/24",
	"CIDRv6":               "2001:db8::/64",
	"CIDR":                 "192.0.2.0/24",
	"pve-ipv4-config":      "dhcp",
	"pve-ipv6-config":      "auto",
	"disk-size":            "32G",
	"pve-startup-order":    "order=1,up=30",
	"pve-volume-id":        "local-lvm:vm-101-disk-0",
}

func TestFormatSamplesComplete(t *testing.T) {
	for _, f := range CheckedFormats() {
		s, ok := formatSamples[f]
		if !ok {
			t.Errorf("checked format %q has no sample in formatSamples; add one", f)
			continue
		}
		if msg := checkFormat(f, s); msg != "" {
			t.Errorf("checkFormat(%q, %q) = %q; want valid", f, s, msg)
		}
		if msg := checkFormat(f, "@@@"); f != "string" && msg == "" {
			t.Errorf("checkFormat(%q, \"@@@\") = valid; want an error", f)
		}
	}
}

// sampleValue returns a value the schema says is valid for p, in form
// encoding.
func sampleValue(t *testing.T, p *Param) string {
	t.Helper()
	if len(p.Enum) > 0 {
		return p.Enum[0]
	}
	switch p.Type {
	case "boolean":
		return "1"
	case "integer", "number":
		v := 1.0
		if p.Minimum != nil {
			v = math.Ceil(*p.Minimum)
		} else if p.Maximum != nil && *p.Maximum < v {
			v = math.Floor(*p.Maximum)
		}
		if p.Format == "pve-vmid" {
			v = 101
		}
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	var s string
	switch {
	case p.PropFormat != nil:
		s = samplePropertyString(t, p)
	case p.Format != "" && FormatChecked(p.Format):
		name, _ := splitFormat(p.Format)
		s = formatSamples[name]
		if name == "pve-tag" && strings.HasSuffix(p.Format, "-list") {
			s = "prod;web"
		}
		if name == "pve-configid" && strings.HasSuffix(p.Format, "-list") {
			s = "net0,unused0"
		}
	case p.Pattern != "":
		s = sampleFromPattern(t, p.Pattern)
	default:
		s = "x"
	}
	if p.MinLength != nil {
		for len(s) < *p.MinLength {
			s += "x"
		}
	}
	return s
}

func samplePropertyString(t *testing.T, p *Param) string {
	t.Helper()
	var parts []string
	keys := make([]string, 0, len(p.PropFormat))
	for k := range p.PropFormat {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		sub := p.PropFormat[k]
		if sub.Alias != "" {
			continue
		}
		parts = append(parts, k+"="+sampleValue(t, sub))
	}
	return strings.Join(parts, ",")
}

// sampleFromPattern builds a string matching a schema pattern by walking
// its syntax tree (first alternative, minimum repetitions).
func sampleFromPattern(t *testing.T, pat string) string {
	t.Helper()
	re, err := compilePerl(pat)
	if err != nil {
		t.Fatalf("pattern %q: %v", pat, err)
	}
	tree, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		t.Fatalf("pattern %q: %v", pat, err)
	}
	var b strings.Builder
	// more: take one repetition of "*" and "{0,n}" too, so that the sample
	// is not empty (an empty property-string value cannot be written).
	more := false
	var gen func(r *syntax.Regexp)
	gen = func(r *syntax.Regexp) {
		switch r.Op {
		case syntax.OpLiteral:
			b.WriteString(string(r.Rune))
		case syntax.OpCharClass:
			b.WriteRune(pickRune(r.Rune))
		case syntax.OpAnyChar, syntax.OpAnyCharNotNL:
			b.WriteByte('a')
		case syntax.OpCapture:
			gen(r.Sub[0])
		case syntax.OpPlus:
			gen(r.Sub[0])
		case syntax.OpStar:
			if more {
				gen(r.Sub[0])
			}
		case syntax.OpRepeat:
			n := r.Min
			if more && n == 0 && r.Max != 0 {
				n = 1
			}
			for i := 0; i < n; i++ {
				gen(r.Sub[0])
			}
		case syntax.OpConcat:
			for _, s := range r.Sub {
				gen(s)
			}
		case syntax.OpAlternate:
			gen(r.Sub[0])
		}
	}
	gen(tree)
	if b.Len() == 0 {
		more = true
		gen(tree)
	}
	s := b.String()
	full, _ := compilePerl("^" + pat + "$")
	if !full.MatchString(s) {
		t.Fatalf("generated %q does not match pattern %q", s, pat)
	}
	return s
}

// pickRune picks a printable, preferably alphanumeric, rune from a class
// that cannot break a property string (no ',' or '=').
func pickRune(ranges []rune) rune {
	var fallback rune = -1
	for i := 0; i+1 < len(ranges); i += 2 {
		for r := ranges[i]; r <= ranges[i+1] && r < 0x80; r++ {
			if r == ',' || r == '=' || !unicode.IsPrint(r) || r == ' ' {
				continue
			}
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				return r
			}
			if fallback < 0 {
				fallback = r
			}
		}
	}
	if fallback < 0 && len(ranges) > 0 {
		return ranges[0]
	}
	return fallback
}

// concreteName spells a numbered parameter with index n ("net[n]" -> "net3").
func concreteName(p *Param, n int) string {
	return strings.TrimSuffix(p.Name, "[n]") + strconv.Itoa(n)
}

// validParams holds every parameter of m with a valid value; numbered ones
// appear with index 0 and with their highest index.
func validParams(t *testing.T, m *Method) map[string]any {
	t.Helper()
	out := map[string]any{}
	for _, name := range m.ParamNames() {
		p := m.Params[name]
		v := sampleValue(t, p)
		if p.Numbered {
			out[concreteName(p, 0)] = v
			out[concreteName(p, p.IndexMax)] = v
			continue
		}
		out[name] = v
	}
	return out
}

func requiredParams(t *testing.T, m *Method) map[string]any {
	t.Helper()
	out := map[string]any{}
	for name, p := range m.Params {
		if !p.Optional && !p.Numbered {
			out[name] = sampleValue(t, p)
		}
	}
	return out
}

func clone(m map[string]any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	return out
}
