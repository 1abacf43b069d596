#!/usr/bin/env bash
# Ensure the system packages stackpatch, its sandbox and its tests need, and a running Docker engine.
# A fresh Debian 12 (bookworm) or 13 (trixie) with python3 is enough: run this as root (or `make setup`).
# apt runs only when something is missing; dockerd is started (detached, logging to a file) only when no
# engine answers. Safe to run again.
set -euo pipefail

# Every program the code, the scripts and the tests run that a minimal Debian with python3 does not have,
# and the Debian package that provides it. tests/test_programs.py reads this table and fails when the
# code runs a program that is neither here nor part of a minimal Debian.
PROGRAMS="
dockerd          docker.io
docker           docker.io
docker-registry  docker-registry
mmdebstrap       mmdebstrap
git              git
git-flow         git-flow
make             make
chromium         chromium
ip               iproute2
iptables         iptables
sshd             openssh-server
"

need=()
add() {  # add PACKAGE once
  local p
  for p in "${need[@]}"; do [ "$p" != "$1" ] || return 0; done
  need+=("$1")
}
while read -r prog pkg; do
  [ -n "$prog" ] || continue
  command -v "$prog" >/dev/null 2>&1 || add "$pkg"
done <<< "$PROGRAMS"
# Debian's python3 has no venv/ensurepip until python3-venv is installed (`make venv` needs it)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || add python3-venv

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing packages ${need[*]}: run 'sudo apt-get install ${need[*]}' (or make as root)" >&2
    exit 2
  fi
  echo "setup: installing ${need[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

engine_ok() { docker info >/dev/null 2>&1; }
if ! engine_ok; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: no Docker engine answers: start one (sudo systemctl start docker) and retry" >&2
    exit 2
  fi
  log=${DOCKERD_LOG:-/var/log/stackpatch-dockerd.log}
  echo "setup: starting dockerd in the background (log: $log)"
  # detached: its own session, output to a log, no stdin, so nothing keeps make's stdout open
  setsid dockerd >"$log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    engine_ok && break
    sleep 1
  done
  if ! engine_ok; then
    echo "setup: dockerd did not come up within 60s: see $log" >&2
    tail -n 5 "$log" >&2 || true
    exit 2
  fi
fi
echo "setup: Docker engine $(docker version --format '{{.Server.Version}}') is up"
