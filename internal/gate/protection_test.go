package gate

import (
	"testing"

	"github.com/steward-pve/steward/internal/action"
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
)

// TestPendingDestroyOfProtectedGuestSaysSo: the payload offered for a
// held destroy of a protected guest carries protected=1, so the signer
// sees it and the signed job passes the gate's protection check.
func TestPendingDestroyOfProtectedGuestSaysSo(t *testing.T) {
	g := &Gate{Host: "pve"}
	a := action.Action{Op: action.Destroy, VMID: 105, Kind: guest.QEMU, Params: map[string]string{"purge": "1"}, Digest: "0123456789012345678901234567890123456789"}
	d := g.Decide(a, guest.Config{"protection": "1"}, classify.Provenance{})
	if d.Outcome != PendingSignature || d.Offer.Params[classify.ProtectedParam] != "1" || d.Offer.Params["purge"] != "1" {
		t.Fatalf("decision %s, offer params %v; want pending with protected=1 and purge=1", d.Outcome, d.Offer.Params)
	}
	if a.Params[classify.ProtectedParam] != "" {
		t.Errorf("Decide changed the caller's params: %v", a.Params)
	}
	if why := classify.ProtectionMismatch(d.Offer.Action(), guest.Config{"protection": "1"}); why != "" {
		t.Errorf("the offered payload fails the protection check: %s", why)
	}
	d = g.Decide(a, guest.Config{}, classify.Provenance{})
	if _, has := d.Offer.Params[classify.ProtectedParam]; has {
		t.Errorf("unprotected guest: offer params %v carry %s", d.Offer.Params, classify.ProtectedParam)
	}
}
