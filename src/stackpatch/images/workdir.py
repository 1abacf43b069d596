"""The clean build directory: a cached clone of the remote, outside the working tree, per repo.

It holds only pushed code: it is fetched from the remote (never from the working tree), checked out
at exactly the sha being shipped, cleaned (`clean -ffdx`) and its submodules updated. The clone is
kept between runs, so a sync costs what changed, not the repo's size.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

from stackpatch import git
from stackpatch.errors import FaultError, GitError, UserError


def cache_root() -> Path:
    """`$STACKPATCH_CACHE_DIR`, else `$XDG_CACHE_HOME/stackpatch`, else `~/.cache/stackpatch`."""
    if os.environ.get("STACKPATCH_CACHE_DIR"):
        return Path(os.environ["STACKPATCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "stackpatch"


def builddir_for(repo: Path) -> Path:
    key = hashlib.sha256(str(Path(repo).resolve()).encode()).hexdigest()[:16]
    return cache_root() / "builddirs" / f"{Path(repo).resolve().name}-{key}"


@dataclass(frozen=True)
class Workdir:
    path: Path
    revision: str
    seconds: float
    cold: bool              # the clone was created in this run


def remote_fetch_url(repo: Path, remote: str) -> str:
    res = git.run("remote", "get-url", remote, cwd=repo, check=False)
    if not res.ok:
        raise UserError(f"git remote {remote!r} does not exist in {repo}: add it or set git.remote")
    url = res.stdout.strip()
    # a relative local path is relative to the repo, not to the build dir
    if "://" not in url and not url.startswith("/") and ":" not in url.split("/")[0]:
        url = str((repo / url).resolve())
    return url


def sync(repo: Path, remote: str, sha: str, branch: str | None = None, dest: Path | None = None) -> Workdir:
    """Make `dest` (default: the per-repo cache) an exact clean checkout of `sha` from the remote."""
    t0 = time.monotonic()
    dest = dest or builddir_for(repo)
    url = remote_fetch_url(repo, remote)
    cold = not (dest / ".git").exists()
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if cold:
            if dest.exists():
                import shutil
                shutil.rmtree(dest)
            git.run("clone", "--no-checkout", "--quiet", url, str(dest), timeout=1800)
        else:
            git.run("remote", "set-url", "origin", url, cwd=dest)
        refspecs = ["+refs/heads/*:refs/remotes/origin/*"]
        git.run("fetch", "--quiet", "--prune", "--tags", "--force", "origin", *refspecs, cwd=dest, timeout=1800)
        _checkout(dest, sha, remote, url, branch)
    except (OSError, GitError) as e:
        if cold:  # never leave a half-made clone that the next run would take for a warm cache
            import shutil
            shutil.rmtree(dest, ignore_errors=True)
        if isinstance(e, GitError):
            if "no space left" in str(e).lower():
                raise FaultError(f"disk full while syncing the build directory {dest}: free space (or point "
                                 "STACKPATCH_CACHE_DIR elsewhere) and ship again; nothing was pushed") from None
            raise
        raise FaultError(f"cannot write the build directory {dest} ({e.strerror}): free space or set "
                         "STACKPATCH_CACHE_DIR") from None
    head = git.out("rev-parse", "HEAD", cwd=dest)
    if head != sha or git.is_dirty(dest):
        raise FaultError(f"the build directory {dest} is not a clean checkout of {sha[:7]}: delete it and retry")
    return Workdir(dest, sha, time.monotonic() - t0, cold)


def _checkout(dest: Path, sha: str, remote: str, url: str, branch: str | None) -> None:
    if git.rev(sha, dest) is None:
        raise UserError(f"commit {sha[:7]} is not on remote {remote!r} ({url}): only pushed code ships; push it")
    if branch and git.rev(f"refs/remotes/origin/{branch}", dest) != sha:
        raise UserError(f"remote {remote!r} has {branch} at "
                        f"{(git.rev(f'refs/remotes/origin/{branch}', dest) or 'nothing')[:7]}, not {sha[:7]}: "
                        "someone pushed meanwhile; re-run `stackpatch plan`")
    git.run("checkout", "--force", "--quiet", "--detach", sha, cwd=dest)
    git.run("clean", "-ffdxq", cwd=dest)
    git.run("submodule", "update", "--init", "--recursive", "--force", "--quiet", cwd=dest, timeout=1800)
    git.run("submodule", "foreach", "--recursive", "--quiet", "git clean -ffdxq", cwd=dest)
