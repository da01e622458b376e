package desired

import (
	"strings"
	"testing"
)

func TestCheckHost(t *testing.T) {
	for _, tc := range []struct {
		name, doc, host string
		warn, err       string // substrings; "" means none
	}{
		{name: "host with guests", doc: "hosts:\n  pve-a:\n    guests:\n      101: {}\n", host: "pve-a"},
		{name: "other hosts only", doc: "hosts:\n  pve-b:\n    guests:\n      101: {}\n  pve-a2: {}\n", host: "pve-a",
			err: `no host "pve-a"; it names hosts "pve-a2", "pve-b"`},
		{name: "host without guests", doc: "hosts:\n  pve-a: {}\n", host: "pve-a", warn: `no guests of host "pve-a"`},
		{name: "host with empty guests", doc: "hosts:\n  pve-a:\n    guests: {}\n", host: "pve-a", warn: `no guests of host "pve-a"`},
		{name: "empty document", doc: "", host: "pve-a", warn: "names no hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc
			if doc != "" {
				doc = "apiVersion: steward/v1\nkind: Fleet\n" + doc
			}
			d, err := Parse([]byte(doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			warn, err := d.CheckHost(tc.host)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v; want one containing %q", err, tc.err)
			}
			if tc.warn == "" && warn != "" || tc.warn != "" && !strings.Contains(warn, tc.warn) {
				t.Errorf("warning = %q; want one containing %q", warn, tc.warn)
			}
		})
	}
}
