package desired

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pveschema"
)

// Config keys and values are checked against PVE's own API schema (the
// apidata.json that package pveschema embeds): a key must be a config key
// of the guest's kind, which is a parameter of PUT …/{qemu|lxc}/{vmid}/config
// that the config GET also returns, and its value must pass PVE's check of
// that parameter (type, format, property string, bounds, enumeration).
//
// A guest whose kind is pinned is checked against that kind when the
// document is parsed or validated. A guest whose kind is not pinned is
// checked against both: a key or value that neither kind accepts is an
// error at once; one that only one kind accepts waits for the kind the host
// reports (Guest.CheckKind).

// kinds are the guest kinds a document's config is checked against.
var kinds = [...]guest.Kind{guest.QEMU, guest.LXC}

// kindErrs holds, for a guest whose kind is not pinned, the config errors
// that only one kind has (found when the document was parsed).
type kindErrs map[guest.Kind][]error

// problem is what one kind's schema says about one config key and value.
type problem struct {
	unknown bool             // the kind has no such key
	msg     string           // PVE's message for the value, when the key exists
	param   *pveschema.Param // the key's schema, when it exists
}

func (p problem) ok() bool { return !p.unknown && p.msg == "" }

// schemaFor returns the config schema of kind, or an error message.
func schemaFor(kind guest.Kind) (*pveschema.GuestConfig, error) {
	s, err := pveschema.Load()
	if err != nil {
		return nil, err
	}
	return s.GuestConfig(string(kind))
}

// checkAgainst checks one config key and value against kind's schema.
func checkAgainst(c *pveschema.GuestConfig, key, value string) problem {
	p := c.Key(key)
	if p == nil {
		return problem{unknown: true}
	}
	if p.Type == "boolean" {
		// Any spelling PVE's parse_boolean knows: Parse writes "1"/"0",
		// and the planner sends a boolean key in that form.
		if b, ok := boolSpelling(value); ok {
			value = b
		}
	}
	return problem{msg: c.Check(key, value), param: p}
}

// CheckKind reports whether g's config is valid for a guest of kind, as
// PVE's schema for that kind says, and returns nil or an error joining one
// *FieldError per offending key (naming its path and, for a parsed
// document, its line). Call it once the host reports the kind of a guest
// whose kind desired state does not pin, before planning it: a guest with an
// error must not be planned. For a pinned guest it reports nothing more
// than Validate did (a mismatch of kinds is the planner's error). A nil g,
// and any g for a kind other than qemu or lxc, is valid. CheckKind does not modify g and is safe for concurrent use.
func (g *Guest) CheckKind(kind guest.Kind) error {
	if g == nil || len(g.Config) == 0 || g.Kind != "" {
		return nil
	}
	if g.kindErrs != nil {
		return errors.Join(g.kindErrs[kind]...)
	}
	// Not recorded: a guest built in Go.
	if kind != guest.QEMU && kind != guest.LXC {
		return nil // no schema to check against
	}
	c, err := schemaFor(kind)
	if err != nil {
		return &FieldError{Path: "kind", Msg: err.Error()}
	}
	var errs []error
	for _, k := range sortedKeys(g.Config) {
		if checkConfigKey(k) != "" || checkConfigValue(g.Config[k]) != "" {
			continue // Validate reports these
		}
		if pr := checkAgainst(c, k, g.Config[k]); !pr.ok() {
			errs = append(errs, &FieldError{Path: "config." + k, Msg: kindMessage(kind, k, pr, c)})
		}
	}
	return errors.Join(errs...)
}

// validateSchema checks g's config (keys and values already syntactically
// valid) against PVE's schema; see the comment at the top of this file.
// With record set (a document being parsed) it records the errors only one
// kind has in g for CheckKind.
func (g *Guest) validateSchema(errs *errList, gp string, at func(string) int, keys []string, record bool) {
	if len(keys) == 0 {
		return
	}
	var schemas [len(kinds)]*pveschema.GuestConfig
	for i, k := range kinds {
		c, err := schemaFor(k)
		if err != nil {
			errs.add(gp+".config", at(gp+".config"), "cannot check config keys: %v", err)
			return
		}
		schemas[i] = c
	}
	if g.Kind != "" {
		i := 0
		for i < len(kinds) && kinds[i] != g.Kind {
			i++
		}
		if i == len(kinds) {
			return // an invalid kind, reported by validate
		}
		for _, k := range keys {
			p := gp + ".config." + k
			if pr := checkAgainst(schemas[i], k, g.Config[k]); !pr.ok() {
				errs.add(p, at(p), "%s", kindMessage(g.Kind, k, pr, schemas[i]))
			}
		}
		return
	}
	if record {
		g.kindErrs = kindErrs{} // checked: CheckKind needs no schema work
	}
	for _, k := range keys {
		p := gp + ".config." + k
		var prs [len(kinds)]problem
		okIn := -1
		for i := range kinds {
			prs[i] = checkAgainst(schemas[i], k, g.Config[k])
			if prs[i].ok() {
				okIn = i
			}
		}
		switch {
		case okIn < 0:
			errs.add(p, at(p), "%s", bothMessage(k, prs, schemas))
		case record:
			for i, kind := range kinds {
				if prs[i].ok() {
					continue
				}
				msg := kindMessage(kind, k, prs[i], schemas[i]) + "; pin kind: to say which kind this guest is"
				g.kindErrs[kind] = append(g.kindErrs[kind], &FieldError{File: errs.file, Path: p, Line: at(p), Msg: msg})
			}
		}
	}
}

// kindMessage describes one kind's problem with a key.
func kindMessage(kind guest.Kind, key string, pr problem, c *pveschema.GuestConfig) string {
	if pr.unknown {
		return fmt.Sprintf("unknown config key for %s guest: PVE's %s schema has no %q%s", article(kind), kind, key, hint(key, c))
	}
	return fmt.Sprintf("invalid value for %s guest: %s; %s", article(kind), flatten(pr.msg), want(key, pr.param))
}

// bothMessage describes a key that no kind accepts.
func bothMessage(key string, prs [len(kinds)]problem, schemas [len(kinds)]*pveschema.GuestConfig) string {
	var known []int
	for i := range kinds {
		if !prs[i].unknown {
			known = append(known, i)
		}
	}
	switch len(known) {
	case 0:
		h := hint(key, schemas[0])
		if h == "" {
			h = hint(key, schemas[1])
		}
		return fmt.Sprintf("unknown config key: neither qemu nor lxc guests have %q in PVE's schema%s", key, h)
	case 1:
		i := known[0]
		return kindMessage(kinds[i], key, prs[i], schemas[i]) + fmt.Sprintf(" (%s guests have no %s key)", kinds[1-i], key)
	}
	q, l := prs[0], prs[1]
	if flatten(q.msg) == flatten(l.msg) {
		return fmt.Sprintf("invalid value for qemu and lxc guests: %s; qemu: %s; lxc: %s", flatten(q.msg), want(key, q.param), want(key, l.param))
	}
	return fmt.Sprintf("invalid value for qemu guests: %s; %s; and for lxc guests: %s; %s",
		flatten(q.msg), want(key, q.param), flatten(l.msg), want(key, l.param))
}

func article(kind guest.Kind) string {
	if kind == guest.LXC {
		return "an lxc"
	}
	return "a " + string(kind)
}

// flatten makes PVE's multi-line messages (property-string errors are
// "invalid format - format error\nkey: msg\n...") one line.
func flatten(msg string) string {
	msg = strings.TrimRight(msg, "\n")
	msg = strings.ReplaceAll(msg, "format error\n", "")
	return strings.ReplaceAll(msg, "\n", "; ")
}

// maxWant bounds the schema text quoted in a message.
const maxWant = 240

// want renders the schema's own description of a key: its format (with
// bounds) and the first sentence of its description.
func want(key string, p *pveschema.Param) string {
	if p == nil {
		return ""
	}
	tt := p.TypeText
	if tt == "" {
		tt = "<" + p.Type + ">"
	}
	if len(tt) > maxWant {
		tt = tt[:maxWant] + "…"
	}
	s := "PVE's schema: " + key + " " + tt
	if d := firstSentence(p.Description); d != "" {
		s += " (" + d + ")"
	}
	return s
}

func firstSentence(d string) string {
	d = strings.TrimSpace(d)
	if i := strings.IndexAny(d, "\n"); i >= 0 {
		d = d[:i]
	}
	if i := strings.Index(d, ". "); i >= 0 {
		d = d[:i+1]
	}
	if len(d) > maxWant {
		d = d[:maxWant] + "…"
	}
	return strings.TrimSpace(d)
}

// hint suggests what an unknown key may have meant: the range of a
// numbered key whose index is out of range, or a known key a typo away.
func hint(key string, c *pveschema.GuestConfig) string {
	base, idx := splitIndex(key)
	if idx != "" {
		if p := c.Key(base + "0"); p != nil && p.Numbered && p.IndexMax >= 0 {
			return fmt.Sprintf("; %s keys run from %s0 to %s%d", p.Name, base, base, p.IndexMax)
		}
	}
	// Suggest within one edit, or two for keys longer than five letters.
	limit := 2
	if len(key) > 5 {
		limit = 3
	}
	best, bestD := "", limit
	for _, name := range c.Keys() {
		cand := name
		if b, ok := strings.CutSuffix(name, "[n]"); ok {
			if idx == "" {
				continue
			}
			cand = b + idx
		}
		if d := editDistance(key, cand, bestD); d < bestD {
			best, bestD = cand, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// splitIndex splits "net12" into "net" and "12"; idx is "" without digits.
func splitIndex(key string) (base, idx string) {
	i := len(key)
	for i > 0 && key[i-1] >= '0' && key[i-1] <= '9' {
		i--
	}
	return key[:i], key[i:]
}

// editDistance is the optimal-string-alignment distance of a and b
// (insertions, deletions, substitutions and swaps of neighbours count one
// edit), or limit when it is at least limit. Keys are short ASCII.
func editDistance(a, b string, limit int) int {
	if d := len(a) - len(b); d >= limit || -d >= limit {
		return limit
	}
	// d[i][j] is the distance of a[:i] and b[:j]; three rows suffice.
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], limit)
}

// boolKey reports whether key is a boolean config key of every kind that
// has it (and of at least one): a YAML boolean spelling in a string
// ("yes", "on") is then taken as the boolean it spells.
func boolKey(key string) bool {
	found := false
	for _, k := range kinds {
		c, err := schemaFor(k)
		if err != nil {
			return false
		}
		if p := c.Key(key); p != nil {
			if p.Type != "boolean" {
				return false
			}
			found = true
		}
	}
	return found
}

// boolSpelling maps PVE's parse_boolean spellings to "1"/"0".
func boolSpelling(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "1", "on", "yes", "true":
		return "1", true
	case "0", "off", "no", "false":
		return "0", true
	}
	return "", false
}

// plainInt reports whether s is a plain decimal integer literal: an
// optional sign, then "0" or digits without a leading zero.
func plainInt(s string) bool {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// canonInt writes a plain decimal integer literal exactly, without a plus
// sign ("+5" is "5", "-0" is "0"); plainInt(s) must hold.
func canonInt(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	if neg && s != "0" {
		return "-" + s
	}
	return s
}

// decimalNumber reports whether s is a number PVE's number type accepts:
// [+-]? digits with an optional fraction and exponent.
func decimalNumber(s string) bool {
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	digits := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < len(s) && s[i] == '.' {
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(s)
}

// yamlReads describes what YAML makes of a number literal that is not
// plain decimal ("0x1F", "017", "1_000"), for the error message.
func yamlReads(v any) string {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}
