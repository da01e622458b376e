package pve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/guest"
)

// Mutations are sent exactly once: form-encoded (booleans as 0/1), never
// retried by the client. Their errors are one of:
//   - *APIError: PVE answered and refused; nothing was done (IsRetryable
//     says whether sending again may help);
//   - *TransportError: the request never reached PVE (safe to send again
//     if IsRetryable);
//   - *OutcomeUnknownError: it may have been executed; read state first;
//   - a validation error from the client before anything was sent.

// Result is the outcome of an accepted mutation: either a PVE task, whose
// fate WaitTask or TaskStatus tells, or synchronous success. The zero
// Result is synchronous success.
type Result struct {
	upid UPID
	task bool
}

// Task returns the task's UPID and true, or the zero UPID and false when
// the call completed synchronously (PVE returned data: null).
func (r Result) Task() (UPID, bool) { return r.upid, r.task }

// String renders "task UPID:…" or "done".
func (r Result) String() string {
	if r.task {
		return "task " + r.upid.String()
	}
	return "done"
}

// ResultOf returns a Result for a known task, e.g. one read back from a
// journal during crash recovery.
func ResultOf(u UPID) Result { return Result{upid: u, task: true} }

// ShutdownOptions controls a graceful shutdown.
type ShutdownOptions struct {
	// Timeout is how long PVE waits for the guest to power off; 0 means
	// PVE's default. Sent in whole seconds, rounded up.
	Timeout time.Duration
	// ForceStop makes PVE hard-stop the guest when Timeout passes.
	ForceStop bool
}

// ConfigChange is one config write.
type ConfigChange struct {
	// Set holds the keys to write, values exactly as PVE takes them.
	Set map[string]string
	// Delete lists keys to remove (sent as PVE's comma-separated list).
	Delete []string
	// Digest, when set, makes PVE refuse the write if the config changed
	// since it was read (IsDigestMismatch).
	Digest string
	// Async uses QEMU's POST …/config, which runs as a task (qmconfig)
	// and so can wait out hot-plug work; LXC has no async form.
	Async bool
}

// DestroyOptions controls a guest's destruction.
type DestroyOptions struct {
	// Purge also removes the guest from backup jobs, replication and HA.
	Purge bool
	// DestroyUnreferencedDisks also destroys disks on enabled storages
	// that carry the VMID but are not referenced in the config.
	DestroyUnreferencedDisks bool
}

// Start starts a guest (POST …/status/start). Always a task; "already
// running" surfaces as the task's exit status.
func (c *Client) Start(ctx context.Context, node string, kind guest.Kind, vmid int) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "status", "start"), nil)
}

// Shutdown asks the guest to power off (POST …/status/shutdown).
func (c *Client) Shutdown(ctx context.Context, node string, kind guest.Kind, vmid int, o ShutdownOptions) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if o.Timeout < 0 {
		return Result{}, fmt.Errorf("pve: shutdown timeout %v is negative", o.Timeout)
	}
	p := url.Values{}
	if o.Timeout > 0 {
		secs := (o.Timeout + time.Second - 1) / time.Second
		p.Set("timeout", strconv.FormatInt(int64(secs), 10))
	}
	if o.ForceStop {
		p.Set("forceStop", "1")
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "status", "shutdown"), p)
}

// Reboot restarts a running guest (POST …/status/reboot, task qmreboot or
// vzreboot): a graceful shutdown that may take up to timeout (0 means
// PVE's default; whole seconds, rounded up), then a start, which applies
// the config changes PVE kept pending. A guest that does not power off in
// time is not forced: the task fails and the guest keeps running. A
// stopped guest is refused ("… not running").
func (c *Client) Reboot(ctx context.Context, node string, kind guest.Kind, vmid int, timeout time.Duration) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if timeout < 0 {
		return Result{}, fmt.Errorf("pve: reboot timeout %v is negative", timeout)
	}
	p := url.Values{}
	if timeout > 0 {
		secs := (timeout + time.Second - 1) / time.Second
		p.Set("timeout", strconv.FormatInt(int64(secs), 10))
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "status", "reboot"), p)
}

// Stop hard-stops a guest (POST …/status/stop).
func (c *Client) Stop(ctx context.Context, node string, kind guest.Kind, vmid int) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "status", "stop"), nil)
}

// SetConfig writes config keys. QEMU: PUT (synchronous) or, with
// ch.Async, POST (a qmconfig task, or synchronous success if PVE finished
// it at once). LXC: PUT only; Async on LXC is an error. A change that sets
// nothing and deletes nothing, or sets and deletes the same key, is an
// error before anything is sent.
func (c *Client) SetConfig(ctx context.Context, node string, kind guest.Kind, vmid int, ch ConfigChange) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if ch.Async && kind != guest.QEMU {
		return Result{}, fmt.Errorf("pve: asynchronous config writes exist only for QEMU, not %s", kind)
	}
	if len(ch.Set) == 0 && len(ch.Delete) == 0 {
		return Result{}, errors.New("pve: config change sets and deletes nothing")
	}
	p := url.Values{}
	for k, v := range ch.Set {
		if err := checkParamKey(k); err != nil {
			return Result{}, err
		}
		if k == "digest" || k == "delete" || k == "vmid" {
			return Result{}, fmt.Errorf("pve: config key %q cannot be set through ConfigChange.Set", k)
		}
		p.Set(k, v)
	}
	if len(ch.Delete) > 0 {
		del := make([]string, 0, len(ch.Delete))
		seen := map[string]bool{}
		for _, k := range ch.Delete {
			if err := checkParamKey(k); err != nil {
				return Result{}, err
			}
			if _, ok := ch.Set[k]; ok {
				return Result{}, fmt.Errorf("pve: config key %q is both set and deleted", k)
			}
			if !seen[k] {
				seen[k] = true
				del = append(del, k)
			}
		}
		sort.Strings(del)
		p.Set("delete", strings.Join(del, ","))
	}
	if ch.Digest != "" {
		p.Set("digest", ch.Digest)
	}
	method := http.MethodPut
	if ch.Async {
		method = http.MethodPost
	}
	return c.mutate(ctx, method, guestPath(node, kind, vmid, "config"), p)
}

// Resize grows disk to size (PVE's syntax: "+10G" relative, "40G"
// absolute; shrinking is refused by PVE). digest is optional.
func (c *Client) Resize(ctx context.Context, node string, kind guest.Kind, vmid int, disk, size, digest string) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if err := checkParamKey(disk); err != nil {
		return Result{}, err
	}
	if size == "" {
		return Result{}, errors.New("pve: resize needs a size such as +10G")
	}
	p := url.Values{"disk": {disk}, "size": {size}}
	if digest != "" {
		p.Set("digest", digest)
	}
	return c.mutate(ctx, http.MethodPut, guestPath(node, kind, vmid, "resize"), p)
}

// Create creates a guest (POST /nodes/{node}/{kind}) with the given
// parameters; vmid is added (a conflicting params["vmid"] is an error).
// An existing VMID fails synchronously with 500 "… already exists …".
func (c *Client) Create(ctx context.Context, node string, kind guest.Kind, vmid int, params map[string]string) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	p := url.Values{}
	for k, v := range params {
		if err := checkParamKey(k); err != nil {
			return Result{}, err
		}
		p.Set(k, v)
	}
	if v, ok := params["vmid"]; ok && v != strconv.Itoa(vmid) {
		return Result{}, fmt.Errorf("pve: create parameters name vmid %q but the call is for %d", truncate(v, 20), vmid)
	}
	p.Set("vmid", strconv.Itoa(vmid))
	return c.mutate(ctx, http.MethodPost, pathOf("nodes", node, string(kind)), p)
}

// cloneParams are the parameters Clone passes on, by kind (qemu-server's
// and pve-container's clone_vm take these besides node, vmid and newid;
// target, another node, is left to migration).
var cloneParams = map[guest.Kind]map[string]bool{
	guest.QEMU: {"full": true, "storage": true, "name": true, "pool": true, "format": true,
		"description": true, "snapname": true, "bwlimit": true},
	guest.LXC: {"full": true, "storage": true, "hostname": true, "pool": true,
		"description": true, "snapname": true, "bwlimit": true},
}

// Clone clones guest source of kind into the new guest newid (POST
// /nodes/{node}/{kind}/{source}/clone, task qmclone or vzclone, whose
// UPID names the source's vmid). params are PVE's clone parameters of
// that kind (qemu: full, storage, name, pool, format, description,
// snapname, bwlimit; lxc: hostname instead of name, no format); any other
// is an error before anything is sent. A taken newid fails synchronously
// (qemu: "… config file already exists"; lxc: "CT N already exists on
// node …"), as does a container source another task has locked ("CT is
// locked (disk)": pve-container locks the source for the whole clone).
func (c *Client) Clone(ctx context.Context, node string, kind guest.Kind, source, newid int, params map[string]string) (Result, error) {
	if err := checkGuest(node, kind, source); err != nil {
		return Result{}, err
	}
	if err := checkGuest(node, kind, newid); err != nil {
		return Result{}, err
	}
	if source == newid {
		return Result{}, fmt.Errorf("pve: clone of guest %d onto itself", source)
	}
	p := url.Values{"newid": {strconv.Itoa(newid)}}
	for k, v := range params {
		if !cloneParams[kind][k] {
			return Result{}, fmt.Errorf("pve: %q is not a %s clone parameter", truncate(k, 40), kind)
		}
		p.Set(k, v)
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, source, "clone"), p)
}

// Destroy deletes a guest and its owned disks (DELETE …/{vmid}).
func (c *Client) Destroy(ctx context.Context, node string, kind guest.Kind, vmid int, o DestroyOptions) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	p := url.Values{}
	if o.Purge {
		p.Set("purge", "1")
	}
	if o.DestroyUnreferencedDisks {
		p.Set("destroy-unreferenced-disks", "1")
	}
	return c.mutate(ctx, http.MethodDelete, guestPath(node, kind, vmid), p)
}

// SnapshotCreate takes a snapshot named name (POST …/snapshot), without
// the guest's memory.
func (c *Client) SnapshotCreate(ctx context.Context, node string, kind guest.Kind, vmid int, name, description string) (Result, error) {
	return c.SnapshotTake(ctx, node, kind, vmid, SnapshotOptions{Name: name, Description: description})
}

// SnapshotOptions are the parameters of a snapshot.
type SnapshotOptions struct {
	Name        string // PVE's pve-snapshot-name: a letter, then 1-39 letters, digits, '-' or '_'
	Description string // "" sends none
	// VMState also saves a running QEMU guest's memory (vmstate=1); it
	// is refused for a container, which has no such parameter.
	VMState bool
}

// SnapshotTake takes a snapshot (POST …/snapshot) as o says.
func (c *Client) SnapshotTake(ctx context.Context, node string, kind guest.Kind, vmid int, o SnapshotOptions) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if err := checkSnapName(o.Name); err != nil {
		return Result{}, err
	}
	p := url.Values{"snapname": {o.Name}}
	if o.Description != "" {
		p.Set("description", o.Description)
	}
	if o.VMState {
		if kind != guest.QEMU {
			return Result{}, fmt.Errorf("pve: vmstate is a qemu snapshot parameter; a %s guest has none", kind)
		}
		p.Set("vmstate", "1")
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "snapshot"), p)
}

// SnapshotRollback rolls the guest back to snapshot name, discarding
// everything since (POST …/snapshot/{name}/rollback).
func (c *Client) SnapshotRollback(ctx context.Context, node string, kind guest.Kind, vmid int, name string) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if err := checkSnapName(name); err != nil {
		return Result{}, err
	}
	return c.mutate(ctx, http.MethodPost, guestPath(node, kind, vmid, "snapshot", name, "rollback"), nil)
}

// SnapshotDelete deletes snapshot name (DELETE …/snapshot/{name}).
func (c *Client) SnapshotDelete(ctx context.Context, node string, kind guest.Kind, vmid int, name string) (Result, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return Result{}, err
	}
	if err := checkSnapName(name); err != nil {
		return Result{}, err
	}
	return c.mutate(ctx, http.MethodDelete, guestPath(node, kind, vmid, "snapshot", name), nil)
}

// checkParamKey rejects keys that cannot be PVE parameter names.
func checkParamKey(k string) error {
	if k == "" {
		return errors.New("pve: empty parameter name")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("pve: bad parameter name %q", truncate(k, 40))
		}
	}
	return nil
}

// snapRE is PVE's pve-snapshot-name format.
var snapRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_\-]{1,39}$`)

func checkSnapName(name string) error {
	if !snapRE.MatchString(name) || name == "current" {
		return fmt.Errorf("pve: bad snapshot name %q (a letter, then 1-39 letters, digits, '-' or '_'; not \"current\")", truncate(name, 64))
	}
	return nil
}

// mutate sends one mutation and interprets data: null as synchronous
// success and a string as a task UPID.
func (c *Client) mutate(ctx context.Context, method, path string, p url.Values) (Result, error) {
	data, err := c.call(ctx, method, path, p, true)
	if err != nil {
		return Result{}, err
	}
	if isNull(data) {
		return Result{}, nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return Result{}, &OutcomeUnknownError{Method: method, Path: path,
			Err: fmt.Errorf("PVE accepted the request but returned %s instead of a task id or null", truncate(string(data), 80))}
	}
	u, err := ParseUPID(s)
	if err != nil {
		return Result{}, &OutcomeUnknownError{Method: method, Path: path,
			Err: fmt.Errorf("PVE accepted the request but its task id does not parse: %w", err)}
	}
	return Result{upid: u, task: true}, nil
}
