package desired

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/yamlerr"
)

// Parse decodes and validates a desired-state document from YAML or JSON
// (JSON is YAML). It is strict: unknown fields, wrong types, anchors and
// aliases, duplicate keys, several YAML documents in one input and invalid
// values are errors. On failure it returns a nil document and an error
// joining one *FieldError per problem, each naming a path and, where known,
// a line; a syntax error names its line. Zero bytes, whitespace, comments
// only or a YAML null give a valid empty document.
func Parse(data []byte) (*Document, error) {
	return ParseFile("", data)
}

// UnmarshalJSON makes json.Unmarshal into a Document what Parse is: strict,
// validated, and exact (numbers keep their digits; encoding/json would
// refuse a number where Config wants a string, or round it through
// float64 elsewhere). On error d is unchanged.
func (d *Document) UnmarshalJSON(data []byte) error {
	doc, err := Parse(data)
	if err != nil {
		return err
	}
	*d = *doc
	return nil
}

// ParseFile is Parse for a document read from the file name: every
// *FieldError it returns, and every one that Guest.CheckKind reports for
// the document later, names the file. An empty name is Parse.
func ParseFile(name string, data []byte) (*Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return &Document{}, nil
		}
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &FieldError{File: name, Line: extra.Line, Msg: "more than one YAML document; put the whole fleet in one document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, syntaxError(name, err)
	}

	p := decoder{lines: lines{}, errs: errList{file: name}}
	doc := p.document(&root)
	doc.validate(&p.errs, p.lines, true)
	if p.errs.len() > 0 {
		return nil, p.errs.err()
	}
	return doc, nil
}

// syntaxError turns a yaml error into a FieldError carrying its line. yaml.v3
// formats syntax errors as "yaml: line N: msg".
func syntaxError(file string, err error) error {
	line, msg := yamlerr.Syntax(err) // the exact line, where yaml.v3's parser says one early
	return &FieldError{File: file, Line: line, Msg: "invalid YAML: " + msg}
}

type decoder struct {
	errs  errList
	lines lines
}

func (p *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	p.errs.add(path, n.Line, format, args...)
}

// kindName describes a node for error messages.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "null"
		}
		return "a scalar (" + strings.TrimPrefix(n.ShortTag(), "!!") + ")"
	case yaml.AliasNode:
		return "an alias"
	}
	return "an unknown node"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// mapping iterates over a mapping node's entries, reporting aliases,
// merge keys, non-scalar keys and duplicate keys. It returns false (after
// reporting) when n is not a mapping. A null n is an empty mapping.
func (p *decoder) mapping(path string, n *yaml.Node, what string, fn func(key string, k, v *yaml.Node)) bool {
	if isNull(n) {
		return true
	}
	if n.Kind == yaml.AliasNode {
		p.fail(path, n, "anchors and aliases are not supported; write the value out")
		return false
	}
	if n.Kind != yaml.MappingNode {
		p.fail(path, n, "want %s (a mapping), got %s", what, kindName(n))
		return false
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.fail(path, k, "mapping keys must be scalars, got %s", kindName(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			p.fail(path, k, "merge keys (<<) are not supported; write the fields out")
			continue
		}
		key := k.Value
		if first, dup := seen[key]; dup {
			p.fail(join(path, key), k, "duplicate key (first at line %d)", first)
			continue
		}
		seen[key] = k.Line
		if v.Kind == yaml.AliasNode {
			p.fail(join(path, key), v, "anchors and aliases are not supported; write the value out")
			continue
		}
		fn(key, k, v)
	}
	return true
}

// block decodes the optional nested block n at path (what names it in
// errors): calls fn for each field, with the field's path, after
// recording the field's line. Leaving the block out is fine, a null one
// is refused with nullMsg (it most likely lost its value).
func (p *decoder) block(path string, n *yaml.Node, what, nullMsg string, fn func(fp, key string, k, v *yaml.Node)) {
	if isNull(n) {
		p.fail(path, n, "%s", nullMsg)
		return
	}
	p.mapping(path, n, what, func(key string, k, v *yaml.Node) {
		fp := join(path, key)
		p.lines[fp] = k.Line
		fn(fp, key, k, v)
	})
}

// boolean decodes a YAML boolean, true or false (not 0, 1 or a string).
// ok is false (after reporting) for anything else.
func (p *decoder) boolean(path string, n *yaml.Node) (b, ok bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		p.fail(path, n, "want true or false, got %s", kindName(n))
		return false, false
	}
	if err := n.Decode(&b); err != nil {
		p.fail(path, n, "invalid boolean %q", n.Value)
		return false, false
	}
	return b, true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// str decodes a scalar as a string. Non-string scalars (numbers, booleans)
// are accepted in their YAML text form. ok is false (after reporting) for
// anything else.
func (p *decoder) str(path string, n *yaml.Node) (string, bool) {
	p.lines[path] = n.Line
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.fail(path, n, "want a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

func (p *decoder) document(root *yaml.Node) *Document {
	doc := &Document{}
	n := root
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return doc
		}
		n = n.Content[0]
	}
	if isNull(n) {
		return doc
	}
	p.mapping("", n, "the document", func(key string, k, v *yaml.Node) {
		switch key {
		case "apiVersion":
			doc.APIVersion, _ = p.str(key, v)
		case "kind":
			doc.Kind, _ = p.str(key, v)
		case "hosts":
			p.lines[key] = v.Line
			doc.Hosts = map[string]*Host{}
			p.mapping(key, v, "hosts by host id", func(hid string, k, v *yaml.Node) {
				hp := join("hosts", hid)
				p.lines[hp] = k.Line
				doc.Hosts[hid] = p.host(hp, v)
			})
		default:
			p.fail(key, k, "unknown field (want apiVersion, kind, hosts)")
		}
	})
	return doc
}

func (p *decoder) host(hp string, n *yaml.Node) *Host {
	h := &Host{}
	p.mapping(hp, n, "a host", func(key string, k, v *yaml.Node) {
		switch key {
		case "guests":
			gsp := join(hp, key)
			h.Guests = map[int]*Guest{}
			p.mapping(gsp, v, "guests by vmid", func(key string, k, v *yaml.Node) {
				gp := join(gsp, key)
				vmid, err := strconv.Atoi(key)
				if err != nil || strconv.Itoa(vmid) != key {
					p.fail(gp, k, "invalid vmid %q; want a decimal integer %d..%d", key, MinVMID, MaxVMID)
					return
				}
				if _, dup := h.Guests[vmid]; dup {
					p.fail(gp, k, "duplicate vmid")
					return
				}
				p.lines[gp] = k.Line
				h.Guests[vmid] = p.guest(gp, v)
			})
		default:
			p.fail(join(hp, key), k, "unknown field (want guests)")
		}
	})
	return h
}

func (p *decoder) guest(gp string, n *yaml.Node) *Guest {
	g := &Guest{}
	p.mapping(gp, n, "a guest", func(key string, k, v *yaml.Node) {
		fp := join(gp, key)
		switch key {
		case "kind":
			s, _ := p.str(fp, v)
			g.Kind = guest.Kind(s)
		case "mode":
			s, _ := p.str(fp, v)
			g.Mode = Mode(s)
		case "state":
			s, _ := p.str(fp, v)
			g.State = State(s)
		case "restart":
			s, _ := p.str(fp, v)
			g.Restart = Restart(s)
		case "description":
			p.lines[fp] = v.Line
			if isNull(v) {
				p.fail(fp, v, "null is not a description; omit the field to leave it unmanaged, or use \"\" for none")
				return
			}
			if s, ok := p.str(fp, v); ok {
				g.Description = &s
			}
		case "tags":
			g.Tags = p.list(fp, v, "tags")
		case "ignore":
			g.Ignore = p.list(fp, v, "ignore")
		case "config":
			p.lines[fp] = v.Line
			g.Config = map[string]string{}
			p.mapping(fp, v, "config keys", func(key string, k, v *yaml.Node) {
				cp := join(fp, key)
				p.lines[cp] = k.Line
				if s, ok := p.configValue(cp, key, v); ok {
					g.Config[key] = s
				}
			})
		case "create":
			p.lines[fp] = v.Line
			g.Create = p.create(fp, v)
		case "snapshots":
			p.lines[fp] = v.Line
			g.Snapshots = p.snapshots(fp, v)
		case "node":
			p.lines[fp] = v.Line
			if s, ok := p.str(fp, v); ok {
				if s == "" {
					p.fail(fp, v, "%s", checkNodeName(s))
					return
				}
				g.Node = s
			}
		default:
			p.fail(fp, k, "unknown field (want kind, mode, state, restart, description, tags, config, ignore, create, snapshots, node)")
		}
	})
	return g
}

// create decodes a guest's create block.
func (p *decoder) create(cp string, n *yaml.Node) *Create {
	c := &Create{}
	p.block(cp, n, "a create block", "null is not a create block; omit create: for a guest that must exist, or say how to create it (clone:, disks:, ostemplate:)", func(fp, key string, k, v *yaml.Node) {
		switch key {
		case "clone":
			s, ok := p.str(fp, v)
			if !ok {
				return
			}
			id, err := strconv.Atoi(s)
			if err != nil || v.ShortTag() != "!!int" || strconv.Itoa(id) != s {
				p.fail(fp, v, "want the vmid of the guest to clone (a decimal integer), got %q", s)
				return
			}
			if id == 0 {
				p.fail(fp, v, "vmid 0 out of range; PVE vmids are %d..%d", MinVMID, MaxVMID)
				return
			}
			c.Clone = id
		case "full":
			if b, ok := p.boolean(fp, v); ok {
				c.Full = &b
			}
		case "storage":
			c.Storage, _ = p.str(fp, v)
		case "name":
			c.Name, _ = p.str(fp, v)
		case "pool":
			c.Pool, _ = p.str(fp, v)
		case "ostemplate":
			c.OSTemplate, _ = p.str(fp, v)
		case "disks":
			c.Disks = map[string]string{}
			p.mapping(fp, v, "disks by config key", func(key string, k, v *yaml.Node) {
				dp := join(fp, key)
				p.lines[dp] = k.Line
				if s, ok := p.str(dp, v); ok {
					c.Disks[key] = s
				}
			})
		default:
			p.fail(fp, k, "unknown field (want clone, full, storage, name, pool, disks, ostemplate)")
		}
	})
	return c
}

// list decodes a sequence of scalars; null and a missing field differ: a
// null list is reported, since "tags: " most likely lost its value.
func (p *decoder) list(path string, n *yaml.Node, what string) []string {
	p.lines[path] = n.Line
	if n.Kind != yaml.SequenceNode {
		p.fail(path, n, "want a list of %s, got %s", what, kindName(n))
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, it := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		if it.Kind == yaml.AliasNode {
			p.fail(ip, it, "anchors and aliases are not supported; write the value out")
			continue
		}
		if s, ok := p.str(ip, it); ok {
			out = append(out, s)
		}
	}
	return out
}

// configValue converts a scalar to PVE's string form, exactly as written:
// numbers keep the operator's digits (never a float64 round trip, so
// 99999999999999999999 stays that and 1e308 stays 1e308; whether a key
// takes such a value is the schema check's decision), integers in plain
// decimal only (YAML reads 0x1F, 0o17, 017 and 1_000 in other bases or
// with separators: those are refused rather than silently converted),
// booleans "1"/"0", strings as written except that a boolean spelling
// ("yes", "on", "True") of a key PVE types boolean becomes "1"/"0".
func (p *decoder) configValue(path, key string, n *yaml.Node) (string, bool) {
	if key == "sshkeys" {
		return p.sshkeys(path, n)
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.fail(path, n, "want a scalar value (string, number or boolean), got %s", kindName(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str":
		if b, ok := boolSpelling(n.Value); ok && boolKey(key) {
			return b, true
		}
		return n.Value, true
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			p.fail(path, n, "invalid boolean %q", n.Value)
			return "", false
		}
		if b {
			return "1", true
		}
		return "0", true
	case "!!int", "!!float":
		v := n.Value
		if plainInt(v) {
			return canonInt(v), true
		}
		if n.ShortTag() == "!!float" && decimalNumber(v) && !leadingZeroInt(v) {
			return v, true
		}
		var x any
		if err := n.Decode(&x); err == nil && n.ShortTag() == "!!int" || leadingZeroInt(v) {
			p.fail(path, n, "number %q is not plain decimal (YAML reads it as %s); write the digits in decimal without leading zeros or separators, or quote the value", v, yamlReads(x))
			return "", false
		}
		p.fail(path, n, "invalid number %q; want a finite decimal such as 2, 1.5 or 1e3", v)
		return "", false
	}
	p.fail(path, n, "unsupported value of type %s; want a string, number or boolean", n.ShortTag())
	return "", false
}

// sshkeys decodes config.sshkeys: the public keys as they are (one string,
// several lines of one, or a list of them), stored URL-encoded as PVE
// stores the key (see package normalize). A value already URL-encoded is
// kept as written.
func (p *decoder) sshkeys(path string, n *yaml.Node) (string, bool) {
	var lines []string
	switch {
	case n.Kind == yaml.SequenceNode:
		for i, it := range n.Content {
			s, ok := p.str(fmt.Sprintf("%s[%d]", path, i), it)
			if !ok {
				return "", false
			}
			lines = append(lines, s)
		}
	case n.Kind == yaml.ScalarNode && !isNull(n):
		if normalize.IsURLEncoded(n.Value) {
			return n.Value, true
		}
		lines = []string{n.Value}
	default:
		p.fail(path, n, "want SSH public keys (a string, or a list of them), got %s", kindName(n))
		return "", false
	}
	text := strings.Join(normalize.SSHKeyLines(strings.Join(lines, "\n")), "\n")
	return normalize.EncodeSSHKeys(text), true
}

// leadingZeroInt reports whether s is an integer literal with a leading
// zero ("017", "-08"), which YAML reads as octal or as a float.
func leadingZeroInt(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if len(s) < 2 || s[0] != '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
