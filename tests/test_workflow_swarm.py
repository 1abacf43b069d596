"""Done when (issue 14), on sandbox forks: hooks, notifications, named targets and promote, logs and
the shell, against the real swarm and registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deploy_helpers import cli, images_now, journal_records, lock_of, push_hotfix, release, write_release

pytestmark = pytest.mark.docker

DUMP_ENV = """#!/usr/bin/env python3
import json, os, sys
with open(sys.argv[0] + ".env.json", "a") as f:
    f.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("STACKPATCH_")}) + "\\n")
"""


def add_config(fork, text: str) -> None:
    """Append to the fork's stackpatch.toml (hidden from git status by the fork's skip-worktree)."""
    p = fork.config_path
    p.write_text(p.read_text() + "\n" + text)


def hook(dir_: Path, name: str, text: str) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    p = dir_ / name
    p.write_text(text)
    p.chmod(0o755)
    return p


def test_a_failing_pre_deploy_hook_stops_ship_after_the_push_before_any_change(fork, tmp_path):
    from stackpatch import config as config_mod
    from stackpatch.images import registry as registry_mod
    hooks_dir = tmp_path / "hooks"
    add_config(fork, f'[hooks]\ndir = "{hooks_dir}"\n')
    hook(hooks_dir, "pre-deploy", "#!/bin/sh\necho \"deploying $STACKPATCH_VERSION to $STACKPATCH_STACK\"\n"
                                  "echo 'change freeze until Monday'\nexit 1\n")
    app = fork.app_dir
    sha = push_hotfix(app)
    before = images_now(app)
    r = cli("ship", "--yes", cwd=app, env={"STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}, timeout=900)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("stackpatch: error: hook pre-deploy") and "change freeze until Monday" in last
    assert f"deploying 26.11.1b to {fork.stack}" in r.stderr   # its output was streamed
    # after the push: the registry holds the release's tags ...
    cfg = config_mod.load(fork.config_path)
    reg = registry_mod.for_config(cfg)
    for name in cfg.images:
        _, rname = registry_mod.split_repository(cfg.image_ref(name))
        assert reg.image_labels(rname, f"git-commit-{sha[:7]}") is not None
    # ... and before any change: same images, no run, no lock
    assert images_now(app) == before
    assert journal_records(app) == []
    assert lock_of(fork.stack) is None


def test_post_rollback_receives_the_variables_after_an_automatic_rollback(sandbox, fork, tmp_path):
    hooks_dir = tmp_path / "hooks"
    add_config(fork, f'[hooks]\ndir = "{hooks_dir}"\n')
    post = hook(hooks_dir, "post-rollback", DUMP_ENV)
    rel = release(sandbox, "crash")
    before = images_now(fork.app_dir)
    r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes")
    assert r.returncode == 1, r.stderr
    assert images_now(fork.app_dir) == before
    [env] = [json.loads(ln) for ln in Path(str(post) + ".env.json").read_text().splitlines()]
    recs = journal_records(fork.app_dir)
    start = recs[0]
    assert env["STACKPATCH_RESULT"] == "rolled-back" and env["STACKPATCH_OPERATION"] == "deploy"
    assert env["STACKPATCH_VERSION"] == rel.version and env["STACKPATCH_REVISION"] == rel.revision
    assert env["STACKPATCH_PREVIOUS_VERSION"] == sandbox.release
    assert env["STACKPATCH_RUN_ID"] == start["run_id"]
    assert env["STACKPATCH_STACK"] == fork.stack and env["STACKPATCH_TARGET"] == "default"
    assert env["STACKPATCH_SERVICES"] == ",".join(["phpfiles", "phpha", "web"])
    assert env["STACKPATCH_PERFORMER"] == start["owner"]
    assert [(x["hook"], x["ok"]) for x in recs if x["kind"] == "hook"] == [("post-rollback", True)]
