package pveschema

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Permissions is a method's "permissions" object.
type Permissions struct {
	// User is "all" (any authenticated user; the handler filters results
	// itself), "world" (no authentication), or "" when Check decides.
	User string
	// Check is the privilege check, nil if the schema gives none.
	Check *Check
	// Description is the schema's prose about extra, handler-side checks.
	Description string
}

// Check is one node of PVE's permission check list, e.g.
// ["perm", "/vms/{vmid}", ["VM.Audit"]] or ["and", check, check].
type Check struct {
	// Op is "perm", "and", "or", or another PVE check kind ("userid-group",
	// "userid-param", "perm-modify") kept as Raw and never satisfied by Eval.
	Op           string
	Path         string   // Op "perm": ACL path template, e.g. "/vms/{vmid}"
	Privs        []string // Op "perm": privileges
	Any          bool     // Op "perm": one of Privs suffices (else all are needed)
	RequireParam string   // Op "perm": the check fails unless this parameter is given
	Sub          []*Check // Op "and"/"or": operands
	Raw          []any    // the check list as the schema spells it
}

// HasPriv reports whether the caller holds priv on the concrete ACL path
// (after PVE's propagation rules, which the caller implements).
type HasPriv func(path, priv string) bool

// Eval decides the permission check the way PVE's check_api2_permissions
// does. params are the request's parameters (path variables included), used
// to fill the path template. On denial it returns PVE's exact message, e.g.
// "Permission check failed (/vms/101, VM.PowerMgmt)" or, for an any-check,
// "Permission check failed (/vms/101, VM.Snapshot|VM.Snapshot.Rollback)".
// authenticated says whether the caller is logged in (user "all" needs it).
func (p Permissions) Eval(params map[string]string, authenticated bool, has HasPriv) (ok bool, denial string) {
	if p.User == "world" {
		return true, ""
	}
	if p.User == "all" && p.Check == nil {
		if authenticated {
			return true, ""
		}
		return false, "Permission check failed"
	}
	if p.Check == nil {
		// PVE: no permissions given means root only.
		return false, "Permission check failed (user != root@pam)"
	}
	return p.Check.Eval(params, has)
}

// Eval evaluates one check node; see Permissions.Eval.
func (c *Check) Eval(params map[string]string, has HasPriv) (ok bool, denial string) {
	const failed = "Permission check failed"
	switch c.Op {
	case "perm":
		if c.RequireParam != "" {
			if _, ok := params[c.RequireParam]; !ok {
				return false, failed
			}
		}
		path := c.ResolvePath(params)
		if c.Any {
			for _, pr := range c.Privs {
				if has(path, pr) {
					return true, ""
				}
			}
			return false, failed + " (" + path + ", " + strings.Join(c.Privs, "|") + ")"
		}
		for _, pr := range c.Privs {
			if !has(path, pr) {
				return false, failed + " (" + path + ", " + pr + ")"
			}
		}
		return true, ""
	case "and":
		for _, s := range c.Sub {
			if ok, d := s.Eval(params, has); !ok {
				return false, d
			}
		}
		return true, ""
	case "or":
		for _, s := range c.Sub {
			if ok, _ := s.Eval(params, has); ok {
				return true, ""
			}
		}
		return false, failed
	}
	return false, failed
}

// ResolvePath fills the check's path template from params ("{vmid}" ->
// "101") and normalizes it as PVE does (collapsed slashes, no trailing
// slash). A variable without a value is replaced by the empty string.
func (c *Check) ResolvePath(params map[string]string) string {
	var b strings.Builder
	t := c.Path
	for {
		i := strings.IndexByte(t, '{')
		if i < 0 {
			b.WriteString(t)
			break
		}
		j := strings.IndexByte(t[i:], '}')
		if j < 0 {
			b.WriteString(t)
			break
		}
		b.WriteString(t[:i])
		b.WriteString(params[t[i+1:i+j]])
		t = t[i+j+1:]
	}
	p := b.String()
	for strings.Contains(p, "//") {
		p = strings.ReplaceAll(p, "//", "/")
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

func parsePermissions(raw json.RawMessage) (Permissions, error) {
	var p Permissions
	if len(raw) == 0 {
		return p, nil
	}
	var obj struct {
		User        string `json:"user"`
		Description string `json:"description"`
		Check       []any  `json:"check"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil {
		return p, fmt.Errorf("permissions: %w", err)
	}
	p.User, p.Description = obj.User, obj.Description
	if obj.Check != nil {
		c, err := parseCheck(obj.Check)
		if err != nil {
			return p, fmt.Errorf("permissions: %w", err)
		}
		p.Check = c
	}
	return p, nil
}

func parseCheck(l []any) (*Check, error) {
	if len(l) == 0 {
		return nil, fmt.Errorf("empty check list")
	}
	op, _ := l[0].(string)
	c := &Check{Op: op, Raw: l}
	switch op {
	case "perm":
		if len(l) < 3 {
			return nil, fmt.Errorf("perm check %v: want [\"perm\", path, [privs], options...]", l)
		}
		c.Path, _ = l[1].(string)
		privs, _ := l[2].([]any)
		for _, pr := range privs {
			if s, ok := pr.(string); ok {
				c.Privs = append(c.Privs, s)
			}
		}
		if len(c.Privs) == 0 {
			return nil, fmt.Errorf("perm check %v: no privileges", l)
		}
		for i := 3; i+1 < len(l); i += 2 {
			k, _ := l[i].(string)
			switch k {
			case "any":
				c.Any = perlTrue(l[i+1])
			case "require_param":
				c.RequireParam, _ = l[i+1].(string)
			}
		}
	case "and", "or":
		for _, e := range l[1:] {
			sl, ok := e.([]any)
			if !ok {
				return nil, fmt.Errorf("%s check operand %v is not a list", op, e)
			}
			s, err := parseCheck(sl)
			if err != nil {
				return nil, err
			}
			c.Sub = append(c.Sub, s)
		}
	}
	return c, nil
}
