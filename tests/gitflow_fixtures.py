"""Real git repositories in temporary directories for the git-flow tests (no mocks).

Like pre-commit's testing/fixtures.py: every world is a working clone plus a bare remote, built with
fixed authors and dates so that two worlds built the same way have the same commit ids. That lets the
oracle tests compare stackpatch with git-flow AVH by commit and tag ids, not only by shape.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from stackpatch.cli import main

DATE = "2026-11-01T12:00:00+0000"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Dev One", "GIT_AUTHOR_EMAIL": "dev@example.com",
    "GIT_COMMITTER_NAME": "Dev One", "GIT_COMMITTER_EMAIL": "dev@example.com",
    "GIT_AUTHOR_DATE": DATE, "GIT_COMMITTER_DATE": DATE,
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_EDITOR": "true", "GIT_MERGE_AUTOEDIT": "no",
    "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C",
}

APP = "".join(f"line {i}\n" for i in range(1, 11))


def set_env(monkeypatch, tmp_path: Path) -> None:
    gcfg = tmp_path / "gitconfig"
    gcfg.write_text("[advice]\n\tdetachedHead = false\n")
    for k, v in {**GIT_ENV, "GIT_CONFIG_GLOBAL": str(gcfg), "HOME": str(tmp_path)}.items():
        monkeypatch.setenv(k, v)


def sh(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (argv list) in `cwd` with the test's fixed git identity and dates."""
    p = subprocess.run(args, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                       env=dict(os.environ))
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def g(cwd: Path, *args: str) -> str:
    return sh("git", *args, cwd=cwd).stdout.strip()


def rev(cwd: Path, ref: str) -> str | None:
    p = sh("git", "rev-parse", "--verify", "--quiet", ref, cwd=cwd, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


@dataclass
class World:
    work: Path
    remote: Path

    def git(self, *args: str) -> str:
        return g(self.work, *args)

    def rev(self, ref: str) -> str | None:
        return rev(self.work, ref)

    def commit(self, files: dict[str, str], msg: str) -> str:
        for name, text in files.items():
            p = self.work / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            self.git("add", name)
        self.git("commit", "-q", "-m", msg)
        return self.rev("HEAD")

    def edit_line(self, n: int, text: str, msg: str, name: str = "app.txt") -> str:
        lines = (self.work / name).read_text().splitlines()
        lines[n - 1] = text
        return self.commit({name: "\n".join(lines) + "\n"}, msg)

    def remote_refs(self) -> dict[str, str]:
        out = g(self.remote, "for-each-ref", "--format=%(refname) %(objectname)")
        return dict(ln.split(" ", 1) for ln in out.splitlines() if ln)

    def snapshot(self) -> dict:
        """Everything an error must leave unchanged: refs, HEAD, index/worktree status, local config,
        the remote's refs, and whether a finish state file exists."""
        return {
            "refs": g(self.work, "for-each-ref", "--format=%(refname) %(objectname)"),
            "head": sh("git", "symbolic-ref", "-q", "HEAD", cwd=self.work, check=False).stdout.strip()
            or self.rev("HEAD"),
            "status": g(self.work, "status", "--porcelain", "--untracked-files=all"),
            "config": g(self.work, "config", "--local", "--list"),
            "remote": self.remote_refs() if self.remote.exists() else None,
            "state": (self.work / ".git" / "stackpatch-finish.json").exists(),
        }


def make_world(base: Path, name: str) -> World:
    """master with release 16.03.1 tagged, develop at the same commit, both pushed to a bare remote."""
    remote = base / f"{name}-remote.git"
    work = base / name
    sh("git", "init", "-q", "--bare", "-b", "master", str(remote), cwd=base)
    sh("git", "init", "-q", "-b", "master", str(work), cwd=base)
    w = World(work, remote)
    w.git("remote", "add", "origin", str(remote))
    w.commit({"app.txt": APP, "VERSION": "16.03.1\n"}, "Release 16.03.1")
    w.git("tag", "-a", "-m", "Release 16.03.1", "16.03.1")
    w.git("branch", "develop")
    w.git("push", "-q", "-u", "origin", "master", "develop", "refs/tags/16.03.1")
    w.git("branch", "-q", "--set-upstream-to=origin/develop", "develop")
    return w


def stackpatch(*args: str) -> Run:
    r = CliRunner(mix_stderr=False).invoke(main, list(args), catch_exceptions=False)
    return Run(r.exit_code, r.stdout, r.stderr)


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("stackpatch: error:")]
        assert len(lines) == 1, self.stderr
        assert self.stderr.rstrip("\n").splitlines()[-1] == lines[0], self.stderr
        return lines[0]


def flow(w: World, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Debian's git-flow AVH (/usr/bin/git-flow)."""
    return sh("git", "flow", *args, cwd=w.work, check=check)
