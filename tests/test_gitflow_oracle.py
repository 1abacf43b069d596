"""Oracle tests: stackpatch start/finish against Debian's git-flow AVH 1.12.3 on twin repositories.

Each test builds two identical worlds (working clone + bare remote, fixed authors and dates), runs
`git flow hotfix start` / `git flow hotfix finish -F -p -m msg` on one and `stackpatch start` /
`stackpatch finish -m msg` on the other, and compares what matters. With identical inputs git gives
identical ids, so where the topology is the same we compare commit and tag ids themselves (the
parents of master's tip, the tag object and its target, develop, every ref left on the remote).
Where stackpatch differs from AVH on purpose, the test says so and checks the stated difference.

One AVH quirk is neutralised rather than copied: AVH 1.12.3 turns `-m "msg"` into the tag message
"msg <tag>"; the AVH twin installs the filter hook that returns the message as given.
"""

from __future__ import annotations

import json
import shutil

import pytest
from gitflow_fixtures import World, flow, make_world, set_env, stackpatch

pytestmark = pytest.mark.skipif(shutil.which("git-flow") is None, reason="Debian's git-flow is not installed")

V = "16.03.1b"
MSG = "Hotfix 16.03.1b: fix line 2"


@pytest.fixture
def twins(tmp_path, monkeypatch):
    set_env(monkeypatch, tmp_path)
    avh = make_world(tmp_path, "avh")
    sp = make_world(tmp_path, "sp")
    assert avh.rev("master") == sp.rev("master")  # same inputs, same ids
    flow(avh, "init", "-d")
    # AVH 1.12.3 appends the tag name to the -m message (its run_filter_hook echoes all of its arguments
    # when no filter hook exists). Its documented filter hook returning the message unchanged gives the
    # message asked for, so both tags can be compared by id.
    hook = avh.work / ".git" / "hooks" / "filter-flow-hotfix-finish-tag-message"
    hook.write_text('#!/bin/sh\necho "$1"\n')
    hook.chmod(0o755)
    return avh, sp


def both(avh: World, sp: World, fn) -> None:
    fn(avh)
    fn(sp)


def topology(w: World, tag: str = V) -> dict:
    """What the issue asks to compare, as ids."""
    tip = w.rev("refs/heads/master")
    return {
        "master": tip,
        "master_parents": w.git("rev-list", "--parents", "-n1", tip).split()[1:],
        "tag_object": w.rev(f"refs/tags/{tag}"),
        "tag_target": w.rev(f"refs/tags/{tag}^{{commit}}"),
        "tag_type": w.git("cat-file", "-t", f"refs/tags/{tag}"),
        "develop": w.rev("refs/heads/develop"),
        "develop_parents": w.git("rev-list", "--parents", "-n1", "refs/heads/develop").split()[1:],
        "develop_has_tag": w.git("merge-base", "--is-ancestor", f"refs/tags/{tag}", "refs/heads/develop") == "",
        "remote": w.remote_refs(),
        "local_branches": w.git("for-each-ref", "--format=%(refname)", "refs/heads/").split(),
        "current": w.git("symbolic-ref", "--short", "HEAD"),
        "gitflow_section": w.git("config", "--local", "--list").count(f"gitflow.branch.hotfix/{tag}."),
    }


def avh_start(w: World, version: str = V) -> None:
    flow(w, "hotfix", "start", version)
    flow(w, "hotfix", "publish", version)  # stackpatch start pushes with upstream; AVH needs publish


def sp_start(w: World, *args: str) -> dict:
    r = stackpatch("start", "--repo", str(w.work), "--json", *args)
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def avh_finish(w: World, version: str = V, check: bool = True):
    return flow(w, "hotfix", "finish", "-F", "-p", "-m", MSG, version, check=check)


def sp_finish(w: World, *args: str):
    return stackpatch("finish", "--repo", str(w.work), "-m", MSG, *args)


def fix(w: World) -> None:
    w.edit_line(2, "line 2 fixed", "Fix line 2")
    w.git("push", "-q")


def test_plain_hotfix(twins):
    avh, sp = twins
    avh_start(avh)
    res = sp_start(sp)
    assert res["version"] == V and res["base"]["tag"] == "16.03.1" and res["pushed"]
    assert avh.rev(f"hotfix/{V}") == sp.rev(f"hotfix/{V}")
    assert sp.git("config", f"gitflow.branch.hotfix/{V}.base") == "master"  # recorded as AVH does
    assert sp.git("rev-parse", "--abbrev-ref", "@{upstream}") == f"origin/hotfix/{V}"
    both(avh, sp, fix)
    avh_finish(avh)
    r = sp_finish(sp)
    assert r.code == 0, r.stderr
    a, s = topology(avh), topology(sp)
    assert s == a
    # and what that topology is: a --no-ff merge of the hotfix into master, tagged, tag merged into develop
    assert s["master_parents"] == [sp.rev("16.03.1^{commit}"), sp.rev(f"refs/tags/{V}^{{commit}}^2")]
    assert s["tag_target"] == s["master"] and s["tag_type"] == "tag"
    assert s["develop_parents"] == [sp.rev("16.03.1^{commit}"), s["master"]]
    assert f"refs/heads/hotfix/{V}" not in s["remote"] and s["remote"][f"refs/tags/{V}"] == s["tag_object"]
    assert s["current"] == "develop" and s["gitflow_section"] == 0


def test_develop_moved_on(twins):
    avh, sp = twins
    both(avh, sp, lambda w: (w.git("checkout", "-q", "develop"), w.edit_line(9, "line 9 new feature", "Feature"),
                             w.git("push", "-q"), w.git("checkout", "-q", "master")))
    avh_start(avh)
    sp_start(sp)
    both(avh, sp, fix)
    avh_finish(avh)
    assert sp_finish(sp).code == 0
    a, s = topology(avh), topology(sp)
    assert s == a
    assert (sp.work / "app.txt").read_text().splitlines()[1:9:7] == ["line 2 fixed", "line 9 new feature"]


def conflict_setup(avh: World, sp: World) -> None:
    """develop changed line 5; the hotfix changes line 5 too (and fixes line 2): the develop merge conflicts."""
    both(avh, sp, lambda w: (w.git("checkout", "-q", "develop"), w.edit_line(5, "line 5 develop", "Develop 5"),
                             w.git("push", "-q"), w.git("checkout", "-q", "master")))
    avh_start(avh)
    sp_start(sp)
    both(avh, sp, lambda w: (w.edit_line(2, "line 2 fixed", "Fix line 2"),
                             w.edit_line(5, "line 5 hotfix", "Hotfix 5"), w.git("push", "-q")))


def resolve(w: World) -> None:
    text = (w.work / "app.txt").read_text()
    assert "<<<<<<<" in text
    lines = [ln for ln in APP_RESOLVED]
    (w.work / "app.txt").write_text("".join(lines))
    w.git("add", "app.txt")


APP_RESOLVED = [f"line {i}\n" for i in range(1, 11)]
APP_RESOLVED[1] = "line 2 fixed\n"
APP_RESOLVED[4] = "line 5 develop and hotfix\n"


def test_conflict_in_develop_resolved_in_place_with_continue(twins):
    avh, sp = twins
    conflict_setup(avh, sp)
    remote_before = sp.remote_refs()

    # AVH: dies with the conflict left on develop, master merged and tagged locally
    p = avh_finish(avh, check=False)
    assert p.returncode != 0 and "There were merge conflicts" in p.stdout + p.stderr
    resolve(avh)
    avh.git("commit", "-q")  # the user accepts the merge message in the editor
    avh_finish(avh)

    # stackpatch: the merge is undone, nothing pushed, files listed, exit 2
    r = sp_finish(sp)
    assert r.code == 2 and "app.txt" in r.error and "--continue" in r.error
    assert sp.remote_refs() == remote_before
    assert sp.git("status", "--porcelain") == "" and sp.git("symbolic-ref", "--short", "HEAD") == f"hotfix/{V}"
    # --continue redoes the merge in place and stops for the user
    r = stackpatch("finish", "--repo", str(sp.work), "--continue")
    assert r.code == 2 and "app.txt" in r.error and "resolve them here" in r.error
    assert sp.git("symbolic-ref", "--short", "HEAD") == "develop"
    # a --continue before the files are resolved is refused, nothing changes
    r = stackpatch("finish", "--repo", str(sp.work), "--continue")
    assert r.code == 2 and "still unresolved" in r.error
    resolve(sp)
    r = stackpatch("finish", "--repo", str(sp.work), "--continue")
    assert r.code == 0, r.stderr

    a, s = topology(avh), topology(sp)
    assert s == a  # same ids: the resolution commit is the one `git commit` makes after a conflict
    assert (sp.work / "app.txt").read_text() == "".join(APP_RESOLVED)


def test_conflict_in_develop_fixed_on_the_hotfix_and_rerun(twins):
    """Stated difference: after a fix on the hotfix branch, stackpatch rewinds its own UNPUSHED merge
    into master and its tag, and redoes them from the new tip: master gets ONE merge of the hotfix.
    AVH refuses to re-run (its tag does not point at the new tip); once the user deletes the tag by hand
    it merges the hotfix into master a second time. Trees, tag^2, develop and the remote refs that
    matter agree; master's first parent differs (AVH's is its first, stale merge)."""
    avh, sp = twins
    conflict_setup(avh, sp)

    def fix_on_hotfix(w: World) -> None:  # adopt develop's wording of line 5 on the hotfix branch
        w.edit_line(5, "line 5 develop", "Adopt develop's line 5")
        w.git("push", "-q")

    p = avh_finish(avh, check=False)
    assert p.returncode != 0
    avh.git("merge", "--abort")
    avh.git("checkout", "-q", f"hotfix/{V}")
    fix_on_hotfix(avh)
    p = avh_finish(avh, check=False)
    assert p.returncode != 0 and "Tag already exists and does not point to hotfix branch" in p.stdout + p.stderr
    avh.git("tag", "-d", V)
    avh_finish(avh)

    r = sp_finish(sp)
    assert r.code == 2 and "app.txt" in r.error
    fix_on_hotfix(sp)
    r = sp_finish(sp)
    assert r.code == 0, r.stderr

    a, s = topology(avh), topology(sp)
    tip = sp.rev(f"refs/tags/{V}^{{commit}}^2")
    assert tip == avh.rev(f"refs/tags/{V}^{{commit}}^2")  # both tags mark the merge of the fixed tip
    assert s["master_parents"] == [sp.rev("16.03.1^{commit}"), tip]  # one merge
    assert a["master_parents"][1] == tip and a["master_parents"][0] != avh.rev("16.03.1^{commit}")  # two merges
    assert avh.git("rev-parse", f"{a['master']}^{{tree}}") == sp.git("rev-parse", f"{s['master']}^{{tree}}")
    assert avh.git("rev-parse", "develop^{tree}") == sp.git("rev-parse", "develop^{tree}")
    assert s["develop_has_tag"] and a["develop_has_tag"]
    assert sorted(s["remote"]) == sorted(a["remote"])  # same refs left on the remote (no hotfix branch)
    for k in ("local_branches", "current", "gitflow_section", "tag_type"):
        assert s[k] == a[k], k
    assert not (sp.work / ".git" / "stackpatch-finish.json").exists()


def test_base_release_older_than_master_tip(twins):
    """16.03.1 runs; 16.04.1 is released on master but not deployed. stackpatch starts the hotfix from
    the release that runs (--from, or the deployed version later), so the fix is tested on what runs.
    finish then merges into master exactly as AVH would (AVH cannot start from a tag, so its twin
    starts by hand from the tag with the same recorded base): the tag 16.03.1b marks master's merge,
    which ALSO contains 16.04.1; the code that was shipped is the tag's second parent (16.03.1b^2)."""
    avh, sp = twins

    def release_16_04_1(w: World) -> None:
        w.edit_line(8, "line 8 in 16.04.1", "Release 16.04.1")
        w.git("tag", "-a", "-m", "Release 16.04.1", "16.04.1")
        w.git("branch", "-f", "develop", "master")
        w.git("push", "-q", "origin", "master", "develop", "refs/tags/16.04.1")

    both(avh, sp, release_16_04_1)
    avh.git("checkout", "-q", "-b", f"hotfix/{V}", "16.03.1")
    avh.git("config", f"gitflow.branch.hotfix/{V}.base", "master")
    flow(avh, "hotfix", "publish", V)
    r = stackpatch("start", "--repo", str(sp.work), "--from", "16.03.1")
    assert r.code == 0, r.stderr
    assert "older than 16.04.1" in r.stderr  # the user is told
    assert avh.rev("HEAD") == sp.rev("HEAD") == sp.rev("16.03.1^{commit}")
    both(avh, sp, fix)
    avh_finish(avh)
    assert sp_finish(sp).code == 0
    a, s = topology(avh), topology(sp)
    assert s == a
    shipped = sp.rev(f"refs/tags/{V}^{{commit}}^2")
    assert sp.git("merge-base", shipped, "16.04.1") == sp.rev("16.03.1^{commit}")  # shipped code lacks 16.04.1
    assert sp.git("show", f"{V}:app.txt").splitlines()[7] == "line 8 in 16.04.1"  # the tag's tree has it
    assert sp.git("show", f"{shipped}:app.txt").splitlines()[7] == "line 8"
    # the next start (no --from) takes the newest release on master by version order: 16.04.1
    r = stackpatch("start", "--repo", str(sp.work), "--no-push", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "16.04.1b"


def test_base_older_than_master_tip_with_a_conflict_in_the_master_merge(twins):
    """The older-base case where 16.04.1 touched the line the hotfix fixes: the merge into master
    conflicts. AVH leaves the conflict on master; the user resolves, commits and re-runs. stackpatch
    undoes the merge, then `--continue` redoes it in place; after the same resolution both agree by id."""
    avh, sp = twins

    def release_16_04_1(w: World) -> None:
        w.edit_line(2, "line 2 reworded in 16.04.1", "Release 16.04.1")
        w.git("tag", "-a", "-m", "Release 16.04.1", "16.04.1")
        w.git("branch", "-f", "develop", "master")
        w.git("push", "-q", "origin", "master", "develop", "refs/tags/16.04.1")

    both(avh, sp, release_16_04_1)
    avh.git("checkout", "-q", "-b", f"hotfix/{V}", "16.03.1")
    avh.git("config", f"gitflow.branch.hotfix/{V}.base", "master")
    flow(avh, "hotfix", "publish", V)
    assert stackpatch("start", "--repo", str(sp.work), "--from", "16.03.1").code == 0
    both(avh, sp, fix)

    def resolve_master(w: World) -> None:
        assert "<<<<<<<" in (w.work / "app.txt").read_text()
        lines = [f"line {i}\n" for i in range(1, 11)]
        lines[1] = "line 2 reworded in 16.04.1, fixed\n"
        (w.work / "app.txt").write_text("".join(lines))
        w.git("add", "app.txt")

    p = avh_finish(avh, check=False)
    assert p.returncode != 0 and avh.git("symbolic-ref", "--short", "HEAD") == "master"
    resolve_master(avh)
    avh.git("commit", "-q")
    avh_finish(avh)

    remote_before = sp.remote_refs()
    r = sp_finish(sp)
    assert r.code == 2 and f"merging hotfix/{V} into master conflicts in app.txt" in r.error
    assert sp.remote_refs() == remote_before and sp.rev(f"refs/tags/{V}") is None
    assert sp.git("symbolic-ref", "--short", "HEAD") == f"hotfix/{V}" and sp.git("status", "--porcelain") == ""
    r = stackpatch("finish", "--repo", str(sp.work), "--continue")
    assert r.code == 2 and sp.git("symbolic-ref", "--short", "HEAD") == "master"
    resolve_master(sp)
    r = stackpatch("finish", "--repo", str(sp.work), "--continue", "-m", MSG)
    assert r.code == 0, r.stderr
    assert topology(sp) == topology(avh)


def test_avh_can_finish_a_hotfix_started_by_stackpatch(twins):
    """stackpatch records the base as AVH does, so a team can mix the tools: AVH's finish on a branch
    stackpatch started gives the same ids as stackpatch's own finish."""
    avh, sp = twins
    for w in (avh, sp):
        w.git("checkout", "-q", "master")
        assert stackpatch("start", "--repo", str(w.work)).code == 0
    both(avh, sp, fix)
    avh_finish(avh)
    assert sp_finish(sp).code == 0
    assert topology(sp) == topology(avh)
