#!/usr/bin/env bash
# `make demo`: bring the sandbox up and show the running app.
set -euo pipefail
dir=${1:-.sandbox}
sp=.venv/bin/stackpatch
$sp sandbox up --dir "$dir"
$sp sandbox status --dir "$dir"
front=$($sp sandbox status --dir "$dir" --json | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["front_url"])')
echo
echo "$front/version answers:"
.venv/bin/python - "$front/version" <<'PY'
import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())
PY
