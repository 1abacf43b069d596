"""The only place that runs `git`. A list-of-args subprocess, never a shell string, never a prompt."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stackpatch.errors import GitError


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_EDITOR"] = "true"  # never open an editor (merge messages, tag messages)
    env["GIT_MERGE_AUTOEDIT"] = "no"
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    env["LC_ALL"] = "C"
    return env


def run(*args: str, cwd: str | Path | None = None, check: bool = True,
        input: str | None = None, timeout: float | None = 300) -> Result:
    """Run `git ARGS` in `cwd`. With check, a non-zero exit raises GitError with git's last line."""
    cmd = ("git", *args)
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                              input=input, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitError("git is not installed: install it (apt-get install git) and retry") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`git {' '.join(args[:2])}` did not answer within {timeout:.0f}s: "
                       "check the remote is reachable, then retry") from None
    res = Result(cmd, proc.returncode, proc.stdout, proc.stderr)
    if check and not res.ok:
        raise GitError(f"`git {' '.join(args)}` failed: {last_line(res.stderr or res.stdout)}")
    return res


def out(*args: str, cwd: str | Path | None = None) -> str:
    """stdout of a git command that must succeed, stripped."""
    return run(*args, cwd=cwd).stdout.strip()


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # git prints hints after the error; the line starting with fatal/error is the useful one
    for ln in lines:
        if ln.startswith(("fatal:", "error:")):
            return ln
    return lines[-1] if lines else "(no output)"


def toplevel(cwd: str | Path | None = None) -> Path:
    res = run("rev-parse", "--show-toplevel", cwd=cwd, check=False)
    if not res.ok:
        where = Path(cwd or os.getcwd()).resolve()
        raise GitError(f"{where} is not a git repository: run stackpatch inside your app's repo "
                       "(or pass --repo)")
    return Path(res.stdout.strip())


def rev(ref: str, cwd: str | Path | None = None) -> str | None:
    """The commit sha `ref` names, or None if it does not exist."""
    res = run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd, check=False)
    return res.stdout.strip() if res.ok else None


def current_branch(cwd: str | Path | None = None) -> str | None:
    res = run("symbolic-ref", "--quiet", "--short", "HEAD", cwd=cwd, check=False)
    return res.stdout.strip() if res.ok else None


def is_dirty(cwd: str | Path | None = None) -> list[str]:
    """Tracked files with changes (staged or not), plus untracked files not ignored."""
    res = run("status", "--porcelain", "--untracked-files=normal", cwd=cwd)
    return [ln[3:] for ln in res.stdout.splitlines() if ln.strip()]


def config_get(key: str, cwd: str | Path | None = None) -> str | None:
    res = run("config", "--get", key, cwd=cwd, check=False)
    return res.stdout.strip() if res.ok else None


def is_ancestor(a: str, b: str, cwd: str | Path | None = None) -> bool:
    return run("merge-base", "--is-ancestor", a, b, cwd=cwd, check=False).returncode == 0


def git_path(name: str, cwd: str | Path) -> Path:
    """Path of `name` inside the repo's git dir (works in worktrees too)."""
    p = Path(out("rev-parse", "--git-path", name, cwd=cwd))
    return p if p.is_absolute() else Path(cwd) / p


def tracked_changes(cwd: str | Path | None = None) -> list[str]:
    """Tracked files with changes, staged or not (untracked files are not listed)."""
    res = run("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return [ln[3:] for ln in res.stdout.splitlines() if ln.strip()]


def untracked_files(cwd: str | Path | None = None) -> list[str]:
    """Untracked files that are not ignored."""
    return [ln for ln in out("ls-files", "--others", "--exclude-standard", cwd=cwd).splitlines() if ln]


def tree_paths(ref: str, cwd: str | Path | None = None) -> set[str]:
    return set(out("ls-tree", "-r", "--name-only", ref, cwd=cwd).splitlines())


def unmerged_files(cwd: str | Path | None = None) -> list[str]:
    return sorted(set(out("diff", "--name-only", "--diff-filter=U", cwd=cwd).splitlines()))


def ref_exists(ref: str, cwd: str | Path | None = None) -> bool:
    return run("show-ref", "--verify", "--quiet", ref, cwd=cwd, check=False).ok


def refs(pattern: str, cwd: str | Path | None = None) -> dict[str, str]:
    """{full refname: object sha} for refs under `pattern` (e.g. refs/heads/hotfix/)."""
    res = run("for-each-ref", "--format=%(refname) %(objectname)", pattern, cwd=cwd)
    return dict(tuple(ln.split(" ", 1)) for ln in res.stdout.splitlines() if ln)  # type: ignore[misc]


def ls_remote(remote: str, *patterns: str, cwd: str | Path | None = None) -> dict[str, str]:
    """{refname: sha} of the remote's refs (one network round trip)."""
    res = run("ls-remote", remote, *patterns, cwd=cwd, timeout=120)
    pairs = (ln.split("\t", 1) for ln in res.stdout.splitlines() if "\t" in ln)
    return {name: sha for sha, name in pairs}


def track(branch: str, remote: str, cwd: str | Path | None = None) -> None:
    """Create local `branch` at `remote/branch`, tracking it: what `git checkout branch` does when only
    the remote has the branch (a fresh clone's develop)."""
    run("branch", "--quiet", "--track", branch, f"refs/remotes/{remote}/{branch}", cwd=cwd)


def delete_branch(branch: str, cwd: str | Path | None = None) -> None:
    run("branch", "--quiet", "-D", branch, cwd=cwd)


def log(range_: str, cwd: str | Path | None = None) -> list[tuple[str, str, str, str]]:
    """(sha, author, ISO date, subject) of each commit in `range_` (like `a..b`), oldest first."""
    res = run("log", "--reverse", "--format=%H%x1f%an%x1f%aI%x1f%s", range_, "--", cwd=cwd)
    return [tuple(ln.split("\x1f", 3)) for ln in res.stdout.splitlines() if ln.count("\x1f") == 3]  # type: ignore[misc]
