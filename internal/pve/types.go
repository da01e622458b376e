package pve

import (
	"encoding/json"
	"time"

	"github.com/steward-pve/steward/internal/guest"
)

// Units follow PVE: every mem/maxmem/disk/maxdisk/total/used field below is
// bytes; config values (GuestConfig) keep PVE's config units (QEMU memory
// MiB, LXC memory MB). Fields PVE did not send are zero.

// Version is GET /version.
type Version struct {
	Version string // "8.4.1"
	Release string // "8.4"
	RepoID  string
	Console string
}

type wireVersion struct {
	Version flexString `json:"version"`
	Release flexString `json:"release"`
	RepoID  flexString `json:"repoid"`
	Console flexString `json:"console"`
}

// Node is one row of GET /nodes.
type Node struct {
	Node           string
	Status         string // "online", "offline", "unknown"
	SSLFingerprint string // SHA-256 of the node certificate, colon-hex upper case
	Level          string // subscription level
	CPU            float64
	MaxCPU         int
	Mem, MaxMem    int64
	Disk, MaxDisk  int64
	Uptime         int64 // seconds
}

type wireNode struct {
	Node           flexString `json:"node"`
	Status         flexString `json:"status"`
	SSLFingerprint flexString `json:"ssl_fingerprint"`
	Level          flexString `json:"level"`
	CPU            flexFloat  `json:"cpu"`
	MaxCPU         flexInt    `json:"maxcpu"`
	Mem            flexInt    `json:"mem"`
	MaxMem         flexInt    `json:"maxmem"`
	Disk           flexInt    `json:"disk"`
	MaxDisk        flexInt    `json:"maxdisk"`
	Uptime         flexInt    `json:"uptime"`
}

func (w wireNode) node() Node {
	return Node{Node: string(w.Node), Status: string(w.Status), SSLFingerprint: string(w.SSLFingerprint),
		Level: string(w.Level), CPU: float64(w.CPU), MaxCPU: int(w.MaxCPU), Mem: int64(w.Mem), MaxMem: int64(w.MaxMem),
		Disk: int64(w.Disk), MaxDisk: int64(w.MaxDisk), Uptime: int64(w.Uptime)}
}

// NodeStatus is GET /nodes/{node}/status.
type NodeStatus struct {
	PVEVersion string // "pve-manager/7.4-16/0f39f621"
	KVersion   string
	Uptime     int64
	CPU        float64
	Wait       float64
	LoadAvg    []float64 // PVE sends strings ("0.00")
	Memory     Usage
	Swap       Usage
	RootFS     Usage
	CPUInfo    CPUInfo
}

// Usage is a total/used/free triple in bytes; Avail is set for file systems.
type Usage struct{ Total, Used, Free, Avail int64 }

// CPUInfo describes the node's processors.
type CPUInfo struct {
	Model                string
	Sockets, Cores, CPUs int
	MHz                  float64 // PVE sends a string ("3400.000")
	HVM                  bool
}

type wireUsage struct {
	Total flexInt `json:"total"`
	Used  flexInt `json:"used"`
	Free  flexInt `json:"free"`
	Avail flexInt `json:"avail"`
}

func (w wireUsage) usage() Usage {
	return Usage{Total: int64(w.Total), Used: int64(w.Used), Free: int64(w.Free), Avail: int64(w.Avail)}
}

type wireNodeStatus struct {
	PVEVersion flexString  `json:"pveversion"`
	KVersion   flexString  `json:"kversion"`
	Uptime     flexInt     `json:"uptime"`
	CPU        flexFloat   `json:"cpu"`
	Wait       flexFloat   `json:"wait"`
	LoadAvg    []flexFloat `json:"loadavg"`
	Memory     wireUsage   `json:"memory"`
	Swap       wireUsage   `json:"swap"`
	RootFS     wireUsage   `json:"rootfs"`
	CPUInfo    struct {
		Model   flexString `json:"model"`
		Sockets flexInt    `json:"sockets"`
		Cores   flexInt    `json:"cores"`
		CPUs    flexInt    `json:"cpus"`
		MHz     flexFloat  `json:"mhz"`
		HVM     flexBool   `json:"hvm"`
	} `json:"cpuinfo"`
}

func (w wireNodeStatus) status() NodeStatus {
	s := NodeStatus{PVEVersion: string(w.PVEVersion), KVersion: string(w.KVersion), Uptime: int64(w.Uptime),
		CPU: float64(w.CPU), Wait: float64(w.Wait), Memory: w.Memory.usage(), Swap: w.Swap.usage(), RootFS: w.RootFS.usage(),
		CPUInfo: CPUInfo{Model: string(w.CPUInfo.Model), Sockets: int(w.CPUInfo.Sockets), Cores: int(w.CPUInfo.Cores),
			CPUs: int(w.CPUInfo.CPUs), MHz: float64(w.CPUInfo.MHz), HVM: bool(w.CPUInfo.HVM)}}
	for _, l := range w.LoadAvg {
		s.LoadAvg = append(s.LoadAvg, float64(l))
	}
	return s
}

// Resource is one row of GET /cluster/resources. Which fields are set
// depends on Type ("qemu", "lxc", "node", "storage", "sdn", "pool").
type Resource struct {
	ID         string // "qemu/100", "node/pve", "storage/pve/local"
	Type       string
	Node       string
	Name       string
	Status     string
	VMID       int
	Lock       string
	Tags       string
	Pool       string
	HAState    string
	Storage    string
	Content    string
	PluginType string
	Template   bool
	Shared     bool
	CPU        float64
	MaxCPU     float64
	Mem        int64
	MaxMem     int64
	Disk       int64
	MaxDisk    int64
	Uptime     int64
}

type wireResource struct {
	ID         flexString `json:"id"`
	Type       flexString `json:"type"`
	Node       flexString `json:"node"`
	Name       flexString `json:"name"`
	Status     flexString `json:"status"`
	VMID       flexInt    `json:"vmid"`
	Lock       flexString `json:"lock"`
	Tags       flexString `json:"tags"`
	Pool       flexString `json:"pool"`
	HAState    flexString `json:"hastate"`
	Storage    flexString `json:"storage"`
	Content    flexString `json:"content"`
	PluginType flexString `json:"plugintype"`
	Template   flexBool   `json:"template"`
	Shared     flexBool   `json:"shared"`
	CPU        flexFloat  `json:"cpu"`
	MaxCPU     flexFloat  `json:"maxcpu"`
	Mem        flexInt    `json:"mem"`
	MaxMem     flexInt    `json:"maxmem"`
	Disk       flexInt    `json:"disk"`
	MaxDisk    flexInt    `json:"maxdisk"`
	Uptime     flexInt    `json:"uptime"`
}

func (w wireResource) resource() Resource {
	return Resource{ID: string(w.ID), Type: string(w.Type), Node: string(w.Node), Name: string(w.Name),
		Status: string(w.Status), VMID: int(w.VMID), Lock: string(w.Lock), Tags: string(w.Tags), Pool: string(w.Pool),
		HAState: string(w.HAState), Storage: string(w.Storage), Content: string(w.Content), PluginType: string(w.PluginType),
		Template: bool(w.Template), Shared: bool(w.Shared), CPU: float64(w.CPU), MaxCPU: float64(w.MaxCPU),
		Mem: int64(w.Mem), MaxMem: int64(w.MaxMem), Disk: int64(w.Disk), MaxDisk: int64(w.MaxDisk), Uptime: int64(w.Uptime)}
}

// GuestSummary is one row of GET /nodes/{node}/qemu or /lxc. VMID arrives
// as a string from pve-container before 5.0.10; it is an int here either
// way. CPUs is rounded up when PVE reports a fractional cpulimit.
type GuestSummary struct {
	VMID      int
	Kind      guest.Kind
	Name      string
	Status    string // "running", "stopped"
	QMPStatus string // QEMU only, e.g. "paused"
	Lock      string
	Tags      string
	Template  bool
	CPUs      int
	CPU       float64
	Mem       int64
	MaxMem    int64
	Disk      int64
	MaxDisk   int64
	MaxSwap   int64
	Uptime    int64
	PID       int
}

type wireGuestSummary struct {
	VMID      flexInt    `json:"vmid"`
	Name      flexString `json:"name"`
	Status    flexString `json:"status"`
	QMPStatus flexString `json:"qmpstatus"`
	Lock      flexString `json:"lock"`
	Tags      flexString `json:"tags"`
	Template  flexBool   `json:"template"`
	CPUs      flexInt    `json:"cpus"`
	CPU       flexFloat  `json:"cpu"`
	Mem       flexInt    `json:"mem"`
	MaxMem    flexInt    `json:"maxmem"`
	Disk      flexInt    `json:"disk"`
	MaxDisk   flexInt    `json:"maxdisk"`
	MaxSwap   flexInt    `json:"maxswap"`
	Uptime    flexInt    `json:"uptime"`
	PID       flexInt    `json:"pid"`
}

func (w wireGuestSummary) summary(k guest.Kind) GuestSummary {
	return GuestSummary{VMID: int(w.VMID), Kind: k, Name: string(w.Name), Status: string(w.Status),
		QMPStatus: string(w.QMPStatus), Lock: string(w.Lock), Tags: string(w.Tags), Template: bool(w.Template),
		CPUs: int(w.CPUs), CPU: float64(w.CPU), Mem: int64(w.Mem), MaxMem: int64(w.MaxMem), Disk: int64(w.Disk),
		MaxDisk: int64(w.MaxDisk), MaxSwap: int64(w.MaxSwap), Uptime: int64(w.Uptime), PID: int(w.PID)}
}

// GuestStatus is GET …/{vmid}/status/current.
type GuestStatus struct {
	VMID           int
	Status         string // "running", "stopped"
	QMPStatus      string // QEMU: "running", "paused", "prelaunch", ...
	Lock           string
	Name           string
	Tags           string
	Template       bool
	Agent          bool // QEMU guest agent enabled in config
	CPUs           int
	CPU            float64
	Uptime         int64
	Mem            int64
	MaxMem         int64
	Disk           int64
	MaxDisk        int64
	PID            int
	RunningQEMU    string
	RunningMachine string
	HA             HAStatus
}

// HAStatus is the "ha" object of a guest status. Managed is false for a
// guest that is not an HA resource; HA-managed guests get hastart/hastop
// task types.
type HAStatus struct {
	Managed bool
	State   string
	Group   string
}

type wireGuestStatus struct {
	VMID           flexInt    `json:"vmid"`
	Status         flexString `json:"status"`
	QMPStatus      flexString `json:"qmpstatus"`
	Lock           flexString `json:"lock"`
	Name           flexString `json:"name"`
	Tags           flexString `json:"tags"`
	Template       flexBool   `json:"template"`
	Agent          flexBool   `json:"agent"`
	CPUs           flexInt    `json:"cpus"`
	CPU            flexFloat  `json:"cpu"`
	Uptime         flexInt    `json:"uptime"`
	Mem            flexInt    `json:"mem"`
	MaxMem         flexInt    `json:"maxmem"`
	Disk           flexInt    `json:"disk"`
	MaxDisk        flexInt    `json:"maxdisk"`
	PID            flexInt    `json:"pid"`
	RunningQEMU    flexString `json:"running-qemu"`
	RunningMachine flexString `json:"running-machine"`
	HA             struct {
		Managed flexBool   `json:"managed"`
		State   flexString `json:"state"`
		Group   flexString `json:"group"`
	} `json:"ha"`
}

func (w wireGuestStatus) status() GuestStatus {
	return GuestStatus{VMID: int(w.VMID), Status: string(w.Status), QMPStatus: string(w.QMPStatus), Lock: string(w.Lock),
		Name: string(w.Name), Tags: string(w.Tags), Template: bool(w.Template), Agent: bool(w.Agent), CPUs: int(w.CPUs),
		CPU: float64(w.CPU), Uptime: int64(w.Uptime), Mem: int64(w.Mem), MaxMem: int64(w.MaxMem), Disk: int64(w.Disk),
		MaxDisk: int64(w.MaxDisk), PID: int(w.PID), RunningQEMU: string(w.RunningQEMU), RunningMachine: string(w.RunningMachine),
		HA: HAStatus{Managed: bool(w.HA.Managed), State: string(w.HA.State), Group: string(w.HA.Group)}}
}

// PendingItem is one row of GET …/{vmid}/pending. Value is the current
// value and Pending the value waiting for a restart; HasValue/HasPending
// tell an absent value from an empty one. Delete is 0, 1 (pending delete)
// or 2 (pending forced delete).
type PendingItem struct {
	Key        string
	Value      string
	HasValue   bool
	Pending    string
	HasPending bool
	Delete     int
}

type wirePending struct {
	Key     flexString  `json:"key"`
	Value   *flexString `json:"value"`
	Pending *flexString `json:"pending"`
	Delete  flexInt     `json:"delete"`
}

func (w wirePending) item() PendingItem {
	p := PendingItem{Key: string(w.Key), Delete: int(w.Delete)}
	if w.Value != nil {
		p.Value, p.HasValue = string(*w.Value), true
	}
	if w.Pending != nil {
		p.Pending, p.HasPending = string(*w.Pending), true
	}
	return p
}

// TaskStatus is GET /nodes/{node}/tasks/{upid}/status. Status is "running"
// or "stopped"; ExitStatus is set only when stopped ("OK", "WARNINGS: n" or
// PVE's error text).
type TaskStatus struct {
	UPID       UPID   // the task asked about
	RawUPID    string // the upid field exactly as PVE returned it
	Node       string
	Status     string
	ExitStatus string
	Type       string
	ID         string
	User       string
	TokenID    string // set when the task was started by an API token
	PID        int64
	PStart     int64
	StartTime  int64
}

// Running reports whether the task has not stopped yet.
func (s TaskStatus) Running() bool { return s.Status != "stopped" }

type wireTaskStatus struct {
	UPID       flexString `json:"upid"`
	Node       flexString `json:"node"`
	Status     flexString `json:"status"`
	ExitStatus flexString `json:"exitstatus"`
	Type       flexString `json:"type"`
	ID         flexString `json:"id"`
	User       flexString `json:"user"`
	TokenID    flexString `json:"tokenid"`
	PID        flexInt    `json:"pid"`
	PStart     flexInt    `json:"pstart"`
	StartTime  flexInt    `json:"starttime"`
}

func (w wireTaskStatus) status() TaskStatus {
	s := TaskStatus{RawUPID: string(w.UPID), Node: string(w.Node), Status: string(w.Status),
		ExitStatus: string(w.ExitStatus), Type: string(w.Type), ID: string(w.ID), User: string(w.User),
		TokenID: string(w.TokenID), PID: int64(w.PID), PStart: int64(w.PStart), StartTime: int64(w.StartTime)}
	if u, err := ParseUPID(s.RawUPID); err == nil {
		s.UPID = u
	}
	return s
}

// LogLine is one line of a task log; N counts from 1.
type LogLine struct {
	N int
	T string
}

type wireLogLine struct {
	N flexInt    `json:"n"`
	T flexString `json:"t"`
}

// TaskQuery filters GET /nodes/{node}/tasks. Zero fields are not sent, so
// PVE's defaults apply (source=archive: finished tasks only, limit 50).
type TaskQuery struct {
	Start        int
	Limit        int
	Source       string // "archive", "active", "all"
	TypeFilter   string // e.g. "qmstart"
	StatusFilter string
	UserFilter   string
	VMID         int
	Errors       bool // only failed tasks
	Since, Until time.Time
}

// TaskSummary is one row of a task list. Status is the exit text for a
// finished task ("OK", "WARNINGS: n", an error) and "RUNNING" for a
// running one; EndTime is 0 while running. UPID is zero when RawUPID does
// not parse.
type TaskSummary struct {
	UPID      UPID
	RawUPID   string
	Node      string
	Type      string
	ID        string
	User      string
	Status    string
	PID       int64
	PStart    int64
	StartTime int64
	EndTime   int64
}

type wireTaskSummary struct {
	UPID      flexString `json:"upid"`
	Node      flexString `json:"node"`
	Type      flexString `json:"type"`
	ID        flexString `json:"id"`
	User      flexString `json:"user"`
	Status    flexString `json:"status"`
	PID       flexInt    `json:"pid"`
	PStart    flexInt    `json:"pstart"`
	StartTime flexInt    `json:"starttime"`
	EndTime   flexInt    `json:"endtime"`
}

func (w wireTaskSummary) summary() TaskSummary {
	s := TaskSummary{RawUPID: string(w.UPID), Node: string(w.Node), Type: string(w.Type), ID: string(w.ID),
		User: string(w.User), Status: string(w.Status), PID: int64(w.PID), PStart: int64(w.PStart),
		StartTime: int64(w.StartTime), EndTime: int64(w.EndTime)}
	if u, err := ParseUPID(s.RawUPID); err == nil {
		s.UPID = u
	}
	return s
}

// Volume is GET …/storage/{storage}/content/{volume}: where a volume is
// and how big.
type Volume struct {
	Path   string
	Size   int64
	Format string
}

type wireVolume struct {
	Path   flexString `json:"path"`
	Size   flexInt    `json:"size"`
	Format flexString `json:"format"`
}

// Storage is one row of GET /nodes/{node}/storage.
type Storage struct {
	Storage      string
	Type         string // "dir", "lvmthin", "zfspool", ...
	Content      string // "images,rootdir"
	Active       bool
	Enabled      bool
	Shared       bool
	Total        int64
	Used         int64
	Avail        int64
	UsedFraction float64
}

type wireStorage struct {
	Storage      flexString `json:"storage"`
	Type         flexString `json:"type"`
	Content      flexString `json:"content"`
	Active       flexBool   `json:"active"`
	Enabled      flexBool   `json:"enabled"`
	Shared       flexBool   `json:"shared"`
	Total        flexInt    `json:"total"`
	Used         flexInt    `json:"used"`
	Avail        flexInt    `json:"avail"`
	UsedFraction flexFloat  `json:"used_fraction"`
}

func (w wireStorage) storage() Storage {
	return Storage{Storage: string(w.Storage), Type: string(w.Type), Content: string(w.Content),
		Active: bool(w.Active), Enabled: bool(w.Enabled), Shared: bool(w.Shared), Total: int64(w.Total),
		Used: int64(w.Used), Avail: int64(w.Avail), UsedFraction: float64(w.UsedFraction)}
}

// Snapshot is one row of GET …/{vmid}/snapshot, in PVE's (unordered)
// order. PVE appends a pseudo-entry named "current" ("You are here!")
// whose Parent is the snapshot the guest runs on; it is kept, see
// IsCurrent.
type Snapshot struct {
	Name        string
	Description string
	Parent      string
	SnapTime    int64 // Unix seconds; 0 if unset
	VMState     bool  // QEMU: RAM state included
	SnapState   string
	Running     bool   // "current" entry only
	Digest      string // "current" entry only
}

// IsCurrent reports whether s is PVE's "current" pseudo-entry rather than a
// snapshot.
func (s Snapshot) IsCurrent() bool { return s.Name == "current" }

type wireSnapshot struct {
	Name        flexString `json:"name"`
	Description flexString `json:"description"`
	Parent      flexString `json:"parent"`
	SnapTime    flexInt    `json:"snaptime"`
	VMState     flexBool   `json:"vmstate"`
	SnapState   flexString `json:"snapstate"`
	Running     flexBool   `json:"running"`
	Digest      flexString `json:"digest"`
}

func (w wireSnapshot) snapshot() Snapshot {
	return Snapshot{Name: string(w.Name), Description: string(w.Description), Parent: string(w.Parent),
		SnapTime: int64(w.SnapTime), VMState: bool(w.VMState), SnapState: string(w.SnapState),
		Running: bool(w.Running), Digest: string(w.Digest)}
}

// decodeList decodes a JSON array of W and converts each element.
func decodeList[W any, T any](data []byte, conv func(W) T) ([]T, error) {
	var ws []W
	if err := json.Unmarshal(data, &ws); err != nil {
		return nil, err
	}
	out := make([]T, 0, len(ws))
	for _, w := range ws {
		out = append(out, conv(w))
	}
	return out, nil
}

// ClusterStatusItem is one row of GET /cluster/status: one "cluster" row
// (absent on a standalone node) and one "node" row per member. Local marks
// the node that answered, which is how an agent learns its node name.
type ClusterStatusItem struct {
	Type    string // "cluster" or "node"
	ID      string
	Name    string
	IP      string
	Level   string
	NodeID  int
	Nodes   int // cluster row: member count
	Version int // cluster row: config version
	Online  bool
	Local   bool
	Quorate bool
}

type wireClusterStatus struct {
	Type    flexString `json:"type"`
	ID      flexString `json:"id"`
	Name    flexString `json:"name"`
	IP      flexString `json:"ip"`
	Level   flexString `json:"level"`
	NodeID  flexInt    `json:"nodeid"`
	Nodes   flexInt    `json:"nodes"`
	Version flexInt    `json:"version"`
	Online  flexBool   `json:"online"`
	Local   flexBool   `json:"local"`
	Quorate flexBool   `json:"quorate"`
}

func (w wireClusterStatus) item() ClusterStatusItem {
	return ClusterStatusItem{Type: string(w.Type), ID: string(w.ID), Name: string(w.Name), IP: string(w.IP),
		Level: string(w.Level), NodeID: int(w.NodeID), Nodes: int(w.Nodes), Version: int(w.Version),
		Online: bool(w.Online), Local: bool(w.Local), Quorate: bool(w.Quorate)}
}
