package sim

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pveschema"
)

// Options configures a Sim. The zero value is usable: node "pve", no
// guests, a generated token, 50ms tasks, a 2s lock timeout, no faults.
type Options struct {
	Node string // node name; default "pve" (with Nodes: Nodes[0])
	// Nodes, when it names more than one node, makes the Sim a cluster of
	// these nodes (cluster.go): one vmid space, /cluster/status with a
	// cluster row, guests on each node, migration between them. Node must
	// be one of them; it is the node seeded guests and templates go to
	// and the one /cluster/status calls local.
	Nodes []string
	// ClusterName is the cluster's name in /cluster/status; default
	// "sim-cluster". Unused without Nodes.
	ClusterName string
	Guests      int // number of seeded guests (a mix of qemu and lxc); 0 = none
	// Templates seeds what creating guests needs (AddTemplates): the QEMU
	// template 9000 and a container template in local's vztmpl content.
	Templates    bool
	Token        string        // full "USER@REALM!TOKENID=SECRET" with all privileges; "" = generate one
	Seed         int64         // makes seeding and faults deterministic
	TaskDuration time.Duration // how long async tasks run; default 50ms
	// CloneDuration is how long a clone task (qmclone, vzclone) runs;
	// 0 means TaskDuration. A container clone holds its source's lock
	// (lock: disk) for all of it, as pve-container does.
	CloneDuration time.Duration
	LockTimeout   time.Duration // how long a write waits for a held config lock; default 2s (PVE: 10s)
	Faults        Faults
	Logger        *slog.Logger     // nil = no logging
	Clock         func() time.Time // wall clock for timestamps; nil = time.Now

	// LegacyErrors emulates servers before libpve-http-server-perl 5.2.0,
	// whose error bodies carry no "message" field.
	LegacyErrors bool
	// AuthFailureDelay delays 401 responses (PVE: 3s); default 0.
	AuthFailureDelay time.Duration
}

// Faults are injected failures, all off at the zero value. Rates are
// probabilities in [0,1], drawn from a generator seeded by Options.Seed, so
// a sequential run of requests sees the same faults every time.
type Faults struct {
	Latency           time.Duration `json:"latency"`              // added before every API request
	ErrorRate         float64       `json:"error_rate"`           // 500 before anything is executed
	Status596Rate     float64       `json:"status_596_rate"`      // 596 (pveproxy lost the backend) before anything is executed
	DropAfterExecRate float64       `json:"drop_after_exec_rate"` // mutation executed (or its task started), then the connection is closed without a response
	TaskFailRate      float64       `json:"task_fail_rate"`       // a task ends with an error instead of applying its change
	SlowTaskRate      float64       `json:"slow_task_rate"`       // a task runs SlowTaskFactor times longer
	SlowTaskFactor    int           `json:"slow_task_factor"`     // default 10
}

// GuestSpec describes a guest to add with AddGuest or POST /_sim/guests.
type GuestSpec struct {
	VMID    int               `json:"vmid"`
	Kind    guest.Kind        `json:"kind"`
	Name    string            `json:"name"`    // qemu name / lxc hostname; overrides Config
	Running bool              `json:"running"` //
	Config  map[string]string `json:"config"`  // raw PVE config values (memory "2048", scsi0 "local-lvm:vm-101-disk-0,size=32G", ...)
	Node    string            `json:"node"`    // cluster node the guest is on; "" = the Sim's Node
	Lock    string            `json:"lock"`    // lock field, e.g. "backup"
	// IgnoreShutdown makes the guest not react to ACPI shutdown: a shutdown
	// task then fails after its timeout, or stops it with forceStop=1.
	IgnoreShutdown bool `json:"ignore_shutdown"`
}

// Mutation is one change the simulator executed.
type Mutation struct {
	Seq     int               `json:"seq"`
	Time    time.Time         `json:"time"`
	Method  string            `json:"method"`
	Path    string            `json:"path"` // below /api2/json
	Op      string            `json:"op"`   // start shutdown stop reboot config resize create destroy snapshot rollback delsnapshot
	VMID    int               `json:"vmid"`
	Params  map[string]string `json:"params"` // request parameters without the path's node and vmid
	UPID    string            `json:"upid,omitempty"`
	TokenID string            `json:"tokenid"` // USER@REALM!TOKENID that asked
}

// GuestSnapshot is a guest's current state, for assertions.
type GuestSnapshot struct {
	VMID   int
	Node   string // the cluster node the guest is on
	Kind   guest.Kind
	Status string            // "running" or "stopped"
	Config map[string]string // raw current config without digest; description as stored
	// Pending holds the values waiting for a restart and PendingDelete the
	// keys whose delete waits ('!' marks a forced delete); both empty when
	// nothing is pending.
	Pending       map[string]string
	PendingDelete []string
	Digest        string
	Lock          string
}

// Sim is a simulated PVE node. All methods are safe for concurrent use.
// Close stops its task goroutines.
type Sim struct {
	node     string
	nodes    []string // cluster members in Options order; [node] for a single node
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	adminTok string
	schema   *pveschema.Schema
	cert     tls.Certificate
	fp       string
	bootTime time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	faults    Faults
	rng       *mrand.Rand
	tokens    map[string]*token // by USER@REALM!TOKENID
	guests    map[int]*guestState
	vztmpl    []vztmplVol                // container templates in storages' vztmpl content (templates.go)
	snippets  map[string]string          // cloud-init snippets by volid, for cicustom (cloudinit.go)
	pools     map[string]*pool           // by poolid; nil until the first pool (pools.go)
	members   atomic.Pointer[membership] // who is in which pool, for permission checks; read without mu
	routes    routeTable                 // built once by New, read-only after
	tasks     map[string]*task
	taskOrder []*task
	mutations []Mutation
	nextPID   uint64
	closed    bool
}

// New builds a Sim, seeds its guests and generates its TLS certificate (so
// Fingerprint is valid right away). It fails on a malformed Options.Token.
func New(opts Options) (*Sim, error) {
	node, nodes, err := clusterNodes(opts.Node, opts.Nodes)
	if err != nil {
		return nil, err
	}
	opts.Node = node
	if opts.TaskDuration <= 0 {
		opts.TaskDuration = 50 * time.Millisecond
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sch, err := pveschema.Load()
	if err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	s := &Sim{
		node:     opts.Node,
		nodes:    nodes,
		opts:     opts,
		log:      log,
		now:      opts.Clock,
		schema:   sch,
		routes:   newRoutes(),
		faults:   normFaults(opts.Faults),
		rng:      mrand.New(mrand.NewPCG(uint64(opts.Seed), 0x5157a11d)),
		tokens:   map[string]*token{},
		guests:   map[int]*guestState{},
		tasks:    map[string]*task{},
		nextPID:  0x1000 + uint64(opts.Seed&0xfff),
		bootTime: opts.Clock().Add(-72 * time.Hour),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	tok := opts.Token
	if tok == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("sim: generating token secret: %w", err)
		}
		h := hex.EncodeToString(b[:])
		tok = "root@pam!steward=" + h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
	}
	id, secret, ok := splitToken(tok)
	if !ok {
		return nil, errors.New("sim: token must look like USER@REALM!TOKENID=SECRET")
	}
	s.adminTok = tok
	s.tokens[id] = &token{id: id, secret: secret, admin: true}
	if err := s.generateCert(); err != nil {
		return nil, err
	}
	s.seedGuests(opts.Guests) // first: seeded guests stay what they were before templates existed
	if opts.Templates {
		if err := s.AddTemplates(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

var (
	nodeRE  = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)
	tokenRE = regexp.MustCompile(`^[^\s!@]+@[A-Za-z][A-Za-z0-9\.\-_]+![A-Za-z][A-Za-z0-9\.\-_]+$`)
)

// splitToken splits "USER@REALM!TOKENID=SECRET" at the last '=', as PVE does.
func splitToken(s string) (id, secret string, ok bool) {
	i := strings.LastIndexByte(s, '=')
	if i < 0 {
		return "", "", false
	}
	id, secret = s[:i], s[i+1:]
	if !tokenRE.MatchString(id) || secret == "" {
		return "", "", false
	}
	return id, secret, true
}

func normFaults(f Faults) Faults {
	if f.SlowTaskFactor <= 0 {
		f.SlowTaskFactor = 10
	}
	return f
}

// Close stops all running tasks (they end as "interrupted by signal") and
// waits for their goroutines. It is idempotent.
func (s *Sim) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// Token returns the full admin token "USER@REALM!TOKENID=SECRET".
func (s *Sim) Token() string { return s.adminTok }

// Node returns the node name.
func (s *Sim) Node() string { return s.node }

// AddToken adds (or replaces) an API token with per-path privileges:
// privs maps an ACL path ("/", "/vms", "/vms/101", "/nodes/pve",
// "/storage/local") to privilege names; a grant propagates to the path's
// children. id is "USER@REALM!TOKENID" in PVE's syntax (the token id has
// at least two characters, [A-Za-z][A-Za-z0-9.\-_]+); any other id can never
// authenticate.
func (s *Sim) AddToken(id, secret string, privs map[string][]string) {
	p := make(map[string]map[string]bool, len(privs))
	for path, names := range privs {
		path = normACLPath(path)
		if p[path] == nil {
			p[path] = map[string]bool{}
		}
		for _, n := range names {
			p[path][n] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[id] = &token{id: id, secret: secret, privs: p, members: &s.members}
}

// AddGuest adds a guest. It fails if the VMID is taken or the spec is
// invalid.
func (s *Sim) AddGuest(g GuestSpec) error {
	if g.VMID < 100 || g.VMID > 999999999 {
		return fmt.Errorf("sim: vmid %d out of range 100-999999999", g.VMID)
	}
	if _, err := guest.ParseKind(string(g.Kind)); err != nil {
		return fmt.Errorf("sim: guest %d: %w", g.VMID, err)
	}
	if g.Lock != "" && !validLock(g.Kind, g.Lock) {
		return fmt.Errorf("sim: guest %d: lock %q is not a %s lock value", g.VMID, g.Lock, g.Kind)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.guests[g.VMID]; ok {
		return fmt.Errorf("sim: guest %d already exists", g.VMID)
	}
	node := g.Node
	if node == "" {
		node = s.node
	}
	if !s.isNode(node) {
		return fmt.Errorf("sim: guest %d: node %q is not a node of this cluster (%s)", g.VMID, node, strings.Join(s.nodes, ", "))
	}
	gs := newGuestState(g.VMID, g.Kind)
	gs.node = node
	for k, v := range g.Config {
		gs.config[k] = v
	}
	delete(gs.config, "digest")
	if g.Name != "" {
		gs.config[nameKey(g.Kind)] = g.Name
	}
	if g.Lock != "" {
		gs.config["lock"] = g.Lock
	}
	gs.ignoreShutdown = g.IgnoreShutdown
	if g.Running {
		gs.running = true
		gs.startedAt = s.now()
	}
	s.guests[g.VMID] = gs
	return nil
}

// SetLock sets the guest's lock field (e.g. "backup"); "" clears it. Like a
// backup setting its lock, this changes the digest.
func (s *Sim) SetLock(vmid int, lock string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.guests[vmid]
	if !ok {
		return fmt.Errorf("sim: guest %d does not exist", vmid)
	}
	if lock == "" {
		delete(g.config, "lock")
		return nil
	}
	if !validLock(g.kind, lock) {
		return fmt.Errorf("sim: lock %q is not a %s lock value", lock, g.kind)
	}
	g.config["lock"] = lock
	return nil
}

func validLock(k guest.Kind, l string) bool {
	if k == guest.QEMU {
		return strings.Contains("|backup|clone|create|migrate|rollback|snapshot|snapshot-delete|suspending|suspended|", "|"+l+"|")
	}
	return strings.Contains("|backup|create|destroyed|disk|fstrim|migrate|mounted|rollback|snapshot|snapshot-delete|", "|"+l+"|")
}

// SetFaults replaces the injected faults.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = normFaults(f)
}

// Mutations returns a copy of every mutation executed so far, in order.
func (s *Sim) Mutations() []Mutation {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Mutation, len(s.mutations))
	for i, m := range s.mutations {
		m.Params = cloneMap(m.Params)
		out[i] = m
	}
	return out
}

// Guest returns a guest's current state; ok is false if it does not exist.
func (s *Sim) Guest(vmid int) (GuestSnapshot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, ok := s.guests[vmid]
	if !ok {
		return GuestSnapshot{}, false
	}
	st := "stopped"
	if g.running {
		st = "running"
	}
	return GuestSnapshot{VMID: vmid, Node: g.node, Kind: g.kind, Status: st, Config: cloneMap(g.config), Digest: g.digest(), Lock: g.config["lock"],
		Pending: cloneMap(g.pending), PendingDelete: g.pendingDeleteList()}, true
}

// recordLocked appends a mutation; s.mu must be held.
func (s *Sim) recordLocked(m Mutation) {
	m.Seq = len(s.mutations) + 1
	m.Time = s.now()
	s.mutations = append(s.mutations, m)
	s.log.Info("sim: mutation", "seq", m.Seq, "op", m.Op, "vmid", m.VMID, "upid", m.UPID)
}

// chance draws from the seeded generator.
func (s *Sim) chance(p float64) bool {
	if p <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rng.Float64() < p
}

func (s *Sim) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
