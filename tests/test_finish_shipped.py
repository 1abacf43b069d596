"""`finish` refuses a hotfix that was never shipped when the repo has a target; --force overrides.

(The shipped case — finish after a successful `ship` — runs in test_routine_e2e.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from gitflow_fixtures import World, make_world, set_env, stackpatch

CONFIG = """
[registry]
host = "127.0.0.1:1"
[images.app]
repository = "app"
[target]
docker_host = "unix://{dead}"
stack = "nowhere-prod"
services = {{ phpfiles = "app" }}
"""


@pytest.fixture
def w(tmp_path, monkeypatch) -> World:
    set_env(monkeypatch, tmp_path)
    return make_world(tmp_path, "app")


def started(w: World) -> None:
    r = stackpatch("start", "--repo", str(w.work))
    assert r.code == 0, r.stderr
    # the hotfix brings a stackpatch.toml whose target no engine answers: there is a target, no ship
    w.commit({"stackpatch.toml": CONFIG.format(dead=w.work.parent / "no-engine.sock")}, "stackpatch config")
    w.edit_line(2, "line 2 fixed", "Fix line 2")
    w.git("push", "-q")


def test_finish_refuses_an_unshipped_hotfix_and_changes_nothing(w):
    started(w)
    before = w.snapshot()
    r = stackpatch("finish", "--repo", str(w.work))
    assert r.code == 2, r.stderr
    assert "16.03.1b was never shipped successfully" in r.error and "--force" in r.error
    assert w.snapshot() == before


def test_finish_force_finishes_anyway(w):
    started(w)
    r = stackpatch("finish", "--force", "--repo", str(w.work))
    assert r.code == 0, r.stderr
    assert w.rev("refs/tags/16.03.1b") is not None
    assert "refs/heads/hotfix/16.03.1b" not in w.remote_refs()


def test_a_repo_without_target_finishes_without_a_journal(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    w = make_world(tmp_path, "plain")
    assert not (Path(w.work) / "stackpatch.toml").exists()
    r = stackpatch("start", "--repo", str(w.work))
    assert r.code == 0, r.stderr
    w.edit_line(2, "fixed", "Fix")
    w.git("push", "-q")
    r = stackpatch("finish", "--repo", str(w.work))
    assert r.code == 0, r.stderr
