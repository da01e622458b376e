// Package importer writes desired state for guests that already exist,
// from what their host's agent last reported, so that adopting a running
// fleet is one command (`steward import HOST`) and an apply of its output
// changes nothing.
//
// What it can write is what the report holds: every guest's kind and run
// state; for the guests desired state already manages, the config keys
// it manages (normalized, as the planner compares them), description and
// tags; for the others, the config keys an operator would adopt them
// with (wire.Guest.Observed: CPU, memory, name, description, tags, boot,
// network devices, disks, mount points..., never a secret), normalized
// by the agent. Of those config keys it manages the
// ones an operator would pick (CPU, memory, name, boot, network devices;
// see Picked) and writes the rest (disks, mount points, ...) as comments,
// since managing a disk makes every difference in it a signed change.
// Guests the report lists without a config get a comment saying how to
// add keys.
//
// The package is pure (no I/O) and its output always parses with package
// desired.
package importer

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
	"github.com/steward-pve/steward/internal/wire"
)

// picked are the config keys Picked accepts: exact keys, and prefixes
// followed by digits ("net" matches net0, net1, ...).
var (
	pickedExact = []string{"cores", "sockets", "vcpus", "cpulimit", "cpuunits", "memory", "balloon", "swap",
		"name", "hostname", "onboot", "startup"}
	pickedIndexed = []string{"net"}
)

// Picked reports whether an imported document manages config key k: the
// benign keys an operator sets by hand (CPU, memory, name, start at boot,
// network devices). Every other key is written as a comment.
func Picked(k string) bool {
	if slices.Contains(pickedExact, k) {
		return true
	}
	for _, p := range pickedIndexed {
		if rest, ok := strings.CutPrefix(k, p); ok && rest != "" && strings.Trim(rest, "0123456789") == "" {
			return true
		}
	}
	return false
}

// Options select what Generate writes.
type Options struct {
	// VMIDs, when not empty, are the guests to import; each must be in
	// the report. Empty imports every guest the report lists except
	// templates.
	VMIDs []int
	// Current is the host's current desired state (nil: none). Its
	// guests that are not imported are kept as they are, so that applying
	// the output does not stop managing them; the imported guests keep
	// its mode, restart policy and ignore list.
	Current *desired.Host
}

// ErrNotReported is wrapped by Generate for a VMID the report does not
// list.
var ErrNotReported = errors.New("importer: guest not in the host's report")

// Generate returns a desired-state document (YAML, with comments) for
// host from rep, its last report. The document names only host.
func Generate(host string, rep wire.Report, opt Options) ([]byte, error) {
	if host == "" {
		return nil, errors.New("importer: empty host id")
	}
	byID := map[int]wire.Guest{}
	for _, g := range rep.Guests {
		byID[g.VMID] = g
	}
	var selected []int
	if len(opt.VMIDs) > 0 {
		for _, id := range opt.VMIDs {
			if _, ok := byID[id]; !ok {
				return nil, fmt.Errorf("%w: host %s reported no guest %d at %s; `steward status %s` lists its guests",
					ErrNotReported, host, id, rep.Time.Format("2006-01-02 15:04:05Z07:00"), host)
			}
			if !slices.Contains(selected, id) {
				selected = append(selected, id)
			}
		}
	} else {
		for _, g := range rep.Guests {
			if !g.Template {
				selected = append(selected, g.VMID)
			}
		}
	}
	slices.Sort(selected)

	guests := &yaml.Node{Kind: yaml.MappingNode}
	var cur map[int]*desired.Guest
	if opt.Current != nil {
		cur = opt.Current.Guests
	}
	ids := slices.Clone(selected)
	for id := range cur {
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(id)}
		var val *yaml.Node
		if slices.Contains(selected, id) {
			key.HeadComment, val = guestNode(byID[id], cur[id])
		} else {
			key.HeadComment = "managed already, not imported: kept as the current desired state has it"
			val = keptNode(cur[id])
		}
		guests.Content = append(guests.Content, key, val)
	}
	if len(ids) == 0 {
		guests.Style = yaml.FlowStyle
	}

	root := mapping(
		"apiVersion", str(desired.APIVersion),
		"kind", str(desired.DocumentKind),
		"hosts", mapping(host, mapping("guests", guests)),
	)
	root.HeadComment = fmt.Sprintf("Imported from the report host %s sent at %s (desired generation %d).\n"+
		"Nothing is managed until you apply it: steward apply -f FILE.", host, rep.Time.UTC().Format("2006-01-02 15:04:05Z"), rep.DesiredGeneration)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}); err != nil {
		return nil, fmt.Errorf("importer: encoding the document: %w", err)
	}
	out := []byte(b.String())
	doc, err := desired.Parse(out)
	if err != nil {
		return nil, fmt.Errorf("importer: the document written for host %s does not parse (a bug; the report's values are kept as PVE gave them): %w", host, err)
	}
	for id, g := range doc.ForHost(host).Guests {
		if rg, ok := byID[id]; ok && slices.Contains(selected, id) {
			if err := g.CheckKind(guest.Kind(rg.Kind)); err != nil {
				return nil, fmt.Errorf("importer: guest %d: %w", id, err)
			}
		}
	}
	return out, nil
}

// guestNode returns the comment above guest g and its document node.
func guestNode(g wire.Guest, cur *desired.Guest) (string, *yaml.Node) {
	kind := guest.Kind(g.Kind)
	head := fmt.Sprintf("%s %q, %s", g.Kind, g.Name, orUnknown(g.Status))
	if g.Lock != "" {
		head += ", locked (" + g.Lock + ")"
	}
	n := mapping("kind", str(g.Kind))
	if g.Template {
		head += "; a template: only its kind is written"
		return head, n
	}
	if cur != nil {
		if cur.Mode != "" {
			n.Content = append(n.Content, str("mode"), str(string(cur.Mode)))
		}
		if cur.Restart != "" {
			n.Content = append(n.Content, str("restart"), str(string(cur.Restart)))
		}
	}
	switch g.Status {
	case "running", "stopped":
		n.Content = append(n.Content, str("state"), str(g.Status))
	default:
		head += fmt.Sprintf("\nstate: not written (PVE says %q; steward manages running or stopped)", orUnknown(g.Status))
	}
	// A managed guest's report holds the keys it manages (Config); an
	// unmanaged one's the keys an operator would adopt it with
	// (Observed, wire version 2).
	src := g.Config
	if src == nil {
		src = g.Observed
	}
	cfg := maps.Clone(src)
	if d, ok := cfg["description"]; ok {
		delete(cfg, "description")
		v := str(normalize.Value(kind, "description", d))
		if strings.Contains(v.Value, "\n") {
			v.Style = yaml.LiteralStyle
		}
		n.Content = append(n.Content, str("description"), v)
	}
	if t, ok := cfg["tags"]; ok {
		delete(cfg, "tags")
		list := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, tag := range strings.FieldsFunc(normalize.Value(kind, "tags", t), func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			list.Content = append(list.Content, str(tag))
		}
		n.Content = append(n.Content, str("tags"), list)
	}
	config := &yaml.Node{Kind: yaml.MappingNode}
	var notes []string
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		v := normalize.Value(kind, k, cfg[k])
		switch {
		case v == "":
			notes = append(notes, k+": (absent on the guest; not written)")
		case Picked(k) && acceptable(g.Kind, k, v):
			config.Content = append(config.Content, str(k), scalar(v))
		case Picked(k):
			notes = append(notes, fmt.Sprintf("%s: %s   (not written: desired state would refuse the value PVE reported)", k, cfg[k]))
		default:
			notes = append(notes, fmt.Sprintf("%s: %s   (not written: managing it makes a change to it a signed operation)", k, cfg[k]))
		}
	}
	if src == nil {
		head += "\nconfig: not in the report yet (an agent reads an unmanaged guest's config when it first sees it,\n" +
			"then every few minutes; an agent or hub older than wire version 2 never reports it);\n" +
			"add the keys to manage (cores, memory, onboot, net0, ...) under config:, and `steward plan`\n" +
			"shows the value each has on the guest."
	}
	if len(config.Content) > 0 || len(notes) > 0 {
		ck := str("config")
		if len(notes) > 0 {
			ck.HeadComment = strings.Join(notes, "\n")
		}
		if len(config.Content) == 0 {
			config.Style = yaml.FlowStyle
		}
		n.Content = append(n.Content, ck, config)
	}
	if cur != nil && len(cur.Ignore) > 0 {
		n.Content = append(n.Content, str("ignore"), strList(cur.Ignore))
	}
	return head, n
}

// acceptable reports whether desired state accepts config key k = v for
// a guest of kind.
func acceptable(kind, k, v string) bool {
	g := mapping("kind", str(kind), "config", mapping(k, scalar(v)))
	doc := mapping("apiVersion", str(desired.APIVersion), "kind", str(desired.DocumentKind),
		"hosts", mapping("h", mapping("guests", mapping(&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: "100"}, g))))
	b, err := yaml.Marshal(doc)
	if err != nil {
		return false
	}
	_, err = desired.Parse(b)
	return err == nil
}

// keptNode writes a current desired guest as it is.
func keptNode(g *desired.Guest) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	add := func(k string, v *yaml.Node) { n.Content = append(n.Content, str(k), v) }
	if g.Kind != "" {
		add("kind", str(string(g.Kind)))
	}
	if g.Mode != "" {
		add("mode", str(string(g.Mode)))
	}
	if g.State != "" {
		add("state", str(string(g.State)))
	}
	if g.Restart != "" {
		add("restart", str(string(g.Restart)))
	}
	if g.Description != nil {
		add("description", str(*g.Description))
	}
	if g.Tags != nil {
		add("tags", strList(g.Tags))
	}
	if g.Config != nil {
		c := &yaml.Node{Kind: yaml.MappingNode}
		for _, k := range slices.Sorted(maps.Keys(g.Config)) {
			c.Content = append(c.Content, str(k), scalar(g.Config[k]))
		}
		if len(c.Content) == 0 {
			c.Style = yaml.FlowStyle
		}
		add("config", c)
	}
	if g.Ignore != nil {
		add("ignore", strList(g.Ignore))
	}
	if len(n.Content) == 0 {
		n.Style = yaml.FlowStyle
	}
	return n
}

func orUnknown(s string) string {
	if s == "" {
		return "status unknown"
	}
	return s
}

func str(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

// scalar is a config value: a plain decimal integer is written as a YAML
// integer (cores: 2), anything else as a string, quoted where YAML would
// read it otherwise.
func scalar(v string) *yaml.Node {
	if plainInt(v) {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v}
	}
	return str(v)
}

// plainInt reports whether s is a decimal integer YAML reads back as
// exactly s (no sign but '-', no leading zero).
func plainInt(s string) bool {
	d := strings.TrimPrefix(s, "-")
	if d == "" || len(d) > 18 || (len(d) > 1 && d[0] == '0') {
		return false
	}
	return strings.Trim(d, "0123456789") == ""
}

func strList(xs []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, x := range xs {
		n.Content = append(n.Content, str(x))
	}
	return n
}

// mapping builds a mapping from alternating keys (strings) and values.
func mapping(kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode}
	for i := 0; i+1 < len(kv); i += 2 {
		var k *yaml.Node
		switch key := kv[i].(type) {
		case string:
			k = str(key)
		case *yaml.Node:
			k = key
		}
		n.Content = append(n.Content, k, kv[i+1].(*yaml.Node))
	}
	return n
}
