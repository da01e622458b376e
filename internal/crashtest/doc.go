// Package crashtest holds the agent's crash tests: `steward agent --once`
// runs as a child process against an in-process PVE simulator and is
// killed with SIGKILL at named points (inside the agent, or by the
// simulator just before or just after it executes a mutation), restarted,
// and the simulator's mutation record must show every intended mutation
// executed exactly once and the guests converged, for a tick that
// converges existing guests, for one that creates guests (a clone and
// a container from a template and a clone of a container template) and
// for one that takes a scheduled
// snapshot. The package has no
// non-test code.
package crashtest
