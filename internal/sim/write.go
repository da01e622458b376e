package sim

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pveschema"
)

func kindWord(k guest.Kind) string {
	if k == guest.LXC {
		return "CT"
	}
	return "VM"
}

// checkLockField is GUEST check_lock: a set lock field refuses changes.
func checkLockField(g *guestState, skiplock bool) error {
	if l := g.config["lock"]; l != "" && !skiplock {
		return taskErrf("%s is locked (%s)", kindWord(g.kind), l)
	}
	return nil
}

// checkSkiplock refuses skiplock for everyone but root@pam (never a token).
func checkSkiplock(q *request) (response, bool) {
	if q.has("skiplock") && q.tok.id != "root@pam" {
		return paramFail(map[string]string{"skiplock": "Only root may use this option."}), false
	}
	return response{}, true
}

// syncError turns an error from a sync operation into PVE's 500.
func syncError(err error) response { return fail(500, "%s", err.Error()) }

// withConfigLock runs fn under the guest's config lock (waiting up to
// LockTimeout, then failing as PVE) and Sim.mu. The guest must still exist
// when the lock is taken.
func (s *Sim) withConfigLock(k guest.Kind, q *request, fn func(g *guestState) response) response {
	s.mu.Lock()
	g, resp, found := s.getGuestLocked(k, q)
	s.mu.Unlock()
	if !found {
		return resp
	}
	if !g.acquire(q.hr.Context(), s.opts.LockTimeout) {
		return fail(500, "%s", lockTimeoutError(k, g.vmid))
	}
	defer g.release()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.guests[g.vmid]; cur != g {
		return noConfig(g.node, k, g.vmid)
	}
	return fn(g)
}

var listSplitRE = regexp.MustCompile(`[,;\s\x00]+`)

func splitList(v string) []string {
	var out []string
	for _, f := range listSplitRE.Split(v, -1) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

var numberedRE = regexp.MustCompile(`^([a-z_\-]+?)(\d+)$`)

// knownOption reports whether key is a config option of the method's
// schema (numbered keys like net3 checked against "net[n]" and its range).
func knownOption(m *pveschema.Method, key string) bool {
	if p, ok := m.Params[key]; ok && !p.Numbered {
		return true
	}
	if sm := numberedRE.FindStringSubmatch(key); sm != nil {
		if p, ok := m.Params[sm[1]+"[n]"]; ok {
			n, _ := strconv.Atoi(sm[2])
			return n <= p.IndexMax
		}
	}
	return false
}

// Non-config parameters of the config, create and resize endpoints.
var configMeta = map[string]bool{
	"node": true, "vmid": true, "digest": true, "delete": true, "revert": true, "skiplock": true,
	"force": true, "background_delay": true,
}

// configChange is a validated config update.
type configChange struct {
	set    map[string]string
	delete []string
	revert []string
}

// prepareConfig does the checks PVE makes before taking the config lock.
func (s *Sim) prepareConfig(k guest.Kind, q *request) (configChange, response, bool) {
	if r, okS := checkSkiplock(q); !okS {
		return configChange{}, r, false
	}
	ch := configChange{set: map[string]string{}}
	for key, v := range q.params {
		if !configMeta[key] {
			ch.set[key] = v
		}
	}
	ch.delete = splitList(q.params["delete"])
	revert := splitList(q.params["revert"])
	ch.revert = revert
	if len(ch.set) == 0 && len(ch.delete) == 0 && len(revert) == 0 {
		return ch, fail(500, "no options specified"), false
	}
	for _, key := range append(append([]string{}, ch.delete...), revert...) {
		if !knownOption(q.m, key) {
			field := "delete"
			if !containsStr(ch.delete, key) {
				field = "revert"
			}
			return ch, paramFail(map[string]string{field: fmt.Sprintf("unknown option '%s'", key)}), false
		}
		if _, both := ch.set[key]; both {
			return ch, paramFail(map[string]string{"delete": fmt.Sprintf("you can't use '-%s' and '-delete %s' at the same time", key, key)}), false
		}
	}
	if v, ok := ch.set["sshkeys"]; ok && k == guest.QEMU {
		if err := checkSSHKeys(v); err != nil {
			return ch, syncError(err), false
		}
	}
	if k == guest.LXC && containsStr(ch.delete, "rootfs") {
		return ch, paramFail(map[string]string{"delete": "unable to delete required option 'rootfs'"}), false
	}
	vmPath := "/vms/" + q.params["vmid"]
	for _, key := range append(sortedKeys(ch.set), ch.delete...) {
		priv := pveschema.ConfigPrivilege(string(k), key)
		if !q.tok.has(vmPath, priv) {
			return ch, fail(403, "Permission check failed (%s, %s)", vmPath, priv), false
		}
	}
	if r, ok := checkNewDiskSpace(k, q.tok, ch.set, ""); !ok {
		return ch, r, false
	}
	return ch, response{}, true
}

func containsStr(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// applyConfigLocked applies ch to g (config lock and Sim.mu held): lock
// field and digest checks, reverts, then the write goes through the
// pending section (new volumes allocated from STORAGE:SIZE, MACs
// generated): a stopped guest applies all of it, a running one what it
// can take live (see pending.go).
func (s *Sim) applyConfigLocked(g *guestState, q *request, ch configChange) error {
	if err := checkLockField(g, q.bool("skiplock")); err != nil {
		return err
	}
	if d := q.params["digest"]; d != "" && d != g.digest() {
		if g.kind == guest.LXC {
			return taskErrf("detected modified configuration - file changed by other user? Try again.")
		}
		return taskErrf("checksum mismatch (file change by other user?)")
	}
	g.revertLocked(ch.revert)
	set := cloneMap(ch.set)
	s.fillMACsLocked(g.kind, set)
	modified := g.writePendingLocked(configChange{set: set, delete: ch.delete}, g.kind == guest.QEMU && q.bool("force"))
	if g.running {
		g.hotplugLocked(modified)
	} else {
		g.applyPendingLocked()
	}
	return nil
}

func (s *Sim) fillMACsLocked(k guest.Kind, cfg map[string]string) {
	for key, v := range cfg {
		if !strings.HasPrefix(key, "net") {
			continue
		}
		if k == guest.QEMU {
			if m := qemuNetRE.FindStringSubmatch(v); m != nil && m[2] == "" {
				cfg[key] = m[1] + "=" + s.randMACLocked() + m[3]
			}
		} else if !strings.Contains(v, "hwaddr=") {
			cfg[key] = v + ",hwaddr=" + s.randMACLocked()
		}
	}
}

// putConfig is the synchronous config update (QEMU and LXC PUT).
func (s *Sim) putConfig(k guest.Kind, q *request) response {
	ch, resp, okP := s.prepareConfig(k, q)
	if !okP {
		return resp
	}
	return s.withConfigLock(k, q, func(g *guestState) response {
		if err := s.applyConfigLocked(g, q, ch); err != nil {
			return syncError(err)
		}
		s.recordLocked(Mutation{Method: q.method, Path: q.path, Op: "config", VMID: g.vmid, Params: q.opParams(), TokenID: q.tok.id})
		return response{status: 200, data: nil, executed: true}
	})
}

// postConfig is QEMU's asynchronous config update (task qmconfig).
// background_delay is accepted; the UPID is always returned.
func (s *Sim) postConfig(k guest.Kind, q *request) response {
	ch, resp, okP := s.prepareConfig(k, q)
	if !okP {
		return resp
	}
	s.mu.Lock()
	g, resp, found := s.getGuestLocked(k, q)
	s.mu.Unlock()
	if !found {
		return resp
	}
	resp = s.taskResponse(taskSpec{typ: "qmconfig", op: "config", g: g, kind: k, vmid: g.vmid, q: q,
		apply: func(r *taskRun) error {
			if s.guests[g.vmid] != g {
				return taskError(fmt.Sprintf("Configuration file '%s' does not exist", confPath(g.node, k, g.vmid)))
			}
			r.logf("update VM %d: %s", g.vmid, describeParams(q.opParams()))
			return s.applyConfigLocked(g, q, ch)
		}})
	if bd := q.int("background_delay", 0); bd > 0 && resp.status == 200 {
		return s.awaitBackground(q, resp, g.vmid, time.Duration(bd)*time.Second)
	}
	return resp
}

// awaitBackground implements background_delay: wait up to d for the task;
// finished OK → data null, failed → 500 "failed to update VM …", still
// running → the UPID.
func (s *Sim) awaitBackground(q *request, resp response, vmid int, d time.Duration) response {
	s.mu.Lock()
	t := s.tasks[resp.data.(string)]
	s.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.done:
	case <-timer.C:
		return resp
	case <-q.hr.Context().Done():
		return resp
	}
	s.mu.Lock()
	exit := t.exit
	s.mu.Unlock()
	if exit == "OK" || strings.HasPrefix(exit, "WARNINGS: ") {
		return response{status: 200, data: nil, executed: true}
	}
	r := fail(500, "failed to update VM %d: %s", vmid, exit)
	r.executed = true
	return r
}

func describeParams(p map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(p) {
		if k == "digest" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "-%s %s", k, p[k])
	}
	return b.String()
}

// guestTask builds the common part of a per-guest task, after checking the
// guest exists.
func (s *Sim) guestTask(k guest.Kind, q *request, typ, op string) (taskSpec, response, bool) {
	s.mu.Lock()
	g, resp, found := s.getGuestLocked(k, q)
	s.mu.Unlock()
	if !found {
		return taskSpec{}, resp, false
	}
	return taskSpec{typ: typ, op: op, g: g, kind: k, vmid: g.vmid, q: q}, response{}, true
}

// gone is the task error when the guest disappeared while the task waited.
// writableLocked is the check every task makes before it changes g: the
// guest still exists and no lock value (backup, ...) refuses the write
// (skiplock overrides the lock, as in PVE).
func (s *Sim) writableLocked(g *guestState, skiplock bool) error {
	if err := s.goneLocked(g); err != nil {
		return err
	}
	return checkLockField(g, skiplock)
}

func (s *Sim) goneLocked(g *guestState) error {
	if s.guests[g.vmid] != g {
		return taskError(fmt.Sprintf("Configuration file '%s' does not exist", confPath(g.node, g.kind, g.vmid)))
	}
	return nil
}

// powerTask begins a start, stop or shutdown task: skiplock is refused to
// tokens other than root@pam, and the guest must exist.
func (s *Sim) powerTask(k guest.Kind, q *request, verb string) (taskSpec, response, bool) {
	if r, ok := checkSkiplock(q); !ok {
		return taskSpec{}, r, false
	}
	return s.guestTask(k, q, prefix(k)+verb, verb)
}

// running reports g's run state under the simulator's lock.
func (s *Sim) running(g *guestState) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return g.running
}

func prefix(k guest.Kind) string {
	if k == guest.LXC {
		return "vz"
	}
	return "qm"
}

func (s *Sim) postStart(k guest.Kind, q *request) response {
	sp, resp, found := s.powerTask(k, q, "start")
	if !found {
		return resp
	}
	g := sp.g
	if k == guest.LXC && s.running(g) {
		return fail(500, "CT %d already running", g.vmid)
	}
	sp.apply = func(r *taskRun) error {
		// Order of QEMU vm_start / LXC vm_start: template, (QEMU) a
		// running guest under lock "backup" is resumed, the lock field
		// (not "suspended" for QEMU, not "mounted" for LXC), already running.
		if err := s.goneLocked(g); err != nil {
			return err
		}
		if g.config["template"] == "1" {
			if k == guest.LXC {
				return taskErrf("you can't start a CT if it's a template")
			}
			return taskErrf("you can't start a vm if it's a template")
		}
		lock := g.config["lock"]
		if k == guest.QEMU && lock == "backup" && g.running {
			r.logf("Resuming suspended VM")
			return nil
		}
		exempt := (k == guest.QEMU && lock == "suspended") || (k == guest.LXC && lock == "mounted")
		if err := checkLockField(g, q.bool("skiplock") || exempt); err != nil {
			return err
		}
		if g.running {
			return taskErrf("%s %d already running", kindWord(k), g.vmid)
		}
		if k == guest.QEMU && lock == "suspended" {
			// Resuming a hibernated VM removes its lock (and vmstate).
			delete(g.config, "lock")
		}
		// vm_start applies pending changes before the guest runs, then
		// generates the cloud-init drive anew.
		g.applyPendingLocked()
		if err := s.ciRegenerateLocked(g); err != nil {
			return err
		}
		g.running = true
		g.startedAt = s.now()
		return nil
	}
	return s.taskResponse(sp)
}

func (s *Sim) postStop(k guest.Kind, q *request) response {
	sp, resp, found := s.powerTask(k, q, "stop")
	if !found {
		return resp
	}
	g := sp.g
	if k == guest.LXC && !s.running(g) {
		return fail(500, "CT %d not running", g.vmid)
	}
	if q.bool("overrule-shutdown") {
		// QEMU/LXC stop: with overrule-shutdown=1 the stop worker first
		// aborts the guest's running shutdown tasks (GuestHelpers
		// abort_guest_tasks), which would otherwise hold the config lock.
		sp.pre = func(r *taskRun) {
			if ids := s.abortGuestTasks(q, prefix(k)+"shutdown", g.vmid); len(ids) > 0 {
				s.mu.Lock()
				r.logf("overruled %sshutdown tasks: %s", prefix(k), strings.Join(ids, ", "))
				s.mu.Unlock()
			}
		}
	}
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, q.bool("skiplock")); err != nil {
			return err
		}
		s.stoppedLocked(g)
		return nil
	}
	return s.taskResponse(sp)
}

// stoppedLocked marks g stopped. A QEMU guest's pending changes are applied
// as it stops (qemu-server's vm_stop_cleanup); a container keeps them until
// it starts.
func (s *Sim) stoppedLocked(g *guestState) {
	g.running = false
	if g.kind == guest.QEMU {
		g.applyPendingLocked()
	}
}

// abortGuestTasks stops the running tasks of type typ for vmid that the
// caller may stop (its own, or any with Sys.Modify on the node), waits for
// them to end and returns their UPIDs.
func (s *Sim) abortGuestTasks(q *request, typ string, vmid int) []string {
	s.mu.Lock()
	var victims []*task
	for _, t := range s.taskOrder {
		if t.status != "running" || t.upid.Type != typ || t.vmid != vmid {
			continue
		}
		if t.tokenID != q.tok.id && !q.tok.has("/nodes/"+s.node, "Sys.Modify") {
			continue
		}
		victims = append(victims, t)
	}
	s.mu.Unlock()
	ids := make([]string, 0, len(victims))
	for _, t := range victims {
		t.cancel()
		<-t.done
		ids = append(ids, t.id)
	}
	return ids
}

func (s *Sim) postShutdown(k guest.Kind, q *request) response {
	sp, resp, found := s.powerTask(k, q, "shutdown")
	if !found {
		return resp
	}
	g := sp.g
	running := s.shutdownPrelude(&sp)
	if k == guest.LXC && !running {
		return fail(500, "CT %d not running", g.vmid)
	}
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, q.bool("skiplock")); err != nil {
			return err
		}
		if !g.running {
			return nil
		}
		if g.ignoreShutdown {
			if !q.bool("forceStop") {
				if k == guest.LXC {
					return taskErrf("container did not stop")
				}
				return taskErrf("VM quit/powerdown failed - got timeout")
			}
			if k == guest.LXC {
				r.warnf("container did not stop in time - forcing stop")
			} else {
				r.warnf("VM quit/powerdown failed - terminating now with SIGTERM")
			}
		}
		s.stoppedLocked(g)
		return nil
	}
	return s.taskResponse(sp)
}

// shutdownPrelude reports whether the guest of a shutdown or reboot task
// runs; a running guest that ignores ACPI makes the task wait out its
// timeout (unless timeout=0).
func (s *Sim) shutdownPrelude(sp *taskSpec) bool {
	s.mu.Lock()
	running, ignores := sp.g.running, sp.g.ignoreShutdown
	s.mu.Unlock()
	if ignores && running && sp.q.int("timeout", 1) != 0 {
		sp.extra = s.opts.TaskDuration
	}
	return running
}

// postReboot is POST …/status/reboot (task qmreboot / vzreboot): a
// graceful shutdown within timeout (default: PVE's shutdown default), then
// a start, which applies the pending changes. Real PVE ends the task when
// the guest is down and starts it again from its event daemon; the
// simulator does both inside the task, so the guest is running again when
// the task ends. A guest that ignores ACPI makes the task fail as a
// shutdown without forceStop does, and it keeps running.
func (s *Sim) postReboot(k guest.Kind, q *request) response {
	sp, resp, found := s.guestTask(k, q, prefix(k)+"reboot", "reboot")
	if !found {
		return resp
	}
	g := sp.g
	if !s.shutdownPrelude(&sp) {
		return fail(500, "%s %d not running", kindWord(k), g.vmid)
	}
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, false); err != nil {
			return err
		}
		if !g.running {
			return taskErrf("%s %d not running", kindWord(k), g.vmid)
		}
		if g.ignoreShutdown {
			if k == guest.LXC {
				return taskErrf("container did not stop")
			}
			return taskErrf("VM quit/powerdown failed - got timeout")
		}
		g.applyPendingLocked()
		if err := s.ciRegenerateLocked(g); err != nil { // the start half generates the cloud-init drive
			g.running = false // shut down, then the start failed
			return err
		}
		g.startedAt = s.now()
		return nil
	}
	return s.taskResponse(sp)
}

// createExclude are create parameters that are not config keys.
var createExclude = map[string]bool{
	"node": true, "vmid": true, "start": true, "storage": true, "pool": true, "unique": true, "force": true,
	"archive": true, "live-restore": true, "bwlimit": true, "ha-managed": true, "ostemplate": true,
	"password": true, "ssh-public-keys": true, "restore": true, "ignore-unpack-errors": true,
}

func (s *Sim) postCreate(k guest.Kind, q *request) response {
	vmid, _ := strconv.Atoi(q.params["vmid"])
	vmPath := "/vms/" + q.params["vmid"]
	pool := q.params["pool"]
	if pool != "" && !s.poolExists(pool) {
		return fail(403, "Permission check failed (pool '%s' does not exist)", pool) // check_pool_exist
	}
	if !q.tok.has(vmPath, "VM.Allocate") && (pool == "" || !q.tok.has("/pool/"+pool, "VM.Allocate")) {
		if pool != "" {
			return fail(403, "Permission check failed (/pool/%s, VM.Allocate)", pool)
		}
		return fail(403, "Permission check failed (%s, VM.Allocate)", vmPath)
	}
	if r, ok := checkNewDiskSpace(k, q.tok, q.params, q.params["storage"]); !ok {
		return r
	}
	if v, ok := q.params["sshkeys"]; ok && k == guest.QEMU {
		if err := checkSSHKeys(v); err != nil {
			return syncError(err)
		}
	}
	s.mu.Lock()
	if other, exists := s.guests[vmid]; exists {
		s.mu.Unlock()
		return fail(500, "unable to create %s %d - %s %d already exists on node '%s'", kindWord(k), vmid, kindWord(other.kind), vmid, other.node)
	}
	// pve-container create_vm: the template must be a file the storage
	// holds (abs_filesystem_path), checked before the task starts.
	if t := q.params["ostemplate"]; k == guest.LXC && t != "-" && !s.vztmplExistsLocked(t) {
		s.mu.Unlock()
		return fail(500, "can't find file '%s'", t)
	}
	g := newGuestState(vmid, k)
	g.node = q.vars["node"]
	g.config["lock"] = "create"
	s.guests[vmid] = g
	s.mu.Unlock()

	sp := taskSpec{typ: prefix(k) + "create", op: "create", g: g, kind: k, vmid: vmid, q: q}
	sp.apply = func(r *taskRun) error {
		cfg := map[string]string{}
		for key, v := range q.params {
			if !createExclude[key] {
				cfg[key] = v
			}
		}
		storage := q.params["storage"]
		if storage == "" {
			storage = "local"
		}
		if k == guest.LXC {
			if cfg["rootfs"] == "" {
				cfg["rootfs"] = storage + ":4"
			}
			if cfg["hostname"] == "" {
				cfg["hostname"] = fmt.Sprintf("CT%d", vmid)
			}
			if cfg["arch"] == "" {
				cfg["arch"] = "amd64"
			}
			if cfg["ostype"] == "" {
				cfg["ostype"] = templateOS(q.params["ostemplate"])
			}
			if cfg["memory"] == "" {
				cfg["memory"] = "512"
			}
			if cfg["swap"] == "" {
				cfg["swap"] = "512"
			}
		} else {
			cfg["smbios1"] = "uuid=" + s.uuidLocked()
			cfg["vmgenid"] = s.uuidLocked()
			cfg["meta"] = fmt.Sprintf("creation-qemu=10.0.2,ctime=%d", s.now().Unix())
		}
		for _, key := range sortedKeys(cfg) {
			v := cfg[key]
			if isVolumeKey(k, key) {
				v = g.allocVolume(key, v)
				r.logf("  Logical volume %q created.", volumeOf(v))
			}
			g.config[key] = v
		}
		s.fillMACsLocked(k, g.config)
		delete(g.config, "lock")
		if pool != "" {
			s.addToPoolLocked(pool, vmid)
		}
		if q.bool("start") {
			g.running = true
			g.startedAt = s.now()
		}
		return nil
	}
	sp.abort = func(r *taskRun) {
		if s.guests[vmid] == g {
			delete(s.guests, vmid)
		}
	}
	resp := s.taskResponse(sp)
	if resp.status != 200 {
		s.mu.Lock()
		delete(s.guests, vmid)
		s.mu.Unlock()
	}
	return resp
}

func templateOS(t string) string {
	_, name, _ := strings.Cut(t, "/")
	for _, os := range []string{"debian", "ubuntu", "alpine", "centos", "fedora", "archlinux", "opensuse", "gentoo", "devuan", "nixos"} {
		if strings.HasPrefix(name, os) {
			return os
		}
	}
	return "unmanaged"
}

func (s *Sim) deleteGuest(k guest.Kind, q *request) response {
	if r, okS := checkSkiplock(q); !okS {
		return r
	}
	sp, resp, found := s.guestTask(k, q, prefix(k)+"destroy", "destroy")
	if !found {
		return resp
	}
	g := sp.g
	s.mu.Lock()
	running, protected := g.running, g.config["protection"] == "1"
	s.mu.Unlock()
	if protected {
		return fail(500, "can't remove %s %d - protection mode enabled", kindWord(k), g.vmid)
	}
	if running {
		if k == guest.QEMU {
			return fail(500, "VM %d is running - destroy failed", g.vmid)
		}
		if !q.bool("force") {
			return fail(500, "unable to destroy CT %d - container is running", g.vmid)
		}
	}
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, q.bool("skiplock")); err != nil {
			return err
		}
		if g.running && k == guest.QEMU {
			return taskErrf("VM %d is running - destroy failed", g.vmid)
		}
		for _, key := range sortedKeys(g.config) {
			if v := volumeOf(g.config[key]); v != "" && (isVolumeKey(k, key) || unusedKeyRE.MatchString(key)) {
				r.logf("  Logical volume \"%s\" successfully removed.", v)
			}
		}
		g.running = false
		delete(s.guests, g.vmid)
		s.removeFromPoolLocked(g.vmid) // AccessControl remove_vm_access
		return nil
	}
	return s.taskResponse(sp)
}

func (s *Sim) postSnapshot(k guest.Kind, q *request) response {
	name := q.params["snapname"]
	if name == "current" || name == "pending" || name == "vzdump" {
		return fail(500, "unable to use snapshot name '%s' (reserved name)", name)
	}
	sp, resp, found := s.guestTask(k, q, prefix(k)+"snapshot", "snapshot")
	if !found {
		return resp
	}
	g := sp.g
	sp.begin = func(r *taskRun) error {
		if err := s.writableLocked(g, false); err != nil {
			return err
		}
		if _, exists := g.snapshots[name]; exists {
			return taskErrf("snapshot name '%s' already used", name)
		}
		g.config["lock"] = "snapshot"
		return nil
	}
	sp.apply = func(r *taskRun) error {
		delete(g.config, "lock")
		c := cloneMap(g.config)
		delete(c, "parent")
		desc := q.params["description"]
		if desc == "" {
			desc = g.config["description"]
		}
		sn := &snapshot{name: name, parent: g.config["parent"], description: desc,
			snaptime: s.now().Unix(), vmstate: k == guest.QEMU && q.bool("vmstate") && g.running, running: g.running, config: c}
		g.snapshots[name] = sn
		g.config["parent"] = name
		return nil
	}
	sp.abort = func(r *taskRun) { delete(g.config, "lock") }
	return s.taskResponse(sp)
}

func (s *Sim) snapshotExists(k guest.Kind, q *request) (response, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, resp, found := s.getGuestLocked(k, q)
	if !found {
		return resp, false
	}
	if g.snapshots[q.params["snapname"]] == nil {
		return fail(500, "snapshot '%s' does not exist", q.params["snapname"]), false
	}
	return response{}, true
}

func (s *Sim) postRollback(k guest.Kind, q *request) response {
	if resp, okS := s.snapshotExists(k, q); !okS {
		return resp
	}
	sp, resp, found := s.guestTask(k, q, prefix(k)+"rollback", "rollback")
	if !found {
		return resp
	}
	g, name := sp.g, q.params["snapname"]
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, false); err != nil {
			return err
		}
		sn := g.snapshots[name]
		if sn == nil {
			return taskErrf("snapshot '%s' does not exist", name)
		}
		g.config = cloneMap(sn.config)
		g.config["parent"] = name
		g.realSize = nil // the volumes return to the sizes the snapshot recorded
		// The rolled-back file is the snapshot's section: no pending section.
		clear(g.pending)
		clear(g.pendingDel)
		g.running = sn.vmstate || q.bool("start")
		if g.running {
			g.startedAt = s.now()
		}
		return nil
	}
	return s.taskResponse(sp)
}

func (s *Sim) deleteSnapshot(k guest.Kind, q *request) response {
	if resp, okS := s.snapshotExists(k, q); !okS {
		return resp
	}
	sp, resp, found := s.guestTask(k, q, prefix(k)+"delsnapshot", "delsnapshot")
	if !found {
		return resp
	}
	g, name := sp.g, q.params["snapname"]
	sp.apply = func(r *taskRun) error {
		if err := s.writableLocked(g, q.bool("force")); err != nil {
			return err
		}
		sn := g.snapshots[name]
		if sn == nil {
			return taskErrf("snapshot '%s' does not exist", name)
		}
		for _, other := range g.snapshots {
			if other.parent == name {
				other.parent = sn.parent
			}
		}
		if g.config["parent"] == name {
			if sn.parent != "" {
				g.config["parent"] = sn.parent
			} else {
				delete(g.config, "parent")
			}
		}
		delete(g.snapshots, name)
		return nil
	}
	return s.taskResponse(sp)
}
