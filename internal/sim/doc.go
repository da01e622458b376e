// Package sim is a simulator of the Proxmox VE REST API subset steward uses,
// held to real PVE by the official API schema (package pveschema) and the
// captured responses in internal/pve/testdata/fixtures.
//
// A Sim holds one node (or, with Options.Nodes, a cluster of nodes with
// migration and HA: cluster.go, migrate.go) with QEMU and LXC guests as raw config maps, runs
// asynchronous tasks with real-format UPIDs, enforces per-guest config locks
// and the `lock` field, checks API-token privileges, injects faults and
// records every mutation it executed. Handler serves the API under
// /api2/json and a small control API under /_sim/; Serve wraps it in TLS with
// a self-signed certificate whose fingerprint is published as PVE does.
//
// Wire fidelity (see ../../shared FIDELITY.md, copied facts cited there):
// envelope {"data":...}; errors carry the message in the HTTP reason phrase
// and in the body `message` (PVE >= 8.3 behaviour; Options.LegacyErrors drops
// it), parameter errors in `errors`; 401 has an empty body; status >= 400
// closes the connection, a 200 says "Connection: Keep-Alive"; bodies over
// 1024 bytes are gzip-compressed when the client accepts gzip. Responses
// with a non-standard reason phrase are written on the hijacked
// connection, because net/http cannot set one. Checks run in
// pve-manager's order: authentication, path (501), duplicate path
// parameters, permissions (403), unknown node (500), parameter validation
// (400), handler. TestFidelity* in fidelity_test.go each check one
// statement of FIDELITY.md by request.
//
// Pending changes (pending.go) follow qemu-server and pve-container: a
// config write goes through the pending section; a stopped guest applies
// it at once, a running one applies only what it can take live and keeps
// the rest pending until a restart. GET …/config shows the pending values
// (current=1 the running ones), GET …/pending lists {key, value, pending,
// delete} (digest included, as the loaded config carries it), the digest
// covers the [PENDING] section, `revert` drops pending keys. What applies
// live on a running guest:
//
//   - QEMU, always: the fast-plug keys (name, description, tags, onboot,
//     startup, protection, shares, hookscript, lock, migrate_downtime,
//     migrate_speed, vmstatestorage, the cloud-init keys and ipconfigN),
//     cpulimit, cpuunits, balloon unless it turns the balloon device on
//     or off. With the `hotplug` features (default network,disk,usb; "0"
//     none): vcpus with cpu, memory with memory, netN with network (a
//     change that keeps model and MAC also without), scsiN/virtioN with
//     disk (never ide, sata, efidisk0, tpmstate0), usbN and tablet with
//     usb. Everything else waits, notably cores, sockets, cpu, numa, bios,
//     machine and agent. Deletes follow the same rules.
//   - LXC: description, onboot, startup, protection, hostname, hookscript,
//     cores, tags, lock, and cpulimit, cpuunits, memory, swap, netN, a new
//     mpN or devN; deletes of those and of swap, cpulimit, cpuunits, netN.
//     Everything else (rootfs, a changed mpN, features, arch, ostype,
//     nameserver, ...) waits.
//
// QEMU applies pending changes when the guest stops and when it starts,
// LXC when it starts; POST …/status/reboot (qmreboot/vzreboot, timeout =
// the shutdown's) shuts down and starts again within its task, so they
// are applied and the guest runs when the task ends (on PVE the restart
// follows the task); a guest ignoring ACPI fails the reboot and keeps
// running with its changes pending. Not modelled: hotplug errors (PVE
// answers 400 and leaves the key pending; the limits qemu_memory_hotplug
// enforces, agent sub-options), the machine-version condition of USB
// hotplug.
//
// Documented simplifications: task log download=1 is not streamed as a
// file; `digest` is the SHA-1
// of the rendered config text, so it changes whenever the stored config
// changes (a write that leaves the text unchanged keeps it, as on PVE); a
// guest that ignores ACPI shutdown (GuestSpec.IgnoreShutdown) makes the
// shutdown task run for twice TaskDuration, standing for the timeout, unless
// timeout=0; privileges on an ACL path are the union of the privileges
// granted on it and on its ancestors.
//
// Volumes have a real size apart from the size= a config claims: a config
// write never resizes a volume (QEMU and LXC mount points store the real
// size, an LXC rootfs stores what was written), only PUT …/resize grows
// one; VolumeSize reports it (see resize.go).
//
// Creating guests (templates.go, clone.go, clonect.go, cloudinit.go):
// Options.Templates seeds a QEMU template 9000 (base disk, cloud-init
// drive), a container template 9001 (base rootfs) and a container
// template volume in local's vztmpl content; POST …/qemu/{vmid}/clone is
// qemu-server's clone_vm (task qmclone), POST …/lxc/{vmid}/clone
// pve-container's (task vzclone, the source locked for the whole task);
// clone tasks run for Options.CloneDuration; an LXC create needs its ostemplate in a
// storage's content; generating the cloud-init drive (PUT …/cloudinit, a
// start) records the config's cloud-init state in its [special:cloudinit]
// section, which GET …/cloudinit compares with the config.
//
// Routing follows pve-common's find_handler: empty path segments are
// skipped, and below /nodes/{node}/storage/{storage}/content the rest of
// the path is one volume id. Resource pools are read as on PVE (pools.go);
// they are made through AddPool or the control API, not the API's own
// pool writes.
package sim
