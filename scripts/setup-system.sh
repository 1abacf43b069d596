#!/usr/bin/env bash
# Ensure the system packages stackpatch's sandbox and tests need, and a running Docker engine.
# apt runs only when a package is missing; dockerd is started (detached, logging to a file)
# only when no engine answers. Safe to run again.
set -euo pipefail

need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v git-flow >/dev/null 2>&1 || need+=(git-flow)
command -v git >/dev/null 2>&1 || need+=(git)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)  # the sandbox registry's bcrypt htpasswd
command -v chromium >/dev/null 2>&1 || need+=(chromium)       # the report page's browser tests (headless)
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
