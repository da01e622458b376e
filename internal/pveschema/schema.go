package pveschema

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

//go:embed apidata.json
var apidata []byte

// Schema is the parsed PVE API schema: every method of every path. A Schema
// is immutable after Load and safe for concurrent use.
type Schema struct {
	root *routeNode
	// methods holds every method, keyed by "METHOD /path/{template}".
	// A method is built from its JSON on first use (see entry): a
	// process that needs a few methods (the agent) does not pay for all.
	methods map[string]*entry
	// patterns caches compiled Perl patterns across methods.
	patterns patternCache

	configOnce sync.Once
	configs    map[string]*GuestConfig // by kind; see GuestConfig
}

// Method is one API method (an HTTP method on a path template) as the schema
// describes it. Its fields are read-only; a Method is safe for concurrent use.
type Method struct {
	HTTPMethod  string // "GET", "POST", "PUT" or "DELETE"
	Path        string // path template below /api2/json, e.g. "/nodes/{node}/qemu/{vmid}/config"
	Name        string // the handler's name in the schema, e.g. "update_vm"
	Description string
	Protected   bool   // runs in the privileged daemon
	ProxyTo     string // parameter naming the node the call is proxied to, "" if none

	// Params are the accepted parameters keyed as the schema spells them
	// ("net[n]" for numbered ones). Never nil.
	Params map[string]*Param
	// AdditionalProperties is true when the schema accepts parameters it
	// does not list (additionalProperties 1, or absent as in PVE's Perl).
	AdditionalProperties bool

	allowToken  bool
	permissions Permissions
	returns     Returns
}

// Param is one parameter, or one key of a property-string format.
type Param struct {
	Name     string   // as the schema spells it, e.g. "vmid", "net[n]"
	Type     string   // "string", "integer", "number", "boolean", "array", "object", "null", "" (any); union types joined by "|"
	Optional bool     // false means PVE rejects a request without it
	Enum     []string // allowed values, nil if unrestricted
	// Minimum and Maximum bound number-looking values; nil if unbounded.
	Minimum, Maximum *float64
	// MinLength and MaxLength bound the length in characters; nil if unbounded.
	MinLength, MaxLength *int
	// Format is the named format ("pve-node", "pve-configid-list"), "" if
	// none or if the format is a property string (then PropFormat is set).
	Format string
	// PropFormat is the property-string format ("key=value,..."), keyed by
	// sub-key; nil unless the schema gives the format as an object.
	PropFormat  map[string]*Param
	Pattern     string // Perl regex, matched as m/^$pattern$/; "" if none
	Default     any    // the schema's default (string, json.Number), nil if none
	Description string
	TypeText    string
	Requires    string // another parameter this one requires, "" if none

	// Property-string sub-key attributes.
	DefaultKey bool   // a value without "key=" is this key's
	Alias      string // this key is another spelling of Alias
	KeyAlias   string // with Alias: the key name is stored under KeyAlias (net "virtio=MAC" sets model=virtio)

	// Numbered is true for "name[n]" parameters; IndexMax is the largest n.
	Numbered bool
	IndexMax int

	types     []string
	propKeys  []string // PropFormat's keys, sorted
	minText   string
	maxText   string
	patternRE *regexp.Regexp // nil when Pattern is "" or does not compile
}

// Returns describes what a method returns.
type Returns struct {
	// Type is "null", "string", "integer", "boolean", "object", "array",
	// "any", or "" when the schema does not say.
	Type        string
	Optional    bool
	Description string
	// Properties are the property names of an object return, sorted, as
	// the schema spells them ("net[n]"); nil for other returns. The
	// slice is shared; do not modify it.
	Properties []string
}

// AllowToken reports whether API tokens may call the method (allowtoken).
func (m *Method) AllowToken() bool { return m.allowToken }

// Returns reports what the method returns.
func (m *Method) Returns() Returns { return m.returns }

// Permission reports the method's permission requirements.
func (m *Method) Permission() Permissions { return m.permissions }

// ParamNames returns the parameter names sorted, numbered ones spelled as
// the schema does ("net[n]"). The slice is newly allocated.
func (m *Method) ParamNames() []string {
	names := make([]string, 0, len(m.Params))
	for n := range m.Params {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Methods returns every method in the schema, sorted by path then method.
func (s *Schema) Methods() []*Method {
	out := make([]*Method, 0, len(s.methods))
	for _, e := range s.methods {
		out = append(out, e.method(&s.patterns))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Path != out[j].Path {
			return out[i].Path < out[j].Path
		}
		return out[i].HTTPMethod < out[j].HTTPMethod
	})
	return out
}

// Method returns the method for an HTTP method and a path template such as
// "/nodes/{node}/qemu"; ok is false if the schema has no such method.
func (s *Schema) Method(httpMethod, template string) (m *Method, ok bool) {
	e, ok := s.methods[httpMethod+" "+template]
	if !ok {
		return nil, false
	}
	return e.method(&s.patterns), true
}

type routeNode struct {
	literal map[string]*routeNode
	varName string // name of the {var} child, "" if none
	varNode *routeNode
	methods map[string]*entry
}

// Lookup finds the method serving httpMethod on a concrete path below
// /api2/json (e.g. "/nodes/pve/qemu/101/config") and the values of the path
// template's variables. Empty path segments are skipped, as PVE's
// find_handler does; a literal segment wins over a {var}. ok is false when
// no method matches (PVE answers 501). The caller should merge pathVars
// into the parameters it passes to Validate, as PVE validates them too.
func (s *Schema) Lookup(httpMethod, path string) (m *Method, pathVars map[string]string, ok bool) {
	var segs []string
	for _, seg := range strings.Split(path, "/") {
		if seg != "" {
			segs = append(segs, seg)
		}
	}
	vars := map[string]string{}
	e := s.root.find(httpMethod, segs, vars)
	if e == nil {
		return nil, nil, false
	}
	return e.method(&s.patterns), vars, true
}

func (n *routeNode) find(httpMethod string, segs []string, vars map[string]string) *entry {
	if len(segs) == 0 {
		return n.methods[httpMethod]
	}
	if c := n.literal[segs[0]]; c != nil {
		if m := c.find(httpMethod, segs[1:], vars); m != nil {
			return m
		}
	}
	if n.varNode != nil {
		if m := n.varNode.find(httpMethod, segs[1:], vars); m != nil {
			vars[n.varName] = segs[0]
			return m
		}
	}
	return nil
}

var (
	loadOnce   sync.Once
	loadSchema *Schema
	loadErr    error
)

// Load returns the embedded schema, parsed on the first call. Every call
// returns the same *Schema (or the same error); safe for concurrent use.
func Load() (*Schema, error) {
	loadOnce.Do(func() { loadSchema, loadErr = parse(apidata) })
	return loadSchema, loadErr
}

// rawNode is the schema's tree with each method kept as its JSON, built
// into a Method on first use.
type rawNode struct {
	Path     string                     `json:"path"`
	Info     map[string]json.RawMessage `json:"info"`
	Children []rawNode                  `json:"children"`
}

type rawMethod struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	AllowToken  any             `json:"allowtoken"`
	Protected   any             `json:"protected"`
	ProxyTo     string          `json:"proxyto"`
	Parameters  rawObject       `json:"parameters"`
	Returns     map[string]any  `json:"returns"`
	Permissions json.RawMessage `json:"permissions"`
}

type rawObject struct {
	AdditionalProperties any                `json:"additionalProperties"`
	Properties           map[string]rawProp `json:"properties"`
}

type rawProp struct {
	Type        any             `json:"type"`
	Optional    any             `json:"optional"`
	Enum        []any           `json:"enum"`
	Minimum     any             `json:"minimum"`
	Maximum     any             `json:"maximum"`
	MinLength   any             `json:"minLength"`
	MaxLength   any             `json:"maxLength"`
	Format      json.RawMessage `json:"format"`
	Pattern     string          `json:"pattern"`
	Default     any             `json:"default"`
	Description string          `json:"description"`
	TypeText    string          `json:"typetext"`
	Requires    any             `json:"requires"`
	DefaultKey  any             `json:"default_key"`
	Alias       string          `json:"alias"`
	KeyAlias    string          `json:"keyAlias"`
}

// parse reads the schema's tree: every path and method, each method's
// JSON kept whole and built on first use. The embedded file is fixed at
// build time and every method of it is built by the package's tests, so
// a method that fails to build is a broken binary (see entry.method).
func parse(data []byte) (*Schema, error) {
	var roots []rawNode
	if err := json.Unmarshal(data, &roots); err != nil {
		return nil, fmt.Errorf("pveschema: decode embedded apidata.json: %w (the embedded file is corrupt; restore it from pve-docs)", err)
	}
	s := &Schema{root: &routeNode{}, methods: map[string]*entry{}}
	var walk func(n *rawNode) error
	walk = func(n *rawNode) error {
		for hm, raw := range n.Info {
			e := &entry{hm: hm, path: n.Path, raw: raw}
			s.methods[hm+" "+n.Path] = e
			if err := s.root.add(n.Path, hm, e); err != nil {
				return err
			}
		}
		for i := range n.Children {
			if err := walk(&n.Children[i]); err != nil {
				return err
			}
		}
		return nil
	}
	for i := range roots {
		if err := walk(&roots[i]); err != nil {
			return nil, err
		}
	}
	if len(s.methods) == 0 {
		return nil, errors.New("pveschema: embedded apidata.json holds no methods; restore it from pve-docs")
	}
	return s, nil
}

// entry is one method of the schema, built from its JSON on first use.
// Safe for concurrent use.
type entry struct {
	hm, path string
	raw      json.RawMessage
	once     sync.Once
	m        *Method
}

// method returns the built Method. A method whose JSON does not build
// panics: the schema is embedded at build time and TestEveryMethodBuilds
// builds each one, so this is a corrupt binary, not bad input.
func (e *entry) method(pc *patternCache) *Method {
	e.once.Do(func() {
		m, err := e.build(pc)
		if err != nil {
			panic(fmt.Sprintf("%v (the embedded apidata.json is corrupt; rebuild steward from a clean checkout)", err))
		}
		e.m, e.raw = m, nil
	})
	return e.m
}

func (e *entry) build(pc *patternCache) (*Method, error) {
	dec := json.NewDecoder(bytes.NewReader(e.raw))
	dec.UseNumber() // exact bounds: see exactBounds
	var rm rawMethod
	if err := dec.Decode(&rm); err != nil {
		return nil, fmt.Errorf("pveschema: %s %s: %w", e.hm, e.path, err)
	}
	return buildMethod(e.hm, e.path, &rm, pc)
}

// patternCache holds compiled Perl patterns by source; safe for
// concurrent use.
type patternCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

// get returns pat compiled anchored (m/^pat$/, as PVE matches a
// parameter's pattern), or nil if it does not compile.
func (c *patternCache) get(pat string) *regexp.Regexp {
	c.mu.Lock()
	defer c.mu.Unlock()
	if re, ok := c.m[pat]; ok {
		return re
	}
	re, err := compilePerl("^" + pat + "$")
	if err != nil {
		re = nil
	}
	if c.m == nil {
		c.m = map[string]*regexp.Regexp{}
	}
	c.m[pat] = re
	return re
}

func (n *routeNode) add(path, httpMethod string, e *entry) error {
	cur := n
	for _, seg := range strings.Split(path, "/") {
		if seg == "" {
			continue
		}
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			name := seg[1 : len(seg)-1]
			if cur.varNode == nil {
				cur.varNode, cur.varName = &routeNode{}, name
			} else if cur.varName != name {
				return fmt.Errorf("pveschema: path %q: variable {%s} conflicts with {%s} at the same position", path, name, cur.varName)
			}
			cur = cur.varNode
			continue
		}
		if cur.literal == nil {
			cur.literal = map[string]*routeNode{}
		}
		c := cur.literal[seg]
		if c == nil {
			c = &routeNode{}
			cur.literal[seg] = c
		}
		cur = c
	}
	if cur.methods == nil {
		cur.methods = map[string]*entry{}
	}
	cur.methods[httpMethod] = e
	return nil
}

func buildMethod(hm, path string, rm *rawMethod, cache *patternCache) (*Method, error) {
	m := &Method{
		HTTPMethod:  hm,
		Path:        path,
		Name:        rm.Name,
		Description: rm.Description,
		Protected:   perlTrue(rm.Protected),
		ProxyTo:     rm.ProxyTo,
		Params:      map[string]*Param{},
		allowToken:  rm.AllowToken == nil || perlTrue(rm.AllowToken),
	}
	ap := rm.Parameters.AdditionalProperties
	m.AdditionalProperties = ap == nil || perlTrue(ap)
	for name, rp := range rm.Parameters.Properties {
		p, err := buildParam(name, &rp, cache)
		if err != nil {
			return nil, fmt.Errorf("pveschema: %s %s: %w", hm, path, err)
		}
		m.Params[name] = p
	}
	if t, ok := rm.Returns["type"].(string); ok {
		m.returns.Type = t
	}
	m.returns.Optional = perlTrue(rm.Returns["optional"])
	m.returns.Description, _ = rm.Returns["description"].(string)
	if props, ok := rm.Returns["properties"].(map[string]any); ok {
		m.returns.Properties = make([]string, 0, len(props))
		for k := range props {
			m.returns.Properties = append(m.returns.Properties, k)
		}
		sort.Strings(m.returns.Properties)
	}
	perms, err := parsePermissions(rm.Permissions)
	if err != nil {
		return nil, fmt.Errorf("pveschema: %s %s: %w", hm, path, err)
	}
	m.permissions = perms
	return m, nil
}

var numberedRE = regexp.MustCompile(`^([A-Za-z][A-Za-z_-]*)\[n\]$`)

// descRangeRE finds the range PVE states in a numbered key's description.
var descRangeRE = regexp.MustCompile(`\(n is 0 to (\d+)\)`)

// numberedMax holds PVE's maxima for numbered keys whose schema description
// does not state a plain range. Sources: qemu-server ($MAX_NETS 32,
// $MAX_USB_DEVICES 14, $MAX_HOSTPCI_DEVICES 16, $MAX_NUMA 8,
// $MAX_UNUSED_DISKS 256, max_virtiofs 10, $MAX_SERIAL_PORTS 4,
// $MAX_PARALLEL_PORTS 3), pve-container ($MAX_LXC_NETWORKS 32,
// $MAX_MOUNT_POINTS 256, $MAX_DEVICES 256, unused 256), corosync links 8,
// ACME domains 5. Keys run from 0 to max-1.
var numberedMax = map[string]int{
	"net": 31, "usb": 13, "hostpci": 15, "numa": 7, "unused": 255,
	"virtiofs": 9, "serial": 3, "parallel": 2, "ipconfig": 31,
	"mp": 255, "dev": 255, "link": 7, "acmedomain": 4,
	"ide": 3, "sata": 5, "scsi": 30, "virtio": 15,
}

func buildParam(name string, rp *rawProp, cache *patternCache) (*Param, error) {
	p := &Param{
		Name:        name,
		Optional:    perlTrue(rp.Optional),
		Pattern:     rp.Pattern,
		Default:     rp.Default,
		Description: rp.Description,
		TypeText:    rp.TypeText,
		DefaultKey:  perlTrue(rp.DefaultKey),
		Alias:       rp.Alias,
		KeyAlias:    rp.KeyAlias,
	}
	switch t := rp.Type.(type) {
	case string:
		p.types = []string{t}
	case []any:
		for _, e := range t {
			if s, ok := e.(string); ok {
				p.types = append(p.types, s)
			}
		}
	}
	p.Type = strings.Join(p.types, "|")
	for _, e := range rp.Enum {
		p.Enum = append(p.Enum, perlString(e))
	}
	var err error
	if p.Minimum, p.minText, err = schemaNumber(rp.Minimum); err != nil {
		return nil, fmt.Errorf("parameter %s: minimum: %w", name, err)
	}
	if p.Maximum, p.maxText, err = schemaNumber(rp.Maximum); err != nil {
		return nil, fmt.Errorf("parameter %s: maximum: %w", name, err)
	}
	if p.MinLength, err = schemaInt(rp.MinLength); err != nil {
		return nil, fmt.Errorf("parameter %s: minLength: %w", name, err)
	}
	if p.MaxLength, err = schemaInt(rp.MaxLength); err != nil {
		return nil, fmt.Errorf("parameter %s: maxLength: %w", name, err)
	}
	if r, ok := rp.Requires.(string); ok {
		p.Requires = r
	}
	if f := bytes.TrimSpace(rp.Format); len(f) > 0 {
		switch f[0] {
		case '"':
			if err := json.Unmarshal(f, &p.Format); err != nil {
				return nil, fmt.Errorf("parameter %s: format: %w", name, err)
			}
		case '{':
			dec := json.NewDecoder(bytes.NewReader(f))
			dec.UseNumber()
			var sub map[string]rawProp
			if err := dec.Decode(&sub); err != nil {
				return nil, fmt.Errorf("parameter %s: format: %w", name, err)
			}
			p.PropFormat = make(map[string]*Param, len(sub))
			for k, sp := range sub {
				bp, err := buildParam(k, &sp, cache)
				if err != nil {
					return nil, fmt.Errorf("parameter %s: %w", name, err)
				}
				p.PropFormat[k] = bp
			}
			p.propKeys = sortedKeys(p.PropFormat)
		}
	}
	if p.Pattern != "" {
		// A pattern Go cannot compile is left unchecked; TestAllPatternsCompile
		// keeps the embedded schema free of such patterns.
		p.patternRE = cache.get(p.Pattern)
	}
	if mm := numberedRE.FindStringSubmatch(name); mm != nil {
		p.Numbered = true
		p.IndexMax = -1
		if d := descRangeRE.FindStringSubmatch(p.Description); d != nil {
			p.IndexMax, _ = strconv.Atoi(d[1])
		} else if mx, ok := numberedMax[mm[1]]; ok {
			p.IndexMax = mx
		}
	}
	return p, nil
}

// perlTrue is Perl truthiness for schema flags (1, "1", true).
func perlTrue(v any) bool {
	switch t := v.(type) {
	case nil:
		return false
	case bool:
		return t
	case json.Number:
		return t.String() != "0" && t.String() != ""
	case string:
		return t != "" && t != "0"
	case float64:
		return t != 0
	}
	return true
}

// perlString renders a schema scalar as Perl would stringify it.
func perlString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case json.Number:
		return numberText(t)
	case bool:
		if t {
			return "1"
		}
		return "0"
	case float64:
		return perlNV(t)
	}
	return fmt.Sprint(v)
}

// numberText renders a JSON number as Perl holds it after JSON::XS decoding:
// digits-only numbers keep their text, numbers with a fraction or exponent
// become floating point and print with %.15g.
func numberText(n json.Number) string {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return perlNV(f)
}

// perlNV formats a float as Perl prints an NV ("%.15g", integers in full).
func perlNV(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', 15, 64)
}

func schemaNumber(v any) (*float64, string, error) {
	if v == nil {
		return nil, "", nil
	}
	s := perlString(v)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, "", fmt.Errorf("not a number: %q", s)
	}
	return &f, s, nil
}

func schemaInt(v any) (*int, error) {
	if v == nil {
		return nil, nil
	}
	s := perlString(v)
	n, err := strconv.Atoi(s)
	if err != nil {
		return nil, fmt.Errorf("not an integer: %q", s)
	}
	return &n, nil
}
