"""`stackpatch hooks init | list`: the team's own executables around ship, deploy, rollback and finish."""

from __future__ import annotations

import os
from pathlib import Path

import click

from stackpatch import hooks, ui

REPO = click.option("--repo", "repo", default=".", show_default=True,
                    type=click.Path(exists=True, file_okay=False, dir_okay=True),
                    help="The app repo holding stackpatch.toml.")

_COMMON = """\
# Variables: STACKPATCH_VERSION, STACKPATCH_REVISION, STACKPATCH_PREVIOUS_VERSION, STACKPATCH_TARGET,
# STACKPATCH_STACK, STACKPATCH_RUN_ID, STACKPATCH_PERFORMER, STACKPATCH_SERVICES (comma-separated),
# STACKPATCH_OPERATION (ship, deploy, rollback, abort, finish){result}.
# It runs in the repo, stdin closed, its output streamed; [hooks] timeout (default 300 s) kills it.
"""

SAMPLES: dict[str, str] = {
    "pre-ship": '''#!/usr/bin/env python3
# stackpatch pre-ship hook: refuse to ship unless the hotfix branch's CI status is green.
# Enable it: rename this file to `pre-ship` (it must stay executable).
#
# Runs before anything is built. A non-zero exit stops `stackpatch ship` (exit 2) with this hook's
# last line of output. It reads the status from the command in stackpatch.toml, for example:
#
#   [hooks]
#   ci_status_command = ["gh", "run", "list", "--branch", "{branch}", "--commit", "{revision}",
#                        "--limit", "1", "--json", "conclusion", "--jq", ".[0].conclusion"]
#
# The command's last line must be `success`. STACKPATCH_BRANCH names the hotfix branch.
''' + _COMMON.format(result="") + '''
import json
import os
import subprocess
import sys

raw = os.environ.get("STACKPATCH_CI_STATUS_COMMAND")
if not raw:
    print("no [hooks] ci_status_command in stackpatch.toml: set it, or remove .stackpatch/hooks/pre-ship")
    sys.exit(1)
branch = os.environ.get("STACKPATCH_BRANCH", "")
revision = os.environ.get("STACKPATCH_REVISION", "")
argv = [a.replace("{branch}", branch).replace("{revision}", revision) for a in json.loads(raw)]
try:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
except (OSError, subprocess.TimeoutExpired) as e:
    print(f"the CI status command {argv[0]!r} could not run: {e}")
    sys.exit(1)
lines = done.stdout.strip().splitlines()
status = lines[-1].strip() if lines else ""
if done.returncode != 0 or status != "success":
    print(f"CI of {branch} at {revision[:7]} is {status or 'unknown'!r}, not 'success': wait for it or fix it")
    sys.exit(1)
print(f"CI of {branch} at {revision[:7]}: success")
''',
    "pre-deploy": '''#!/bin/sh
# stackpatch pre-deploy hook: runs after the images are pushed, before the lock is taken and before
# any service changes. A non-zero exit stops the command (exit 2); the stack is not touched.
# Enable it: rename this file to `pre-deploy`.
''' + _COMMON.format(result="") + '''
echo "deploying $STACKPATCH_VERSION ($STACKPATCH_REVISION) to $STACKPATCH_STACK, run $STACKPATCH_RUN_ID"
''',
    "post-deploy": '''#!/bin/sh
# stackpatch post-deploy hook: runs after a deploy succeeded and the CDN purge ran.
# Its failure is reported and journaled; the deploy stays deployed.
# Enable it: rename this file to `post-deploy`.
''' + _COMMON.format(result=", STACKPATCH_RESULT (deployed or deployed-purge-failed)") + '''
echo "$STACKPATCH_PERFORMER deployed $STACKPATCH_VERSION on $STACKPATCH_STACK ($STACKPATCH_RESULT)"
''',
    "post-rollback": '''#!/bin/sh
# stackpatch post-rollback hook: runs after any rollback: the automatic one of a failed deploy,
# `stackpatch abort`, and `stackpatch rollback`. Its failure is reported and journaled.
# Enable it: rename this file to `post-rollback`.
''' + _COMMON.format(result=", STACKPATCH_RESULT (rolled-back, aborted, rollback-failed, deployed)") + '''
echo "$STACKPATCH_STACK: $STACKPATCH_OPERATION of $STACKPATCH_VERSION ended $STACKPATCH_RESULT; \\
runs $STACKPATCH_PREVIOUS_VERSION again"
''',
    "pre-finish": '''#!/bin/sh
# stackpatch pre-finish hook: runs before `stackpatch finish` merges anything. A non-zero exit stops
# it (exit 2). Enable it: rename this file to `pre-finish`.
''' + _COMMON.format(result="") + '''
echo "finishing $STACKPATCH_VERSION ($STACKPATCH_BRANCH)"
''',
    "post-finish": '''#!/bin/sh
# stackpatch post-finish hook: runs after the merges and the tag are pushed.
# Enable it: rename this file to `post-finish`.
''' + _COMMON.format(result=", STACKPATCH_RESULT (finished)") + '''
echo "$STACKPATCH_VERSION is merged and tagged"
''',
}


def register(main: click.Group) -> None:
    main.add_command(hooks_group)


@click.group("hooks")
def hooks_group() -> None:
    """Your executables around ship, deploy, rollback and finish.

    \b
    Files in .stackpatch/hooks/ (`[hooks] dir`), named after the point they run at:
      pre-ship       before anything is built
      pre-deploy     after the push, before the lock and any change to the stack
      post-deploy    after a deploy and its CDN purge
      post-rollback  after any rollback (automatic, `abort`, `rollback`)
      pre-finish     before `finish` merges
      post-finish    after `finish` pushed
    A failing pre-* hook stops the command (exit 2) before it changes anything; a failing post-*
    hook is reported and journaled and changes no outcome.
    """


@hooks_group.command("init")
@REPO
def init_cmd(repo: str) -> None:
    """Write a documented sample of every hook (NAME.sample, inactive until renamed to NAME).

    The pre-ship sample refuses to ship unless the hotfix branch's CI is green, reading the status
    from `[hooks] ci_status_command`. Existing files are left alone.
    """
    root = Path(repo).resolve()
    settings = hooks.settings_for(root)
    d = hooks.hooks_dir(root, settings)
    d.mkdir(parents=True, exist_ok=True)
    for name in hooks.NAMES:
        p = d / f"{name}.sample"
        if p.exists():
            ui.info(f"{p} exists: left as it is")
            continue
        p.write_text(SAMPLES[name])
        p.chmod(0o755)
        ui.ok(f"wrote {p}")
    ui.info(f"Enable a hook by renaming it without .sample, e.g. `mv {d}/pre-ship.sample {d}/pre-ship`.")


@hooks_group.command("list")
@REPO
def list_cmd(repo: str) -> None:
    """Which hooks are enabled (an executable file named after its point)."""
    root = Path(repo).resolve()
    settings = hooks.settings_for(root)
    d = hooks.hooks_dir(root, settings)
    for name in hooks.NAMES:
        p = d / name
        state = ("enabled" if os.access(p, os.X_OK) else "not executable (ignored)") if p.is_file() else "-"
        ui.out.print(f"{name:<14} {state}", markup=False)
