"""The git-flow hotfix lifecycle: `start` and `finish`, as small steps over git.py.

The topology is git-flow AVH's (`git flow hotfix start` / `git flow hotfix finish -F -p`): the hotfix is
merged with --no-ff into master, an annotated tag is put on that merge, the tag is merged with --no-ff
into develop. stackpatch differs where AVH is unsafe:

* every step can tell whether it is already done, so `finish` is re-runnable;
* master, develop and the tag go to the remote in ONE `git push --atomic` (all or nothing);
* a conflicting merge is undone (`git merge --abort`) and the user is told what to do;
* an interrupted finish keeps its state in `.git/stackpatch-finish.json` (the refs before it started),
  so `finish --continue` and `finish --abort` work and nothing is lost.

See docs/gitflow.md for the user-facing description.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stackpatch import git, versions
from stackpatch.config import GitConfig, load_git_settings
from stackpatch.errors import GitError, UserError

STATE_NAME = "stackpatch-finish.json"
FROM_KEY = "stackpatch-from"  # gitflow.branch.<hotfix>.stackpatch-from = the release tag it started from

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


# ---------------------------------------------------------------- settings

@dataclass(frozen=True)
class Settings:
    remote: str
    main: str
    develop: str
    hotfix_prefix: str
    tag_prefix: str
    version_pattern: str
    multi_hotfix: bool
    source: str  # "stackpatch.toml", "git-flow config" or "defaults" (for `--json` and messages)


_GITFLOW_KEYS = {"main": "gitflow.branch.master", "develop": "gitflow.branch.develop",
                 "hotfix_prefix": "gitflow.prefix.hotfix", "tag_prefix": "gitflow.prefix.versiontag",
                 "remote": "gitflow.origin"}


def load_settings(root: Path) -> Settings:
    """`[git]` of stackpatch.toml where it sets a key, else git-flow's config keys, else git-flow defaults."""
    cfg = load_git_settings(root)
    explicit = cfg.model_fields_set if cfg is not None else set()
    base = cfg if cfg is not None else GitConfig()
    values: dict[str, str] = {}
    used_gitflow = False
    for name, key in _GITFLOW_KEYS.items():
        if name in explicit:
            values[name] = getattr(base, name)
            continue
        # `git config --get` exits 1 for an unset key; an empty value (versiontag = "") is a real setting
        res = git.run("config", "--get", key, cwd=root, check=False)
        if res.ok:
            values[name] = res.stdout.rstrip("\n")
            used_gitflow = True
        else:
            values[name] = getattr(base, name)
    multi = git.run("config", "--bool", "--get", "gitflow.multi-hotfix", cwd=root, check=False)
    source = "stackpatch.toml" if cfg is not None else ("git-flow config" if used_gitflow else "defaults")
    return Settings(remote=values["remote"], main=values["main"], develop=values["develop"],
                    hotfix_prefix=values["hotfix_prefix"], tag_prefix=values["tag_prefix"],
                    version_pattern=base.version_pattern, multi_hotfix=multi.stdout.strip() == "true",
                    source=source)


# ---------------------------------------------------------------- shared checks (each raises one line)

def _root(repo: str | Path | None) -> Path:
    return git.toplevel(repo)


def _require_remote(root: Path, s: Settings) -> None:
    if not git.run("remote", "get-url", s.remote, cwd=root, check=False).ok:
        raise GitError(f"this repo has no remote {s.remote!r}: add it (git remote add {s.remote} URL); "
                       "start and finish share the hotfix through it")


def _fetch(root: Path, s: Settings, progress: Progress) -> None:
    progress(f"fetching from {s.remote}")
    res = git.run("fetch", "--prune", "--tags", "--quiet", s.remote, cwd=root, check=False, timeout=120)
    if not res.ok:
        if "would clobber existing tag" in res.stderr:
            raise GitError(f"a local tag differs from the one on {s.remote} ({git.last_line(res.stderr)}): "
                           "compare them (git show TAG) and delete the wrong one, then retry")
        raise GitError(f"cannot fetch from remote {s.remote!r} ({git.last_line(res.stderr)}): "
                       "check its URL (git remote -v) and that it is reachable, then retry")


def _require_clean(root: Path) -> None:
    changed = git.tracked_changes(root)
    if changed:
        shown = ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        raise GitError(f"the working tree has uncommitted changes ({shown}): commit or stash them first")


def _require_no_overwrite(root: Path, refs: list[str]) -> None:
    untracked = set(git.untracked_files(root))
    if not untracked:
        return
    paths: set[str] = set()
    for r in refs:
        paths |= git.tree_paths(r, root)
    hit = sorted(untracked & paths)
    if hit:
        shown = ", ".join(hit[:5]) + (" …" if len(hit) > 5 else "")
        raise GitError(f"untracked files would be overwritten by a checkout ({shown}): "
                       "move, commit or delete them first")


def _branch_ref(root: Path, s: Settings, name: str) -> str:
    """The ref of master/develop: the local branch, or, when only the remote has it (a fresh clone), the
    remote-tracking branch (`_track_missing` then creates the local one, as `git checkout` would)."""
    if git.rev(f"refs/heads/{name}", root) is not None:
        return f"refs/heads/{name}"
    if git.rev(f"refs/remotes/{s.remote}/{name}", root) is not None:
        return f"refs/remotes/{s.remote}/{name}"
    raise GitError(f"branch {name!r} does not exist here or on {s.remote}: create it, or set "
                   "gitflow.branch.master/develop (or [git] in stackpatch.toml)")


def _track_missing(root: Path, s: Settings, names: list[str], progress: Progress) -> list[str]:
    """Create the local branches only the remote has, tracking it. Called once every check has passed,
    so that a refusal changes nothing. Returns the branches created."""
    made = []
    for name in names:
        if git.rev(f"refs/heads/{name}", root) is None:
            git.track(name, s.remote, root)
            progress(f"created local branch {name} tracking {s.remote}/{name} (as `git checkout {name}` would)")
            made.append(name)
    return made


def _require_not_behind(root: Path, s: Settings, name: str) -> None:
    remote_sha = git.rev(f"refs/remotes/{s.remote}/{name}", root)
    local_sha = git.rev(f"refs/heads/{name}", root)
    if remote_sha is None or local_sha is None:
        return  # nothing to compare, or the local branch will be made from the remote one
    if git.is_ancestor(remote_sha, local_sha, root):
        return
    if git.is_ancestor(local_sha, remote_sha, root):
        raise GitError(f"{name} is behind {s.remote}/{name}: update it first "
                       f"(git checkout {name} && git pull --ff-only), then retry")
    raise GitError(f"{name} and {s.remote}/{name} have diverged: reconcile them (git checkout {name} && "
                   f"git pull --rebase, then git push), then retry")


def _require_equal_to_remote(root: Path, s: Settings, branch: str) -> None:
    local = git.rev(f"refs/heads/{branch}", root)
    remote = git.rev(f"refs/remotes/{s.remote}/{branch}", root)
    if remote is None or local is None or local == remote:
        return
    if git.is_ancestor(local, remote, root):
        raise GitError(f"{branch} is behind {s.remote}/{branch}: pull first (git pull --ff-only), then retry")
    if git.is_ancestor(remote, local, root):
        raise GitError(f"{branch} is ahead of {s.remote}/{branch}: push it first (git push), "
                       "so what is finished is what was shared, then retry")
    raise GitError(f"{branch} and {s.remote}/{branch} have diverged: reconcile them "
                   f"(git pull --rebase, then git push), then retry")


def _tag_name(s: Settings, version: str) -> str:
    return f"{s.tag_prefix}{version}"


def _branch_name(s: Settings, version: str) -> str:
    return f"{s.hotfix_prefix}{version}"


# ---------------------------------------------------------------- base release

@dataclass(frozen=True)
class Base:
    version: str          # e.g. 26.11.1
    tag: str              # e.g. v26.11.1
    sha: str              # the commit the tag points to
    reason: str           # "--from", "deployed" or "newest on master"
    newest_on_main: str   # newest release tag reachable from master (may be newer than `version`)

    @property
    def older_than_main(self) -> bool:
        a, b = versions.parse(self.version), versions.parse(self.newest_on_main)
        return bool(a and b and a.sort_key < b.sort_key)


def _release_tags_on_main(root: Path, s: Settings, main_ref: str | None = None) -> dict[str, str]:
    """{version: tag} for tags matching the version form that are reachable from master."""
    main_ref = main_ref or f"refs/heads/{s.main}"
    names = git.out("tag", "--list", "--merged", main_ref, cwd=root).splitlines()
    outv: dict[str, str] = {}
    for name in names:
        v = versions.strip_prefix(name, s.tag_prefix)
        if v is not None and versions.parse(v) is not None:
            outv[v] = name
    return outv


def resolve_base(root: Path, s: Settings, from_release: str | None = None,
                 deployed_version: str | None = None, main_ref: str | None = None) -> Base:
    """The release a new hotfix starts from: `--from`, else the deployed version, else the newest
    release tag reachable from master (by version order, not by date)."""
    on_main = _release_tags_on_main(root, s, main_ref)
    newest = versions.newest(on_main)
    asked, reason = (from_release, "--from") if from_release else (deployed_version, "deployed")
    if asked:
        v = versions.strip_prefix(asked, s.tag_prefix) if s.tag_prefix and asked.startswith(s.tag_prefix) else asked
        if versions.parse(v) is None:
            raise UserError(f"release {asked!r} ({reason}) is not of the form YY.MM.R[x]: "
                            "pass an existing release tag, like 26.11.1")
        tag = _tag_name(s, v)
        sha = git.rev(f"refs/tags/{tag}", root)
        if sha is None:
            raise UserError(f"release tag {tag!r} ({reason}) does not exist here or on {s.remote}: "
                            "pass an existing release (git tag --list)")
        if v not in on_main:
            raise UserError(f"release tag {tag!r} ({reason}) is not on {s.main}: "
                            f"a hotfix starts from a finished release; pass one that {s.main} contains")
        return Base(v, tag, sha, reason, str(newest) if newest else v)
    if newest is None:
        raise UserError(f"no release tag (like {s.tag_prefix}26.11.1) is reachable from {s.main}: "
                        "pass --from RELEASE")
    v = str(newest)
    tag = on_main[v]
    return Base(v, tag, git.out("rev-parse", f"refs/tags/{tag}^{{commit}}", cwd=root), "newest on master", v)


# ---------------------------------------------------------------- names taken, open hotfixes

def _hotfix_branches(root: Path, s: Settings) -> tuple[list[str], list[str]]:
    """(local, remote) hotfix branch names (with prefix)."""
    local = [r.removeprefix("refs/heads/") for r in git.refs(f"refs/heads/{s.hotfix_prefix}", root)]
    rp = f"refs/remotes/{s.remote}/"
    remote = [r.removeprefix(rp) for r in git.refs(f"{rp}{s.hotfix_prefix}", root)]
    return sorted(local), sorted(remote)


def _taken_versions(root: Path, s: Settings) -> set[str]:
    local, remote = _hotfix_branches(root, s)
    taken = {b.removeprefix(s.hotfix_prefix) for b in (*local, *remote)}
    for r in git.refs("refs/tags/", root):
        v = versions.strip_prefix(r.removeprefix("refs/tags/"), s.tag_prefix)
        if v is not None:
            taken.add(v)
    return taken


# ---------------------------------------------------------------- start

def start(repo: str | Path | None = None, version: str | None = None, from_release: str | None = None,
          push: bool = True, deployed_version: str | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Create `hotfix/<version>` from the base release tag, record its base, push it with upstream."""
    root = _root(repo)
    s = load_settings(root)
    if version is not None:
        versions.check(version, s.version_pattern)
    _require_remote(root, s)
    _require_clean(root)
    _fetch(root, s, progress)
    main_ref = _branch_ref(root, s, s.main)
    _branch_ref(root, s, s.develop)
    _require_not_behind(root, s, s.main)
    base = resolve_base(root, s, from_release, deployed_version, main_ref)

    local, remote = _hotfix_branches(root, s)
    open_ = sorted(set(local) | set(remote))
    if open_ and not s.multi_hotfix:
        raise UserError(f"hotfix {open_[0]!r} is still open: finish it first (stackpatch finish), "
                        "or allow several with `git config gitflow.multi-hotfix true`")
    taken = _taken_versions(root, s)
    if version is None:
        bv = versions.parse(base.version)
        if bv is None:  # pragma: no cover - resolve_base only returns parseable versions
            raise UserError(f"cannot derive the next hotfix of {base.version!r}: pass VERSION")
        version = str(versions.next_hotfix(bv, taken))
    branch, tag = _branch_name(s, version), _tag_name(s, version)
    if git.ref_exists(f"refs/tags/{tag}", root):
        raise UserError(f"tag {tag!r} already exists: pick another VERSION (or omit it for the next free one)")
    if branch in local:
        raise UserError(f"branch {branch!r} already exists: pick another VERSION, or work on it "
                        f"(git checkout {branch})")
    if branch in remote:
        raise UserError(f"branch {branch!r} exists on {s.remote} only: take it over with "
                        f"`git checkout {branch}`, or pick another VERSION")
    _require_no_overwrite(root, [base.sha])

    before = git.current_branch(root) or git.out("rev-parse", "HEAD", cwd=root)
    tracked = _track_missing(root, s, [s.main, s.develop], progress)
    progress(f"creating {branch} from {base.tag}")
    git.run("checkout", "--quiet", "-b", branch, base.sha, cwd=root)
    # AVH records the branch the hotfix merges into; we also record the release tag it started from
    git.run("config", "--local", f"gitflow.branch.{branch}.base", s.main, cwd=root)
    git.run("config", "--local", f"gitflow.branch.{branch}.{FROM_KEY}", base.tag, cwd=root)
    pushed = False
    if push:
        progress(f"pushing {branch} to {s.remote}")
        res = git.run("push", "--quiet", "-u", s.remote, f"refs/heads/{branch}:refs/heads/{branch}",
                      cwd=root, check=False, timeout=120)
        if not res.ok:
            # leave the repo as it was: back to the previous branch, branch and its config removed
            git.run("checkout", "--quiet", before, cwd=root)
            for b in (branch, *tracked):
                git.delete_branch(b, root)
            git.run("config", "--local", "--remove-section", f"gitflow.branch.{branch}", cwd=root, check=False)
            raise GitError(f"pushing {branch} to {s.remote} failed ({git.last_line(res.stderr)}): "
                           "nothing was created; fix the remote or use --no-push")
        pushed = True
    return {"version": version, "branch": branch, "tag": tag, "base": asdict(base),
            "base_older_than_main": base.older_than_main, "pushed": pushed, "settings": asdict(s),
            "tracked": tracked}


# ---------------------------------------------------------------- finish: state

@dataclass
class FinishState:
    version: str
    branch: str
    tag: str
    main: str
    develop: str
    remote: str
    message: str
    head_before: str          # branch checked out when finish first ran (we return there on conflict)
    main_before: str
    develop_before: str
    hotfix_sha: str           # hotfix tip the local merges were made from
    main_merge: str | None = None
    develop_merge: str | None = None
    tag_created: str | None = None  # tag object we created (None: we did not create it)
    tag_before: str | None = None   # tag object that existed when the finish started (never deleted)
    pushed: bool = False
    started_at: float = field(default_factory=time.time)

    @staticmethod
    def path(root: Path) -> Path:
        return git.git_path(STATE_NAME, root)

    @classmethod
    def load(cls, root: Path) -> FinishState | None:
        p = cls.path(root)
        if not p.is_file():
            return None
        try:
            return cls(**json.loads(p.read_text()))
        except (ValueError, TypeError) as e:
            raise UserError(f"{p} is unreadable ({e}): inspect it, then delete it to start over") from None

    def save(self, root: Path) -> None:
        p = self.path(root)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(p)  # atomic: a crash leaves the old or the new state, never half of one

    def clear(self, root: Path) -> None:
        self.path(root).unlink(missing_ok=True)


class MergeConflict(GitError):
    """A merge of the finish conflicts. Exit 2; nothing pushed."""


def _merge_in_progress(root: Path) -> str | None:
    return git.rev("MERGE_HEAD", root)


def _merge(root: Path, st: FinishState, into: str, what: str, expected: str, leave_in_place: bool) -> None:
    """`git merge --no-ff what` on `into`. On conflict: abort (or leave for --continue) and raise."""
    git.run("checkout", "--quiet", into, cwd=root)
    res = git.run("merge", "--no-ff", "--quiet", what, cwd=root, check=False)
    if res.ok:
        return
    files = git.unmerged_files(root)
    if not files and not _merge_in_progress(root):
        raise GitError(f"`git merge --no-ff {what}` on {into} failed: {git.last_line(res.stderr or res.stdout)}")
    shown = ", ".join(files[:8]) + (" …" if len(files) > 8 else "")
    if leave_in_place:
        raise MergeConflict(f"merging {what} into {into} conflicts in {shown}: resolve them here "
                            f"(you are on {into}), `git add` them, then run `stackpatch finish --continue` "
                            "(or `stackpatch finish --abort`)")
    git.run("merge", "--abort", cwd=root)
    git.run("checkout", "--quiet", st.head_before, cwd=root, check=False)
    raise MergeConflict(f"merging {what} into {into} conflicts in {shown}: the merge was undone and nothing "
                        f"was pushed; fix it on {st.branch} and re-run `stackpatch finish`, or run "
                        "`stackpatch finish --continue` to redo the merge and resolve it in place")


def _tag_target(root: Path, tag: str) -> str | None:
    return git.rev(f"refs/tags/{tag}", root)


def _tag_object(root: Path, tag: str) -> str | None:
    res = git.run("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}", cwd=root, check=False)
    return res.stdout.strip() if res.ok else None


def _second_parent(root: Path, sha: str) -> str | None:
    return git.rev(f"{sha}^2", root)


# ---------------------------------------------------------------- finish

def finish(repo: str | Path | None = None, push: bool = True, keep_branch: bool = False,
           message: str | None = None, cont: bool = False, progress: Progress = _quiet) -> dict[str, Any]:
    """Merge the hotfix into master, tag, merge the tag into develop, push atomically, delete the branch.

    Re-runnable: each step checks whether it is done. State in .git/stackpatch-finish.json.
    """
    root = _root(repo)
    s = load_settings(root)
    st = FinishState.load(root)
    in_merge = _merge_in_progress(root)
    if cont and st is None:
        raise UserError("there is no interrupted finish to continue: run `stackpatch finish` on the hotfix branch")
    if in_merge and not (cont and st is not None):
        raise UserError("a merge is in progress: finish it (git add, git commit) or run `git merge --abort`, "
                        "then retry" if st is None else
                        "a merge is in progress: resolve it and run `stackpatch finish --continue`, "
                        "or `stackpatch finish --abort`")
    if st is not None:
        cur = git.current_branch(root)
        if cur and cur.startswith(s.hotfix_prefix) and cur != st.branch:
            raise UserError(f"the finish of {st.branch} is unfinished: complete it first (stackpatch finish "
                            f"--continue) or undo it (stackpatch finish --abort), then finish {cur}")
        s = Settings(st.remote, st.main, st.develop, s.hotfix_prefix, s.tag_prefix, s.version_pattern,
                     s.multi_hotfix, s.source)
        branch, version, tag = st.branch, st.version, st.tag
        if message is not None and not st.tag_created:
            st.message = message
    else:
        cur = git.current_branch(root)
        if not cur or not cur.startswith(s.hotfix_prefix):
            raise UserError(f"not on a hotfix branch (current: {cur or 'detached HEAD'}): "
                            f"check out the {s.hotfix_prefix}<version> branch to finish, then retry")
        branch = cur
        version = cur[len(s.hotfix_prefix):]
        versions.check(version, s.version_pattern)
        tag = _tag_name(s, version)

    _require_remote(root, s)
    if not in_merge:
        _require_clean(root)
    _fetch(root, s, progress)
    main_ref = _branch_ref(root, s, s.main)
    develop_ref = _branch_ref(root, s, s.develop)
    hotfix = git.rev(f"refs/heads/{branch}", root)
    if hotfix is None:
        if st is None or not st.pushed:
            raise UserError(f"branch {branch!r} does not exist: nothing to finish")
        hotfix = st.hotfix_sha  # already deleted locally by an earlier run: only cleanup remains
    else:
        _require_equal_to_remote(root, s, branch)

    if st is None or not st.pushed:
        # rewind our own unpushed merges when the hotfix moved on (a fix made on the hotfix branch)
        if st is not None and hotfix != st.hotfix_sha and not in_merge:
            _rewind(root, st, progress)
            st.hotfix_sha = hotfix
            st.save(root)
        _require_not_behind(root, s, s.main)
        _require_not_behind(root, s, s.develop)
        main_sha = git.rev(main_ref, root)
        start_tag = git.config_get(f"gitflow.branch.{branch}.{FROM_KEY}", root)
        start_sha = git.rev(f"refs/tags/{start_tag}", root) if start_tag else None
        if st is None and git.is_ancestor(hotfix, main_sha, root) and not _merged_by_merge(root, hotfix, main_sha):
            raise UserError(f"{branch} has no commits beyond its base ({start_tag or s.main}): "
                            "commit the fix first, then finish")
        if not git.is_ancestor(hotfix, main_sha, root):
            res = git.run("merge-base", hotfix, main_sha, cwd=root, check=False)
            base = res.stdout.strip() if res.ok else None
            if base is None:
                raise UserError(f"{branch} has no common ancestor with {s.main}: it cannot be finished")
            if hotfix == base or hotfix == start_sha:
                raise UserError(f"{branch} has no commits beyond its base "
                                f"({start_tag or s.main}): commit the fix first, then finish")
        tobj = _tag_object(root, tag)
        if tobj is not None and not (st is not None and _our_tag(root, st)):
            target = _tag_target(root, tag)
            if _second_parent(root, target) != hotfix:
                raise UserError(f"tag {tag!r} already exists and is not this hotfix's merge: "
                                "delete it (git tag -d) if it is stale, or start a new hotfix")
        if not in_merge:
            _require_no_overwrite(root, [main_ref, develop_ref])

    tracked = _track_missing(root, s, [s.main, s.develop], progress)
    if st is None:
        st = FinishState(version=version, branch=branch, tag=tag, main=s.main, develop=s.develop,
                         remote=s.remote, message=message or f"Hotfix {version}",
                         head_before=git.current_branch(root) or branch,
                         main_before=git.out("rev-parse", f"refs/heads/{s.main}", cwd=root),
                         develop_before=git.out("rev-parse", f"refs/heads/{s.develop}", cwd=root),
                         hotfix_sha=hotfix, tag_before=_tag_object(root, tag))
        st.save(root)

    done: list[str] = []
    if in_merge:
        _conclude_merge(root, st)
        done.append("concluded the merge in progress")

    # 1. merge the hotfix into master
    if git.is_ancestor(hotfix, f"refs/heads/{s.main}", root):
        progress(f"{branch} is already merged into {s.main}")
    else:
        progress(f"merging {branch} into {s.main}")
        _merge(root, st, s.main, branch, hotfix, leave_in_place=cont)
        st.main_merge = git.out("rev-parse", "HEAD", cwd=root)
        st.save(root)
        done.append(f"merged {branch} into {s.main}")

    # 2. the annotated tag on master's merge
    if _tag_object(root, tag) is None:
        progress(f"tagging {s.main} as {tag}")
        git.run("tag", "-a", "-m", st.message, tag, f"refs/heads/{s.main}", cwd=root)
        st.tag_created = _tag_object(root, tag)
        st.save(root)
        done.append(f"tagged {tag}")

    # 3. merge the tag into develop
    if git.is_ancestor(f"refs/tags/{tag}", f"refs/heads/{s.develop}", root):
        progress(f"{tag} is already merged into {s.develop}")
    else:
        progress(f"merging {tag} into {s.develop}")
        _merge(root, st, s.develop, tag, _tag_target(root, tag) or "", leave_in_place=cont)
        st.develop_merge = git.out("rev-parse", "HEAD", cwd=root)
        st.save(root)
        done.append(f"merged {tag} into {s.develop}")

    if not push:
        git.run("checkout", "--quiet", s.develop, cwd=root)
        return {"version": version, "branch": branch, "tag": tag, "done": done, "pushed": False,
                "complete": False, "tracked": tracked,
                "next": "run `stackpatch finish` to push and delete the hotfix branch"}

    # 4. one atomic push of master, develop and the tag
    want = {f"refs/heads/{s.main}": git.out("rev-parse", f"refs/heads/{s.main}", cwd=root),
            f"refs/heads/{s.develop}": git.out("rev-parse", f"refs/heads/{s.develop}", cwd=root),
            f"refs/tags/{tag}": _tag_object(root, tag)}
    have = git.ls_remote(s.remote, *want, cwd=root)
    if all(have.get(r) == sha for r, sha in want.items()):
        progress(f"{s.main}, {s.develop} and {tag} are already on {s.remote}")
    else:
        progress(f"pushing {s.main}, {s.develop} and {tag} to {s.remote} (atomic)")
        res = git.run("push", "--atomic", "--porcelain", s.remote, *(f"{r}:{r}" for r in want),
                      cwd=root, check=False, timeout=300)
        if not res.ok:
            why = _push_reason(res)
            git.run("checkout", "--quiet", st.head_before if git.rev(f"refs/heads/{st.head_before}", root)
                    else s.develop, cwd=root, check=False)
            verb = "refused the push" if "rejected" in res.stdout + res.stderr else "could not be pushed to"
            raise GitError(f"{s.remote} {verb} ({why}): nothing was pushed, the local merges and "
                           f"tag are kept; fix the cause and re-run `stackpatch finish`")
        done.append(f"pushed {s.main}, {s.develop} and {tag}")
    st.pushed = True
    st.save(root)

    # 5. delete the remote hotfix branch, then 6. the local one
    if not keep_branch:
        if git.ls_remote(s.remote, f"refs/heads/{branch}", cwd=root):
            progress(f"deleting {branch} on {s.remote}")
            res = git.run("push", "--quiet", s.remote, "--delete", branch, cwd=root, check=False, timeout=120)
            if not res.ok:
                raise GitError(f"deleting {branch} on {s.remote} failed ({git.last_line(res.stderr)}): "
                               "the finish is pushed; re-run `stackpatch finish` to retry the cleanup")
            done.append(f"deleted {branch} on {s.remote}")
        git.run("update-ref", "-d", f"refs/remotes/{s.remote}/{branch}", cwd=root, check=False)
    git.run("checkout", "--quiet", s.develop, cwd=root)
    if not keep_branch:
        if git.rev(f"refs/heads/{branch}", root):
            git.run("branch", "--quiet", "-d", branch, cwd=root)
            done.append(f"deleted {branch}")
        git.run("config", "--local", "--remove-section", f"gitflow.branch.{branch}", cwd=root, check=False)
    st.clear(root)
    return {"version": version, "branch": branch, "tag": tag, "done": done, "pushed": True, "complete": True,
            "branch_kept": keep_branch, "on": s.develop, "tracked": tracked}


def _merged_by_merge(root: Path, hotfix: str, main_sha: str) -> bool:
    """Whether a merge commit in `hotfix..main` has the hotfix tip as a parent (an earlier finish merged it)."""
    out = git.out("rev-list", "--merges", "--parents", f"{hotfix}..{main_sha}", cwd=root)
    return any(hotfix in ln.split()[1:] for ln in out.splitlines())


def _push_reason(res: git.Result) -> str:
    lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines()]
    remote = [ln.removeprefix("remote:").strip() for ln in lines if ln.startswith("remote:")]
    said = [ln for ln in remote if ln and not ln.startswith("error: hook declined")]
    if said or remote:
        return "hook said: " + " / ".join(said[-3:] or remote[-1:])
    return git.last_line(res.stderr or res.stdout)


def _conclude_merge(root: Path, st: FinishState) -> None:
    """--continue with a merge in progress: it must be one of ours, fully resolved; commit it."""
    cur = git.current_branch(root)
    merge_head = _merge_in_progress(root)
    expected = {st.main: st.hotfix_sha, st.develop: _tag_target(root, st.tag)}
    if cur not in expected or merge_head != expected[cur]:
        raise UserError("the merge in progress is not one of this finish's merges: finish or abort it "
                        "(git merge --abort), then run `stackpatch finish --continue`")
    left = git.unmerged_files(root)
    if left:
        shown = ", ".join(left[:8])
        raise MergeConflict(f"still unresolved: {shown}: resolve them, `git add` them, "
                            "then run `stackpatch finish --continue`")
    git.run("commit", "--quiet", "--no-edit", "--cleanup=strip", cwd=root)
    sha = git.out("rev-parse", "HEAD", cwd=root)
    if cur == st.main:
        st.main_merge = sha
    else:
        st.develop_merge = sha
    st.save(root)


def _rewind(root: Path, st: FinishState, progress: Progress) -> None:
    """The hotfix branch moved since our local (unpushed) merges: undo them so they are redone from
    the new tip. Only refs we moved ourselves are reset, and only to where they were."""
    moved = _moved_by_others(root, st)
    if moved:
        raise UserError(f"{moved} has moved since this finish started: run `stackpatch finish --abort`, "
                        "then finish again")
    progress(f"{st.branch} moved on: redoing the local merges from its new tip")
    if _our_tag(root, st):
        git.run("tag", "-d", st.tag, cwd=root)
        st.tag_created = None
    _reset_branches(root, st)
    st.main_merge = st.develop_merge = None


def _moved_by_others(root: Path, st: FinishState) -> str | None:
    """The first of master/develop that is neither where it was nor at a merge this finish made
    (recognised by its recorded id, or by its parents should a crash have hit before the record)."""
    tag_commit = _tag_target(root, st.tag)
    for name, before, ours, second in ((st.main, st.main_before, st.main_merge, st.hotfix_sha),
                                       (st.develop, st.develop_before, st.develop_merge, tag_commit)):
        cur = git.rev(f"refs/heads/{name}", root)
        if cur in (before, ours):
            continue
        if cur and second and git.rev(f"{cur}^1", root) == before and git.rev(f"{cur}^2", root) == second:
            continue
        return name
    return None


def _our_tag(root: Path, st: FinishState) -> bool:
    """Whether the version tag exists and was made by this finish (so --abort/rewind may delete it)."""
    obj = _tag_object(root, st.tag)
    if obj is None or obj == st.tag_before:
        return False
    if obj == st.tag_created:
        return True
    target = _tag_target(root, st.tag)
    return st.tag_before is None and target is not None and _second_parent(root, target) == st.hotfix_sha


def _reset_branches(root: Path, st: FinishState) -> None:
    cur = git.current_branch(root)
    if cur in (st.main, st.develop):
        git.run("checkout", "--quiet", st.branch if git.rev(f"refs/heads/{st.branch}", root) else st.head_before,
                cwd=root)
    git.run("branch", "-f", st.main, st.main_before, cwd=root)
    git.run("branch", "-f", st.develop, st.develop_before, cwd=root)


def abort(repo: str | Path | None = None, progress: Progress = _quiet) -> dict[str, Any]:
    """Undo the local merges and tag of an unfinished (unpushed) finish."""
    root = _root(repo)
    st = FinishState.load(root)
    if st is None:
        raise UserError("there is no interrupted finish to abort")
    if st.pushed:
        raise UserError("this finish was already pushed and cannot be undone: run `stackpatch finish` "
                        "to complete its cleanup")
    moved = _moved_by_others(root, st)
    if moved:
        before = st.main_before if moved == st.main else st.develop_before
        raise UserError(f"{moved} has moved since this finish started: reset it by hand "
                        f"(git branch -f {moved} {before[:12]}), then delete {FinishState.path(root)}")
    if _merge_in_progress(root):
        progress("aborting the merge in progress")
        git.run("merge", "--abort", cwd=root)
    undone = []
    if _our_tag(root, st):
        git.run("tag", "-d", st.tag, cwd=root)
        undone.append(f"deleted tag {st.tag}")
    _reset_branches(root, st)
    undone.append(f"reset {st.main} and {st.develop} to where they were")
    back = st.head_before if git.rev(f"refs/heads/{st.head_before}", root) else st.branch
    git.run("checkout", "--quiet", back, cwd=root, check=False)
    st.clear(root)
    return {"version": st.version, "branch": st.branch, "undone": undone, "on": back}


# ---------------------------------------------------------------- list

def hotfix_list(repo: str | Path | None = None) -> list[dict[str, Any]]:
    """Open hotfix branches (local or on the remote, as last fetched), their base and their commits."""
    root = _root(repo)
    s = load_settings(root)
    local, remote = _hotfix_branches(root, s)
    cur = git.current_branch(root)
    main = f"refs/heads/{s.main}" if git.rev(f"refs/heads/{s.main}", root) else f"refs/remotes/{s.remote}/{s.main}"
    rows = []
    for b in sorted(set(local) | set(remote)):
        ref = f"refs/heads/{b}" if b in local else f"refs/remotes/{s.remote}/{b}"
        base = git.config_get(f"gitflow.branch.{b}.{FROM_KEY}", root)
        base_ref = f"refs/tags/{base}" if base and git.rev(f"refs/tags/{base}", root) else None
        if base_ref is None and git.rev(main, root):
            mb = git.run("merge-base", ref, main, cwd=root, check=False)
            base_ref = mb.stdout.strip() if mb.ok else None
            if base_ref:
                name = git.run("describe", "--tags", "--exact-match", base_ref, cwd=root, check=False)
                base = name.stdout.strip() if name.ok else base_ref[:10]
        commits = []
        if base_ref:
            log = git.out("log", "--format=%h%x09%s", f"{base_ref}..{ref}", cwd=root)
            commits = [dict(zip(("sha", "subject"), ln.split("\t", 1))) for ln in log.splitlines() if ln]
        rows.append({"version": b[len(s.hotfix_prefix):], "branch": b, "base": base, "local": b in local,
                     "on_remote": b in remote, "current": b == cur, "commits": commits})
    return rows
