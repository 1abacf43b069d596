"""The clean build directory: a cached clone of the remote, pushed code only, incremental."""

from __future__ import annotations

import pytest
from build_helpers import commit, make_repo, sh, start_hotfix

from stackpatch.images import workdir
from stackpatch.errors import UserError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKPATCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_lives_outside_the_working_tree_per_repo(tmp_path, cache):
    repo, _, _ = make_repo(tmp_path)
    d = workdir.builddir_for(repo)
    assert d.parent == cache / "builddirs" and d.name.startswith("app-")
    assert not str(d).startswith(str(repo))
    other, _, _ = make_repo(tmp_path / "x")
    assert workdir.builddir_for(other) != d


def test_sync_checks_out_exactly_the_pushed_sha_without_working_tree_changes(tmp_path):
    repo, _, _ = make_repo(tmp_path)
    head = start_hotfix(repo)
    (repo / "app.txt").write_text("dirty, never shipped\n")
    (repo / "untracked.txt").write_text("never shipped\n")
    wd = workdir.sync(repo, "origin", head, branch="hotfix/26.11.1b")
    assert wd.cold and wd.revision == head
    assert (wd.path / "app.txt").read_text() == "hello, fixed\n"
    assert not (wd.path / "untracked.txt").exists()
    assert sh("rev-parse", "HEAD", cwd=wd.path) == head


def test_sync_is_incremental_and_cleans_leftovers(tmp_path):
    repo, _, deployed = make_repo(tmp_path)
    wd1 = workdir.sync(repo, "origin", deployed)
    (wd1.path / "build-output.o").write_text("leftover\n")
    (wd1.path / "app.txt").write_text("edited in the build dir\n")
    head = start_hotfix(repo)
    wd2 = workdir.sync(repo, "origin", head, branch="hotfix/26.11.1b")
    assert wd2.path == wd1.path and wd1.cold and not wd2.cold
    assert not (wd2.path / "build-output.o").exists()
    assert (wd2.path / "app.txt").read_text() == "hello, fixed\n"


def test_an_unpushed_commit_is_refused(tmp_path):
    repo, _, _ = make_repo(tmp_path)
    start_hotfix(repo)
    local = commit(repo, "app.txt", "local only\n", "not pushed")
    with pytest.raises(UserError, match=rf"commit {local[:7]} is not on remote 'origin'.*only pushed code ships"):
        workdir.sync(repo, "origin", local)


def test_a_branch_moved_on_the_remote_meanwhile_is_refused(tmp_path):
    repo, origin, _ = make_repo(tmp_path)
    head = start_hotfix(repo)
    other = tmp_path / "other"
    sh("clone", "-q", "-b", "hotfix/26.11.1b", str(origin), str(other), cwd=tmp_path)
    commit(other, "app.txt", "moved\n", "moved")
    sh("push", "-q", "origin", "hotfix/26.11.1b", cwd=other)
    with pytest.raises(UserError, match="someone pushed meanwhile"):
        workdir.sync(repo, "origin", head, branch="hotfix/26.11.1b")


def test_submodules_are_checked_out(tmp_path, monkeypatch):
    lib, _, _ = make_repo(tmp_path / "lib")
    repo, _, _ = make_repo(tmp_path / "main")
    sh("-c", "protocol.file.allow=always", "submodule", "add", "-q", str(tmp_path / "lib" / "origin.git"), "vendor/lib",
       cwd=repo)
    sh("commit", "-q", "-m", "add lib", cwd=repo)
    sh("push", "-q", "origin", "master", cwd=repo)
    head = sh("rev-parse", "HEAD", cwd=repo)
    # file:// submodules are refused by default since git 2.38; a real remote would be https or ssh
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.file.allow")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "always")
    wd = workdir.sync(repo, "origin", head)
    assert (wd.path / "vendor" / "lib" / "app.txt").read_text() == "hello\n"
