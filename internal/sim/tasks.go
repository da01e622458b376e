package sim

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/steward-pve/steward/internal/guest"
	"github.com/steward-pve/steward/internal/pve"
)

// task is one worker task. Fields after creation are guarded by Sim.mu.
type task struct {
	upid    pve.UPID
	id      string // upid.String()
	vmid    int
	tokenID string
	status  string // "running" or "stopped"
	exit    string // set when stopped
	endtime int64
	log     []string

	cancel context.CancelFunc // stops the task (DELETE …/tasks/{upid}, Close)
	done   chan struct{}      // closed when the task stopped
}

// taskRun is handed to a task's hooks, which run with Sim.mu held.
type taskRun struct {
	t        *task
	warnings int
}

func (r *taskRun) logf(format string, args ...any) {
	r.t.log = append(r.t.log, fmt.Sprintf(format, args...))
}

func (r *taskRun) warnf(format string, args ...any) {
	r.warnings++
	r.t.log = append(r.t.log, "WARN: "+fmt.Sprintf(format, args...))
}

// taskError is an error text a task ends with (its exitstatus).
type taskError string

func (e taskError) Error() string { return string(e) }

func taskErrf(format string, args ...any) error { return taskError(fmt.Sprintf(format, args...)) }

// taskSpec describes an async operation.
type taskSpec struct {
	typ  string // qmstart, vzstop, qmconfig, resize, ...
	op   string // mutation op recorded on success
	g    *guestState
	kind guest.Kind
	vmid int
	q    *request
	// node is the node the task runs on; "" = the request path's node.
	node string
	// dur, when positive, is the task's run time instead of TaskDuration
	// (a clone's CloneDuration).
	dur time.Duration
	// extra is added to the task's run time (a shutdown waiting for its timeout).
	extra time.Duration
	// source, when set, is a guest whose config lock the task takes
	// before g's and holds to its end (a clone's source): exclusively
	// when sourceExclusive, else shared, waiting at most sourceWait; a
	// timeout fails the task (abort runs).
	source          *guestState
	sourceExclusive bool
	sourceWait      time.Duration
	// pre runs (without Sim.mu) before the task takes the config lock.
	pre func(r *taskRun)
	// begin runs (with Sim.mu held) once the config lock is taken; an error ends the task.
	begin func(r *taskRun) error
	// apply runs (with Sim.mu held) when the task's time is up; on nil the
	// mutation is recorded. It is not called when a fault fails the task.
	apply func(r *taskRun) error
	// abort runs (with Sim.mu held) when the task fails after begin succeeded.
	abort func(r *taskRun)
	// after runs (without Sim.mu) once the task ended OK, from the task's
	// goroutine: what the task hands on (HA's migration after hamigrate).
	after func()
}

// startTask creates the task, returns its UPID and runs it in a goroutine
// owned by s (stopped by Close). It reports false if s is closed.
func (s *Sim) startTask(sp taskSpec) (string, bool) {
	now := s.now()
	f := s.currentFaults()
	dur := s.opts.TaskDuration
	if sp.dur > 0 {
		dur = sp.dur
	}
	dur += sp.extra
	if s.chance(f.SlowTaskRate) {
		dur = time.Duration(f.SlowTaskFactor) * dur
	}
	failTask := s.chance(f.TaskFailRate)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return "", false
	}
	s.nextPID++
	id := ""
	if sp.vmid != 0 {
		id = strconv.Itoa(sp.vmid)
	}
	node := sp.q.vars["node"]
	if sp.node != "" {
		node = sp.node
	}
	if node == "" {
		node = s.node
	}
	up := pve.UPID{
		Node:      node,
		PID:       s.nextPID,
		PStart:    uint64(now.Sub(s.bootTime) / (10 * time.Millisecond)),
		StartTime: now.Unix(),
		Type:      sp.typ,
		ID:        id,
		User:      sp.q.tok.id,
	}
	tctx, cancel := context.WithCancel(s.ctx)
	t := &task{upid: up, id: up.String(), vmid: sp.vmid, tokenID: sp.q.tok.id, status: "running", cancel: cancel, done: make(chan struct{})}
	s.tasks[t.id] = t
	s.taskOrder = append(s.taskOrder, t)
	s.wg.Add(1)
	s.mu.Unlock()

	go s.runTask(tctx, t, sp, dur, failTask)
	return t.id, true
}

func (s *Sim) runTask(ctx context.Context, t *task, sp taskSpec, dur time.Duration, failTask bool) {
	defer s.wg.Done()
	defer t.cancel()
	r := &taskRun{t: t}
	var err error
	began := false
	locked := false
	defer func() {
		if locked {
			sp.g.release()
		}
	}()

	if sp.pre != nil {
		sp.pre(r)
	}
	if src := sp.source; src != nil {
		took := false
		if sp.sourceExclusive {
			took = src.acquire(ctx, sp.sourceWait)
		} else {
			took = src.acquireShared(ctx, sp.sourceWait)
		}
		if !took {
			err := taskError(lockTimeoutError(src.kind, src.vmid))
			if ctx.Err() != nil {
				err = taskError("interrupted by signal")
			}
			if sp.abort != nil {
				s.mu.Lock()
				sp.abort(r)
				s.mu.Unlock()
			}
			s.finishTask(r, err)
			return
		}
		defer func() {
			if sp.sourceExclusive {
				src.release()
			} else {
				src.releaseShared()
			}
		}()
	}
	if sp.g != nil {
		if !sp.g.acquire(ctx, s.opts.LockTimeout) {
			if ctx.Err() != nil {
				s.finishTask(r, taskError("interrupted by signal"))
			} else {
				s.finishTask(r, taskError(lockTimeoutError(sp.kind, sp.vmid)))
			}
			return
		}
		locked = true
	}
	if sp.begin != nil {
		s.mu.Lock()
		err = sp.begin(r)
		s.mu.Unlock()
		if err != nil {
			s.finishTask(r, err)
			return
		}
	}
	began = true

	timer := time.NewTimer(dur)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		err = taskError("interrupted by signal")
	}
	s.mu.Lock()
	if err == nil && failTask {
		err = taskErrf("command 'sim-fault-injection' failed: exit code 1")
	}
	if err == nil && sp.apply != nil {
		err = sp.apply(r)
	}
	if err == nil {
		s.recordLocked(Mutation{Method: sp.q.method, Path: sp.q.path, Op: sp.op, VMID: sp.vmid, Params: sp.q.opParams(), UPID: t.id, TokenID: sp.q.tok.id})
	} else if began && sp.abort != nil {
		sp.abort(r)
	}
	s.mu.Unlock()
	s.finishTask(r, err)
	if err == nil && sp.after != nil {
		sp.after()
	}
}

// finishTask marks the task stopped with PVE's exit status and last log line.
func (s *Sim) finishTask(r *taskRun, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := r.t
	switch {
	case err != nil:
		t.exit = err.Error()
		t.log = append(t.log, "TASK ERROR: "+t.exit)
	case r.warnings > 0:
		t.exit = fmt.Sprintf("WARNINGS: %d", r.warnings)
		t.log = append(t.log, "TASK "+t.exit)
	default:
		t.exit = "OK"
		t.log = append(t.log, "TASK OK")
	}
	t.status = "stopped"
	t.endtime = s.now().Unix()
	close(t.done)
	s.log.Debug("sim: task finished", "upid", t.id, "exitstatus", t.exit)
}

// taskResponse starts the task and answers with its UPID.
func (s *Sim) taskResponse(sp taskSpec) response {
	upid, okT := s.startTask(sp)
	if !okT {
		return fail(500, "sim: shutting down")
	}
	return response{status: 200, data: upid, executed: true}
}
