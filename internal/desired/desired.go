// Package desired is steward's desired-state document: its Go types, its
// strict parser and its validation. The hub, the operator CLI and the agent
// all use this one package, so a document accepted by one is accepted by all.
//
// The document (apiVersion steward/v1, kind Fleet) names, per host id, the
// guests steward manages and, per guest, only the fields it manages:
//
//	apiVersion: steward/v1
//	kind: Fleet
//	hosts:
//	  pve-a:
//	    guests:
//	      101:
//	        kind: lxc          # qemu | lxc; pins the kind, a mismatch is an error
//	        mode: enforce      # enforce (default) | observe
//	        state: running     # running | stopped
//	        restart: never     # never (default) | allowed: reboot to apply pending changes
//	        description: web   # managed description ("" = none)
//	        tags: [prod, web]  # managed tag set ([] = none)
//	        config:            # PVE config keys in PVE's own units
//	          cores: 2
//	        ignore: [net0]     # keys never reported nor corrected
//	        create:            # how to create it when missing (create.go)
//	          ostemplate: local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst
//	        snapshots: {every: 24h, keep: 7}  # a snapshot schedule (snapshots.go)
//	        node: pve-b        # the cluster node it should be on: a migration (node.go)
//
// Every field is optional. An empty document (zero bytes, only whitespace or
// comments, or a YAML null) is valid and manages nothing; it never means
// "remove everything". A guest that no document names is never touched.
//
// Parsing is strict: an unknown field, a wrong type or an invalid value is a
// *FieldError naming its path (hosts.pve-a.guests.101.confg) and, when parsed
// from text, its line. All such errors of a document are reported together.
//
// Guest-level description and tags are the only way to manage PVE's
// description and tags keys: config.description and config.tags are
// rejected, so there is no precedence rule to remember. Keys that PVE
// computes or that are API call parameters rather than config keys (digest,
// lock, vmid, delete, ...) are rejected too.
//
// Config keys and values are checked against PVE's own API schema (package
// pveschema): the key must be a config key of the guest's kind and the
// value must pass PVE's check of it, exactly as written (numbers keep the
// operator's digits; see schema.go). A guest whose kind is not pinned is
// checked against both kinds when parsed and against the kind its host
// reports with Guest.CheckKind, before it is planned.
//
// The package is pure (no I/O); reading a document from a file lives in the
// desiredfile subpackage.
package desired

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/normalize"
)

// APIVersion and DocumentKind are the only accepted header values.
const (
	APIVersion   = "steward/v1"
	DocumentKind = "Fleet"
)

// VMID bounds as PVE defines them (pve-vmid format).
const (
	MinVMID = 100
	MaxVMID = 999999999
)

// Mode says whether steward corrects drift or only reports it.
type Mode string

const (
	// Enforce corrects drift. It is the default when Mode is empty.
	Enforce Mode = "enforce"
	// Observe reports drift and changes nothing.
	Observe Mode = "observe"
)

// State is a guest's desired run state.
type State string

const (
	// Running means the guest should be running; a stopped guest is started.
	Running State = "running"
	// Stopped means the guest should be stopped; a running guest is shut
	// down gracefully.
	Stopped State = "stopped"
)

// Restart says whether the agent may restart a guest to apply config
// changes PVE keeps pending until the next restart.
type Restart string

const (
	// RestartNever leaves pending changes for the operator to apply (the
	// guest is reported pending_restart). It is the default when Restart
	// is empty.
	RestartNever Restart = "never"
	// RestartAllowed lets the agent reboot the guest (a graceful shutdown
	// within the shutdown timeout, then a start) to apply them.
	RestartAllowed Restart = "allowed"
)

// Document is one desired-state document. A nil Hosts is an empty document.
type Document struct {
	APIVersion string           `json:"apiVersion,omitempty"`
	Kind       string           `json:"kind,omitempty"`
	Hosts      map[string]*Host `json:"hosts,omitempty"`
}

// Host is the desired state of one Proxmox host. A nil Guests manages nothing.
type Host struct {
	Guests map[int]*Guest `json:"guests,omitempty"`
}

// Guest is the desired state of one guest. Every field is optional; the zero
// value names the guest and manages nothing.
type Guest struct {
	// Kind pins the guest kind; "" means not pinned.
	Kind guest.Kind `json:"kind,omitempty"`
	// Mode is Enforce when empty.
	Mode Mode `json:"mode,omitempty"`
	// State is "" (run state unmanaged), Running or Stopped.
	State State `json:"state,omitempty"`
	// Restart is RestartNever when empty.
	Restart Restart `json:"restart,omitempty"`
	// Description is nil when unmanaged; a pointer to "" means "no
	// description".
	Description *string `json:"description,omitempty"`
	// Tags is nil when unmanaged; a non-nil empty slice means "no tags".
	// It is a set: order and duplicates are irrelevant.
	Tags []string `json:"tags,omitempty"`
	// Config maps PVE config keys to values in PVE's form and units. YAML
	// integers and floats are their decimal strings, booleans "1"/"0".
	Config map[string]string `json:"config,omitempty"`
	// Ignore lists keys (config keys, or description/tags) that are never
	// reported as drift nor corrected, even when also listed in Config.
	Ignore []string `json:"ignore,omitempty"`
	// Create says how to create the guest when it does not exist; nil
	// means a missing guest is an error, never created.
	Create *Create `json:"create,omitempty"`
	// Snapshots is the guest's snapshot schedule; nil means none.
	Snapshots *Snapshots `json:"snapshots,omitempty"`
	// Node is the PVE node of its cluster the guest should be on; ""
	// leaves its node unmanaged. See node.go for which agent migrates it.
	Node string `json:"node,omitempty"`

	// kindErrs are the config errors that only one kind has, of a parsed
	// guest whose kind is not pinned (an empty map when there are none);
	// nil for other guests. See CheckKind.
	kindErrs kindErrs
}

// EffectiveMode returns g.Mode, or Enforce when it is empty.
func (g *Guest) EffectiveMode() Mode {
	if g.Mode == "" {
		return Enforce
	}
	return g.Mode
}

// EffectiveRestart returns g.Restart, or RestartNever when it is empty.
func (g *Guest) EffectiveRestart() Restart {
	if g.Restart == "" {
		return RestartNever
	}
	return g.Restart
}

// Ignored reports whether key is listed in g.Ignore.
func (g *Guest) Ignored(key string) bool {
	return slices.Contains(g.Ignore, key)
}

// ForHost returns the desired state of host id. It never returns nil: a nil
// document or a host the document does not name gives an empty Host, which
// manages nothing. The returned Host is shared with d; do not modify it.
func (d *Document) ForHost(id string) *Host {
	if d != nil {
		if h := d.Hosts[id]; h != nil {
			return h
		}
	}
	return &Host{}
}

// IsEmpty reports whether d names no guest on any host.
func (d *Document) IsEmpty() bool {
	if d == nil {
		return true
	}
	for _, h := range d.Hosts {
		if h != nil && len(h.Guests) > 0 {
			return false
		}
	}
	return true
}

// Provider is where desired state comes from (a file, the hub, nothing).
// Implementations say whether Desired blocks; it must honour ctx. Desired
// never returns a nil document with a nil error: "no desired state" is an
// empty document, which changes nothing.
type Provider interface {
	Desired(ctx context.Context) (*Document, error)
}

// Empty is a Provider of the empty document: it changes nothing. It never
// blocks and is safe for concurrent use.
type Empty struct{}

// Desired returns a new empty document, or ctx's error if ctx is done.
func (Empty) Desired(ctx context.Context) (*Document, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &Document{}, nil
}

// FieldError is one problem in a document, at Path (dotted, with [i] for
// list items, e.g. "hosts.pve-a.guests.101.tags[1]"). Line is the 1-based
// line in the parsed text, or 0 when unknown (a Document built in Go).
// File names the file the text was read from (ParseFile), "" if unknown.
type FieldError struct {
	File string
	Path string
	Line int
	Msg  string
}

// Error renders "desired: FILE:LINE: PATH: MSG", or "desired: line LINE:
// PATH: MSG" without a file, leaving out what is unknown.
func (e *FieldError) Error() string {
	var b strings.Builder
	b.WriteString("desired: ")
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d: ", e.File, e.Line)
	case e.File != "":
		fmt.Fprintf(&b, "%s: ", e.File)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Path != "" {
		b.WriteString(e.Path)
	} else {
		b.WriteString("(document)")
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// maxErrors bounds how many FieldErrors one document reports; the rest are
// counted in a final error.
const maxErrors = 50

// errList collects FieldErrors in document order.
type errList struct {
	file    string // the file the errors are in, "" if unknown
	errs    []error
	dropped int
}

func (l *errList) add(path string, line int, format string, args ...any) {
	if len(l.errs) >= maxErrors {
		l.dropped++
		return
	}
	l.errs = append(l.errs, &FieldError{File: l.file, Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (l *errList) len() int { return len(l.errs) + l.dropped }

func (l *errList) err() error {
	if l.dropped > 0 {
		last := l.errs[len(l.errs)-1].(*FieldError)
		more := &FieldError{File: l.file, Path: last.Path, Line: last.Line, Msg: fmt.Sprintf("and %d more errors after this one; fix these first", l.dropped)}
		return errors.Join(append(l.errs[:len(l.errs):len(l.errs)], more)...)
	}
	return errors.Join(l.errs...)
}

// Validate checks d's semantics: header, host ids, vmids, enum values, config
// keys and values, tags and ignore keys. The result joins one *FieldError
// per problem (Line 0), or is nil. An empty document (no hosts) may omit the
// header; any document naming a host must carry apiVersion steward/v1 and
// kind Fleet. A nil d is valid and empty.
func (d *Document) Validate() error {
	var errs errList
	d.validate(&errs, nil, false)
	return errs.err()
}

// lines gives line numbers for paths when validating a parsed document; nil
// for a Document built in Go.
type lines map[string]int

func (d *Document) validate(errs *errList, ln lines, record bool) {
	if d == nil {
		return
	}
	at := func(p string) int { return ln[p] }
	empty := d.APIVersion == "" && d.Kind == "" && len(d.Hosts) == 0
	if !empty {
		if d.APIVersion != APIVersion {
			if d.APIVersion == "" {
				errs.add("apiVersion", at("apiVersion"), "missing; set apiVersion: %s", APIVersion)
			} else {
				errs.add("apiVersion", at("apiVersion"), "unsupported value %q; want %s", d.APIVersion, APIVersion)
			}
		}
		if d.Kind != DocumentKind {
			if d.Kind == "" {
				errs.add("kind", at("kind"), "missing; set kind: %s", DocumentKind)
			} else {
				errs.add("kind", at("kind"), "unsupported value %q; want %s", d.Kind, DocumentKind)
			}
		}
	}
	for _, hid := range sortedKeys(d.Hosts) {
		hp := "hosts." + hid
		if msg := checkHostID(hid); msg != "" {
			errs.add(hp, at(hp), "%s", msg)
		}
		h := d.Hosts[hid]
		if h == nil {
			continue
		}
		for _, vmid := range sortedKeys(h.Guests) {
			gp := hp + ".guests." + strconv.Itoa(vmid)
			if vmid < MinVMID || vmid > MaxVMID {
				errs.add(gp, at(gp), "vmid %d out of range; PVE vmids are %d..%d", vmid, MinVMID, MaxVMID)
			}
			if g := h.Guests[vmid]; g != nil {
				g.validate(errs, gp, at, record)
			}
		}
	}
	d.validateNodes(errs, at)
}

func (g *Guest) validate(errs *errList, gp string, at func(string) int, record bool) {
	if g.Kind != "" {
		if _, err := guest.ParseKind(string(g.Kind)); err != nil {
			errs.add(gp+".kind", at(gp+".kind"), "invalid value %q; want qemu or lxc", g.Kind)
		}
	}
	switch g.Mode {
	case "", Enforce, Observe:
	default:
		errs.add(gp+".mode", at(gp+".mode"), "invalid value %q; want enforce or observe", g.Mode)
	}
	switch g.State {
	case "", Running, Stopped:
	default:
		errs.add(gp+".state", at(gp+".state"), "invalid value %q; want running or stopped", g.State)
	}
	switch g.Restart {
	case "", RestartNever, RestartAllowed:
	default:
		errs.add(gp+".restart", at(gp+".restart"), "invalid value %q; want never or allowed", g.Restart)
	}
	if g.Node != "" {
		if msg := checkNodeName(g.Node); msg != "" {
			errs.add(gp+".node", at(gp+".node"), "%s", msg)
		}
	}
	if g.Description != nil && len(*g.Description) > maxDescription {
		errs.add(gp+".description", at(gp+".description"), "too long (%d bytes); PVE allows %d", len(*g.Description), maxDescription)
	}
	for i, t := range g.Tags {
		p := fmt.Sprintf("%s.tags[%d]", gp, i)
		if msg := checkTag(t); msg != "" {
			errs.add(p, at(p), "%s", msg)
		}
	}
	var checked []string // keys whose syntax is fine, for the schema check
	for _, k := range sortedKeys(g.Config) {
		p := gp + ".config." + k
		if msg := checkConfigKey(k); msg != "" {
			errs.add(p, at(p), "%s", msg)
			continue
		}
		if msg := checkConfigValue(g.Config[k]); msg != "" {
			errs.add(p, at(p), "%s", msg)
			continue
		}
		if k == "sshkeys" {
			if msg := checkSSHKeys(g.Config[k]); msg != "" {
				errs.add(p, at(p), "%s", msg)
				continue
			}
		}
		checked = append(checked, k)
	}
	g.validateSchema(errs, gp, at, checked, record)
	g.validateCreate(errs, gp, at)
	g.validateSnapshots(errs, gp, at)
	for i, k := range g.Ignore {
		p := fmt.Sprintf("%s.ignore[%d]", gp, i)
		if !validKeySyntax(k) {
			errs.add(p, at(p), "invalid key %q; PVE config keys match [a-z][a-z0-9_-]+", k)
		}
	}
}

// maxDescription is PVE's limit on description length (8 KiB in
// qemu-server and pve-container's schema: maxLength 8192).
const maxDescription = 8192

// checkHostID returns a problem with a host id, or "". Host ids are the
// names hosts enroll with: by default the PVE node name.
func checkHostID(id string) string {
	if id == "" {
		return "empty host id"
	}
	if len(id) > 253 {
		return "host id longer than 253 characters"
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if alnum || (i > 0 && (r == '-' || r == '.' || r == '_')) {
			continue
		}
		return fmt.Sprintf("invalid host id %q; use letters, digits, '-', '.' and '_', starting with a letter or digit", id)
	}
	return ""
}

// checkTag mirrors PVE's pve-tag format: [a-z0-9_][a-z0-9_\-+.]*,
// case-insensitive.
func checkTag(t string) string {
	if t == "" {
		return "empty tag"
	}
	for i, r := range t {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_'
		if !ok && i > 0 {
			ok = r == '-' || r == '+' || r == '.'
		}
		if !ok {
			return fmt.Sprintf("invalid tag %q; PVE tags match [a-z0-9_][a-z0-9_+.-]*", t)
		}
	}
	return ""
}

// validKeySyntax mirrors PVE's pve-configid format: ^[a-z][a-z0-9_-]+$ (case
// insensitive), capped at 64 characters.
func validKeySyntax(k string) bool {
	if len(k) < 2 || len(k) > 64 {
		return false
	}
	for i, r := range k {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(r >= '0' && r <= '9') && r != '_' && r != '-' {
			return false
		}
	}
	return true
}

// forbiddenKeys are keys desired state may not manage, with the reason.
var forbiddenKeys = map[string]string{
	"description":      "manage it with the guest-level description field, not config.description",
	"tags":             "manage them with the guest-level tags field, not config.tags",
	"digest":           "computed by PVE (the config checksum); it cannot be managed",
	"lock":             "set by PVE while an operation holds the guest; it cannot be managed",
	"meta":             "written by PVE at creation; it cannot be managed",
	"parent":           "computed by PVE (current snapshot); it cannot be managed",
	"snaptime":         "computed by PVE (snapshot time); it cannot be managed",
	"snapstate":        "computed by PVE (snapshot state); it cannot be managed",
	"vmstate":          "computed by PVE (saved RAM state); it cannot be managed",
	"runningmachine":   "computed by PVE for a running guest; it cannot be managed",
	"runningcpu":       "computed by PVE for a running guest; it cannot be managed",
	"pending":          "computed by PVE (pending changes); it cannot be managed",
	"lxc":              "raw lxc.* lines cannot be set through the PVE API",
	"cipassword":       "PVE stores only a hash of it and reads it back as '**********', so it can never be compared; use sshkeys, or a cicustom user snippet",
	"vmid":             "the vmid is the guest's map key, not a config key",
	"node":             "an API call parameter, not a config key",
	"delete":           "an API call parameter, not a config key; deleting keys is not supported in desired state",
	"revert":           "an API call parameter, not a config key",
	"skiplock":         "an API call parameter, not a config key",
	"force":            "an API call parameter, not a config key",
	"background_delay": "an API call parameter, not a config key",
}

func checkConfigKey(k string) string {
	if !validKeySyntax(k) {
		return fmt.Sprintf("invalid key %q; PVE config keys match [a-z][a-z0-9_-]+", k)
	}
	if why, ok := forbiddenKeys[strings.ToLower(k)]; ok {
		return "key cannot be managed: " + why
	}
	return ""
}

// maxValue bounds a config value; PVE's largest values (description,
// sshkeys) are a few KiB.
const maxValue = 65536

func checkConfigValue(v string) string {
	switch {
	case v == "":
		return "empty value; omit the key to leave it unmanaged"
	case len(v) > maxValue:
		return fmt.Sprintf("value too long (%d bytes)", len(v))
	case strings.ContainsAny(v, "\n\r\x00"):
		return "value contains a newline or NUL byte; PVE config values are single-line"
	}
	return ""
}

// checkSSHKeys checks a config sshkeys value as stored (URL-encoded, as
// Parse writes it): every line must be an SSH public key, as qemu-server's
// validate_ssh_public_keys requires.
func checkSSHKeys(v string) string {
	if !normalize.IsURLEncoded(v) {
		return "not URL-encoded as PVE stores sshkeys; in a document, write the keys as they are (a string or a list, one key each) and the parser encodes them"
	}
	lines := normalize.SSHKeyLines(normalize.DecodeSSHKeys(v))
	if len(lines) == 0 {
		return "no SSH public key; omit the key to leave it unmanaged"
	}
	for i, l := range lines {
		if msg := normalize.CheckSSHKey(l); msg != "" {
			return fmt.Sprintf("key %d: %s", i+1, msg)
		}
	}
	return ""
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
