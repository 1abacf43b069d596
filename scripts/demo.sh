#!/usr/bin/env bash
# `make demo`: bring the sandbox up, then run the whole hotfix routine on it and time each step:
# start a hotfix from the deployed release, a one-line fix, push, ship (build, verify, push, waves,
# migrations, rollback on failure), status, history, the run's report page, finish. Safe to run again: each run ships the
# next hotfix letter (26.11.1b, then c, ...).
set -euo pipefail
dir=$(realpath -m "${1:-.sandbox}")
root=$(pwd)
sp="$root/.venv/bin/stackpatch"
py="$root/.venv/bin/python"
declare -a names=() secs=()

step() {  # step NAME COMMAND...: run it, time it, remember the time
  local name=$1; shift
  printf '\n\033[1m== %s\033[0m\n' "$name"
  local t0=$EPOCHREALTIME
  "$@"
  names+=("$name"); secs+=("$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')")
}

version_of() {
  "$py" - "$1/version" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())
PY
}

step "sandbox up" "$sp" sandbox up --dir "$dir"
front=$("$sp" sandbox status --dir "$dir" --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["front_url"])')
app=$("$sp" sandbox status --dir "$dir" --json | "$py" -c 'import json,sys; print(json.load(sys.stdin)["app_dir"])')
echo "front $front serves: $(version_of "$front")"

cd "$app"
git checkout -q develop
step "start (hotfix from the deployed release)" "$sp" start
branch=$(git rev-parse --abbrev-ref HEAD)
fix() {
  echo "# ${branch#hotfix/}: one-line fix ($(date -u +%FT%TZ))" >> app/server.py
  git commit -q -am "Fix for ${branch#hotfix/}"
  git push -q
  git log --oneline -1
}
step "one-line fix, commit, push" fix
step "plan (read-only)" "$sp" plan
step "ship (build, verify, push, canary, migrations, rest)" "$sp" ship --yes
echo "front $front serves: $(version_of "$front")"
step "status" "$sp" status
step "history" "$sp" history
step "report (the run's page: open it in a browser)" "$sp" report
step "finish (merge master + develop, tag, atomic push)" "$sp" finish

printf '\n\033[1m== summary\033[0m\n'
for i in "${!names[@]}"; do printf '  %-55s %7ss\n' "${names[$i]}" "${secs[$i]}"; done
echo
echo "Roll back with: (cd $app && $sp rollback --yes)   Tear down: $sp sandbox down --dir $dir"
