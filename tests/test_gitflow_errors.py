"""Bad input for start/finish: one line, exit 2, and the repository (and its remote) unchanged.
Plus the behaviours around an interrupted finish: push refused by a hook, --abort, --no-push, settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gitflow_fixtures import World, make_world, set_env, sh, stackpatch

from stackpatch import gitflow

V = "16.03.1b"


@pytest.fixture
def w(tmp_path, monkeypatch) -> World:
    set_env(monkeypatch, tmp_path)
    return make_world(tmp_path, "app")


def start(w: World, *args: str):
    return stackpatch("start", "--repo", str(w.work), *args)


def finish(w: World, *args: str):
    return stackpatch("finish", "--repo", str(w.work), *args)


def refused(w: World, run, *needles: str) -> str:
    """Run `run()` and check: exit 2, one error line containing `needles`, nothing changed."""
    before = w.snapshot()
    r = run()
    assert r.code == 2, (r.code, r.stderr)
    line = r.error
    for n in needles:
        assert n in line, (n, line)
    assert w.snapshot() == before
    return line


def started(w: World) -> None:
    r = start(w)
    assert r.code == 0, r.stderr
    w.edit_line(2, "line 2 fixed", "Fix line 2")
    w.git("push", "-q")


# ---------------------------------------------------------------- start

def test_not_a_git_repo(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    d = tmp_path / "plain"
    d.mkdir()
    for cmd in (("start",), ("finish",), ("hotfix", "list")):
        r = stackpatch(*cmd, "--repo", str(d))
        assert r.code == 2 and "is not a git repository" in r.error


def test_no_remote(w):
    w.git("remote", "remove", "origin")
    refused(w, lambda: start(w), "no remote 'origin'")


def test_remote_unreachable(w, tmp_path):
    w.git("remote", "set-url", "origin", str(tmp_path / "does-not-exist.git"))
    refused(w, lambda: start(w), "cannot fetch from remote 'origin'")


def test_dirty_tree(w):
    (w.work / "app.txt").write_text("changed\n")
    refused(w, lambda: start(w), "uncommitted changes", "app.txt")


def test_untracked_file_is_fine_unless_a_checkout_would_overwrite_it(w):
    (w.work / "notes.txt").write_text("mine\n")  # harmless: no branch has it
    # a newer release removed VERSION; starting from the older release would overwrite an untracked VERSION
    w.git("rm", "-q", "VERSION")
    w.git("commit", "-q", "-m", "Release 16.04.1 (drops VERSION)")
    w.git("tag", "-a", "-m", "Release 16.04.1", "16.04.1")
    w.git("push", "-q", "origin", "master", "refs/tags/16.04.1")
    (w.work / "VERSION").write_text("untracked\n")
    refused(w, lambda: start(w, "--from", "16.03.1"), "untracked files would be overwritten", "VERSION")


@pytest.mark.parametrize("bad", ["16.3.1b", "16.03.1.b", "v16.03.1b", "16.03.1bb"])
def test_bad_version(w, bad):
    refused(w, lambda: start(w, bad), "is not of the form", bad)


def test_tag_exists(w):
    refused(w, lambda: start(w, "16.03.1"), "tag '16.03.1' already exists")


def test_branch_exists_locally_or_only_on_the_remote(w):
    w.git("config", "gitflow.multi-hotfix", "true")
    w.git("branch", "hotfix/16.03.1c")
    refused(w, lambda: start(w, "16.03.1c"), "'hotfix/16.03.1c' already exists")
    w.git("push", "-q", "origin", "hotfix/16.03.1c")
    w.git("branch", "-D", "hotfix/16.03.1c")
    refused(w, lambda: start(w, "16.03.1c"), "exists on origin only")
    # and a remote-only name counts as taken for the next free letter
    r = start(w, "--json", "--no-push")
    assert r.code == 0 and json.loads(r.stdout)["version"] == "16.03.1d"


def test_second_open_hotfix_unless_multi_hotfix(w):
    assert start(w).code == 0
    w.git("checkout", "-q", "master")
    refused(w, lambda: start(w), f"hotfix 'hotfix/{V}' is still open", "gitflow.multi-hotfix")
    w.git("config", "gitflow.multi-hotfix", "true")
    r = start(w, "--json")
    assert r.code == 0 and json.loads(r.stdout)["version"] == "16.03.1c"


def test_master_or_develop_missing_here_and_on_the_remote(w):
    w.git("checkout", "-q", "--detach")
    w.git("branch", "-D", "develop")
    w.git("push", "-q", "origin", ":develop")
    refused(w, lambda: start(w), "branch 'develop' does not exist here or on origin", "gitflow.branch")
    w.git("push", "-q", "origin", "master:develop")
    w.git("branch", "-m", "master", "prod")
    sh("git", "update-ref", "-d", "refs/heads/master", cwd=w.remote)  # the remote's HEAD: no push can delete it
    w.git("fetch", "-q", "--prune")
    refused(w, lambda: start(w), "branch 'master' does not exist here or on origin")


def _fresh_clone(w: World, tmp_path: Path) -> World:
    """`git clone` of the remote: only the remote's HEAD branch (master) is local; develop is origin/develop."""
    sh("git", "clone", "-q", str(w.remote), str(tmp_path / "clone"), cwd=tmp_path)
    return World(tmp_path / "clone", w.remote)


def _tracks(w: World, branch: str) -> None:
    assert w.rev(f"refs/heads/{branch}") == w.rev(f"refs/remotes/origin/{branch}")
    assert w.git("config", f"branch.{branch}.remote") == "origin"
    assert w.git("config", f"branch.{branch}.merge") == f"refs/heads/{branch}"


def test_a_fresh_clone_can_start(w, tmp_path):
    c = _fresh_clone(w, tmp_path)
    assert c.rev("refs/heads/develop") is None and c.rev("refs/remotes/origin/develop")
    r = start(c)  # no other git command first
    assert r.code == 0, r.stderr
    said = [ln for ln in r.stderr.splitlines() if "tracking origin/develop" in ln]
    assert said == ["→ created local branch develop tracking origin/develop (as `git checkout develop` would)"]
    assert "master" not in " ".join(ln for ln in r.stderr.splitlines() if "created local branch" in ln)
    _tracks(c, "develop")
    assert c.git("rev-parse", "--abbrev-ref", "HEAD") == f"hotfix/{V}"
    assert c.rev("HEAD") == c.rev("16.03.1^{commit}")


def test_start_makes_master_and_develop_when_only_the_remote_has_them(w):
    w.git("checkout", "-q", "--detach")
    w.git("branch", "-D", "master", "develop")
    r = start(w, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["tracked"] == ["master", "develop"]
    _tracks(w, "master")
    _tracks(w, "develop")


def test_a_refused_start_makes_no_tracking_branch(w):
    started(w)  # hotfix/16.03.1b is open: a second start is refused after the branch checks
    w.git("checkout", "-q", "--detach")
    w.git("branch", "-D", "develop")
    refused(w, lambda: start(w), f"hotfix 'hotfix/{V}' is still open")
    assert w.rev("refs/heads/develop") is None


def test_a_failed_push_removes_the_tracking_branch_start_made(w):
    w.git("checkout", "-q", "--detach")
    w.git("branch", "-D", "develop")
    hook = w.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no new branches today'\nexit 1\n")
    hook.chmod(0o755)
    refused(w, lambda: start(w), "pushing hotfix/16.03.1b to origin failed", "nothing was created")


def test_diverged_master_is_refused_with_what_to_do(w):
    w.edit_line(3, "line 3 on the remote", "Remote work")
    w.git("push", "-q")
    w.git("reset", "-q", "--hard", "HEAD~1")
    w.edit_line(4, "line 4 here", "Local work")
    refused(w, lambda: start(w), "master and origin/master have diverged", "git pull --rebase", "git push")


def test_a_fresh_clone_can_finish(w, tmp_path):
    started(w)
    c = _fresh_clone(w, tmp_path)
    c.git("checkout", "-q", f"hotfix/{V}")  # finish runs on the hotfix branch
    assert c.rev("refs/heads/develop") is None
    r = finish(c, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["tracked"] == ["develop"]
    assert r.stderr.count("created local branch develop tracking origin/develop") == 1
    assert c.rev("refs/heads/develop") == c.rev("refs/remotes/origin/develop")
    assert w.remote_refs()["refs/heads/develop"] == c.rev("refs/heads/develop")
    assert c.git("config", "branch.develop.merge") == "refs/heads/develop"


def test_finish_refuses_a_diverged_develop(w):
    started(w)
    w.git("checkout", "-q", "develop")
    w.edit_line(9, "line 9 on the remote", "Remote work")
    w.git("push", "-q")
    w.git("reset", "-q", "--hard", "HEAD~1")
    w.edit_line(8, "line 8 here", "Local work")
    w.git("checkout", "-q", f"hotfix/{V}")
    refused(w, lambda: finish(w), "develop and origin/develop have diverged", "git pull --rebase")


def test_master_behind_remote(w):
    w.edit_line(3, "line 3 on master", "More")
    w.git("push", "-q")
    w.git("reset", "-q", "--hard", "HEAD~1")
    refused(w, lambda: start(w), "master is behind origin/master")


def test_no_release_tag_and_unknown_from(w):
    refused(w, lambda: start(w, "--from", "16.09.1"), "release tag '16.09.1' (--from) does not exist")
    w.git("tag", "-d", "16.03.1")
    w.git("push", "-q", "origin", ":refs/tags/16.03.1")
    refused(w, lambda: start(w), "no release tag", "--from RELEASE")


def test_push_of_new_branch_refused_leaves_nothing(w):
    hook = w.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no new branches today'\nexit 1\n")
    hook.chmod(0o755)
    refused(w, lambda: start(w), "pushing hotfix/16.03.1b to origin failed", "nothing was created")


# ---------------------------------------------------------------- finish

def test_finish_outside_a_hotfix_branch(w):
    refused(w, lambda: finish(w), "not on a hotfix branch (current: master)")


def test_finish_without_commits_beyond_base(w):
    assert start(w).code == 0
    refused(w, lambda: finish(w), "has no commits beyond its base (16.03.1)")


def test_finish_hotfix_behind_or_ahead_of_remote(w):
    started(w)
    w.edit_line(3, "line 3 too", "Also line 3")
    refused(w, lambda: finish(w), f"hotfix/{V} is ahead of origin/hotfix/{V}", "push it first")
    w.git("push", "-q")
    w.git("reset", "-q", "--hard", "HEAD~1")
    refused(w, lambda: finish(w), f"hotfix/{V} is behind origin/hotfix/{V}")


def test_finish_master_or_develop_behind_remote(w):
    started(w)
    for branch in ("master", "develop"):
        w.git("checkout", "-q", branch)
        w.edit_line(9, f"line 9 on {branch}", f"Work on {branch}")
        w.git("push", "-q")
        w.git("reset", "-q", "--hard", "HEAD~1")
        w.git("checkout", "-q", f"hotfix/{V}")
        refused(w, lambda: finish(w), f"{branch} is behind origin/{branch}")
        w.git("branch", "-f", branch, f"origin/{branch}")


def test_finish_dirty_and_untracked_overwrite(w):
    w.git("checkout", "-q", "develop")
    w.commit({"feature.txt": "feature\n"}, "Feature")
    w.git("push", "-q")
    w.git("checkout", "-q", "master")
    started(w)
    (w.work / "app.txt").write_text("dirty\n")
    refused(w, lambda: finish(w), "uncommitted changes")
    w.git("checkout", "app.txt")
    (w.work / "feature.txt").write_text("untracked, would be lost\n")
    refused(w, lambda: finish(w), "untracked files would be overwritten", "feature.txt")


def test_finish_stale_tag_exists(w):
    started(w)
    w.git("tag", "-a", "-m", "stale", V, "master")
    refused(w, lambda: finish(w), f"tag '{V}' already exists")


def test_finish_remote_unreachable(w, tmp_path):
    started(w)
    w.git("remote", "set-url", "origin", str(tmp_path / "gone.git"))
    refused(w, lambda: finish(w), "cannot fetch from remote 'origin'")


def test_continue_or_abort_without_an_interrupted_finish(w):
    refused(w, lambda: finish(w, "--continue"), "no interrupted finish to continue")
    refused(w, lambda: finish(w, "--abort"), "no interrupted finish to abort")


# ---------------------------------------------------------------- push refused, then re-run

@pytest.mark.parametrize("hook_kind", ["pre-receive", "update-on-tags"])
def test_push_refused_by_remote_hook_then_rerun_completes(w, hook_kind):
    started(w)
    main_before, develop_before = w.rev("master"), w.rev("develop")
    if hook_kind == "pre-receive":
        hook = w.remote / "hooks" / "pre-receive"
        hook.write_text('#!/bin/sh\n[ -f "$GIT_DIR/deny" ] && { echo "pushes are frozen"; exit 1; }\nexit 0\n')
    else:  # rejects only the tag: without --atomic, master and develop would have gone through
        hook = w.remote / "hooks" / "update"
        hook.write_text('#!/bin/sh\ncase "$1" in refs/tags/*) [ -f "$GIT_DIR/deny" ] && '
                        '{ echo "tags are frozen"; exit 1; };; esac\nexit 0\n')
    hook.chmod(0o755)
    (w.remote / "deny").write_text("")
    remote_before = w.remote_refs()

    r = finish(w, "-m", "msg")
    assert r.code == 2
    assert "origin refused the push" in r.error and "frozen" in r.error and "re-run `stackpatch finish`" in r.error
    assert w.remote_refs() == remote_before  # nothing partly pushed
    assert w.rev("master") != main_before and w.rev(f"refs/tags/{V}") is not None  # local merges kept
    assert w.git("merge-base", "--is-ancestor", V, "develop") == ""
    assert (w.work / ".git" / "stackpatch-finish.json").is_file()
    assert w.git("symbolic-ref", "--short", "HEAD") == f"hotfix/{V}"

    # still refused: a re-run skips the done steps and fails the same way, nothing more changes
    merged = (w.rev("master"), w.rev("develop"), w.rev(f"refs/tags/{V}"))
    r = finish(w)
    assert r.code == 2 and "refused the push" in r.error
    assert (w.rev("master"), w.rev("develop"), w.rev(f"refs/tags/{V}")) == merged

    (w.remote / "deny").unlink()
    r = finish(w)
    assert r.code == 0, r.stderr
    refs = w.remote_refs()
    assert refs["refs/heads/master"] == merged[0] and refs["refs/heads/develop"] == merged[1]
    assert refs[f"refs/tags/{V}"] == merged[2] and f"refs/heads/hotfix/{V}" not in refs
    assert not (w.work / ".git" / "stackpatch-finish.json").exists()
    assert w.rev(f"refs/heads/hotfix/{V}") is None and w.git("symbolic-ref", "--short", "HEAD") == "develop"
    assert develop_before != merged[1]


# ---------------------------------------------------------------- --abort, --no-push, --keep-branch

def test_abort_after_conflict_restores_everything(w):
    w.git("checkout", "-q", "develop")
    w.edit_line(5, "line 5 develop", "Develop 5")
    w.git("push", "-q")
    w.git("checkout", "-q", "master")
    started(w)
    w.edit_line(5, "line 5 hotfix", "Hotfix 5")
    w.git("push", "-q")
    before = w.snapshot()
    r = finish(w)
    assert r.code == 2 and "conflicts in app.txt" in r.error
    assert w.rev(f"refs/tags/{V}") is not None  # master merged and tagged locally
    r = finish(w, "--continue")  # redo the merge in place, then change our mind
    assert r.code == 2 and w.rev("MERGE_HEAD") is not None
    r = finish(w, "--abort")
    assert r.code == 0, r.stderr
    assert w.snapshot() == before


def test_no_push_then_finish(w):
    started(w)
    remote_before = w.remote_refs()
    r = finish(w, "--no-push", "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["pushed"] is False and data["complete"] is False
    assert w.remote_refs() == remote_before  # nothing sent
    assert w.rev(f"refs/tags/{V}") is not None and w.rev(f"refs/heads/hotfix/{V}") is not None
    r = finish(w, "--json")  # from develop: the state file knows which hotfix
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["complete"] is True
    assert w.remote_refs()[f"refs/tags/{V}"] == w.rev(f"refs/tags/{V}")


def test_keep_branch(w):
    started(w)
    r = finish(w, "--keep-branch")
    assert r.code == 0, r.stderr
    assert w.rev(f"refs/heads/hotfix/{V}") and f"refs/heads/hotfix/{V}" in w.remote_refs()
    assert w.git("config", f"gitflow.branch.hotfix/{V}.base") == "master"


def test_default_tag_message_without_terminal(w):
    started(w)
    assert finish(w).code == 0
    assert w.git("tag", "-l", "--format=%(contents:subject)", V) == f"Hotfix {V}"


# ---------------------------------------------------------------- settings and list

def test_settings_from_git_flow_keys_without_stackpatch_toml(w):
    w.git("branch", "-m", "master", "prod")
    w.git("push", "-q", "origin", "prod")
    w.git("config", "gitflow.branch.master", "prod")
    w.git("config", "gitflow.prefix.hotfix", "hf-")
    w.git("config", "gitflow.prefix.versiontag", "v")
    w.git("tag", "-a", "-m", "Release", "v16.03.1", "16.03.1")
    w.git("tag", "-d", "16.03.1")
    w.git("push", "-q", "origin", "refs/tags/v16.03.1", ":refs/tags/16.03.1")
    r = start(w, "--json")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["branch"] == "hf-16.03.1b" and data["tag"] == "v16.03.1b" and data["base"]["tag"] == "v16.03.1"
    assert data["settings"]["source"] == "git-flow config"
    w.edit_line(2, "line 2 fixed", "Fix")
    w.git("push", "-q")
    r = finish(w)
    assert r.code == 0, r.stderr
    refs = w.remote_refs()
    assert "refs/tags/v16.03.1b" in refs and refs["refs/heads/prod"] == w.rev("prod")
    assert w.git("rev-list", "--parents", "-n1", "prod").split()[1] == w.rev("v16.03.1^{commit}")


def test_stackpatch_toml_git_section_wins_and_bad_key_is_one_line(w):
    (w.work / ".git" / "info" / "exclude").write_text("stackpatch.toml\n")
    (w.work / "stackpatch.toml").write_text('[git]\nhotfix_prefix = "fix/"\n')
    w.git("config", "gitflow.prefix.hotfix", "hf-")  # the file wins over git-flow's key
    r = start(w, "--json", "--no-push")
    assert r.code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["branch"] == "fix/16.03.1b" and data["settings"]["source"] == "stackpatch.toml"
    w.git("checkout", "-q", "master")
    (w.work / "stackpatch.toml").write_text('[git]\nhotfix_prefx = "fix/"\n')
    refused(w, lambda: start(w), "git.hotfix_prefx: unknown key", "did you mean 'hotfix_prefix'")


def test_deployed_version_is_the_base_unless_from(w):
    w.edit_line(8, "line 8 in 16.04.1", "Release 16.04.1")
    w.git("tag", "-a", "-m", "Release 16.04.1", "16.04.1")
    root = Path(w.work)
    s = gitflow.load_settings(root)
    assert gitflow.resolve_base(root, s).version == "16.04.1"
    b = gitflow.resolve_base(root, s, deployed_version="16.03.1")
    assert (b.version, b.reason, b.older_than_main) == ("16.03.1", "deployed", True)
    assert gitflow.resolve_base(root, s, from_release="16.04.1", deployed_version="16.03.1").version == "16.04.1"
    res = gitflow.start(root, deployed_version="16.03.1", push=False)
    assert res["version"] == "16.03.1b" and w.rev("HEAD") == w.rev("16.03.1^{commit}")


def test_hotfix_list(w):
    r = stackpatch("hotfix", "list", "--repo", str(w.work), "--json")
    assert r.code == 0 and json.loads(r.stdout) == []
    started(w)
    r = stackpatch("hotfix", "list", "--repo", str(w.work), "--json")
    rows = json.loads(r.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert (row["branch"], row["base"], row["local"], row["on_remote"], row["current"]) == \
        (f"hotfix/{V}", "16.03.1", True, True, True)
    assert [c["subject"] for c in row["commits"]] == ["Fix line 2"]
    r = stackpatch("hotfix", "list", "--repo", str(w.work))
    assert f"hotfix/{V}" in r.stdout and "based on 16.03.1" in r.stdout and "Fix line 2" in r.stdout


def test_help_teaches(w):
    for cmd in (("start",), ("finish",), ("hotfix", "list")):
        r = stackpatch(*cmd, "--help")
        assert r.code == 0 and "Usage:" in r.stdout
    assert "--atomic" in stackpatch("finish", "--help").stdout


def test_abort_recognises_our_merges_even_if_a_crash_lost_their_record(w):
    """A crash right after a merge or the tag, before the state file recorded it: --abort still
    recognises them (by their parents), resets master and develop and deletes only our tag."""
    w.git("checkout", "-q", "develop")
    w.edit_line(5, "line 5 develop", "Develop 5")
    w.git("push", "-q")
    w.git("checkout", "-q", "master")
    started(w)
    w.edit_line(5, "line 5 hotfix", "Hotfix 5")
    w.git("push", "-q")
    before = w.snapshot()
    assert finish(w).code == 2  # master merged and tagged, develop conflicts
    state_file = w.work / ".git" / "stackpatch-finish.json"
    state = json.loads(state_file.read_text())
    assert state["main_merge"] and state["tag_created"]
    state["main_merge"] = state["tag_created"] = None  # what a crash before the record leaves
    state_file.write_text(json.dumps(state))
    r = finish(w, "--abort", "--json")
    assert r.code == 0, r.stderr
    assert w.snapshot() == before


def test_abort_refuses_when_someone_else_moved_master(w):
    w.git("checkout", "-q", "develop")
    w.edit_line(5, "line 5 develop", "Develop 5")
    w.git("push", "-q")
    w.git("checkout", "-q", "master")
    started(w)
    w.edit_line(5, "line 5 hotfix", "Hotfix 5")
    w.git("push", "-q")
    assert finish(w).code == 2
    w.git("checkout", "-q", "master")
    w.edit_line(9, "someone else's commit", "Unrelated")
    refused(w, lambda: finish(w, "--abort"), "master has moved since this finish started", "git branch -f master")


def test_repo_option_must_exist(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    r = stackpatch("start", "--repo", str(tmp_path / "nope"))
    assert r.code == 2 and "does not exist" in r.stderr


def test_push_url_unreachable_keeps_local_merges_and_rerun_completes(w, tmp_path):
    started(w)
    w.git("remote", "set-url", "--push", "origin", str(tmp_path / "gone.git"))  # fetch works, push fails
    remote_before = w.remote_refs()
    r = finish(w)
    assert r.code == 2 and "origin could not be pushed to" in r.error and "re-run `stackpatch finish`" in r.error
    assert w.remote_refs() == remote_before and w.rev(f"refs/tags/{V}") is not None
    w.git("remote", "set-url", "--delete", "--push", "origin", str(tmp_path / "gone.git"))
    r = finish(w)
    assert r.code == 0, r.stderr
    assert w.remote_refs()[f"refs/tags/{V}"] == w.rev(f"refs/tags/{V}")


def test_an_unfinished_finish_blocks_finishing_another_hotfix(w):
    w.git("config", "gitflow.multi-hotfix", "true")
    started(w)
    (w.remote / "hooks" / "pre-receive").write_text("#!/bin/sh\necho no\nexit 1\n")
    (w.remote / "hooks" / "pre-receive").chmod(0o755)
    assert finish(w).code == 2  # merged and tagged locally, push refused
    (w.remote / "hooks" / "pre-receive").unlink()
    w.git("checkout", "-q", "master")
    assert start(w, "16.03.1c").code == 0
    w.edit_line(3, "line 3 fixed", "Fix line 3")
    w.git("push", "-q")
    refused(w, lambda: finish(w), f"the finish of hotfix/{V} is unfinished", "--continue")
