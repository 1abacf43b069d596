"""The deploy report page (stackpatch.report) and `stackpatch report`, on journals real runs wrote.

tests/data/journals/ holds two journals written by real `stackpatch ship --yes` runs on a sandbox (see
its README): one deployed (two tenants' migrations, a CDN purge of two files), one that failed at a
migration and rolled back. A prefix of a journal is exactly what a `kill -9` at that point leaves (every
record is fsync'ed before the next action), which gives the interrupted run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackpatch import git, report
from stackpatch.release import journal as J

from report_checks import Dom, check_report, external_refs

DATA = Path(__file__).parent / "data" / "journals"
CLI = str(Path(sys.executable).with_name("stackpatch"))


def records(name: str) -> list[dict]:
    return J.read_records(DATA / f"{name}.jsonl")


def install(repo: Path, name: str, upto: int | None = None) -> str:
    """Put a recorded journal (or its first `upto` records) into repo's .stackpatch/runs; its run id."""
    recs = records(name)[:upto]
    d = J.runs_dir(repo)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{recs[0]['run_id']}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs[0]["run_id"]


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def test_a_deployed_ship_shows_every_service_phase_commit_and_the_purge_items():
    recs = records("ship-deployed")
    page = report.render(recs, [report.Commit("c8075e5f4f15", "Ann", "2026-11-27T01:29:09+00:00", "Fix <b>it</b>")])
    dom = Dom(page)
    check_report(dom, recs)
    text = dom.all_text
    start = recs[0]
    assert f"ship {start['from_version']} → {start['version']} on {start['stack']}: deployed" in text
    assert start["owner"] in text and start["host"] in text and start["run_id"] in text
    # before → after of each service: version, revision and digest
    for s in start["plan"]:
        if s["kind"] == "update":
            assert s["previous_image"].split("@")[1][:19] in page and s["image"].split("@")[1][:19] in page
    assert start["from_revision"][:12] in text and start["revision"][:12] in text
    assert "Fix <b>it</b>" in text and "Fix <b>it</b>" not in page  # shown as text, never as markup
    # the purge and its items, from the journal (the CDN's answer)
    assert "https://acme.example/static/app.js" in text and "https://acme.example/static/style.css" in text
    assert "2 of 2" in text
    # a deployed run has no failure box, and its next step is finish
    assert "What happened" not in text
    assert {p["step"] for p in dom.phases} >= {"update:phpfiles", "gate:canary", "migrate:alpha", "migrate:beta",
                                                "update:phpha", "update:web", "gate:rest", "serving", "purge",
                                                "workdir", "build:app", "build:front", "verify", "push"}


def test_a_rolled_back_ship_names_the_failing_step_and_what_to_do_next():
    recs = records("ship-rolled-back")
    run = report.read_run(recs)
    assert run.view.state == J.ROLLED_BACK and run.failed["step"] == "migrate:alpha"
    page = report.render(recs)
    dom = Dom(page)
    check_report(dom, recs)
    text = dom.all_text
    assert "Failing step: migrate:alpha" in text
    assert "exited 1" in text
    assert "back on its exact previous image" in text and "stackpatch ship --yes" in text
    by_step = {p["step"]: p for p in dom.phases}
    assert by_step["migrate:alpha"]["ok"] == "failed" and by_step["undo:update:phpfiles"]["ok"] == "ok"
    outcomes = {s.service: s.outcome for s in run.services}
    assert outcomes == {"phpfiles": "rolled back", "phpha": "not reached", "web": "not reached"}
    assert "Planned, not run" in text  # the purge runs after success only


def test_a_run_killed_mid_step_says_resume_or_abort():
    recs = records("ship-deployed")
    # killed during update:phpha: the intent is written, its result is not
    cut = next(i for i, r in enumerate(recs) if r["kind"] == "intent" and r["step"] == "update:phpha") + 1
    part = recs[:cut]
    run = report.read_run(part)
    assert run.view.state == J.RUNNING and run.failed["step"] == "update:phpha"
    dom = Dom(report.render(part))
    check_report(dom, part)
    row = next(p for p in dom.phases if p["step"] == "update:phpha")
    assert row["ok"] == "no result"
    assert "stackpatch resume" in dom.all_text and "stackpatch abort" in dom.all_text
    outcomes = {s.service: s.outcome for s in run.services}
    assert outcomes == {"phpfiles": "updated", "phpha": "interrupted", "web": "not reached"}


def test_the_page_loads_nothing_from_anywhere():
    for name in ("ship-deployed", "ship-rolled-back"):
        page = report.render(records(name))
        assert external_refs(page) == [], external_refs(page)
        assert "default-src 'none'" in page and "<script" not in page and "<link" not in page
    # the check itself catches what would load from the network
    for bad in ('<img src="https://example.com/x.png">', "<link rel=stylesheet href='//cdn.example.org/a.css'>",
                '<div style="background: url( http://example.com/bg.png )">', '<style>@import "https://x.org/a.css"'):
        assert external_refs(page.replace("<body>", "<body>" + bad)), bad


def test_write_for_run_writes_the_page_beside_the_journal_and_the_index_links_every_run(tmp_path):
    a = install(tmp_path, "ship-deployed")
    b = install(tmp_path, "ship-rolled-back")
    p = report.write_for_run(tmp_path, a)
    assert p == tmp_path / ".stackpatch" / "runs" / f"{a}.html" and p.is_file()
    assert "not available here" in p.read_text()  # this repo does not have the commits
    assert not report.is_stale(tmp_path, a) and report.is_stale(tmp_path, b)
    idx = report.write_index(tmp_path)
    assert idx.name == "index.html" and (J.runs_dir(tmp_path) / f"{b}.html").is_file()
    dom = Dom(idx.read_text())
    assert dom.links == [f"{b}.html", f"{a}.html"]  # newest first
    assert "rolled-back" in dom.all_text and "deployed" in dom.all_text
    assert external_refs(idx.read_text()) == []
    with pytest.raises(FileNotFoundError):
        report.write_for_run(tmp_path, "20990101T000000Z-000000")


def test_after_run_writes_the_newest_page_however_the_command_ends(tmp_path):
    assert report.write_latest(tmp_path) is None  # no run: nothing, and no error
    with report.after_run(tmp_path):
        pass
    assert not (tmp_path / ".stackpatch").exists()
    a = install(tmp_path, "ship-deployed")
    with pytest.raises(RuntimeError, match="rolled back"):
        with report.after_run(tmp_path):
            b = install(tmp_path, "ship-rolled-back")  # the run the command made, then its failure
            raise RuntimeError("rolled back")
    assert report.page_path(tmp_path, b).is_file() and not report.page_path(tmp_path, a).exists()
    # a journal that cannot be read does not hide the command's own outcome
    (J.runs_dir(tmp_path) / "20991231T000000Z-ffffff.jsonl").write_text('{"kind": "run-start", "ts": 1}\n')
    with report.after_run(tmp_path):
        pass
    assert report.write_latest(tmp_path) is None


def test_commits_between_reads_deployed_to_hotfix_with_git(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git.run("init", "-q", "-b", "master", cwd=repo)
    shas = []
    for n in range(3):
        (repo / "f").write_text(str(n))
        git.run("add", "f", cwd=repo)
        git.run("-c", "user.name=Ann Dev", "-c", "user.email=a@example.org", "commit", "-q", "-m", f"change {n}",
                cwd=repo)
        shas.append(git.out("rev-parse", "HEAD", cwd=repo))
    got = report.commits_between(repo, {"op": "deploy", "from_revision": shas[0], "revision": shas[2]})
    assert [(c.sha, c.subject, c.author) for c in got] == [(shas[1], "change 1", "Ann Dev"),
                                                          (shas[2], "change 2", "Ann Dev")]
    back = report.commits_between(repo, {"op": "rollback", "from_revision": shas[2], "revision": shas[0]})
    assert [c.sha for c in back] == shas[1:]  # a rollback takes these off
    assert report.commits_between(repo, {"from_revision": "0" * 40, "revision": shas[2]}) is None
    assert report.commits_between(repo, {"revision": shas[2]}) is None


def test_report_command_prints_the_newest_or_given_page_and_refuses_unknown_runs(tmp_path):
    a = install(tmp_path, "ship-deployed")
    b = install(tmp_path, "ship-rolled-back")
    runs = J.runs_dir(tmp_path)
    r = cli("report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / ".stackpatch" / "runs" / f"{b}.html")
    r = cli("report", a[:17], "--json", "--repo", str(tmp_path), cwd="/")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["run_id"] == a and out["state"] == "deployed" and out["written"] is True
    assert Path(out["path"]).is_file()
    r = cli("report", a, "--json", cwd=tmp_path)  # up to date: not written again
    assert json.loads(r.stdout)["written"] is False
    before = sorted(p.name for p in runs.iterdir())
    for args, words in ((["report", "20990101"], "no run '20990101'"),
                        (["report", "2026"], "matches 2 runs"),
                        (["report", a, "--index"], "not both")):
        r = cli(*args, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in runs.iterdir()) == before  # a refusal writes nothing
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("report", cwd=empty)
    assert r.returncode == 2 and "no run recorded" in r.stderr and r.stderr.count("\n") == 1
    assert not (empty / ".stackpatch").exists()
    r = cli("report", "--index", "--json", "--open", cwd=tmp_path, env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"path": str(runs / "index.html"), "runs": 2, "opened": False}
    assert "open " in r.stderr and "no display" in r.stderr


def test_report_help_teaches():
    r = subprocess.run([CLI, "report", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for words in ("RUN-ID", "--open", "--index", "--json", "self-contained", "what to do next"):
        assert words in r.stdout, words


def test_recorded_journals_hold_no_machine_secrets():
    for p in DATA.glob("*.jsonl"):
        text = p.read_text()
        assert "PASSWORD" not in text.upper().replace("PASSWORD_ENV", "") and "token" not in text.lower()



def test_verify_beside_the_push_is_drawn_beside_it():
    """Since issue 13 the push runs while verify does and the release tags follow (`tag`): the timeline
    starts both where the builds ended, and the tags where the longer of the two ended."""
    recs = records("ship-deployed")
    start = dict(recs[0], build_timings={"workdir": 0.1, "build:app": 1.0, "build:front": 1.0, "push": 2.0,
                                         "verify": 5.0, "tag": 0.3})
    run = report.read_run([start] + recs[1:])
    at = {p.step: p for p in run.phases}
    assert at["push"].start == at["verify"].start == pytest.approx(2.1)
    assert at["tag"].start == pytest.approx(7.1) and at["tag"].label == "release tags"
    check_report(Dom(report.render([start] + recs[1:], [])), [start] + recs[1:])


def test_builds_side_by_side_are_drawn_from_one_start():
    """Since the builds run side by side (run-start.build_beside), both start where the build dir was
    synced, and what follows starts where the slower one ended."""
    recs = records("ship-deployed")
    start = dict(recs[0], build_timings={"workdir": 0.1, "build:app": 3.0, "build:front": 1.0, "push": 2.0,
                                         "verify": 5.0, "tag": 0.3},
                 build_beside=["build:app", "build:front"])
    run = report.read_run([start] + recs[1:])
    at = {p.step: p for p in run.phases}
    assert at["build:app"].start == at["build:front"].start == pytest.approx(0.1)
    assert at["push"].start == at["verify"].start == pytest.approx(3.1)
    assert at["tag"].start == pytest.approx(8.1)
    # the origin puts the build half right before the run-start: 0.1 + 3 + 5 + 0.3 s, not 1 s more
    assert run.origin == pytest.approx(start["ts"] - 8.4 - float(start.get("lock_seconds") or 0), abs=1e-6)
    check_report(Dom(report.render([start] + recs[1:], [])), [start] + recs[1:])
