"""Issue 11, item 7, on the shared 3-node sandbox (`nodes3`: a manager and two workers, each a dockerd in its
own network namespace):

- a worker's dockerd killed (SIGKILL) while the `rest` wave (phpha, web) converges;
- a worker's link to the bridge cut while the nodes pre-pull, then restored;
- the manager's dockerd restarted mid-wave: the run reconnects (timeouts.reconnect) and goes on.
(Item 8, zero downtime on 3 nodes, is the load on tests/test_multinode.py's ship: one full ship serves
both, within the multinode tests' time budget. The lock's host, pid and boot id, and `resume` from another
hostname: tests/test_anywhere.py.)

Each fault is injected at a precise moment of the run, read from its journal (the step's intent record),
never from a guessed sleep. Each run must end with the stack wholly on the new release or wholly on the old
one, the lock released, and the journal's final state saying which. Every fault is undone before the test
ends (the daemon started again with the arguments `up` gave it, the link up), so the sandbox stays usable.

The fault runs are `stackpatch deploy --release` between releases already in the registry (those the
earlier multinode tests shipped, found in the app's journals; a ship of its own when this file runs
alone), with short timeouts (`[timeouts]` in the app's stackpatch.toml for the run only), to keep the
file's time down.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CLI
from deploy_helpers import has_intent, journal_records, wait_for
from test_anywhere_multinode import _env, _ship_hotfix
from test_multinode import sp
from test_multinode import status as sandbox_status

from stackpatch.release import journal as J
from stackpatch.release.model import PushedImage, Release
from stackpatch.targets.base import ImageRef, same_image

pytestmark = [pytest.mark.docker, pytest.mark.multinode]

APP = {"phpfiles": "app", "phpha": "app", "web": "front"}  # service -> image name
# short enough that a fault costs little time, long enough for this loaded 2-core machine
FAST = "\n[timeouts]\nconverge = 60\ncheck = 45\nprepull = 60\nreconnect = 90\n"


# ---------------------------------------------------------------- the stack and its releases

def deploy_status(st: dict) -> dict:
    proc = sp("status", "--repo", st["app_dir"], "--json", env=_env(st), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def live_release(st: dict) -> Release:
    """The release the stack runs, from its services' labels and digest-pinned images; it must be one."""
    svc = deploy_status(st)["services"]
    revs = {svc[s]["revision"] for s in APP}
    assert len(revs) == 1, {s: svc[s]["revision"] for s in APP}
    images = {}
    for s, name in APP.items():
        ref = ImageRef.parse(svc[s]["image"])
        images[name] = PushedImage(name, ref.repository, (ref.tag or "",), ref.digest or "")
    return Release(svc["phpfiles"]["version"], revs.pop(), images)


class Releases:
    """Two releases in the registry to go back and forth between: a run from one to the other is a real
    rollout (the new tasks start from another digest) without a build."""

    def __init__(self, info: dict):
        self.info = info
        self.known: dict[str, Release] = {}
        # every release a run of this sandbox's app deployed or tried (the earlier multinode tests' ships)
        for path in sorted(J.runs_dir(Path(info["app_dir"])).glob("*.jsonl")):
            recs = J.read_records(path)
            if recs and recs[0].get("kind") == "run-start" and recs[0].get("release"):
                self.add(Release.from_json(recs[0]["release"]))

    def add(self, rel: Release) -> None:
        self.known[rel.revision] = rel

    def other(self) -> tuple[Release, Release]:
        """(what runs, another release to deploy); ships a hotfix first when only one is known."""
        st = sandbox_status(self.info)
        now = live_release(st)
        self.add(now)
        others = [r for rev, r in self.known.items() if rev != now.revision]
        if not others:
            proc = _ship_hotfix(st, lambda text: text + FAST, "faults: a second release")
            self.add(Release.from_json(json.loads(proc.stdout)["release"]))
            return self.other()
        return now, others[-1]


@pytest.fixture(scope="module")
def releases(nodes3) -> Releases:
    return Releases(nodes3)


@contextlib.contextmanager
def fast_config(app: Path):
    """The app's stackpatch.toml with FAST timeouts for one run (skip-worktree: the commit is untouched)."""
    toml = app / "stackpatch.toml"
    original = toml.read_text()
    subprocess.run(["git", "update-index", "--skip-worktree", "stackpatch.toml"], cwd=app, check=True)
    try:
        toml.write_text(original + FAST)
        yield
    finally:
        toml.write_text(original)
        subprocess.run(["git", "update-index", "--no-skip-worktree", "stackpatch.toml"], cwd=app, check=True)


def deploy_with_fault(st: dict, rel: Release, tmp_path: Path, at: str, fault) -> dict:
    """`stackpatch deploy` of `rel`; when the run's journal announces step `at`, `fault()` (whatever it
    returns is kept as `fault`). Returns {code, out, err, fault, seconds}."""
    app = Path(st["app_dir"])
    runs = len(list(J.runs_dir(app).glob("*.jsonl")))
    rf = tmp_path / "release.json"
    rf.write_text(json.dumps(rel.to_json()))
    out, err = tmp_path / "deploy.out", tmp_path / "deploy.err"
    env = {**os.environ, **_env(st)}
    with fast_config(app), open(out, "w") as o, open(err, "w") as e:
        t0 = time.monotonic()
        p = subprocess.Popen([CLI, "deploy", "--repo", str(app), "--release", str(rf), "--yes", "--json"],
                             stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=env)
        try:
            wait_for(lambda: has_intent(app, at, runs) or p.poll() is not None, 300, f"the intent of {at}", 0.1)
            assert p.poll() is None, f"the run ended before {at}: {err.read_text()[-2000:]}"
            done = fault()
            code = p.wait(timeout=600)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        took = time.monotonic() - t0
    return {"code": code, "out": out.read_text(), "err": err.read_text(), "fault": done, "seconds": took}


def assert_wholly_on_one(st: dict, old: Release, new: Release, res: dict) -> str:
    """The run's final journal state, after checking it is the truth: every patched service's spec on the
    new release (deployed) or on the old one (rolled back, or failed before it changed anything), every
    running task on its service's image, and the lock released."""
    app = Path(st["app_dir"])
    recs = journal_records(app)
    final = [r["state"] for r in recs if r["kind"] == "state"][-1]
    assert final in (J.DEPLOYED, J.ROLLED_BACK, J.FAILED), (final, res["err"][-3000:])
    if final == J.FAILED:  # stopped before the canary: nothing may have been touched
        assert not [r for r in recs if r["kind"] == "intent" and str(r.get("step")).startswith("update:")], final
    assert (res["code"] == 0) == (final == J.DEPLOYED), (res["code"], final, res["err"][-2000:])
    want = new if final == J.DEPLOYED else old
    now = deploy_status(st)
    for svc, name in APP.items():
        assert same_image(now["services"][svc]["image"], want.images[name].ref), (final, svc, now["services"][svc])
        assert now["services"][svc]["revision"] == want.revision, (final, svc)
    assert now["lock"] is None, now["lock"]
    return final


def wait_tasks_on_spec(info: dict, timeout: float = 180) -> dict:
    """Every node ready and every task of the patched services running its service's image (what runs is
    what the spec says, on every node) — after a fault, Swarm needs a moment to reconcile."""
    def ok():
        st = sandbox_status(info)
        if not all(n["state"] == "ready" for n in st["nodes"]):
            return None
        for s in APP:
            tasks = st["services"][s]["tasks"]
            if not tasks or not all(t["state"] == "running" and same_image(t["image"], st["services"][s]["image"])
                                    for t in tasks):
                return None
        return st
    return wait_for(ok, timeout, "every task running its service's image on ready nodes", 1.0)


def manager_node_state(st: dict, hostname: str) -> str:
    proc = subprocess.run(["docker", "-H", st["nodes"][0]["docker_host"], "node", "inspect", hostname, "--format",
                           "{{.Status.State}}"], capture_output=True, text=True, timeout=30)
    return proc.stdout.strip() or proc.stderr.strip()


# ---------------------------------------------------------------- item 7: faults

def _worker_of(st: dict, services: tuple[str, ...]) -> str:
    """The worker (hostname) that runs the most tasks of `services`."""
    workers = [n["name"] for n in st["nodes"] if n["role"] == "worker"]
    count = {w: sum(1 for s in services for t in st["services"][s]["tasks"] if t["node"] == w) for w in workers}
    return max(workers, key=lambda w: (count[w], w))


def test_a_workers_dockerd_killed_mid_wave(nodes3, releases, tmp_path):
    from stackpatch.sandbox import api
    old, new = releases.other()
    st = sandbox_status(nodes3)
    worker = _worker_of(st, ("phpha", "web"))
    try:
        res = deploy_with_fault(st, new, tmp_path, "update:phpha",
                                lambda: api.stop_node(Path(nodes3["dir"]), worker, signal.SIGKILL))
        assert res["fault"], "the worker's dockerd was not running"
        final = assert_wholly_on_one(st, old, new, res)
    finally:
        api.start_node(Path(nodes3["dir"]), worker)
    wait_tasks_on_spec(nodes3)
    print(f"\nworker {worker}'s dockerd SIGKILLed at update:phpha: the run ended {final} in {res['seconds']:.1f}s")


def test_a_workers_link_down_during_the_pre_pull(nodes3, releases, tmp_path):
    from stackpatch.sandbox import api
    old, new = releases.other()
    st = sandbox_status(nodes3)
    worker = _worker_of(st, ("phpfiles",))  # the canary's node: the one whose pull matters first
    d = Path(nodes3["dir"])
    seen: dict = {}

    def cut():
        api.link_node(d, worker, up=False)
        t0 = time.monotonic()
        # a real partition: down until the manager marks the node down (at most 30 s), then back up
        while time.monotonic() - t0 < 30:
            seen["state"] = manager_node_state(st, worker)
            if seen["state"] != "ready":
                break
            time.sleep(0.5)
        seen["down_s"] = round(time.monotonic() - t0, 1)
        api.link_node(d, worker, up=True)
        return True
    try:
        res = deploy_with_fault(st, new, tmp_path, "prepull", cut)
        final = assert_wholly_on_one(st, old, new, res)
        assert seen["state"] == "down", seen  # a partition the manager saw, not a blip
    finally:
        api.link_node(d, worker, up=True)
    wait_tasks_on_spec(nodes3)
    print(f"\nworker {worker}'s link down at prepull for {seen.get('down_s')}s (manager saw it {seen.get('state')}): "
          f"the run ended {final} in {res['seconds']:.1f}s")


def test_the_managers_dockerd_restarts_mid_wave_and_the_run_reconnects(nodes3, releases, tmp_path):
    from stackpatch.sandbox import api
    old, new = releases.other()
    st = sandbox_status(nodes3)
    d = Path(nodes3["dir"])

    def restart():
        t0 = time.monotonic()
        api.stop_node(d, "manager", signal.SIGTERM)   # as `systemctl restart docker`: a clean stop …
        api.start_node(d, "manager")                   # … and a start, until every node is ready again
        return round(time.monotonic() - t0, 1)
    try:
        res = deploy_with_fault(st, new, tmp_path, "update:phpha", restart)
        final = assert_wholly_on_one(st, old, new, res)
    finally:
        api.start_node(d, "manager")
    lost = [r for r in journal_records(Path(st["app_dir"])) if r["kind"] == "reconnect"]
    assert lost and lost[0]["phase"] == "lost" and lost[-1]["phase"] == "back", lost
    assert "reconnecting" in res["err"] and "answers again" in res["err"], res["err"][-3000:]
    wait_tasks_on_spec(nodes3)
    print(f"\nmanager's dockerd restarted at update:phpha (down and back: {res['fault']}s): reconnected after "
          f"{lost[-1]['seconds']}s, the run ended {final} in {res['seconds']:.1f}s")
