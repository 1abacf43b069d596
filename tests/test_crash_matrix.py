"""The crash matrix against the file-backed in-memory target: kill -9 at every journal boundary of `ship`'s
deploy half (a run that succeeds and one that fails and rolls back), of `rollback`, `resume` and `abort`,
and at every point where the lock or a release job is created; then `resume`, and separately `abort`.

Each kill is a real SIGKILL of a separate process (tests/crash_driver.py), with the stack's state in a
JSON file (tests/fakes/file_target.py), so nothing of the killed process survives but what it wrote.
After each recovery, every invariant of issue 12 is asserted:

- every service runs exactly one recorded release (all old images or all new, with matching labels);
- no release-phase job is left (the in-memory target has no containers or verify stacks to leave);
- the lock is released;
- the journal's final state says which release runs;
- the migration ran at most once per tenant (counted in the target's job starts, not in the journal),
  and exactly once when the release is deployed;
- a purge that was due was sent exactly once (per the fake Cloudflare's record), never twice.

The outcome of every point goes into docs/crash-matrix.md (the section between the `memory` markers):
`make crash-matrix` rewrites it (SP_WRITE_CRASH_MATRIX=1); otherwise this test fails when the committed
matrix is not what the code does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from stackpatch import config
from stackpatch.errors import FaultError, StackpatchError
from stackpatch.release import deploy as D
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.reporter import Recorder

from tests import crash_driver
from tests.matrix_doc import sync_section
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.file_target import FileTarget, load, save
from tests.fakes.memory_target import MemoryTarget
from tests.test_runner_memory import NEW_APP, NEW_FRONT, NEW_REV, OLD, OLD_REV, TOML, Front, release

NEW = {"phpfiles": NEW_APP, "phpha": NEW_APP, "web": NEW_FRONT}
TOKEN_ENV = "SP_CRASH_CF_TOKEN"


class FileFront(Front):
    """The app's front: /version answers the revision `web` is labelled with in the state file."""

    def __init__(self):
        self.path: Path | None = None
        super().__init__(None, web_labels=lambda: json.loads(self.path.read_text())["services"]["web"]["labels"])


@dataclass
class World:
    dir: Path
    front: FileFront
    cf: FakeCloudflare

    @property
    def state(self) -> Path:
        return self.dir / "state.json"

    @property
    def cfg(self):
        return config.load(self.dir)

    def target(self) -> FileTarget:
        self.front.path = self.state
        return FileTarget(self.state)

    def script(self, fn: Callable[[MemoryTarget], None]) -> None:
        with self.target().state() as t:
            fn(t)

    def copy(self, name: str) -> "World":
        dst = self.dir.parent / name
        shutil.copytree(self.dir, dst)
        return World(dst, self.front, self.cf)

    def records(self) -> list[dict]:
        return [r for p in sorted(J.runs_dir(self.dir).glob("*.jsonl")) for r in J.read_records(p)]

    def run(self, op: str, kill: str = "") -> tuple[int, str]:
        """The operation in a separate process, killed at `kill`: (exit status, -9 when killed; output).
        The process is forked from this one and runs tests/crash_driver.py's main: the imports are done
        already, so a point costs milliseconds, not a Python start-up (the whole matrix ran in 8.5 min
        with a fresh interpreter per process, 2.3 min forked, on 2 loaded cores). The sandbox test execs
        the same driver."""
        self.front.path = self.state
        argv = ["--repo", str(self.dir), "--state", str(self.state), "--op", op,
                "--release", str(self.dir / "release.json")] + (["--kill", kill] if kill else [])
        out = self.dir / f"driver-{op}.out"
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 3
            try:
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                code = crash_driver.main(argv)
            except BaseException as e:  # noqa: BLE001
                print(f"driver raised {type(e).__name__}: {e}", flush=True)
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return code, out.read_text() if out.exists() else ""


def new_world(base: Path, name: str, front: FileFront, cf: FakeCloudflare) -> World:
    d = base / name
    d.mkdir(parents=True)
    (d / "stackpatch.toml").write_text(
        TOML.format(front=front.url)
        + f'[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "{TOKEN_ENV}"\n')
    (d / "release.json").write_text(json.dumps(release().to_json()))
    t = MemoryTarget("acme-prod", OLD, replicas={"phpha": 2},
                     labels={n: {"stackpatch.version": "26.11.1", "stackpatch.revision": OLD_REV} for n in OLD})
    t.job_polls = 2  # a migration is seen running once before it completes
    save(d / "state.json", t)
    return World(d, front, cf)


# ---------------------------------------------------------------- the scenarios

def _deployed(w: World) -> None:
    code, out = w.run("deploy")
    assert code == 0, out


def _killed_at(label: str) -> Callable[[World], None]:
    """Setup: a deploy killed right after the record labelled `label`."""
    def setup(w: World) -> None:
        ref = _reference_labels["ship"]
        code, out = w.run("deploy", kill=f"record:{ref.index(label) + 1}")
        assert code == -9, out
    return setup


def _killed_in_job(w: World) -> None:
    code, out = w.run("deploy", kill="call:start_job:1")
    assert code == -9, out


@dataclass
class Scenario:
    name: str
    what: str
    op: str
    setup: Callable[[World], None] = lambda w: None
    script: Callable[[MemoryTarget], None] | None = None
    from_label: str | None = None          # only the boundaries from this record on (earlier ones: "ship")
    calls: tuple[str, ...] = ()            # call:METHOD:K points
    labels: list[str] = field(default_factory=list)


def _web_crashes(t: MemoryTarget) -> None:
    t.behaviour[NEW_FRONT] = "crash"


SCENARIOS = [
    Scenario("ship", "`ship` (deploy half) that succeeds: waves, gates, migrations per tenant, serving, purge",
             "deploy", calls=("create_lock:1", "start_pull:1", "start_pull:2", "start_job:1", "start_job:2")),
    Scenario("ship-fails", "`ship` whose last wave fails (web crashes): rollback of every service, newest first "
             "(the boundaries before the failing step are those of `ship`)",
             "deploy", script=_web_crashes, from_label="intent update:web"),
    Scenario("rollback", "`rollback` after a deployed release", "rollback", setup=_deployed,
             calls=("create_lock:1",)),
    Scenario("resume", "`resume` of a ship killed after `intent update:phpha`", "resume",
             setup=_killed_at("intent update:phpha")),
    Scenario("abort", "`abort` of a ship killed while the migration of alpha runs", "abort",
             setup=_killed_in_job),
]
_reference_labels: dict[str, list[str]] = {}
CALL_POINTS = {"create_lock:1": "create_lock (the lock is taken, nothing journaled yet)",
               "start_pull:1": "start_pull of the app image (its pull job exists, nobody looked at it)",
               "start_pull:2": "start_pull of the front image (its pull job exists, nobody looked at it)",
               "start_job:1": "start_job of migrate:alpha (the job exists, nobody looked at it)",
               "start_job:2": "start_job of migrate:beta (the job exists, nobody looked at it)"}


def label(r: dict) -> str:
    k = r["kind"]
    if k in ("intent", "result"):
        return f"{k} {'undo ' if r.get('undo') else ''}{r['step']}" + ("" if k == "intent" or r.get("ok")
                                                                       else " (failed)")
    if k == "state":
        return f"state {r['state']}"
    if k == "job":
        return f"job {r['step']} ended"
    return k


# ---------------------------------------------------------------- the invariants

def check(w: World, purges: int) -> str:
    """Assert every invariant on a recovered world; return its outcome in words."""
    t = load(w.state)
    images = t.images()
    assert images in (OLD, NEW), f"a mix of releases runs: {images}"
    which = "new" if images == NEW else "old"
    revs = {s.labels.get("stackpatch.revision") for s in t.services.values()}
    assert revs == {NEW_REV if which == "new" else OLD_REV}, f"labels say {revs} while the {which} images run"
    assert all(j.removed for j in t.jobs.values()), f"release or pull jobs left: {[n for n, j in t.jobs.items() if not j.removed]}"
    assert t.lock is None, f"the lock is still held: {t.lock}"
    v = history.last_run(w.dir)
    if v is None:  # killed before its first record: it changed nothing
        assert images == OLD and not t.job_starts and not t.updates and purges == 0
        return "no run recorded, old; migrations 0; purge 0"
    assert v.finished, f"the newest run is not final: {v.state}"
    recorded = history.images_of(v, "new" if v.state in (J.DEPLOYED, J.PURGE_FAILED) else "previous")
    assert images == {**images, **recorded}, f"run {v.op} ended {v.state} but the stack runs {images}"
    tenants = Counter(t.jobs[n].env.get("DATA") for n in t.job_starts)  # the world's only deploy run's
    assert all(n <= 1 for n in tenants.values()), f"a migration ran twice: {tenants}"
    if v.op == "deploy" and v.state == J.DEPLOYED:
        assert tenants == {"alpha": 1, "beta": 1}, f"deployed without every migration: {tenants}"
    assert v.state != J.PURGE_FAILED, "the purge failed (the fake CDN answers every purge)"
    if v.op == "deploy" and v.state == J.DEPLOYED:
        assert purges == 1, f"deployed, and the purge was sent {purges} times"
    else:
        assert purges <= 1, f"the purge was sent {purges} times"
    return f"{v.state}, {which}; migrations {sum(tenants.values())}; purge {purges}"


def recover(w: World, how: str) -> str:
    """`resume` or `abort` in this process: a note for the matrix when it did more or less than finish."""
    try:
        fn = D.resume if how == "resume" else D.abort
        res = fn(w.cfg, reporter=Recorder(), target=w.target())
    except FaultError as e:
        if "rolled back" in str(e):
            return " (the step failed again: rolled back)"
        return f" (failed: {e})"
    except StackpatchError as e:
        return f" (refused: {e})"
    return " (only the lock was left: released)" if res.journal.is_dir() else ""


def run_point(tmp: Path, sc: Scenario, point: str, kill: str, front, cf) -> tuple[str, str]:
    purges0 = len(cf.accepted)
    w = new_world(tmp, "w", front, cf)
    if sc.script:
        w.script(sc.script)
    sc.setup(w)
    code, out = w.run(sc.op, kill=kill)
    assert code == -9, f"{sc.name} at {point}: the run was not killed ({code}): {out}"
    before = len(cf.accepted) - purges0
    out = []
    for how in ("resume", "abort"):
        ww = w.copy(how)
        p = len(cf.accepted)
        note = recover(ww, how)
        out.append(check(ww, before + len(cf.accepted) - p) + note)
    return out[0], out[1]


@pytest.fixture(scope="module")
def servers():
    front, cf = FileFront(), FakeCloudflare().start()
    os.environ[TOKEN_ENV] = cf.token  # the killed process and the recoveries purge with it
    try:
        yield front, cf
    finally:
        os.environ.pop(TOKEN_ENV, None)
        front.close()
        cf.stop()


def points(tmp: Path, sc: Scenario, front, cf) -> list[tuple[str, str]]:
    """(point, kill spec): a reference run of the scenario, unkilled, names its journal boundaries."""
    w = new_world(tmp, "ref", front, cf)
    if sc.script:
        w.script(sc.script)
    sc.setup(w)
    before = len(w.records())
    code, out = w.run(sc.op)
    assert code in (0, 1), out
    labels = [label(r) for r in w.records()[before:]]
    _reference_labels[sc.name] = labels
    first = labels.index(sc.from_label) if sc.from_label else 0
    out = [(CALL_POINTS[c], f"call:{c}") for c in sc.calls]
    out += [(f"{i + 1}. {labels[i]}", f"record:{i + 1}") for i in range(first, len(labels))]
    return out


def test_crash_matrix(tmp_path, servers):
    front, cf = servers
    rows: list[str] = []
    counts = Counter()
    for sc in SCENARIOS:
        rows.append(f"\n### {sc.name}: {sc.what}\n")
        rows.append("| kill -9 after | then `resume` | then `abort` |")
        rows.append("| --- | --- | --- |")
        for point, kill in points(tmp_path / sc.name, sc, front, cf):
            d = tmp_path / sc.name / kill.replace(":", "-")
            r, a = run_point(d, sc, point, kill, front, cf)
            rows.append(f"| {point} | {r} | {a} |")
            counts[sc.name] += 1
    total = sum(counts.values())
    body = (f"{total} kill points × 2 recoveries = {2 * total} outcomes, every one \"nothing lost\" "
            f"({', '.join(f'{n} {k}' for k, n in counts.items())}).\n" + "\n".join(rows) + "\n")
    sync_section("memory", body)
