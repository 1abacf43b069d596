"""The report page in a real browser: Debian's headless Chromium, with the network cut off and watched.

Chromium builds the page's DOM (--dump-dom) and takes a screenshot (--screenshot); the tests check that
every service and every phase of the run's journal is on the page with its duration, that the timeline
really is drawn (its bar colours are in the screenshot) and that the page asked for nothing over the
network. One test runs a real `stackpatch ship` on a fork of the sandbox first; the others use the
journals real ships wrote (tests/data/journals).

STACKPATCH_REPORT_PNG=path (set by `make report-png`) copies the real ship's screenshot there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from stackpatch import report
from stackpatch.release import journal as J

import browser
from report_checks import Dom, check_report, external_refs
from tests.fakes.cloudflare import FakeCloudflare

pytestmark = pytest.mark.browser

DATA = Path(__file__).parent / "data" / "journals"
CLI = str(Path(sys.executable).with_name("stackpatch"))


def sp(*args: str, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# a legend swatch is 10x10 px: a colour with more pixels than a few swatches was drawn as a bar
BAR_PIXELS = 400


def check_in_chromium(page: Path, records: list[dict], png: Path) -> Counter:
    """The page as Chromium shows it: every service and phase with its duration, nothing loaded from
    the network; returns the screenshot's pixel count per colour."""
    dom_text, requests = browser.dump_dom(page)
    assert requests == [], f"the page asked the network for: {requests}"
    check_report(Dom(dom_text), records)
    requests = browser.screenshot(page, png)
    assert requests == [], f"the page asked the network for: {requests}"
    colors = browser.png_colors(png)
    assert colors[report.COLORS["update"]] > BAR_PIXELS, "no update bar was drawn"
    return colors


@pytest.mark.parametrize("name", ["ship-deployed", "ship-rolled-back"])
def test_a_recorded_run_renders_in_chromium(tmp_path, name):
    recs = J.read_records(DATA / f"{name}.jsonl")
    d = J.runs_dir(tmp_path)
    d.mkdir(parents=True)
    run_id = recs[0]["run_id"]
    shutil.copy(DATA / f"{name}.jsonl", d / f"{run_id}.jsonl")
    page = report.write_for_run(tmp_path, run_id)
    colors = check_in_chromium(page, recs, tmp_path / "shot.png")
    if name == "ship-rolled-back":
        # the failed migration and the rollback are drawn
        assert colors[report.FAILED_COLOR] > BAR_PIXELS and colors[report.COLORS["undo"]] > BAR_PIXELS
    else:
        assert colors[report.FAILED_COLOR] < BAR_PIXELS and colors[report.COLORS["migrate"]] > BAR_PIXELS


def test_the_network_watch_catches_a_page_that_loads_something(tmp_path):
    """The check above can fail: a page that needs the network is caught, statically and in Chromium."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="https://cdn.example.org/a.css">'
                   '</head><body><img src="http://example.com/x.png"><p>x</p></body></html>')
    assert len(external_refs(bad.read_text())) == 2
    _, requests = browser.dump_dom(bad)
    assert any("example.com" in r for r in requests) and any("cdn.example.org" in r for r in requests), requests


@pytest.mark.docker
def test_the_report_of_a_real_ship_in_chromium(sandbox, fork, tmp_path):
    app = fork.app_dir
    cf = FakeCloudflare().start()
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache"), "SP_REPORT_CF_TOKEN": cf.token}
    try:
        cfg = fork.config_path  # skip-worktree in the fork: the tree stays clean
        text = cfg.read_text()
        assert text.count('when = "after-canary"\n') == 1
        cfg.write_text(text.replace('when = "after-canary"\n', 'when = "after-canary"\ntenants = ["alpha", "beta"]\n')
                       + f'\n[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "SP_REPORT_CF_TOKEN"\n'
                       'purge = "files"\nitems = ["https://acme.example/static/app.js"]\n')
        r = sp("start", cwd=app, env=env)
        assert r.returncode == 0, r.stderr
        server = app / "app" / "server.py"
        server.write_text(server.read_text() + "# a one-line fix\n")
        for args in (["commit", "-q", "-am", "Fix: one line"], ["push", "-q"]):
            subprocess.run(["git", *args], cwd=app, check=True, capture_output=True)
        r = sp("ship", "--yes", "--json", cwd=app, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        run = json.loads(r.stdout)["run"]
        assert run["state"] == "deployed"
    finally:
        cf.stop()

    r = sp("report", "--json", cwd=app, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["run_id"] == run["run_id"] and out["state"] == "deployed"
    page = Path(out["path"])
    assert page == app / ".stackpatch" / "runs" / f"{run['run_id']}.html"
    html = page.read_text()
    assert external_refs(html) == []
    recs = J.read_records(app / ".stackpatch" / "runs" / f"{run['run_id']}.jsonl")
    assert {"update:phpfiles", "migrate:alpha", "migrate:beta", "update:phpha", "update:web", "purge"} <= {
        r["step"] for r in recs if r["kind"] == "result"}
    shot = tmp_path / "report.png"
    check_in_chromium(page, recs, shot)
    dom = Dom(browser.dump_dom(page)[0])
    text = dom.all_text
    assert "Fix: one line" in text  # the commits deployed..hotfix, read with git
    assert "https://acme.example/static/app.js" in text  # the purge's item
    assert f"{sandbox.release} → {run['version']}" in text
    # the index links the run
    r = sp("report", "--index", cwd=app, env=env)
    assert r.returncode == 0, r.stderr
    idx, requests = browser.dump_dom(Path(r.stdout.strip()))
    assert requests == [] and f"{run['run_id']}.html" in Dom(idx).links
    if os.environ.get("STACKPATCH_REPORT_PNG"):
        shutil.copy(shot, os.environ["STACKPATCH_REPORT_PNG"])
