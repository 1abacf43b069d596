"""Real git repos in temp dirs for the build half's tests (no mocks: the git CLI does the work)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stackpatch.config import Config
from stackpatch.targets.base import OCI_REVISION, OCI_VERSION, ImageRef, ServiceState, TargetState

TOML = """
[git]
remote = "origin"

[registry]
host = "127.0.0.1:5999"
namespace = "acme"

[images.app]
repository = "app"
dockerfile = "Dockerfile"

[target]
stack = "acme-prod"
services = { phpfiles = "app", phpha = "app" }
"""


def sh(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "PATH": "/usr/bin:/bin:/usr/local/bin", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit(repo: Path, path: str, text: str, msg: str) -> str:
    p = repo / path
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    sh("add", path, cwd=repo)
    sh("commit", "-q", "-m", msg, cwd=repo)
    return sh("rev-parse", "HEAD", cwd=repo)


def make_repo(tmp: Path, toml: str = TOML) -> tuple[Path, Path, str]:
    """An app repo with a bare origin, master+develop, release 26.11.1 tagged. Returns (repo, origin, sha)."""
    tmp.mkdir(parents=True, exist_ok=True)
    origin = tmp / "origin.git"
    repo = tmp / "app"
    sh("init", "-q", "--bare", "-b", "master", str(origin), cwd=tmp)
    sh("init", "-q", "-b", "master", str(repo), cwd=tmp)
    (repo / "stackpatch.toml").write_text(toml)
    (repo / "Dockerfile").write_text("FROM scratch\n")
    (repo / "migrations").mkdir()
    (repo / "migrations" / "001_init.sql").write_text("create table t (id int);\n")
    (repo / "app.txt").write_text("hello\n")
    sh("add", ".", cwd=repo)
    sh("commit", "-q", "-m", "release 26.11.1", cwd=repo)
    sh("tag", "26.11.1", cwd=repo)
    sh("branch", "develop", cwd=repo)
    sh("remote", "add", "origin", str(origin), cwd=repo)
    sh("push", "-q", "origin", "master", "develop", "--tags", cwd=repo)
    return repo, origin, sh("rev-parse", "HEAD", cwd=repo)


def start_hotfix(repo: Path, version: str = "26.11.1b", base: str = "26.11.1", push: bool = True) -> str:
    sh("checkout", "-q", "-b", f"hotfix/{version}", base, cwd=repo)
    sha = commit(repo, "app.txt", "hello, fixed\n", "fix the greeting")
    if push:
        sh("push", "-q", "-u", "origin", f"hotfix/{version}", cwd=repo)
    return sha


def load_cfg(repo: Path) -> Config:
    from stackpatch import config
    return config.load(repo / "stackpatch.toml")


def target_state(revisions: dict[str, str], version: str | None = "26.11.1", stack: str = "acme-prod",
                 repo: str = "127.0.0.1:5999/acme/app") -> TargetState:
    """The state a target reports (plain data, as SwarmTarget.read_state returns it)."""
    services = {}
    for name, rev in revisions.items():
        labels = {OCI_REVISION: rev}
        if version:
            labels[OCI_VERSION] = version
        services[name] = ServiceState(
            name=name, full_name=f"{stack}_{name}", id=f"id-{name}",
            image=ImageRef(repo, f"git-commit-{rev[:7]}", "sha256:" + "a" * 64), labels={},
            image_labels=labels, replicas_desired=1, replicas_running=1, update_state="completed")
    return TargetState(stack=stack, services=services)
