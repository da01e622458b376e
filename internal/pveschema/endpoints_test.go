package pveschema

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

type endpoint struct{ method, template string }

// simEndpoints are the endpoints the simulator implements (issue 2).
func simEndpoints() []endpoint {
	eps := []endpoint{
		{"GET", "/version"},
		{"GET", "/nodes"},
		{"GET", "/nodes/{node}/status"},
		{"GET", "/cluster/resources"},
		{"GET", "/cluster/nextid"},
		{"GET", "/nodes/{node}/storage"},
		{"GET", "/nodes/{node}/tasks"},
		{"GET", "/nodes/{node}/tasks/{upid}/status"},
		{"GET", "/nodes/{node}/tasks/{upid}/log"},
		{"GET", "/access/permissions"},
		{"POST", "/nodes/{node}/qemu/{vmid}/config"},
		{"GET", "/nodes/{node}/storage/{storage}/content/{volume}"},
		{"GET", "/pools"},
		{"GET", "/pools/{poolid}"},
	}
	for _, k := range []string{"qemu", "lxc"} {
		g := "/nodes/{node}/" + k
		v := g + "/{vmid}"
		eps = append(eps,
			endpoint{"GET", g}, endpoint{"POST", g},
			endpoint{"GET", v + "/config"}, endpoint{"PUT", v + "/config"},
			endpoint{"GET", v + "/pending"},
			endpoint{"GET", v + "/status/current"},
			endpoint{"POST", v + "/status/start"},
			endpoint{"POST", v + "/status/stop"},
			endpoint{"POST", v + "/status/shutdown"},
			endpoint{"PUT", v + "/resize"},
			endpoint{"DELETE", v},
			endpoint{"GET", v + "/snapshot"},
			endpoint{"POST", v + "/snapshot"},
			endpoint{"POST", v + "/snapshot/{snapname}/rollback"},
			endpoint{"DELETE", v + "/snapshot/{snapname}"},
		)
	}
	return eps
}

func mustLoad(t testing.TB) *Schema {
	t.Helper()
	s, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return s
}

// concretePath fills a template's {vars} from params.
func concretePath(template string, params map[string]any) string {
	segs := strings.Split(template, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, "{") {
			segs[i] = params[s[1:len(s)-1]].(string)
		}
	}
	return strings.Join(segs, "/")
}

// TestEndpointsAcceptExactlySchemaParams is the "accepts exactly the
// schema's parameters" proof for every simulator endpoint, with requests
// generated from the schema itself.
func TestEndpointsAcceptExactlySchemaParams(t *testing.T) {
	s := mustLoad(t)
	for _, ep := range simEndpoints() {
		t.Run(ep.method+" "+ep.template, func(t *testing.T) {
			m, ok := s.Method(ep.method, ep.template)
			if !ok {
				t.Fatalf("schema has no %s %s", ep.method, ep.template)
			}
			valid := validParams(t, m)

			// The concrete path routes back to this method with its vars.
			lm, vars, ok := s.Lookup(ep.method, concretePath(ep.template, valid))
			if !ok || lm != m {
				t.Fatalf("Lookup(%s) = %v, %v; want the %s method", concretePath(ep.template, valid), lm, ok, ep.template)
			}
			for k, v := range vars {
				if valid[k] != v {
					t.Errorf("path var %s = %q; want %q", k, v, valid[k])
				}
			}

			if errs := m.Validate(valid); len(errs) != 0 {
				t.Fatalf("all-valid request rejected: %v", errs)
			}

			// Every parameter is accepted on its own (with what is required).
			req := requiredParams(t, m)
			for _, name := range m.ParamNames() {
				p := m.Params[name]
				r := clone(req)
				key := name
				if p.Numbered {
					key = concreteName(p, 0)
				}
				r[key] = valid[key]
				if p.Requires != "" {
					r[p.Requires] = valid[p.Requires]
				}
				if errs := m.Validate(r); len(errs) != 0 {
					t.Errorf("parameter %s alone: got %v; want valid", key, errs)
				}
			}

			// An unknown parameter is rejected with PVE's message.
			r := clone(valid)
			r["zz-unknown"] = "1"
			wantOnly(t, m.Validate(r), "zz-unknown", "property is not defined in schema and the schema does not allow additional properties")

			for _, name := range m.ParamNames() {
				p := m.Params[name]
				key := name
				if p.Numbered {
					key = concreteName(p, 0)
					if p.IndexMax < 0 {
						t.Errorf("numbered %s: no index range known", name)
						continue
					}
					for _, bad := range []string{concreteName(p, p.IndexMax+1), strings.TrimSuffix(name, "[n]") + "00"} {
						r := clone(req)
						r[bad] = valid[key]
						wantOnly(t, m.Validate(r), bad, "property is not defined in schema and the schema does not allow additional properties")
					}
				}
				if !p.Optional {
					r := clone(valid)
					delete(r, name)
					wantOnly(t, m.Validate(r), name, "property is missing and it is not optional")
					r[name] = nil // JSON null counts as missing
					wantOnly(t, m.Validate(r), name, "property is missing and it is not optional")
				}
				for _, c := range violations(p) {
					// Required parameters only, so the one error is the
					// violation's (and validation stays cheap under -race).
					r := clone(req)
					if p.Requires != "" {
						r[p.Requires] = valid[p.Requires]
					}
					r[key] = c.value
					errs := m.Validate(r)
					if c.prefix {
						if got := errs[key]; len(errs) != 1 || !strings.HasPrefix(got, c.want) || !strings.HasSuffix(got, "\n") {
							t.Errorf("%s=%v: got %q; want one error starting %q ending in newline", key, c.value, errs, c.want)
						}
						continue
					}
					wantOnly(t, errs, key, c.want)
				}
			}
		})
	}
}

type violation struct {
	value  any
	want   string
	prefix bool // want is a prefix; the message ends in "\n"
}

// violations derives invalid values for p and PVE's message for each.
func violations(p *Param) []violation {
	var out []violation
	plain := p.Format == "" && p.PropFormat == nil && p.Pattern == ""
	switch p.Type {
	case "integer", "number":
		out = append(out,
			violation{value: "abc", want: "type check ('" + p.Type + "') failed - got 'abc'"},
			violation{value: true, want: "type check ('" + p.Type + "') failed - got JSON::PP::Boolean"},
		)
		if plain && len(p.Enum) == 0 {
			if p.Minimum != nil {
				out = append(out, violation{value: json.Number(strconv.FormatFloat(*p.Minimum-1, 'f', -1, 64)), want: "value must have a minimum value of " + p.minText})
			}
			if p.Maximum != nil {
				out = append(out, violation{value: strconv.FormatFloat(*p.Maximum+1, 'f', -1, 64), want: "value must have a maximum value of " + p.maxText})
			}
		}
	case "boolean":
		out = append(out,
			violation{value: "true", want: "type check ('boolean') failed - got 'true'"},
			violation{value: "2", want: "type check ('boolean') failed - got '2'"},
			violation{value: []any{}, want: "type check ('boolean') failed - got ARRAY"},
		)
	case "string":
		out = append(out, violation{value: []any{"a"}, want: "type check ('string') failed - got ARRAY"})
		if len(p.Enum) > 0 && plain {
			out = append(out, violation{value: "zz-not-listed", want: "value 'zz-not-listed' does not have a value in the enumeration '" + strings.Join(p.Enum, ", ") + "'"})
		}
		if p.MaxLength != nil && plain && len(p.Enum) == 0 {
			out = append(out, violation{value: strings.Repeat("a", *p.MaxLength+1), want: "value may only be " + strconv.Itoa(*p.MaxLength) + " characters long"})
		}
		if p.PropFormat != nil {
			out = append(out, violation{value: "zzkey=1", want: "invalid format - invalid key in comma-separated list property: zzkey\n"})
		}
		if p.Format != "" && p.Format != "string" && FormatChecked(p.Format) {
			out = append(out, violation{value: "@@@", want: "invalid format - ", prefix: true})
		}
		if p.Pattern != "" && p.Format == "" {
			out = append(out, violation{value: "\x01", want: "value does not match the regex pattern"})
		}
	}
	return out
}

func wantOnly(t *testing.T, errs Errors, key, msg string) {
	t.Helper()
	if len(errs) != 1 || errs[key] != msg {
		t.Errorf("got %q; want {%q: %q}", errs, key, msg)
	}
}

// TestAllPatternsCompile guards that no pattern in the schema is silently
// left unchecked because Go cannot compile it.
func TestAllPatternsCompile(t *testing.T) {
	s := mustLoad(t)
	var walk func(where string, ps map[string]*Param)
	walk = func(where string, ps map[string]*Param) {
		for name, p := range ps {
			if p.Pattern != "" && p.patternRE == nil {
				_, err := compilePerl("^" + p.Pattern + "$")
				t.Errorf("%s %s: pattern %q does not compile: %v", where, name, p.Pattern, err)
			}
			walk(where+" "+name, p.PropFormat)
		}
	}
	for _, m := range s.Methods() {
		walk(m.HTTPMethod+" "+m.Path, m.Params)
	}
}

// TestLookupEveryMethod routes a concrete path for each of the schema's
// methods back to that method.
func TestLookupEveryMethod(t *testing.T) {
	s := mustLoad(t)
	ms := s.Methods()
	if len(ms) < 600 {
		t.Fatalf("got %d methods; want the full schema (649 in 9.1.3)", len(ms))
	}
	for _, m := range ms {
		segs := strings.Split(m.Path, "/")
		want := map[string]string{}
		for i, seg := range segs {
			if strings.HasPrefix(seg, "{") {
				v := "zz" + strconv.Itoa(i) + "v"
				want[seg[1:len(seg)-1]] = v
				segs[i] = v
			}
		}
		got, vars, ok := s.Lookup(m.HTTPMethod, strings.Join(segs, "/"))
		if !ok || got != m {
			t.Errorf("Lookup(%s %s) = %v, %v; want %s", m.HTTPMethod, strings.Join(segs, "/"), got, ok, m.Path)
			continue
		}
		if len(vars) != len(want) {
			t.Errorf("%s: got vars %v; want %v", m.Path, vars, want)
		}
		for k, v := range want {
			if vars[k] != v {
				t.Errorf("%s: var %s = %q; want %q", m.Path, k, vars[k], v)
			}
		}
	}
}

// TestEveryMethodBuilds builds each method of the embedded schema from its
// JSON. Methods are built lazily and a failure panics at first use
// (entry.method), so this test is what keeps that panic unreachable.
func TestEveryMethodBuilds(t *testing.T) {
	s, err := parse(apidata)
	if err != nil {
		t.Fatal(err)
	}
	var pc patternCache
	n := 0
	for key, e := range s.methods {
		m, err := e.build(&pc)
		if err != nil {
			t.Errorf("%s: %v", key, err)
			continue
		}
		if m.HTTPMethod+" "+m.Path != key {
			t.Errorf("%s built as %s %s", key, m.HTTPMethod, m.Path)
		}
		n++
	}
	if n < 500 {
		t.Errorf("built %d methods; the PVE 8/9 schema has over 500", n)
	}
}
