package gate

import (
	"github.com/steward-pve/steward/internal/classify"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/signedop"
)

// DecideSigned gives the tests decideParsed on an unparsed job, with the
// guest's config and digest given directly (no host, kind or journal
// checks: those are DecideJob's). The agent calls DecideJob only.
func (g *Gate) DecideSigned(job signedop.Job, actual guest.Config, currentDigest string, prov classify.Provenance) Decision {
	d := g.decideParsed(signedop.ParseJob(job), actual, currentDigest, prov)
	g.log(d)
	return d
}
