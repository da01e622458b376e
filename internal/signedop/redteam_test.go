package signedop_test

import (
	"bytes"
	"testing"

	"github.com/steward-pve/steward/internal/signedop"
)

// TestRedteamNonCanonicalPayloads: the bytes an operator signs are the only
// encoding of a payload the agent accepts, so a signature over one payload
// can never be read as different params, op or guest. Every re-encoding of
// the golden payload (duplicate keys where JSON decoders pick the last,
// escapes, whitespace, number forms, case, trailing data) is refused.
func TestRedteamNonCanonicalPayloads(t *testing.T) {
	good := goldenPayload().Canonical()
	if _, err := signedop.ParsePayload(good); err != nil {
		t.Fatalf("ParsePayload(golden): %v", err)
	}
	rep := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("golden payload lacks %q", old)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	cases := map[string][]byte{
		"duplicate vmid (last wins in encoding/json)": rep(`"vmid":101}`, `"vmid":101,"vmid":102}`),
		"duplicate params object":                     rep(`"params":{`, `"params":{"delete":"scsi0"},"params":{`),
		"duplicate param key":                         rep(`"delete":"unused0,mp0"`, `"delete":"unused0,mp0","delete":"scsi0"`),
		"escaped key":                                 rep(`"scsi0"`, `"scsi\u0030"`),
		"escaped value":                               rep(`"unused0,mp0"`, `"unused0\u002cmp0"`),
		"escaped slash":                               rep(`slash /`, `slash \/`),
		"space after colon":                           rep(`"op":`, `"op": `),
		"CRLF ending":                                 append(bytes.TrimSuffix(append([]byte{}, good...), []byte("\n")), '\r', '\n'),
		"no final newline":                            bytes.TrimSuffix(good, []byte("\n")),
		"two newlines":                                append(append([]byte{}, good...), '\n'),
		"BOM":                                         append([]byte("\xef\xbb\xbf"), good...),
		"vmid leading zero":                           rep(`"vmid":101}`, `"vmid":0101}`),
		"vmid exponent":                               rep(`"vmid":101}`, `"vmid":1.01e2}`),
		"vmid string":                                 rep(`"vmid":101}`, `"vmid":"101"}`),
		"version 1.0":                                 rep(`"v":1,`, `"v":1.0,`),
		"upper-case field":                            rep(`"kind"`, `"Kind"`),
		"null params":                                 rep(`"params":{`, `"params":null,"x":{`),
		"trailing document":                           append(append([]byte{}, good...), []byte(`{"op":"destroy"}`)...),
		"digest field dropped":                        rep(`{"digest":"3f6b1c0f8e2a4d5c9b7a6e5d4c3b2a1908f7e6d5","expires"`, `{"expires"`),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if bytes.Equal(b, good) {
				t.Fatal("edit did not change the payload")
			}
			if p, err := signedop.ParsePayload(b); err == nil {
				t.Fatalf("ParsePayload accepted a re-encoded payload: op %s vmid %d params %v", p.Op, p.VMID, p.Params)
			}
		})
	}
}
