// Package crashpoint marks the places in the agent where a crash is most
// interesting (a journal record durable but its mutation not sent, a task
// started but not recorded, ...). In production nothing is installed and
// Hit is a no-op costing one atomic load. Crash tests install a hook that
// kills the process with SIGKILL at a named point, restart it, and prove
// every mutation still ran exactly once.
package crashpoint

import "sync/atomic"

// The named points, in the order an operation passes them.
const (
	BeforeBegin       = "before-begin"        // gate passed, nothing journaled
	AfterBegin        = "after-begin"         // begin durable, PVE not called
	AfterTaskReturned = "after-task-returned" // PVE returned a UPID, not yet journaled
	AfterTaskRecorded = "after-task-recorded" // UPID durable, task not waited on
	AfterCall         = "after-call"          // PVE call (and task) finished, end not journaled
	AfterEnd          = "after-end"           // end durable
	BeforeReceipt     = "before-receipt"      // a journal record durable, its receipt not yet written (agents with a hub)
	AfterReceipt      = "after-receipt"       // the receipt durable, not yet shipped to the hub
	BeforeRecover     = "before-recover"      // at start-up, before in-flight ops are resolved
	AfterResolve      = "after-resolve"       // recovery resolved an op, end not yet journaled
)

var hook atomic.Pointer[func(string)]

// SetHook installs f to be called at every point; nil removes it. Only
// tests install hooks.
func SetHook(f func(name string)) {
	if f == nil {
		hook.Store(nil)
		return
	}
	hook.Store(&f)
}

// Hit marks that execution reached the named point.
func Hit(name string) {
	if f := hook.Load(); f != nil {
		(*f)(name)
	}
}
