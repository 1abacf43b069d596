"""Preflight: read the git facts once (gather, I/O) and judge them (evaluate, pure).

Only pushed code may ship: the hotfix branch must be clean, identical to its remote after a fetch,
and descend from the deployed commit. Risky files changed since the deployed commit are flagged.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from stackpatch import git
from stackpatch.config import Config
from stackpatch.errors import GitError, UserError


class PreflightError(UserError):
    """A precondition for shipping is not met; nothing was changed."""


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    def short(self) -> str:
        return f"{self.sha[:7]} {self.subject}"


@dataclass(frozen=True)
class Relation:
    """How the deployed commit relates to the hotfix head (read from git, judged by evaluate)."""

    deployed: str
    known: bool                    # the deployed commit exists in this repo (after the fetch)
    is_ancestor: bool = False      # deployed is an ancestor of head (or equal)
    merge_base: str | None = None
    only_deployed: int = 0         # commits in deployed not in head
    only_head: int = 0             # commits in head not in deployed
    commits: tuple[Commit, ...] = ()   # deployed..head, oldest first
    files: tuple[str, ...] = ()        # files changed deployed..head


@dataclass(frozen=True)
class GitFacts:
    """Everything preflight needs from git, read once."""

    repo: str
    ref: str                       # the branch being shipped, e.g. "hotfix/26.11.1b"
    ref_given: bool                # --ref was passed
    on_branch: str | None          # HEAD's branch
    head: str | None               # sha of the local branch
    remote: str
    remote_url: str                # credentials stripped
    remote_head: str | None        # sha of <remote>/<branch> after the fetch; None if not pushed at all
    dirty: tuple[str, ...] = ()
    unpushed: tuple[Commit, ...] = ()   # local commits not on the remote branch
    behind: tuple[Commit, ...] = ()     # remote commits not in the local branch
    relation: Relation | None = None    # filled when the deployed commit is known

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PreflightReport:
    version: str
    branch: str
    revision: str
    deployed_version: str | None
    deployed_revision: str
    commits: tuple[Commit, ...]
    files: tuple[str, ...]
    risky: tuple[str, ...]
    remote_url: str
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        d = asdict(self)
        d["commits"] = [asdict(c) for c in self.commits]
        return d


# ---------------------------------------------------------------- pure helpers

def strip_credentials(url: str) -> str:
    """The remote URL without user:password (for the `.source` label and output)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """gitignore-like globs: `**/` any directories (also none), `**` anything, `*` and `?` within a name."""
    i, out = 0, ""
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(c)
            i += 1
    return re.compile(f"^{out}$")


def risky_files(files: tuple[str, ...] | list[str], globs: list[str]) -> tuple[str, ...]:
    pats = [glob_to_regex(g) for g in globs]
    return tuple(f for f in files if any(p.match(f) for p in pats))


def version_of(branch: str, cfg: Config) -> str:
    prefix = cfg.git.hotfix_prefix
    if not branch.startswith(prefix):
        raise PreflightError(f"{branch!r} is not a hotfix branch (no {prefix!r} prefix): check out the hotfix "
                             f"branch (`stackpatch start` or `git flow hotfix start`) or pass --ref {prefix}<version>")
    version = branch[len(prefix):]
    if not re.match(cfg.git.version_pattern, version):
        raise PreflightError(f"hotfix version {version!r} of branch {branch!r} does not match "
                             f"git.version_pattern {cfg.git.version_pattern!r}: rename the branch (e.g. "
                             f"{prefix}26.11.1b)")
    return version


def _list(commits: tuple[Commit, ...], n: int = 5) -> str:
    s = ", ".join(c.short() for c in commits[:n])
    return s + (f" and {len(commits) - n} more" if len(commits) > n else "")


def evaluate(facts: GitFacts, deployed_version: str | None, deployed_revision: str, cfg: Config) -> PreflightReport:
    """Judge the facts. Pure: raises PreflightError (one line) or returns what will ship."""
    if facts.on_branch is None and not facts.ref_given:
        raise PreflightError("HEAD is detached, not on a hotfix branch: check out the hotfix branch "
                             f"or pass --ref {cfg.git.hotfix_prefix}<version>")
    version = version_of(facts.ref, cfg)
    if facts.head is None:
        raise PreflightError(f"branch {facts.ref!r} does not exist in {facts.repo}: check the name "
                             f"(git branch --list '{cfg.git.hotfix_prefix}*')")
    if facts.dirty and (not facts.ref_given or facts.ref == facts.on_branch):
        shown = ", ".join(facts.dirty[:5]) + (f" and {len(facts.dirty) - 5} more" if len(facts.dirty) > 5 else "")
        raise PreflightError(f"the working tree has uncommitted changes ({shown}): only pushed commits ship; "
                             "commit and push them, or stash them")
    if facts.remote_head is None:
        raise PreflightError(f"branch {facts.ref!r} is not on remote {facts.remote!r}: only pushed code "
                             f"ships; run `git push -u {facts.remote} {facts.ref}`")
    if facts.unpushed:
        raise PreflightError(f"{len(facts.unpushed)} commit(s) on {facts.ref!r} are not pushed to "
                             f"{facts.remote!r}: {_list(facts.unpushed)}; only pushed code ships: "
                             f"run `git push {facts.remote} {facts.ref}`")
    if facts.behind or facts.head != facts.remote_head:
        raise PreflightError(f"{facts.ref!r} is behind {facts.remote}/{facts.ref} by {len(facts.behind)} "
                             f"commit(s) ({_list(facts.behind)}): run `git pull --ff-only` and check "
                             "what you ship")
    rel = facts.relation
    dv = f" ({deployed_version})" if deployed_version else ""
    if rel is None or not rel.known:
        raise PreflightError(f"the deployed commit {deployed_revision[:7]}{dv} is not in this repo, even after "
                             f"fetching {facts.remote!r}: push the release it came from, or check target.stack")
    if rel.deployed == facts.head:
        raise PreflightError(f"{facts.ref!r} is at the deployed commit {facts.head[:7]}{dv}: nothing to ship; "
                             "commit the fix and push it")
    if not rel.is_ancestor:
        base = rel.merge_base[:7] if rel.merge_base else "none (unrelated histories)"
        raise PreflightError(
            f"the deployed commit {deployed_revision[:7]}{dv} is not an ancestor of {facts.ref} "
            f"({facts.head[:7]}): they diverged at merge-base {base}, the deployed side has "
            f"{rel.only_deployed} commit(s) the hotfix lacks and the hotfix {rel.only_head}; start the "
            "hotfix from the deployed release (or rebase it onto it)")
    return PreflightReport(
        version=version, branch=facts.ref, revision=facts.head,
        deployed_version=deployed_version, deployed_revision=deployed_revision,
        commits=rel.commits, files=rel.files, risky=risky_files(rel.files, cfg.git.risky_globs),
        remote_url=facts.remote_url)


# ---------------------------------------------------------------- gathering (I/O: git only)

def _commits(range_: str, cwd: Path) -> tuple[Commit, ...]:
    res = git.run("log", "--reverse", "--format=%H%x1f%s", range_, "--", cwd=cwd, check=False)
    if not res.ok:
        return ()
    out = []
    for ln in res.stdout.splitlines():
        if "\x1f" in ln:
            sha, subj = ln.split("\x1f", 1)
            out.append(Commit(sha, subj))
    return tuple(out)


def _remote_url(repo: Path, remote: str) -> str:
    res = git.run("remote", "get-url", remote, cwd=repo, check=False)
    if not res.ok:
        raise PreflightError(f"git remote {remote!r} does not exist in {repo}: add it "
                             f"(git remote add {remote} URL) or set git.remote in stackpatch.toml")
    return res.stdout.strip()


def fetch(repo: Path, remote: str) -> None:
    res = git.run("fetch", "--quiet", "--tags", "--prune", remote, cwd=repo, check=False, timeout=120)
    if not res.ok:
        raise GitError(f"`git fetch {remote}` failed: {git.last_line(res.stderr or res.stdout)}: "
                       "check the remote is reachable")


def resolve_ref(repo: Path, ref: str | None, cfg: Config) -> tuple[str, bool, str | None]:
    on_branch = git.current_branch(repo)
    if ref is None:
        return (on_branch or "HEAD"), False, on_branch
    name = ref.removeprefix("refs/heads/").removeprefix(f"refs/remotes/{cfg.git.remote}/")
    name = name.removeprefix(f"{cfg.git.remote}/") if git.rev(f"refs/heads/{name}", repo) is None else name
    return name, True, on_branch


def gather(repo: Path, cfg: Config, ref: str | None = None, deployed_revision: str | None = None,
           do_fetch: bool = True) -> GitFacts:
    """Fetch the remote (updates remote-tracking refs only) and read the facts."""
    repo = git.toplevel(repo)
    remote = cfg.git.remote
    url = _remote_url(repo, remote)
    if do_fetch:
        fetch(repo, remote)
    branch, ref_given, on_branch = resolve_ref(repo, ref, cfg)
    head = git.rev(f"refs/heads/{branch}", repo) if branch != "HEAD" else None
    if head is None and ref_given:
        # a branch that exists only on the remote can still be shipped: it is pushed code
        head = git.rev(f"refs/remotes/{remote}/{branch}", repo)
    remote_head = git.rev(f"refs/remotes/{remote}/{branch}", repo) if branch != "HEAD" else None
    dirty = tuple(git.is_dirty(repo))
    unpushed: tuple[Commit, ...] = ()
    behind: tuple[Commit, ...] = ()
    if head and remote_head and head != remote_head:
        unpushed = _commits(f"{remote_head}..{head}", repo)
        behind = _commits(f"{head}..{remote_head}", repo)
    relation = None
    if deployed_revision and head:
        relation = read_relation(repo, deployed_revision, head)
    return GitFacts(repo=str(repo), ref=branch, ref_given=ref_given, on_branch=on_branch, head=head,
                    remote=remote, remote_url=strip_credentials(url), remote_head=remote_head,
                    dirty=dirty, unpushed=unpushed, behind=behind, relation=relation)


def read_relation(repo: Path, deployed: str, head: str) -> Relation:
    full = git.rev(deployed, repo)
    if full is None:
        return Relation(deployed=deployed, known=False)
    if git.is_ancestor(full, head, repo):
        files = git.out("diff", "--name-only", f"{full}..{head}", cwd=repo).splitlines()
        return Relation(deployed=full, known=True, is_ancestor=True, merge_base=full,
                        only_head=len(_commits(f"{full}..{head}", repo)),
                        commits=_commits(f"{full}..{head}", repo), files=tuple(f for f in files if f))
    mb = git.run("merge-base", full, head, cwd=repo, check=False)
    counts = git.run("rev-list", "--left-right", "--count", f"{full}...{head}", cwd=repo, check=False)
    left, right = (int(x) for x in counts.stdout.split()) if counts.ok else (0, 0)
    return Relation(deployed=full, known=True, is_ancestor=False,
                    merge_base=mb.stdout.strip() if mb.ok else None, only_deployed=left, only_head=right)
