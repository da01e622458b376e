#!/usr/bin/env bash
# Interop check: an unmodified third-party PVE client (proxmox-api, from
# npm, pinned by package-lock.json) against `steward sim` on loopback.
# Needs Node.js >= 18 with npm; installs them from Debian when missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm openssl
fi
tmp=$(mktemp -d)
sim_pid=
cleanup() { [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
(cd "$repo" && go build -o "$tmp/steward" ./cmd/steward)
"$tmp/steward" sim --listen 127.0.0.1:0 --guests 10 --task-duration 50ms >"$tmp/sim.out" 2>&1 &
sim_pid=$!
for _ in $(seq 100); do grep -q '^Token:' "$tmp/sim.out" && break; sleep 0.1; done
SIM_URL=$(awk '/^URL:/{print $2}' "$tmp/sim.out")
SIM_TOKEN=$(awk '/^Token:/{print $2}' "$tmp/sim.out")
[ -n "$SIM_URL" ] && [ -n "$SIM_TOKEN" ] || { cat "$tmp/sim.out"; echo "interop: simulator did not start" >&2; exit 1; }
# Trust exactly the simulator's certificate.
hostport=${SIM_URL#https://}
openssl s_client -connect "$hostport" </dev/null 2>/dev/null | openssl x509 >"$tmp/sim.pem"
export SIM_URL SIM_TOKEN NODE_EXTRA_CA_CERTS="$tmp/sim.pem"
node "$here/interop.js"
