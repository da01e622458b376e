// Package replicatest holds the end-to-end test of hub replicas: three
// `steward hub` processes on one PostgreSQL database (a throwaway pgtest
// cluster), fifty agents spread over them, one replica killed with
// SIGKILL and another restarted while desired state changes and signed
// jobs run. It has no code of its own outside its test.
package replicatest
