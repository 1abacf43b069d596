#!/usr/bin/env bash
# `make demo`: bring the sandbox up and show the running app.
set -euo pipefail
dir=${1:-.sandbox}
sp=.venv/bin/stackpatch
$sp sandbox up --dir "$dir"
$sp sandbox status --dir "$dir"
