package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
	"github.com/steward-pve/steward/internal/wire"
)

// TestSignerSeesProtection: what `steward sign` and `steward op sign`
// show for a destroy of a protected guest says so; an ordinary destroy
// does not.
func TestSignerSeesProtection(t *testing.T) {
	now := time.Now()
	mk := func(params map[string]string) signedop.Payload {
		p, err := signedop.NewPayload("pve", action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: params,
			Digest: strings.Repeat("a", 40)}, now, time.Hour, "")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	const want = "this guest is protected"
	prot := mk(map[string]string{classify.ProtectedParam: "1"})
	var b bytes.Buffer
	describePending(&b, prot, wire.Pending{}, nil, now)
	if !strings.Contains(b.String(), "PROTECTED: "+want) {
		t.Errorf("steward sign shows:\n%s\nwant it to say %q", b.String(), want)
	}
	if s := describePayload(prot); !strings.Contains(s, want) {
		t.Errorf("op sign shows %q; want it to say %q", s, want)
	}
	plain := mk(map[string]string{"purge": "1"})
	b.Reset()
	describePending(&b, plain, wire.Pending{}, nil, now)
	if strings.Contains(b.String(), want) || strings.Contains(describePayload(plain), want) {
		t.Errorf("an unprotected destroy is shown as protected:\n%s", b.String())
	}
}
