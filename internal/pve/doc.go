// Package pve is steward's client for the Proxmox VE REST API; every other
// package talks to PVE through it.
package pve
