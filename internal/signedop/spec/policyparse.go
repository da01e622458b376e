package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/yamlerr"
)

// PolicyError is one problem in a policy document: where it is (File when
// the policy was read from one, a 1-based Line, the Path of the entry such
// as require.destroy.count) and what was expected.
type PolicyError struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	b.WriteString("signedop: policy")
	if e.File != "" {
		b.WriteString(" " + e.File)
	}
	b.WriteString(": ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxPolicyErrors bounds how many problems one parse reports.
const maxPolicyErrors = 20

// ParsePolicy parses a policy document (see Policy). Empty input, only
// comments or a YAML null give DefaultPolicy. It is strict: an unknown
// field or op, a wrong type, a duplicate key, an anchor, alias or merge
// key, or more than one YAML document is an error. On failure it returns
// one *PolicyError per problem (joined), each naming its line and path and
// saying what was expected.
func ParsePolicy(b []byte) (Policy, error) { return ParsePolicyFile(b, "") }

// ParsePolicyFile is ParsePolicy for the content b of the file named file:
// every PolicyError carries the name.
func ParsePolicyFile(b []byte, file string) (Policy, error) {
	pp := policyParser{file: file}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return DefaultPolicy(), nil
		}
		line, msg := yamlerr.Syntax(err)
		pp.add(line, "", "invalid YAML: %s", msg)
		return Policy{}, pp.err()
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		pp.add(extra.Line, "", "more than one YAML document; put the whole policy in one")
		return Policy{}, pp.err()
	} else if !errors.Is(err, io.EOF) {
		line, msg := yamlerr.Syntax(err)
		pp.add(line, "", "invalid YAML: %s", msg)
		return Policy{}, pp.err()
	}
	n := &root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	p := Policy{}
	if n.Kind == yaml.DocumentNode || isNullNode(n) {
		return DefaultPolicy(), nil
	}
	pp.mapping("", n, "a mapping with the fields roles and require", func(key string, k, v *yaml.Node) {
		switch key {
		case "roles":
			p.Roles = map[string][]string{}
			pp.mapping("roles", v, "a mapping of principal to a list of roles", func(pr string, k, v *yaml.Node) {
				path := "roles." + pr
				if pr == "" {
					pp.add(k.Line, path, "empty principal; write it as in allowed_signers")
					return
				}
				if v.Kind != yaml.SequenceNode {
					pp.add(v.Line, path, "want a list of role names like [operator], got %s", describeNode(v))
					return
				}
				roles := []string{}
				for i, r := range v.Content {
					if name, ok := pp.name(fmt.Sprintf("%s[%d]", path, i), r, "a role name"); ok {
						roles = append(roles, name)
					}
				}
				p.Roles[pr] = roles
			})
		case "require":
			p.Require = map[string]Requirement{}
			pp.mapping("require", v, `a mapping of op (or "*") to {role: ROLE, count: N}`, func(op string, k, v *yaml.Node) {
				path := "require." + op
				if op != "*" && !isKnownOp(op) {
					pp.add(k.Line, path, "unknown op (want one of %s, or \"*\" for any op)", opList())
					return
				}
				var r Requirement
				var haveRole, haveCount bool
				ok := pp.mapping(path, v, "a mapping {role: ROLE, count: N}", func(f string, k, v *yaml.Node) {
					switch f {
					case "role":
						r.Role, haveRole = pp.name(path+".role", v, "a role name")
					case "count":
						r.Count, haveCount = pp.count(path+".count", v)
					default:
						pp.add(k.Line, path+"."+f, "unknown field (want role, count)")
					}
				})
				if !ok {
					return
				}
				if !haveRole && !pp.hasKey(v, "role") {
					pp.add(v.Line, path, "role is missing; want the role whose holders may sign, e.g. {role: operator, count: 1}")
				}
				if !haveCount && !pp.hasKey(v, "count") {
					pp.add(v.Line, path, "count is missing; want how many distinct signers, an integer from 1 to 100")
				}
				p.Require[op] = r
			})
		default:
			pp.add(k.Line, key, "unknown field (want roles, require)")
		}
	})
	if err := pp.err(); err != nil {
		return Policy{}, err
	}
	if p.Require == nil {
		p.Require = map[string]Requirement{}
	}
	if _, ok := p.Require["*"]; !ok {
		p.Require["*"] = Requirement{Role: DefaultRole, Count: 1}
	}
	return p, nil
}

type policyParser struct {
	file    string
	errs    []error
	dropped int
}

func (pp *policyParser) add(line int, path, format string, args ...any) {
	if len(pp.errs) >= maxPolicyErrors {
		pp.dropped++
		return
	}
	pp.errs = append(pp.errs, &PolicyError{File: pp.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (pp *policyParser) err() error {
	if pp.dropped > 0 {
		pp.errs = append(pp.errs, &PolicyError{File: pp.file, Msg: fmt.Sprintf("and %d more problems", pp.dropped)})
	}
	return errors.Join(pp.errs...)
}

// mapping calls fn for each entry of the mapping n, reporting what is not
// a plain mapping with unique scalar keys. A null n is an empty mapping.
// It returns false (after reporting) when n is not a mapping.
func (pp *policyParser) mapping(path string, n *yaml.Node, want string, fn func(key string, k, v *yaml.Node)) bool {
	if isNullNode(n) {
		return true
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		pp.add(n.Line, path, "anchors and aliases are not supported; write the value out")
		return false
	}
	if n.Kind != yaml.MappingNode {
		pp.add(n.Line, path, "want %s, got %s", want, describeNode(n))
		return false
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || isNullNode(k) {
			pp.add(k.Line, path, "keys must be plain names, got %s", describeNode(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			pp.add(k.Line, path, "merge keys (<<) are not supported; write the entries out")
			continue
		}
		kp := k.Value
		if path != "" {
			kp = path + "." + k.Value
		}
		if first, dup := seen[k.Value]; dup {
			pp.add(k.Line, kp, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if v.Kind == yaml.AliasNode || v.Anchor != "" {
			pp.add(v.Line, kp, "anchors and aliases are not supported; write the value out")
			continue
		}
		fn(k.Value, k, v)
	}
	return true
}

func (pp *policyParser) hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

// name decodes a non-empty scalar.
func (pp *policyParser) name(path string, n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNullNode(n) || n.Value == "" {
		pp.add(n.Line, path, "want %s (a non-empty string), got %s", what, describeNode(n))
		return "", false
	}
	return n.Value, true
}

func (pp *policyParser) count(path string, n *yaml.Node) (int, bool) {
	c, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || err != nil || c < 1 || c > 100 {
		pp.add(n.Line, path, "want an integer from 1 to 100, got %s", describeNode(n))
		return 0, false
	}
	return c, true
}

func isNullNode(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// describeNode names what a node is, for "want X, got Y".
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.ScalarNode:
		if isNullNode(n) {
			return "nothing (null)"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return strconv.Quote(v)
	}
	return "an unknown node"
}

func isKnownOp(op string) bool {
	for _, k := range knownOps {
		if string(k) == op {
			return true
		}
	}
	return false
}

func opList() string {
	s := make([]string, len(knownOps))
	for i, k := range knownOps {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}
