"""Hooks: pre-* hooks stop a command before it changes anything, post-* hooks run after every ending
with the run's variables and never change its outcome. Against the in-memory target (the plumbing);
tests/test_workflow_swarm.py runs the done-when cases on the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackpatch import hooks
from stackpatch.commands.hooks_cmd import SAMPLES
from stackpatch.errors import FaultError, UserError
from stackpatch.release import deploy as D
from stackpatch.release import journal as J
from stackpatch.reporter import Recorder

from tests.test_runner_memory import NEW_APP, OLD, OLD_REV, NEW_REV, records, release, world  # noqa: F401

DUMP_ENV = """#!/usr/bin/env python3
import json, os, sys
with open(sys.argv[0] + ".env.json", "a") as f:
    f.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("STACKPATCH_")}) + "\\n")
print("hook says hello")
sys.exit(int(os.environ.get("HOOK_EXIT", "0")))
"""


def write_hook(cfg, name: str, text: str) -> Path:
    d = cfg.root / ".stackpatch" / "hooks"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text)
    p.chmod(0o755)
    return p


def seen(p: Path) -> list[dict]:
    f = Path(str(p) + ".env.json")
    return [json.loads(ln) for ln in f.read_text().splitlines()] if f.exists() else []


def run_deploy(cfg, target, rec=None):
    return D.deploy(cfg, release(), yes=True, pause=False, reporter=rec or Recorder(), target=target)


def test_a_failing_pre_deploy_hook_stops_before_the_lock_and_any_change(world):
    cfg, target, _ = world
    p = write_hook(cfg, "pre-deploy", "#!/bin/sh\necho checking the change window\necho 'outside the change window'\nexit 1\n")
    with pytest.raises(UserError) as e:
        run_deploy(cfg, target)
    msg = str(e.value)
    assert "\n" not in msg
    assert "hook pre-deploy" in msg and str(p) in msg and "exited 1" in msg
    assert msg.split("exited 1: ")[1].startswith("outside the change window")
    assert target.updates == [] and target.lock is None
    assert not J.runs_dir(cfg.root).exists() or not list(J.runs_dir(cfg.root).glob("*.jsonl"))


def test_post_deploy_gets_every_variable_and_the_output_is_streamed(world):
    cfg, target, _ = world
    pre = write_hook(cfg, "pre-deploy", DUMP_ENV)
    post = write_hook(cfg, "post-deploy", DUMP_ENV)
    rec = Recorder()
    res = run_deploy(cfg, target, rec)
    assert res.state == J.DEPLOYED
    [before] = seen(pre)
    [after] = seen(post)
    for env in (before, after):
        assert env["STACKPATCH_VERSION"] == "26.11.1b" and env["STACKPATCH_REVISION"] == NEW_REV
        assert env["STACKPATCH_PREVIOUS_VERSION"] == "26.11.1"
        assert env["STACKPATCH_STACK"] == "acme-prod" and env["STACKPATCH_TARGET"] == "default"
        assert env["STACKPATCH_RUN_ID"] == res.run_id   # the pre-deploy hook knows the run it precedes
        assert env["STACKPATCH_SERVICES"] == "phpfiles,phpha,web"
        assert env["STACKPATCH_PERFORMER"] == J.owner_host_pid()[0]
    assert "STACKPATCH_RESULT" not in before and after["STACKPATCH_RESULT"] == "deployed"
    assert ("info", "post-deploy │ hook says hello") in rec.messages
    hook_recs = [r for r in records(cfg) if r["kind"] == "hook"]
    assert [(r["hook"], r["ok"]) for r in hook_recs] == [("post-deploy", True)]


def test_post_rollback_runs_after_an_automatic_rollback_with_the_result(world):
    cfg, target, _ = world
    post = write_hook(cfg, "post-rollback", DUMP_ENV)
    deployed = write_hook(cfg, "post-deploy", DUMP_ENV)
    target.behaviour[NEW_APP] = "crash"
    with pytest.raises(FaultError, match="rolled back"):
        run_deploy(cfg, target)
    [env] = seen(post)
    assert env["STACKPATCH_RESULT"] == J.ROLLED_BACK and env["STACKPATCH_OPERATION"] == "deploy"
    assert env["STACKPATCH_VERSION"] == "26.11.1b" and env["STACKPATCH_PREVIOUS_VERSION"] == "26.11.1"
    assert seen(deployed) == []
    assert target.images() == OLD


def test_a_failing_post_hook_is_reported_and_journaled_and_changes_no_outcome(world):
    cfg, target, _ = world
    write_hook(cfg, "post-deploy", "#!/bin/sh\necho 'chat server down' >&2\nexit 3\n")
    rec = Recorder()
    res = run_deploy(cfg, target, rec)
    assert res.state == J.DEPLOYED and target.lock is None
    [warn] = [m for k, m in rec.messages if k == "warn"]
    assert "hook post-deploy" in warn and "exited 3: chat server down" in warn
    [r] = [r for r in records(cfg) if r["kind"] == "hook"]
    assert (r["hook"], r["ok"], r["exit_code"], r["detail"]) == ("post-deploy", False, 3, "chat server down")
    assert J.view(records(cfg)).state == J.DEPLOYED


def test_a_hook_that_runs_too_long_is_killed_and_a_pre_hook_then_refuses(world, tmp_path):
    cfg, target, _ = world
    cfg.hooks.timeout = 1
    marker = tmp_path / "survived"
    write_hook(cfg, "pre-deploy", f"#!/bin/sh\necho waiting\nsleep 30\ntouch {marker}\n")
    with pytest.raises(UserError, match=r"hook pre-deploy .* did not finish in time .*last output: waiting"):
        run_deploy(cfg, target)
    assert target.updates == [] and not marker.exists()


def test_a_hook_file_that_is_not_executable_is_ignored_with_a_warning(world):
    cfg, target, _ = world
    p = write_hook(cfg, "pre-deploy", "#!/bin/sh\nexit 1\n")
    p.chmod(0o644)
    rec = Recorder()
    assert run_deploy(cfg, target, rec).state == J.DEPLOYED
    assert any(k == "warn" and "not executable" in m and "chmod +x" in m for k, m in rec.messages)


def test_abort_and_the_rollback_command_run_post_rollback(world):
    cfg, target, _ = world
    post = write_hook(cfg, "post-rollback", DUMP_ENV)
    run_deploy(cfg, target)
    res = D.rollback(cfg, reporter=Recorder(), target=target)
    assert target.images() == OLD
    [env] = seen(post)
    assert env["STACKPATCH_OPERATION"] == "rollback" and env["STACKPATCH_RUN_ID"] == res.run_id
    assert env["STACKPATCH_VERSION"] == "26.11.1" and env["STACKPATCH_PREVIOUS_VERSION"] == "26.11.1b"


def test_hooks_dir_is_configurable(world, tmp_path):
    cfg, target, _ = world
    cfg.hooks.dir = str(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    p = tmp_path / "elsewhere" / "pre-deploy"
    p.write_text("#!/bin/sh\necho no\nexit 1\n")
    p.chmod(0o755)
    with pytest.raises(UserError, match="elsewhere/pre-deploy"):
        run_deploy(cfg, target)


# ------------------------------------------------------------------ the samples

def test_hooks_init_writes_executable_samples_that_stay_inactive(tmp_path):
    cli = str(Path(sys.executable).with_name("stackpatch"))
    r = subprocess.run([cli, "hooks", "init", "--repo", str(tmp_path)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    d = tmp_path / ".stackpatch" / "hooks"
    assert sorted(p.name for p in d.iterdir()) == sorted(f"{n}.sample" for n in hooks.NAMES)
    assert all(os.access(p, os.X_OK) for p in d.iterdir())
    # a sample is no hook until renamed
    assert all(hooks.find(tmp_path, hooks.settings_for(tmp_path), n) is None for n in hooks.NAMES)
    for n in hooks.NAMES:  # every shell sample is valid sh
        if SAMPLES[n].startswith("#!/bin/sh"):
            assert subprocess.run(["sh", "-n", str(d / f"{n}.sample")]).returncode == 0


@pytest.mark.parametrize("status, ok", [("success", True), ("failure", False), ("", False)])
def test_the_pre_ship_sample_refuses_unless_ci_is_green(tmp_path, status, ok):
    from stackpatch.config import HooksConfig
    d = tmp_path / ".stackpatch" / "hooks"
    d.mkdir(parents=True)
    (d / "pre-ship").write_text(SAMPLES["pre-ship"])
    (d / "pre-ship").chmod(0o755)
    # the CI status command: prints a status for the branch it is given
    status_cmd = [sys.executable, "-c", "import sys; print('checking', sys.argv[1]); print(sys.argv[2])",
                  "{branch}", status]
    settings = HooksConfig(ci_status_command=status_cmd)
    env = {"STACKPATCH_CI_STATUS_COMMAND": json.dumps(status_cmd), "STACKPATCH_BRANCH": "hotfix/26.11.1b",
           "STACKPATCH_REVISION": NEW_REV}
    if ok:
        hooks.pre(tmp_path, settings, "pre-ship", env, Recorder(), unchanged="nothing was built")
    else:
        with pytest.raises(UserError, match=r"hook pre-ship .*CI of hotfix/26.11.1b at 2222222 is .*not 'success'"):
            hooks.pre(tmp_path, settings, "pre-ship", env, Recorder(), unchanged="nothing was built")


def test_the_pre_ship_sample_without_a_status_command_says_what_to_set(tmp_path):
    from stackpatch.config import HooksConfig
    d = tmp_path / ".stackpatch" / "hooks"
    d.mkdir(parents=True)
    (d / "pre-ship").write_text(SAMPLES["pre-ship"])
    (d / "pre-ship").chmod(0o755)
    env = {k: "" for k in ("STACKPATCH_BRANCH", "STACKPATCH_REVISION")}
    with pytest.raises(UserError, match=r"ci_status_command"):
        hooks.pre(tmp_path, HooksConfig(), "pre-ship", env, Recorder(), unchanged="nothing was built")


# ------------------------------------------------------------------ finish

def _finish_world(tmp_path, monkeypatch, hooks_dir: Path):
    from gitflow_fixtures import make_world, set_env, stackpatch
    set_env(monkeypatch, tmp_path)
    w = make_world(tmp_path, "app")
    r = stackpatch("start", "--repo", str(w.work))
    assert r.code == 0, r.stderr
    # only a [hooks] table: finish needs nothing else, the target's variables are empty
    w.commit({"stackpatch.toml": f'[hooks]\ndir = "{hooks_dir}"\n'}, "hooks config")
    w.edit_line(2, "line 2 fixed", "Fix line 2")
    w.git("push", "-q")
    return w, stackpatch


def test_a_failing_pre_finish_hook_stops_finish_before_any_merge(tmp_path, monkeypatch):
    d = tmp_path / "hooks"
    d.mkdir()
    (d / "pre-finish").write_text("#!/bin/sh\necho \"release notes for $STACKPATCH_VERSION are missing\"\nexit 1\n")
    (d / "pre-finish").chmod(0o755)
    w, stackpatch = _finish_world(tmp_path, monkeypatch, d)
    before = w.snapshot()
    r = stackpatch("finish", "--repo", str(w.work))
    assert r.code == 2, r.stderr
    assert "hook pre-finish" in r.error and "release notes for 16.03.1b are missing" in r.error
    assert w.snapshot() == before


def test_post_finish_runs_after_the_push_with_its_variables(tmp_path, monkeypatch):
    d = tmp_path / "hooks"
    d.mkdir()
    (d / "post-finish").write_text(DUMP_ENV)
    (d / "post-finish").chmod(0o755)
    w, stackpatch = _finish_world(tmp_path, monkeypatch, d)
    head = w.rev("HEAD")
    r = stackpatch("finish", "--repo", str(w.work))
    assert r.code == 0, r.stderr
    [env] = seen(d / "post-finish")
    assert env["STACKPATCH_VERSION"] == "16.03.1b" and env["STACKPATCH_REVISION"] == head
    assert env["STACKPATCH_RESULT"] == "finished" and env["STACKPATCH_OPERATION"] == "finish"
    assert env["STACKPATCH_STACK"] == ""
    assert w.rev("refs/tags/16.03.1b") is not None
