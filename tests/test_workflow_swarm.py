"""Done when (issue 14), on sandbox forks: hooks, notifications, named targets and promote, logs and
the shell, against the real swarm and registry."""

from __future__ import annotations

import json
import os
import subprocess
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


def images_on(app: Path, target: str) -> dict[str, str]:
    r = cli("status", "--repo", str(app), "--target", target, "--json")
    assert r.returncode == 0, r.stderr
    return {n: s["image"] for n, s in json.loads(r.stdout)["services"].items() if s["managed"]}


def test_promote_moves_stagings_digests_to_production_and_the_webhook_hears_each_event(sandbox, fork, tmp_path):
    from stackpatch.sandbox import api
    from tests.fakes.webhook import Webhook
    app = str(fork.app_dir)
    staging = fork.stack.replace("-prod", "-stg")
    hook = Webhook()
    env = {"SP_WF_WEBHOOK": hook.url}
    try:
        api.add_staging(sandbox, fork.app_dir, staging)
        add_config(fork, '[[notify]]\nurl_env = "SP_WF_WEBHOOK"\nformat = "json"\n')
        # the sandbox's stackpatch.toml now requires a target: a bare command is refused in one line
        r = cli("status", "--repo", app)
        assert r.returncode == 2 and "require_target = true" in r.stderr, r.stderr
        prod_before = images_on(fork.app_dir, "production")

        crash, good = release(sandbox, "crash"), release(sandbox, "good")
        r = cli("deploy", "--repo", app, "--target", "staging", "--yes",
                "--release", str(write_release(crash, tmp_path / "crash.json")), env=env)
        assert r.returncode == 1 and "rolled back" in r.stderr, r.stderr
        r = cli("promote", "--repo", app, "--from", "staging", "--to", "production", "--yes", env=env)
        assert r.returncode == 2, r.stderr
        assert "target staging's last run" in r.stderr and "ended rolled-back" in r.stderr
        assert images_on(fork.app_dir, "production") == prod_before

        r = cli("deploy", "--repo", app, "--target", "staging", "--yes",
                "--release", str(write_release(good, tmp_path / "good.json")), env=env)
        assert r.returncode == 0, r.stderr
        on_staging = images_on(fork.app_dir, "staging")
        assert on_staging["phpfiles"].endswith(good.images["app"].digest)
        r = cli("promote", "--repo", app, "--from", "staging", "--to", "production", "--yes", "--json", env=env)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["run"]["state"] == "deployed" and out["release"]["version"] == good.version
        # production runs exactly staging's digests, and nothing was built
        assert images_on(fork.app_dir, "production") == on_staging
        assert "build" not in r.stderr.lower().replace("build_timings", "")
        hist = json.loads(cli("history", "--repo", app, "--target", "production", "--json", "--offline").stdout)
        assert [(h["target"], h["op"], h["state"]) for h in hist] == [
            ("production", "deploy", "deployed"), ("staging", "deploy", "deployed"),
            ("staging", "deploy", "rolled-back")]
        start = journal_records(fork.app_dir)[0]
        assert start["target"]["name"] == "production" and start["promoted_from"] == "staging"
        # one message per event: staging rolled back, staging deployed, production deployed
        assert [(b["event"], b["target"], b["stack"]) for b in hook.bodies] == [
            ("rolled-back", "staging", staging), ("deployed", "staging", staging),
            ("deployed", "production", fork.stack)]
    finally:
        hook.close()
        api.remove_stack(staging)


def _pty_run(argv: list[str], cwd: Path, send: bytes, timeout: float = 60) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as stdin, stdout and stderr; type `send`; (exit code, output)."""
    import pty
    import select
    import time
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    out = b""
    sent = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:   # EIO: the other side closed
                    break
                if not chunk:
                    break
                out += chunk
                if not sent and b"exit the shell to come back" in out:
                    time.sleep(1.5)    # let docker exec attach before typing
                    os.write(master, send)
                    sent = True
            elif p.poll() is not None:
                break
        code = p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
    return code, out.decode(errors="replace")


def test_logs_show_the_canarys_output_and_shell_opens_in_the_canary_under_a_pty(sandbox, fork):
    import subprocess as sp
    from deploy_helpers import CLI
    from stackpatch.targets.swarm import SwarmTarget
    app = fork.app_dir
    # logs: the canary's own start-up line, prefixed with its task and node; no terminal needed
    r = cli("logs", "phpfiles", "--since", "1h", "--repo", str(app))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if "listening on" in ln]
    assert lines and all(ln.startswith(f"{fork.stack}_phpfiles.1@") for ln in lines), r.stdout[-2000:]
    assert f"acme app {sandbox.release} ({sandbox.revision})" in lines[0]
    r = cli("logs", "phpfiles", "--since", "soon", "--repo", str(app))
    assert r.returncode == 2 and "--since 'soon' is not a duration" in r.stderr

    # shell without a terminal: one line, exit 2
    r = cli("shell", "--repo", str(app))
    assert r.returncode == 2
    [line] = r.stderr.strip().splitlines()
    assert "shell needs a terminal" in line and "stackpatch logs" in line

    # shell under a pseudo-terminal: in the canary's running task, saying which task and node
    task = SwarmTarget("unix:///var/run/docker.sock", fork.stack).running_task("phpfiles")
    code, out = _pty_run([CLI, "shell", "--repo", str(app)], app,
                         b"echo in-$(hostname)-$((40+2)); test -t 0 && echo on-a-tty; exit 7\n")
    assert f"shell in task {fork.stack}_phpfiles.1" in out and f"on node {task.node}" in out, out
    assert f"in-{task.container_id[:12]}-42" in out and "on-a-tty" in out, out
    assert code == 7, out
    assert sp.run(["docker", "inspect", "-f", "{{.State.Running}}", task.container_id],
                  capture_output=True, text=True).stdout.strip() == "true"
