"""`stackpatch start` takes its base from the release running on the target, not from master's newest tag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

CLI = str(Path(sys.executable).with_name("stackpatch"))


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def start(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, "start", *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_start_branches_from_the_deployed_release_when_a_newer_one_is_on_master(fork):
    app = fork.app_dir
    # a newer release 26.11.2 is finished on master but not deployed: the stack still runs 26.11.1
    git("checkout", "-q", "master", cwd=app)
    (app / "NEWER.txt").write_text("26.11.2\n")
    git("add", "NEWER.txt", cwd=app)
    git("commit", "-q", "-m", "release 26.11.2", cwd=app)
    git("tag", "-a", "-m", "26.11.2", "26.11.2", cwd=app)
    git("push", "-q", "origin", "master", "26.11.2", cwd=app)

    r = start(app)
    assert r.returncode == 0, r.stderr
    assert "deployed release: 26.11.1" in r.stderr
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=app) == "hotfix/26.11.1b"
    assert git("rev-parse", "HEAD", cwd=app) == git("rev-parse", "26.11.1^{commit}", cwd=app)
    assert git("ls-remote", "--heads", "origin", "hotfix/26.11.1b", cwd=app)


def test_start_falls_back_to_master_when_the_target_is_unreachable(fork, tmp_path):
    app = fork.app_dir
    dead = tmp_path / "no-engine.sock"
    cfg = fork.config_path.read_text()
    line = 'docker_host = "unix:///var/run/docker.sock"'
    assert line in cfg
    fork.config_path.write_text(cfg.replace(line, f'docker_host = "unix://{dead}"'))
    r = start(app, "--no-push")
    assert r.returncode == 0, r.stderr
    assert "target unreachable" in r.stderr and "newest release on master" in r.stderr
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=app) == "hotfix/26.11.1b"


def test_a_fresh_clone_of_the_sandbox_origin_can_start(fork, tmp_path):
    """`git clone <origin> && stackpatch start`, with no other git command first (issue 10): the clone has
    only master; start makes develop from origin/develop, as `git checkout develop` would, and says so."""
    clone = tmp_path / "clone"
    git("clone", "-q", str(fork.origin_dir), str(clone), cwd=tmp_path)
    assert git("branch", "--list", "develop", cwd=clone) == ""
    r = start(clone, "--no-push")
    assert r.returncode == 0, r.stderr
    assert "deployed release: 26.11.1" in r.stderr
    assert [ln for ln in r.stderr.splitlines() if "created local branch" in ln] == [
        "→ created local branch develop tracking origin/develop (as `git checkout develop` would)"]
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=clone) == "hotfix/26.11.1b"
    assert git("rev-parse", "develop", cwd=clone) == git("rev-parse", "origin/develop", cwd=clone)
    assert git("rev-parse", "--abbrev-ref", "develop@{upstream}", cwd=clone) == "origin/develop"
