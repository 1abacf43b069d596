"""A ship killed with -9 while its verify stack runs leaves that stack; the next ship removes it (it was
recorded before it was deployed, with the ship's pid: proof it is ours) and ships normally."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from deploy_helpers import CLI, cli, wait_for
from test_build import hotfix

pytestmark = pytest.mark.docker


def verify_services(stack: str) -> list[str]:
    from stackpatch.sandbox import engine
    return [s["Spec"]["Name"] for s in
            engine.client().api.services(filters={"label": f"com.docker.stack.namespace={stack}"})]


def test_a_verify_stack_left_by_a_killed_ship_is_removed_by_the_next(sandbox, fork, tmp_path):
    import os
    cache = tmp_path / "cache"
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(cache)}
    hotfix(fork, "26.11.1v")
    p = subprocess.Popen([CLI, "ship", "--until", "pushed", "--yes"], cwd=fork.app_dir, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    records = cache / "verify-stacks"
    try:
        wait_for(lambda: any(records.glob("spverify-*.json")) and verify_services(
            json.loads(next(records.glob("spverify-*.json")).read_text())["stack"]), 600, "the verify stack")
    finally:
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
    rec = json.loads(next(records.glob("spverify-*.json")).read_text())
    assert rec["pid"] == p.pid
    left = rec["stack"]
    assert verify_services(left), "the killed ship left no verify stack to clean"
    r = cli("ship", "--until", "pushed", "--yes", cwd=fork.app_dir, env={"STACKPATCH_CACHE_DIR": str(cache)},
            timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"removing {left}, left by a ship that was killed (pid {p.pid})" in r.stderr
    deadline = time.monotonic() + 60
    while verify_services(left) and time.monotonic() < deadline:
        time.sleep(1)
    assert verify_services(left) == [] and not list(records.glob("*.json"))
