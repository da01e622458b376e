package desired

import (
	"fmt"
	"slices"
	"strings"
)

// CheckHost says whether d gives the host with id host anything to manage,
// for an agent to check its document at start. It returns an error when d
// names hosts but not host: the agent's host id (or the file) is most
// likely wrong, and the error lists the host ids d does name. It returns a
// non-empty warning when d names no host at all, or names host with no
// guests: the agent then changes nothing, which is valid (an empty
// document never means "remove everything") but rarely what was meant.
func (d *Document) CheckHost(host string) (warning string, err error) {
	if d == nil || len(d.Hosts) == 0 {
		return "the desired document names no hosts: nothing on this host is managed", nil
	}
	h, ok := d.Hosts[host]
	if !ok {
		ids := make([]string, 0, len(d.Hosts))
		for id := range d.Hosts {
			ids = append(ids, fmt.Sprintf("%q", id))
		}
		slices.Sort(ids)
		return "", fmt.Errorf("desired: the document has no host %q; it names hosts %s (set --host to this host's id in the document, or add the host)",
			host, strings.Join(ids, ", "))
	}
	if h == nil || len(h.Guests) == 0 {
		return fmt.Sprintf("the desired document names no guests of host %q: nothing on this host is managed", host), nil
	}
	return "", nil
}
