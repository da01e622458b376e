// Package guest holds the leaf types that describe a Proxmox VE guest as
// steward sees it. It does no I/O and imports nothing but the standard
// library's pure packages, so planning and classification can depend on it.
package guest

import "fmt"

// Kind is the guest type, spelled as PVE spells it in API paths.
type Kind string

const (
	QEMU Kind = "qemu"
	LXC  Kind = "lxc"
)

// ParseKind accepts "qemu" or "lxc".
func ParseKind(s string) (Kind, error) {
	switch Kind(s) {
	case QEMU, LXC:
		return Kind(s), nil
	}
	return "", fmt.Errorf("guest: unknown kind %q (want qemu or lxc)", s)
}

// Config is a guest's complete raw configuration as PVE returns it: every
// key kept, every value as its decimal or verbatim string form (numbers are
// formatted, property strings are untouched). Nothing is dropped, so the
// safety classifier sees disks, mount points, unusedN and unknown keys.
type Config map[string]string

// Clone returns a copy of c; a nil c gives nil.
func (c Config) Clone() Config {
	if c == nil {
		return nil
	}
	out := make(Config, len(c))
	for k, v := range c {
		out[k] = v
	}
	return out
}

// Observed is one guest as read from the PVE API on this host.
type Observed struct {
	VMID     int
	Kind     Kind
	Name     string
	Status   string // PVE's status: "running", "stopped", ...
	Lock     string // PVE's lock field; empty when unlocked
	Template bool

	// Config and Digest are set when the config was read. ConfigErr is
	// non-empty when it could not be read; a planner must then not write
	// any config key for this guest.
	Config    Config
	Digest    string
	ConfigErr string
	// Pending lists the config keys whose written value (or delete) PVE
	// keeps pending until the guest restarts, sorted; Config already
	// shows them as written. Empty when everything written is live.
	Pending []string
	// Current is the config the guest runs with (GET …/config?current=1):
	// it differs from Config in the Pending keys. A resize rewrites the
	// size= here and leaves a pending value of the same disk as it was, so
	// the size of a pending disk is read from Current. Nil when not read.
	Current Config
}
