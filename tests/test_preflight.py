"""Preflight refusals and findings, on real git repos with bare remotes."""

from __future__ import annotations

import pytest
from build_helpers import commit, load_cfg, make_repo, sh, start_hotfix

from stackpatch.errors import UserError
from stackpatch.preflight import (PreflightError, evaluate, gather, glob_to_regex, risky_files,
                                  strip_credentials)


@pytest.fixture
def world(tmp_path):
    repo, origin, deployed = make_repo(tmp_path)
    return repo, origin, deployed, load_cfg(repo)


def judge(repo, cfg, deployed, ref=None):
    facts = gather(repo, cfg, ref=ref, deployed_revision=deployed)
    return evaluate(facts, "26.11.1", deployed, cfg)


def test_a_pushed_hotfix_passes_and_lists_the_commits(world):
    repo, _, deployed, cfg = world
    head = start_hotfix(repo)
    r = judge(repo, cfg, deployed)
    assert (r.version, r.branch, r.revision, r.deployed_revision) == ("26.11.1b", "hotfix/26.11.1b", head, deployed)
    assert [c.subject for c in r.commits] == ["fix the greeting"]
    assert r.files == ("app.txt",) and r.risky == ()


def test_refuses_when_not_on_a_hotfix_branch(world):
    repo, _, deployed, cfg = world
    with pytest.raises(PreflightError, match=r"'master' is not a hotfix branch .*--ref hotfix/") as e:
        judge(repo, cfg, deployed)
    assert "\n" not in str(e.value)


def test_refuses_a_detached_head(world):
    repo, _, deployed, cfg = world
    sh("checkout", "-q", "--detach", "HEAD", cwd=repo)
    with pytest.raises(PreflightError, match="HEAD is detached"):
        judge(repo, cfg, deployed)


def test_refuses_a_branch_name_that_is_not_a_version(world):
    repo, _, deployed, cfg = world
    start_hotfix(repo, version="oops")
    with pytest.raises(PreflightError, match=r"hotfix version 'oops' .* does not match git.version_pattern"):
        judge(repo, cfg, deployed)


def test_refuses_a_dirty_tree_and_names_the_files(world):
    repo, _, deployed, cfg = world
    start_hotfix(repo)
    (repo / "app.txt").write_text("uncommitted\n")
    (repo / "new.txt").write_text("untracked\n")
    with pytest.raises(PreflightError, match=r"uncommitted changes \(app.txt, new.txt\).*commit and push"):
        judge(repo, cfg, deployed)


def test_refuses_unpushed_commits_and_names_them(world):
    repo, _, deployed, cfg = world
    start_hotfix(repo)
    sha = commit(repo, "app.txt", "second fix\n", "second fix, not pushed")
    with pytest.raises(PreflightError) as e:
        judge(repo, cfg, deployed)
    msg = str(e.value)
    assert f"{sha[:7]} second fix, not pushed" in msg and "1 commit(s)" in msg and "git push origin" in msg


def test_refuses_a_branch_never_pushed(world):
    repo, _, deployed, cfg = world
    start_hotfix(repo, push=False)
    with pytest.raises(PreflightError, match=r"not on remote 'origin'.*git push -u origin hotfix/26.11.1b"):
        judge(repo, cfg, deployed)


def test_refuses_a_branch_behind_its_remote(world, tmp_path):
    repo, origin, deployed, cfg = world
    start_hotfix(repo)
    other = tmp_path / "other"
    sh("clone", "-q", "-b", "hotfix/26.11.1b", str(origin), str(other), cwd=tmp_path)
    commit(other, "app.txt", "a colleague's fix\n", "colleague fix")
    sh("push", "-q", "origin", "hotfix/26.11.1b", cwd=other)
    with pytest.raises(PreflightError, match=r"behind origin/hotfix/26.11.1b by 1 commit.*colleague fix.*--ff-only"):
        judge(repo, cfg, deployed)


def test_refuses_when_the_deployed_commit_is_not_an_ancestor_and_shows_the_relation(world):
    repo, _, deployed, cfg = world
    # the deployed commit is on master after 26.11.1; the hotfix starts from 26.11.1 and lacks it
    sh("checkout", "-q", "master", cwd=repo)
    later = commit(repo, "app.txt", "deployed later\n", "deployed change")
    sh("push", "-q", "origin", "master", cwd=repo)
    start_hotfix(repo)
    with pytest.raises(PreflightError) as e:
        judge(repo, cfg, later)
    msg = str(e.value)
    assert f"deployed commit {later[:7]} (26.11.1) is not an ancestor of hotfix/26.11.1b" in msg
    assert f"merge-base {deployed[:7]}" in msg and "1 commit(s) the hotfix lacks" in msg


def test_refuses_a_deployed_commit_unknown_to_the_repo(world):
    repo, _, _, cfg = world
    start_hotfix(repo)
    with pytest.raises(PreflightError, match=r"deployed commit 0123456 .* is not in this repo"):
        judge(repo, cfg, "0123456789abcdef0123456789abcdef01234567")


def test_refuses_nothing_to_ship(world):
    repo, _, deployed, cfg = world
    sh("checkout", "-q", "-b", "hotfix/26.11.1b", cwd=repo)
    sh("push", "-q", "-u", "origin", "hotfix/26.11.1b", cwd=repo)
    with pytest.raises(PreflightError, match="nothing to ship"):
        judge(repo, cfg, deployed)


def test_flags_risky_files(world):
    repo, _, deployed, cfg = world
    start_hotfix(repo)
    commit(repo, "migrations/002_add.sql", "alter table t add c int;\n", "migration")
    commit(repo, "front/Dockerfile", "FROM scratch\n", "front dockerfile")
    commit(repo, "composer.lock", "{}\n", "deps")
    sh("push", "-q", "origin", "hotfix/26.11.1b", cwd=repo)
    r = judge(repo, cfg, deployed)
    assert set(r.risky) == {"migrations/002_add.sql", "front/Dockerfile", "composer.lock"}
    assert "app.txt" in r.files and "app.txt" not in r.risky


def test_ref_ships_another_pushed_branch_from_a_dirty_master(world):
    repo, _, deployed, cfg = world
    head = start_hotfix(repo)
    sh("checkout", "-q", "master", cwd=repo)
    (repo / "app.txt").write_text("work in progress on master\n")
    r = judge(repo, cfg, deployed, ref="hotfix/26.11.1b")
    assert r.revision == head and r.version == "26.11.1b"


def test_missing_remote_is_one_line(world):
    repo, _, deployed, cfg = world
    sh("remote", "remove", "origin", cwd=repo)
    with pytest.raises(UserError, match=r"git remote 'origin' does not exist"):
        judge(repo, cfg, deployed)


@pytest.mark.parametrize("glob,path,hit", [
    ("**/migrations/**", "migrations/001.sql", True),
    ("**/migrations/**", "app/db/migrations/x/2.php", True),
    ("**/migrations/**", "migrationsX/1.sql", False),
    ("**/Dockerfile*", "Dockerfile", True),
    ("**/Dockerfile*", "docker/Dockerfile.front", True),
    ("**/*.lock", "a/b/c.lock", True),
    ("*.lock", "a/c.lock", False),
    ("src/?.py", "src/a.py", True),
])
def test_glob_semantics(glob, path, hit):
    assert bool(glob_to_regex(glob).match(path)) is hit
    assert (risky_files([path], [glob]) == (path,)) is hit


def test_remote_url_credentials_are_stripped():
    assert strip_credentials("https://bob:s3cret@git.example.com/acme/app.git") == "https://git.example.com/acme/app.git"
    assert strip_credentials("git@github.com:acme/app.git") == "git@github.com:acme/app.git"
    assert strip_credentials("/srv/git/app.git") == "/srv/git/app.git"
