package pve

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/steward-pve/steward/internal/guest"
)

// All reads are single GET requests bounded by ctx and Options.Timeout.
// They are safe to retry; IsRetryable says when a retry may help. A guest
// that does not exist gives an *APIError for which IsNotFound is true.

// nodeRE is PVE's node name grammar (pve-node format).
var nodeRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)

func checkNode(node string) error {
	if !nodeRE.MatchString(node) {
		return fmt.Errorf("pve: bad node name %q (letters, digits and inner '-')", truncate(node, 64))
	}
	return nil
}

func checkGuest(node string, kind guest.Kind, vmid int) error {
	if err := checkNode(node); err != nil {
		return err
	}
	if _, err := guest.ParseKind(string(kind)); err != nil {
		return fmt.Errorf("pve: %w", err)
	}
	if vmid < 100 || vmid > 999999999 {
		return fmt.Errorf("pve: bad VMID %d (PVE allows 100 to 999999999)", vmid)
	}
	return nil
}

func guestPath(node string, kind guest.Kind, vmid int, rest ...string) string {
	return pathOf(append([]string{"nodes", node, string(kind), strconv.Itoa(vmid)}, rest...)...)
}

// Version returns GET /version.
func (c *Client) Version(ctx context.Context) (Version, error) {
	w, err := get[wireVersion](ctx, c, "/version", nil)
	if err != nil {
		return Version{}, err
	}
	return Version{Version: string(w.Version), Release: string(w.Release), RepoID: string(w.RepoID), Console: string(w.Console)}, nil
}

// Nodes returns GET /nodes: the cluster's nodes (one for a standalone host).
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	return getList(ctx, c, "/nodes", nil, wireNode.node)
}

// ClusterStatus returns GET /cluster/status.
func (c *Client) ClusterStatus(ctx context.Context) ([]ClusterStatusItem, error) {
	return getList(ctx, c, "/cluster/status", nil, wireClusterStatus.item)
}

// LocalNode returns the name of the node that serves the API, from the
// "local" row of GET /cluster/status.
func (c *Client) LocalNode(ctx context.Context) (string, error) {
	items, err := c.ClusterStatus(ctx)
	if err != nil {
		return "", err
	}
	for _, it := range items {
		if it.Type == "node" && it.Local {
			return it.Name, nil
		}
	}
	return "", errors.New("pve: GET /cluster/status has no local node row; pass the node name explicitly")
}

// NodeStatus returns GET /nodes/{node}/status.
func (c *Client) NodeStatus(ctx context.Context, node string) (NodeStatus, error) {
	if err := checkNode(node); err != nil {
		return NodeStatus{}, err
	}
	w, err := get[wireNodeStatus](ctx, c, pathOf("nodes", node, "status"), nil)
	if err != nil {
		return NodeStatus{}, err
	}
	return w.status(), nil
}

// ClusterResources returns GET /cluster/resources, filtered by typ ("vm",
// "storage", "node", "sdn") unless typ is "". PVE lists only what the
// token may audit; a token without privileges gets an empty list, not 403.
func (c *Client) ClusterResources(ctx context.Context, typ string) ([]Resource, error) {
	var q url.Values
	if typ != "" {
		q = url.Values{"type": {typ}}
	}
	return getList(ctx, c, "/cluster/resources", q, wireResource.resource)
}

// Guests returns GET /nodes/{node}/qemu or /lxc. Like every PVE list it
// is filtered by the token's privileges.
func (c *Client) Guests(ctx context.Context, node string, kind guest.Kind) ([]GuestSummary, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	if _, err := guest.ParseKind(string(kind)); err != nil {
		return nil, fmt.Errorf("pve: %w", err)
	}
	return getList(ctx, c, pathOf("nodes", node, string(kind)), nil, func(w wireGuestSummary) GuestSummary { return w.summary(kind) })
}

// GuestConfig returns GET …/{vmid}/config: the config with pending values
// applied, every key kept (see GuestConfig and DecodeConfig).
func (c *Client) GuestConfig(ctx context.Context, node string, kind guest.Kind, vmid int) (GuestConfig, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return GuestConfig{}, err
	}
	path := guestPath(node, kind, vmid, "config")
	data, err := c.getRaw(ctx, path, nil)
	if err != nil {
		return GuestConfig{}, err
	}
	gc, err := DecodeConfig(data)
	if err != nil {
		return GuestConfig{}, fmt.Errorf("pve: GET %s: %w", path, err)
	}
	return gc, nil
}

// GuestStatus returns GET …/{vmid}/status/current.
func (c *Client) GuestStatus(ctx context.Context, node string, kind guest.Kind, vmid int) (GuestStatus, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return GuestStatus{}, err
	}
	w, err := get[wireGuestStatus](ctx, c, guestPath(node, kind, vmid, "status", "current"), nil)
	if err != nil {
		return GuestStatus{}, err
	}
	return w.status(), nil
}

// Pending returns GET …/{vmid}/pending.
func (c *Client) Pending(ctx context.Context, node string, kind guest.Kind, vmid int) ([]PendingItem, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return nil, err
	}
	return getList(ctx, c, guestPath(node, kind, vmid, "pending"), nil, wirePending.item)
}

// PendingConfig is a guest's config as one GET …/{vmid}/pending shows it:
// Config is what GET …/config answers (pending values applied, keys with a
// pending delete removed, the digest set), Current the values the running
// guest uses (GET …/config?current=1, no digest), and Pending the keys
// whose written value or delete waits for a restart (sorted; empty when
// everything written is live). Keys PVE keeps as lists (LXC's raw `lxc`
// entries) are not in the pending listing and so not here.
type PendingConfig struct {
	Config  GuestConfig
	Current guest.Config
	Pending []string
}

// ConfigWithPending reads GET …/{vmid}/pending once and returns both views
// of the config and what is pending, so one request tells what a write
// changed and whether it is live yet. A listing without a digest row is an
// error (PVE always lists the loaded config's digest).
func (c *Client) ConfigWithPending(ctx context.Context, node string, kind guest.Kind, vmid int) (PendingConfig, error) {
	items, err := c.Pending(ctx, node, kind, vmid)
	if err != nil {
		return PendingConfig{}, err
	}
	pc, err := PendingConfigOf(items)
	if err != nil {
		return PendingConfig{}, fmt.Errorf("pve: GET %s: %w", guestPath(node, kind, vmid, "pending"), err)
	}
	return pc, nil
}

// PendingConfigOf builds a PendingConfig from the rows of GET …/pending.
func PendingConfigOf(items []PendingItem) (PendingConfig, error) {
	pc := PendingConfig{Config: GuestConfig{Values: make(guest.Config, len(items))}, Current: make(guest.Config, len(items))}
	for _, it := range items {
		if it.Key == "digest" {
			pc.Config.Digest = it.Value
			continue
		}
		if it.Key == "" {
			return PendingConfig{}, errors.New("pending row without a key")
		}
		if it.HasValue {
			pc.Current[it.Key] = it.Value
		}
		switch {
		case it.Delete > 0:
		case it.HasPending:
			pc.Config.Values[it.Key] = it.Pending
		case it.HasValue:
			pc.Config.Values[it.Key] = it.Value
		}
		if it.Delete > 0 || it.HasPending {
			pc.Pending = append(pc.Pending, it.Key)
		}
	}
	if pc.Config.Digest == "" {
		return PendingConfig{}, errors.New("pending listing has no digest row")
	}
	slices.Sort(pc.Pending)
	return pc, nil
}

// TaskStatus reads GET /nodes/{node}/tasks/{upid}/status once; node ""
// means the node in the UPID, which is where PVE keeps the task. The
// returned UPID is upid; RawUPID is what PVE echoed. An unknown task is an
// *APIError (400 {"upid":"no such task"}) for which IsNotFound is true.
func (c *Client) TaskStatus(ctx context.Context, node string, upid UPID) (TaskStatus, error) {
	if node == "" {
		node = upid.Node
	}
	if err := checkNode(node); err != nil {
		return TaskStatus{}, err
	}
	if upid.IsZero() {
		return TaskStatus{}, errors.New("pve: TaskStatus of a zero UPID")
	}
	w, err := get[wireTaskStatus](ctx, c, pathOf("nodes", node, "tasks", upid.String(), "status"), nil)
	if err != nil {
		return TaskStatus{}, err
	}
	s := w.status()
	s.UPID = upid
	return s, nil
}

// TaskLog returns lines of a task log (node "" means upid.Node): start is
// the 0-based first line,
// limit the maximum count (0 = PVE's default of 50). An empty log is
// PVE's single line {n:1, t:"no content"}.
func (c *Client) TaskLog(ctx context.Context, node string, upid UPID, start, limit int) ([]LogLine, error) {
	if node == "" {
		node = upid.Node
	}
	if err := checkNode(node); err != nil {
		return nil, err
	}
	if start < 0 || limit < 0 {
		return nil, fmt.Errorf("pve: TaskLog start %d and limit %d must not be negative", start, limit)
	}
	q := url.Values{}
	if start > 0 {
		q.Set("start", strconv.Itoa(start))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	return getList(ctx, c, pathOf("nodes", node, "tasks", upid.String(), "log"), q, func(w wireLogLine) LogLine {
		return LogLine{N: int(w.N), T: string(w.T)}
	})
}

// Tasks returns GET /nodes/{node}/tasks filtered by q.
func (c *Client) Tasks(ctx context.Context, node string, q TaskQuery) ([]TaskSummary, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	v := url.Values{}
	setInt := func(k string, n int) {
		if n != 0 {
			v.Set(k, strconv.Itoa(n))
		}
	}
	setInt("start", q.Start)
	setInt("limit", q.Limit)
	setInt("vmid", q.VMID)
	for k, s := range map[string]string{"source": q.Source, "typefilter": q.TypeFilter, "statusfilter": q.StatusFilter, "userfilter": q.UserFilter} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Errors {
		v.Set("errors", "1")
	}
	if !q.Since.IsZero() {
		v.Set("since", strconv.FormatInt(q.Since.Unix(), 10))
	}
	if !q.Until.IsZero() {
		v.Set("until", strconv.FormatInt(q.Until.Unix(), 10))
	}
	return getList(ctx, c, pathOf("nodes", node, "tasks"), v, wireTaskSummary.summary)
}

// Storage returns GET /nodes/{node}/storage.
func (c *Client) Storage(ctx context.Context, node string) ([]Storage, error) {
	if err := checkNode(node); err != nil {
		return nil, err
	}
	return getList(ctx, c, pathOf("nodes", node, "storage"), nil, wireStorage.storage)
}

// StorageStatus returns GET /nodes/{node}/storage/{storage}/status: the
// storage's type, content, total, used and avail bytes (for a thin pool,
// what PVE reports: the pool's size and its data usage). Storage is set
// to storage; UsedFraction is computed from Used and Total.
func (c *Client) StorageStatus(ctx context.Context, node, storage string) (Storage, error) {
	if err := checkNode(node); err != nil {
		return Storage{}, err
	}
	if storage == "" {
		return Storage{}, fmt.Errorf("pve: storage status: empty storage id")
	}
	w, err := get[wireStorage](ctx, c, pathOf("nodes", node, "storage", storage, "status"), nil)
	if err != nil {
		return Storage{}, err
	}
	st := w.storage()
	st.Storage = storage
	if st.Total > 0 {
		st.UsedFraction = float64(st.Used) / float64(st.Total)
	}
	return st, nil
}

// VolumeInfo returns GET /nodes/{node}/storage/{storage}/content/{volume}
// for volid ("STORAGE:NAME"): the volume's path, size and format. A volume
// that does not exist is an *APIError (500: the storage plugin cannot size
// it); reading one needs Datastore.Allocate on the storage for most
// content types (403 otherwise).
func (c *Client) VolumeInfo(ctx context.Context, node, volid string) (Volume, error) {
	if err := checkNode(node); err != nil {
		return Volume{}, err
	}
	sid, name, ok := strings.Cut(volid, ":")
	if !ok || sid == "" || name == "" {
		return Volume{}, fmt.Errorf("pve: volume id %q is not STORAGE:NAME", truncate(volid, 80))
	}
	w, err := get[wireVolume](ctx, c, pathOf("nodes", node, "storage", sid, "content", volid), nil)
	if err != nil {
		return Volume{}, err
	}
	return Volume{Path: string(w.Path), Size: int64(w.Size), Format: string(w.Format)}, nil
}

// Snapshots returns GET …/{vmid}/snapshot, including PVE's "current"
// pseudo-entry (Snapshot.IsCurrent).
func (c *Client) Snapshots(ctx context.Context, node string, kind guest.Kind, vmid int) ([]Snapshot, error) {
	if err := checkGuest(node, kind, vmid); err != nil {
		return nil, err
	}
	return getList(ctx, c, guestPath(node, kind, vmid, "snapshot"), nil, wireSnapshot.snapshot)
}

func getList[W any, T any](ctx context.Context, c *Client, path string, q url.Values, conv func(W) T) ([]T, error) {
	data, err := c.getRaw(ctx, path, q)
	if err != nil {
		return nil, err
	}
	out, err := decodeList(data, conv)
	if err != nil {
		return nil, fmt.Errorf("pve: GET %s: decode response: %w", path, err)
	}
	return out, nil
}
