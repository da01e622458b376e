// Package preflight is `steward agent check`: it checks, before the agent
// runs or when it misbehaves, that the agent can do its work with the
// settings it was given, and says what to change when it cannot:
//
//   - PVE answers at the URL (reachable), its certificate verifies the way
//     the agent is told to trust it (TLS), the API token authenticates,
//     and the node exists;
//   - the token holds every privilege steward uses (PVE's own
//     GET /access/permissions, asked per ACL path, so inheritance and
//     resource pools count as PVE counts them), naming each missing
//     privilege, the path it is missing on and what steward needs it for;
//   - with a hub configured: the hub answers, its certificate matches the
//     pinned fingerprint (or verifies against the CA), and it accepts the
//     host's token.
//
// Run returns one Result per check. Checks that depend on an earlier one
// (privileges need an authenticated token) are not run after it failed:
// the failing line already says what to fix first.
package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/desired"
	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/hubclient"
	"github.com/steward-pve/steward/internal/pve"
	"github.com/steward-pve/steward/internal/pveschema"
)

// PVE is what the checks read from PVE (pve.Client). Methods block until
// PVE answers or ctx ends.
type PVE interface {
	Version(ctx context.Context) (pve.Version, error)
	Nodes(ctx context.Context) ([]pve.Node, error)
	Permissions(ctx context.Context, path string) (pve.Privileges, error)
}

// Config is what Run checks. PVE and Node are required.
type Config struct {
	PVE    PVE
	PVEURL string // for messages; the --pve-url the agent uses
	// TokenID is the API token's USER@REALM!TOKENID (never the secret),
	// named in the pveum command a failed privilege check suggests.
	TokenID string
	Node    string
	// Desired is this host's desired state, when known: privileges are
	// then checked on each managed guest's /vms/<vmid> (plus the
	// privileges its config keys need) and on each storage its disks
	// name. nil checks /vms and /storage, which cover every guest and
	// storage.
	Desired *desired.Host

	// Hub is the hub client carrying the host's token; nil when the agent
	// has no hub (file-only operation), and the hub checks are skipped.
	// Every replica URL it holds is checked on its own.
	// HubHost is the host id the hub enrolled this agent as.
	Hub     *hubclient.Client
	HubHost string
	// HubPinned says whether the hub client pins a certificate
	// fingerprint (for the message of a passing TLS check).
	HubPinned bool
	// HubEnrollPending says the agent is not enrolled yet but has a join
	// token: Hub carries no token, and instead of authenticating (which
	// would spend the one-time join token) the check says the agent will
	// enroll when it starts.
	HubEnrollPending bool
}

// Result is one check's outcome.
type Result struct {
	Check  string // what was checked, e.g. "pve tls" or "pve privileges /vms/101"
	OK     bool
	Detail string // what was found; for a failure, what went wrong
	Fix    string // for a failure: what to do
}

// String is the result as one line: "PASS check: detail" or
// "FAIL check: detail; fix".
func (r Result) String() string {
	if r.OK {
		return "PASS " + r.Check + ": " + r.Detail
	}
	s := "FAIL " + r.Check + ": " + r.Detail
	if r.Fix != "" {
		s += "; " + r.Fix
	}
	return s
}

// Passed reports whether every result passed.
func Passed(rs []Result) bool {
	for _, r := range rs {
		if !r.OK {
			return false
		}
	}
	return len(rs) > 0
}

// Run runs every check and returns their results in order.
func Run(ctx context.Context, cfg Config) []Result {
	rs := checkPVE(ctx, cfg)
	if cfg.Hub != nil {
		rs = append(rs, checkHub(ctx, cfg)...)
	}
	return rs
}

// Need is one privilege steward needs on an ACL path, and what for.
type Need struct {
	Priv string
	For  string
}

// GuestNeeds are the privileges steward needs on every guest it manages
// (/vms/<vmid>, or /vms for all): what the engine reads and what the
// executor calls, by PVE's API schema (each call's permission check, and
// for config writes the per-key check of check_vm_modify_config_perm).
// A signed job may run any of them at any time, so all are needed even
// when desired state asks for none of these changes today.
var GuestNeeds = []Need{
	{"VM.Audit", "read guests' config, pending changes and snapshots"},
	{"VM.PowerMgmt", "start, shut down, stop and reboot guests"},
	{"VM.Config.CPU", "set cores, sockets and CPU limits"},
	{"VM.Config.Memory", "set memory and balloon"},
	{"VM.Config.Network", "set network devices"},
	{"VM.Config.Options", "set name, description, tags, onboot and startup"},
	{"VM.Config.Disk", "grow disks, and signed disk changes"},
	{"VM.Snapshot", "take, delete and roll back snapshots"},
	{"VM.Allocate", "create guests, and destroy them when signed"},
	{"VM.Migrate", "migrate guests to the node desired state names"},
}

// StorageNeeds are the privileges steward needs on every storage its
// guests' disks live on (/storage/<id>, or /storage for all).
var StorageNeeds = []Need{
	{"Datastore.AllocateSpace", "allocate disks when creating guests and growing disks"},
}

// checkPVE checks reachability, TLS, the token, the node and privileges,
// stopping at the first failure the later checks depend on.
func checkPVE(ctx context.Context, cfg Config) []Result {
	where := cfg.PVEURL
	if where == "" {
		where = "PVE"
	}
	v, err := cfg.PVE.Version(ctx)
	if err != nil {
		return pveConnFailure(where, err)
	}
	rs := []Result{
		{Check: "pve reachable", OK: true, Detail: where + " answers"},
		{Check: "pve tls", OK: true, Detail: "certificate verified"},
		{Check: "pve token", OK: true, Detail: "authenticated; PVE " + v.Version},
	}
	nodes, err := cfg.PVE.Nodes(ctx)
	if err != nil {
		return append(rs, Result{Check: "pve node", Detail: "listing nodes: " + err.Error(), Fix: "see PVE's message above"})
	}
	var names []string
	for _, n := range nodes {
		names = append(names, n.Node)
	}
	if !slices.Contains(names, cfg.Node) {
		return append(rs, Result{Check: "pve node", Detail: fmt.Sprintf("node %q is not in this cluster (nodes: %s)", cfg.Node, strings.Join(names, ", ")),
			Fix: "set --node to the PVE node name (`hostname` on the PVE host)"})
	}
	rs = append(rs, Result{Check: "pve node", OK: true, Detail: fmt.Sprintf("node %q found", cfg.Node)})
	for _, pc := range pathChecks(cfg.Desired) {
		rs = append(rs, checkPrivileges(ctx, cfg.PVE, pc, cfg.TokenID))
	}
	return rs
}

// pveConnFailure turns the first request's failure into the line of the
// stage that failed: the connection, TLS or the token.
func pveConnFailure(where string, err error) []Result {
	var ae *pve.APIError
	var te *pve.TransportError
	switch {
	case errors.As(err, &ae) && ae.StatusCode == http.StatusUnauthorized:
		return []Result{
			{Check: "pve reachable", OK: true, Detail: where + " answers"},
			{Check: "pve tls", OK: true, Detail: "certificate verified"},
			{Check: "pve token", Detail: "PVE refused the API token (" + ae.Message + ")",
				Fix: "check that --pve-token-file (or $STEWARD_PVE_TOKEN) holds USER@REALM!TOKENID=SECRET of a token that exists and has not expired (pveum user token list USER)"},
		}
	case errors.As(err, &ae):
		return []Result{
			{Check: "pve reachable", OK: true, Detail: where + " answers"},
			{Check: "pve tls", OK: true, Detail: "certificate verified"},
			{Check: "pve token", Detail: err.Error(), Fix: "is --pve-url the PVE API (https://HOST:8006)?"},
		}
	case errors.As(err, &te) && isDialError(te.Err):
		return []Result{{Check: "pve reachable", Detail: err.Error(),
			Fix: "check --pve-url (https://HOST:8006) and that pveproxy runs (systemctl status pveproxy)"}}
	case errors.As(err, &te) && isTLSError(te.Err):
		return []Result{
			{Check: "pve reachable", OK: true, Detail: where + " accepts connections"},
			{Check: "pve tls", Detail: err.Error(), Fix: tlsFix(err)},
		}
	}
	return []Result{{Check: "pve reachable", Detail: err.Error(), Fix: "check --pve-url (https://HOST:8006) and the network path to PVE"}}
}

// tlsFix is the fix for a TLS failure whose error does not already name
// one (the client's certificate hints and the fingerprint mismatch do).
func tlsFix(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "--pve-") {
		return "" // the client's error already names the setting that fixes it
	}
	return "pin PVE's certificate with --pve-fingerprint (the node's ssl_fingerprint, from pvenode cert info) or trust its CA with --pve-ca-file /etc/pve/pve-root-ca.pem"
}

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns)
}

func isTLSError(err error) bool {
	var fm *pve.FingerprintMismatchError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var hn x509.HostnameError
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var ae *tls.AlertError
	return errors.As(err, &fm) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &hn) ||
		errors.As(err, &cv) || errors.As(err, &rh) || errors.As(err, &ae) ||
		strings.Contains(err.Error(), "tls: ") || strings.Contains(err.Error(), "HTTP response to HTTPS client")
}

// pathCheck is the privileges needed on one ACL path.
type pathCheck struct {
	path  string
	needs []Need
}

// Needs on paths other than a managed guest's, met only where desired
// state asks for them (a clone, a container template, a cicustom
// snippet). By PVE's API schema and handlers: a clone needs VM.Clone on
// the source; reading a template volume needs Datastore.Audit (or
// AllocateSpace) on its storage (pve-storage check_volume_access); the
// agent checks that a cicustom snippet exists by reading the volume,
// which needs Datastore.Allocate on a snippets storage.
var (
	cloneNeed      = Need{"VM.Clone", "clone it into the guests desired state creates from it"}
	templateNeed   = Need{"Datastore.Audit", "read the ISO and container templates creation uses"}
	snippetNeed    = Need{"Datastore.Allocate", "check that cicustom snippets exist before writing them"}
	cloneAuditNeed = Need{"VM.Audit", "read the clone source's config"}
)

// pathChecks lists the ACL paths to check: each managed guest (with the
// privileges its config keys need), each clone source, and each storage
// its disks, creation and snippets name (with what each needs there), or
// /vms and /storage when desired state names none.
func pathChecks(h *desired.Host) []pathCheck {
	var out []pathCheck
	storages := map[string][]Need{}
	addStorage := func(id string, needs ...Need) {
		for _, n := range needs {
			if id != "" && !slices.ContainsFunc(storages[id], func(m Need) bool { return m.Priv == n.Priv }) {
				storages[id] = append(storages[id], n)
			}
		}
	}
	sources := map[int]bool{}
	if h != nil {
		vmids := make([]int, 0, len(h.Guests))
		for vmid := range h.Guests {
			vmids = append(vmids, vmid)
		}
		slices.Sort(vmids)
		for _, vmid := range vmids {
			g := h.Guests[vmid]
			needs := slices.Clone(GuestNeeds)
			kind := string(g.Kind)
			if kind == "" {
				kind = string(guest.QEMU)
			}
			keys := make([]string, 0, len(g.Config))
			for k := range g.Config {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				priv := pveschema.ConfigPrivilege(kind, k)
				if !slices.ContainsFunc(needs, func(n Need) bool { return n.Priv == priv }) {
					needs = append(needs, Need{priv, "set " + k})
				}
				switch {
				case k == "cicustom":
					for _, v := range strings.Split(g.Config[k], ",") {
						if _, vol, ok := strings.Cut(v, "="); ok {
							addStorage(diskStorage(vol), snippetNeed)
						}
					}
				case priv == "VM.Config.Disk":
					addStorage(diskStorage(g.Config[k]), StorageNeeds...)
				}
			}
			if c := g.Create; c != nil {
				if c.IsClone() {
					sources[c.Clone] = true
				}
				addStorage(c.Storage, StorageNeeds...)
				for k, v := range c.Disks {
					if k == "cdrom" || strings.Contains(v, ":iso/") {
						addStorage(diskStorage(v), templateNeed)
					} else {
						addStorage(diskStorage(v), StorageNeeds...)
					}
				}
				if c.OSTemplate != "" {
					addStorage(diskStorage(c.OSTemplate), templateNeed)
				}
			}
			out = append(out, pathCheck{"/vms/" + strconv.Itoa(vmid), needs})
		}
	}
	srcs := slices.Sorted(maps.Keys(sources))
	for _, src := range srcs {
		needs := []Need{cloneNeed, cloneAuditNeed}
		if i := slices.IndexFunc(out, func(pc pathCheck) bool { return pc.path == "/vms/"+strconv.Itoa(src) }); i >= 0 {
			out[i].needs = append(out[i].needs, cloneNeed) // a managed guest is also a clone source
			continue
		}
		out = append(out, pathCheck{"/vms/" + strconv.Itoa(src), needs})
	}
	if len(out) == 0 {
		out = append(out, pathCheck{"/vms", GuestNeeds})
	}
	if len(storages) == 0 {
		return append(out, pathCheck{"/storage", StorageNeeds})
	}
	for _, id := range slices.Sorted(maps.Keys(storages)) {
		out = append(out, pathCheck{"/storage/" + id, storages[id]})
	}
	return out
}

// diskStorage is the storage a disk value names ("local-lvm:32",
// "local-lvm:vm-101-disk-0,size=32G" → "local-lvm"); "" for none, a CD
// drive or a host path.
func diskStorage(v string) string {
	first, _, _ := strings.Cut(v, ",")
	id, _, ok := strings.Cut(first, ":")
	if !ok || id == "" || strings.HasPrefix(id, "/") {
		return ""
	}
	return id
}

// checkPrivileges asks PVE for the token's privileges on pc.path and
// names every missing one.
func checkPrivileges(ctx context.Context, p PVE, pc pathCheck, tokenID string) Result {
	if tokenID == "" {
		tokenID = "USER@REALM!TOKENID"
	}
	name := "pve privileges " + pc.path
	got, err := p.Permissions(ctx, pc.path)
	if err != nil {
		return Result{Check: name, Detail: "GET /access/permissions: " + err.Error(), Fix: "see PVE's message above"}
	}
	var missing []string
	var have []string
	for _, n := range pc.needs {
		if got.Has(pc.path, n.Priv) {
			have = append(have, n.Priv)
		} else {
			missing = append(missing, n.Priv+" (to "+n.For+")")
		}
	}
	if len(missing) == 0 {
		return Result{Check: name, OK: true, Detail: strings.Join(have, ", ")}
	}
	privs := make([]string, 0, len(missing))
	for _, n := range pc.needs {
		if !got.Has(pc.path, n.Priv) {
			privs = append(privs, n.Priv)
		}
	}
	return Result{Check: name, Detail: "missing " + strings.Join(missing, ", "),
		Fix: fmt.Sprintf("grant them on %s or a parent path: pveum role add ROLE --privs %s; pveum acl modify %s --tokens '%s' --roles ROLE (a privilege-separated token needs them on its user too)",
			pc.path, strings.Join(privs, ","), pc.path, tokenID)}
}
