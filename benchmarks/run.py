"""`make bench`: stackpatch against a script of the manual routine, side by side, on one sandbox (issue 6).

    python benchmarks/run.py [--rate 500] [--post-share 0.2] [--files 10000] [--scaling 1000,30000] [--max-minutes 45]
                             [--runs 3] [--nodes 3]

1. brings up a sandbox of its own (name `bench-<hex>`, in a temp dir; never the user's `acme`);
2. warm-up: a throwaway fork ships a different one-line hotfix with `stackpatch ship --yes`, so BuildKit's
   cache and the base layers are warm, as on a user's second run;
3. stackpatch: a FRESH fork at 26.11.1 whose build directory was synced once at 26.11.1 (what an earlier
   ship of that repo leaves), at the path of the warm-up's and the earlier runs' forks (a user's checkout
   stays put: BuildKit then sends only the changed files of the context); `stackpatch start`, the one-line hotfix, push, then `stackpatch ship --yes --json`
   under steady load; its phases come from its journal (.stackpatch/runs/<run-id>.jsonl);
4. the manual routine: another FRESH fork, the same one-line hotfix on hotfix/26.11.1b, pushed, then
   benchmarks/manual_routine.sh under the same load (its stop-first redeploy: what the proxies cannot hide);
   the load is open loop, `--rate` requests/s through the sandbox's edge (HAProxy), `--post-share` of them
   POSTs that each write a row, counted afterwards against the answers (no POST may be applied twice);
5. the build directory: benchmarks/builddir_bench.py (10,000 files, a 1-file change, vs a fresh clone);
6. writes benchmarks/results/<date>-<machine>.json (checked with benchmarks/schema.py) and one PNG per
   contender run, benchmarks/results/<date>-<machine>-<contender>.png; the raw requests and logs go to
   .bench/<date>-<machine>/ (not committed).
With `--nodes N` (N > 1) the sandbox is `sandbox up --nodes N` (a manager and N-1 workers, each a dockerd
with an empty image store, pulling from the registry over TLS): a fork is for the one-engine sandbox, so
every run patches the sandbox's own stack, one after another (see OwnStack), the scripts are told the
manager (`--swarm-host`) and the nodes (`--node-host`: the migration's exec goes to the task's node), and
the results file ends in `-nodesN`.
Everything it created (forks, stacks, lock objects, images, the sandbox and its registry) is removed at the
end, also on failure, Ctrl-C, SIGTERM or after --max-minutes.

overhead_share (stackpatch) = 1 - (docker build + docker push + task start and health waits) / ship's wall time,
where, from the journal and the run-start record's build_timings:
  docker build   = build:<image> for every image
  docker push    = push
  task start and health waits = verify (a throwaway stack started and health-checked) + every update:<service>
                   (swarm replaces the tasks and waits until they are healthy) + every gate:<wave> (checks
                   polled until they pass) + migrate (a job task started and run) + serving (the front polled
                   until it serves the new revision)
The rest is stackpatch's own: process start, config, preflight and plan, registry login check, the build-dir
sync, the lock, reading the stack, journal writes, digest checks, the CDN purge, and the gaps between steps.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from benchmarks import bigapp, builddir_bench, measure, schema  # noqa: E402

CLI = str(Path(sys.executable).with_name("stackpatch"))
SCRIPT = ROOT / "benchmarks" / "manual_routine.sh"
COMPETENT = ROOT / "benchmarks" / "competent_script.py"
RESULTS = ROOT / "benchmarks" / "results"
SP_DIR = "sp"  # the one directory of stackpatch's forks (make_fork)
RELEASE = "26.11.1"
HOTFIX = "26.11.1b"
WARMUP = "26.11.1z"
IDENTITY = ("-c", "user.name=stackpatch bench", "-c", "user.email=bench@stackpatch.invalid")

# the journal steps that are docker build, docker push, task start or health waits (see the module doc)
WAIT_PREFIXES = ("update:", "gate:", "serving")
WAIT_STEPS = {"migrate"}
BUILD_WAITS = {"verify", "push"}   # `tag` (release tags onto the pushed manifest, after verify) is stackpatch's own


def log(msg: str) -> None:
    print(f"bench [{datetime.now(timezone.utc).strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Deadline(BaseException):
    """--max-minutes ran out (a BaseException, like KeyboardInterrupt: no `except Exception` swallows it)."""


# ------------------------------------------------------------------ stackpatch's phases from its journal

def journal_records(app: Path, run_id: str | None) -> list[dict]:
    runs = app / ".stackpatch" / "runs"
    path = runs / f"{run_id}.jsonl" if run_id else max(runs.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stackpatch_phases(records: list[dict], t_start: float, t_end: float,
                      err_lines: list[tuple[float, str]] | None = None) -> dict[str, list[float]]:
    """{phase: [start, end]} (epoch) of one `ship` run.

    The deploy half's steps are exact: intent → result records of the journal (rollback records excluded).
    The build half is in the run-start record as durations (`build_timings`): each phase starts at the
    stderr line that announces it when there is one ("sync the clean build directory", "build <repo>:",
    "push "), else where the previous one ended; without stderr lines they are laid end to end up to the
    run-start record. `plan` runs from the command's start to the build dir
    sync; `lock` from the end of the push to the run-start record (lock, read the stack, plan the waves)."""
    start = next(r for r in records if r["kind"] == "run-start")
    bt: dict[str, float] = start.get("build_timings") or {}
    err_lines = err_lines or []

    def announced(pattern: str, after: float) -> float | None:
        rx = re.compile(pattern)
        return next((ts for ts, line in err_lines if ts >= after - 0.05 and rx.search(line)), None)

    phases: dict[str, list[float]] = {}
    # since issue 13, verify runs while the push does (`tag` then puts the release tags on): both start
    # where the builds ended; the builds in `build_beside` run side by side, from one start
    beside = {"verify", "push"} if "tag" in bt else set()
    together = set(start.get("build_beside") or ())
    if announced(r"sync the clean build directory", t_start) is not None:
        t = t_start
        t_split = t_once = None
        for name in bt:
            if name in ("workdir",):
                pat = r"sync the clean build directory"
            elif name in together:
                pat = r"\bbuild .* side by side"
            elif name.startswith("build:"):
                pat = r"\bbuild \S*" + re.escape(name.split(":", 1)[1]) + r"\S*:"
            elif name.startswith("push"):
                pat = r"\bpush \S+"
            elif name == "verify":
                pat = r"verify: deploying throwaway stack"
            elif name == "tag":
                pat = r"\btag \S+"
            else:
                pat = None
            if name in beside:
                t_split = t if t_split is None else t_split
                base = t_split
            elif name in together:
                t_once = t if t_once is None else t_once
                base = t_once
            else:
                base = t
            at = announced(pat, base) if pat else None
            s = at if at is not None and at >= base else base
            phases[name] = [s, s + float(bt[name])]
            t = max(t, s + float(bt[name]))
    else:  # no stderr to anchor them: end to end (verify beside the push), ending at the run-start record
        total = sum(float(v) for k, v in bt.items() if k not in beside and k not in together) + max(
            (float(bt[k]) for k in beside), default=0.0) + max((float(bt[k]) for k in together), default=0.0)
        t = start["ts"] - total
        t_split = t_once = None
        for name, v in bt.items():
            if name in beside:
                t_split = t if t_split is None else t_split
                phases[name] = [t_split, t_split + float(v)]
                t = max(t, t_split + float(v))
            elif name in together:
                t_once = t if t_once is None else t_once
                phases[name] = [t_once, t_once + float(v)]
                t = max(t, t_once + float(v))
            else:
                phases[name] = [t, t + float(v)]
                t += float(v)
    first = min((v[0] for v in phases.values()), default=start["ts"])
    if first > t_start:
        phases = {"plan": [t_start, first], **phases}
    if start["ts"] > t:
        phases["lock"] = [t, start["ts"]]
    for r in records:
        if r.get("undo") or r["kind"] not in ("intent", "result") or "step" not in r:
            continue
        if r["kind"] == "intent":
            phases[r["step"]] = [r["ts"], r["ts"]]
        elif r["step"] in phases:
            phases[r["step"]][1] = r["ts"]
    return {k: [round(a, 3), round(max(a, min(b, t_end)), 3)] for k, (a, b) in phases.items()}


def is_wait(name: str) -> bool:
    return name.startswith("build:") or name in BUILD_WAITS or name in WAIT_STEPS or name.startswith(WAIT_PREFIXES)


def overhead(phases: dict[str, list[float]], wall_s: float, lead_s: float | None = None) -> dict[str, Any]:
    """stackpatch's own time: the wall time minus docker build, push, task start and health waits.
    `phases` are [start, end] in seconds since the command started. With `lead_s`, the same share is also
    computed over [0, lead time] only (until the new revision serves)."""
    waits = covered([v for k, v in phases.items() if is_wait(k)])
    own = {k: round(b - a, 3) for k, (a, b) in phases.items() if not is_wait(k)}
    own["between steps"] = round(max(0.0, wall_s - covered(list(phases.values()))), 3)
    over = max(0.0, wall_s - waits)
    out = {"overhead_share": round(over / wall_s, 4) if wall_s > 0 else 0.0, "overhead_s": round(over, 3),
           "waits_s": round(waits, 3), "overhead_parts_s": own}
    if lead_s:
        in_lead = covered([[max(a, 0.0), min(b, lead_s)] for k, (a, b) in phases.items() if is_wait(k)])
        out["overhead_share_of_lead_time"] = round(max(0.0, lead_s - in_lead) / lead_s, 4)
    return out


def covered(spans: list) -> float:
    """Seconds covered by the union of [start, end] spans (phases that overlap count once)."""
    total, end = 0.0, None
    for a, b in sorted((a, b) for a, b in spans if b > a):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


# ------------------------------------------------------------------ the limit line (issue 13, item 4)

def limit_figures(records: list[dict], err_lines: list[tuple[float, str]]) -> dict[str, Any] | None:
    """What no tool can beat on this app and machine, each part measured in this ship: the build of the
    changed layers (Σ build:<image>, or the slowest of those built side by side) + the push of the
    changed bytes (push) + per wave, one task start and its first passing health check: from the wave's
    first update intent (journal) to the first stderr line saying a task of the wave runs the new image
    ("<service>: 1/N running on the new image").
    None when a wave's first healthy task is not in the lines."""
    start = next(r for r in records if r["kind"] == "run-start")
    bt = start.get("build_timings") or {}
    together = set(start.get("build_beside") or ())
    parts = {k: round(float(v), 3) for k, v in bt.items()
             if (k.startswith("build:") and k not in together) or k == "push"}
    if together & set(bt):  # built side by side: the slowest of them is the build's part
        slowest = max(together & set(bt), key=lambda k: float(bt[k]))
        parts[slowest] = round(float(bt[slowest]), 3)
    waves: dict[str, tuple[float, list[str]]] = {}
    for r in records:
        if r["kind"] == "intent" and r.get("step_kind") == "update" and not r.get("undo"):
            t, svcs = waves.get(r["wave"], (r["ts"], []))
            waves[r["wave"]] = (min(t, r["ts"]), svcs + [r["service"]])
    for wave, (t, svcs) in waves.items():
        rx = re.compile(r"^(?:" + "|".join(re.escape(x) for x in svcs) + r"): [1-9]\d*/\d+ running on the new image")
        first = next((ts for ts, line in err_lines if ts >= t and rx.search(line.strip())), None)
        if first is None:
            return None
        parts[f"first healthy task:{wave}"] = round(first - t, 3)
    return {"limit_s": round(sum(parts.values()), 3), "parts_s": parts}


# ------------------------------------------------------------------ several runs of one contender

# each run keeps these (the contender's own keys), plus max_latency_s
RUN_KEYS = ("lead_time_s", "failed_requests", "total_requests", "longest_gap_s", "p50_ms", "p99_ms", "phases",
            "overhead_share", "overhead_share_of_lead_time", "overhead_s", "command_s", "max_ms", "p99_during_ms",
            "rate", "post_requests", "post_applied_twice", "post_lost", "limit_s", "revision", "exit_code")
MEDIAN_KEYS = ("lead_time_s", "failed_requests", "total_requests", "longest_gap_s", "p50_ms", "p99_ms",
               "overhead_share", "overhead_share_of_lead_time", "overhead_s", "command_s", "p99_during_ms",
               "post_requests", "post_applied_twice", "post_lost", "limit_s")
RANGE_KEYS = ("lead_time_s", "command_s", "failed_requests", "longest_gap_s", "p99_ms", "max_latency_s",
              "overhead_share")


def run_record(c: dict[str, Any]) -> dict[str, Any]:
    """One run as the results file lists it under the contender's `runs`."""
    r = {k: c[k] for k in RUN_KEYS if k in c}
    r["max_latency_s"] = round(c["max_ms"] / 1000, 3) if c.get("max_ms") is not None else None
    return r


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A contender's figures over its runs: each headline figure is the median over the runs (the lower
    middle value for counts), each phase its median; the rest (revisions, command, baseline…) is the
    run whose lead time is the median. Adds `runs`, `range` ([min, max] per figure, over the runs) and
    `max_latency_s` (the slowest request of any run)."""
    import statistics
    recs = [run_record(r) for r in runs]
    base = dict(sorted(runs, key=lambda r: r["lead_time_s"])[(len(runs) - 1) // 2])
    for k in MEDIAN_KEYS:
        vals = [r.get(k) for r in recs]
        if vals and all(v is not None for v in vals):
            base[k] = (statistics.median_low(vals) if all(isinstance(v, int) for v in vals)
                       else round(statistics.median(vals), 4))
    names = list(dict.fromkeys(k for r in recs for k in r["phases"]))
    base["phases"] = {k: round(statistics.median([r["phases"][k] for r in recs if k in r["phases"]]), 3)
                      for k in names}
    lat = [r["max_latency_s"] for r in recs if r["max_latency_s"] is not None]
    base["max_latency_s"] = max(lat) if lat else None
    base["range"] = {k: [min(v), max(v)] for k in RANGE_KEYS
                     if (v := [r[k] for r in recs if r.get(k) is not None]) and len(v) == len(recs)}
    base["runs"] = recs
    return base


# ------------------------------------------------------------------ results

def compact_revisions(runs: list[dict], new: str) -> dict[str, Any]:
    """Which revision answered over time, in a few numbers: per revision its first and last answer and its
    count (seconds since the load started), and the window where old and new answered mixed (the rolling
    update across replicas). The full sequence stays in the raw NAME.jsonl."""
    per: dict[str, dict[str, Any]] = {}
    for r in runs:
        p = per.setdefault(r["revision"][:12] if r["revision"] else "none",
                           {"first_s": r["from_s"], "last_s": r["to_s"], "count": 0})
        p["last_s"] = max(p["last_s"], r["to_s"])
        p["count"] += r["count"]
    new_runs = [r for r in runs if r["revision"] == new]
    old_runs = [r for r in runs if r["revision"] != new]
    mixed = None
    if new_runs and old_runs:
        a, b = new_runs[0]["from_s"], max(r["to_s"] for r in old_runs)
        mixed = [a, b] if b > a else None
    return {"by_revision": per, "switches": max(0, len(runs) - 1), "mixed_window_s": mixed}


def targets(results: dict) -> dict[str, Any]:
    sp, mr = results["contenders"]["stackpatch"], results["contenders"]["manual_routine"]
    cs = results["contenders"].get("competent_script")
    bd = results["build_dir"]
    ratio = mr["lead_time_s"] / sp["lead_time_s"] if sp["lead_time_s"] else None
    out: dict[str, Any] = {
        "stackpatch_zero_failed": {"met": sp["failed_requests"] == 0, "value": sp["failed_requests"], "target": 0},
        "stackpatch_gap_le_1s": {"met": sp["longest_gap_s"] <= 1.0, "value": sp["longest_gap_s"], "target": 1.0},
        "lead_time_5x_shorter": {"met": ratio is not None and ratio >= 5, "value": round(ratio or 0, 2), "target": 5},
        "overhead_le_10pct": {"met": sp["overhead_share"] <= 0.10, "value": sp["overhead_share"], "target": 0.10},
    }
    # issue 13: within 1.3x the competent script's lead time, overhead at most 5 %
    if cs:
        vs = sp["lead_time_s"] / cs["lead_time_s"]
        out["lead_time_le_1_3x_competent"] = {"met": vs <= 1.3, "value": round(vs, 2), "target": 1.3}
    out["overhead_le_5pct"] = {"met": sp["overhead_share"] <= 0.05, "value": sp["overhead_share"], "target": 0.05}
    # issue 16: POSTs never applied twice, p99 during the patch within 2x the p99 before, nothing over 1 s
    if sp.get("post_applied_twice") is not None:
        out["stackpatch_no_post_applied_twice"] = {"met": sp["post_applied_twice"] == 0,
                                                   "value": sp["post_applied_twice"], "target": 0}
    during, before = sp.get("p99_during_ms"), (sp.get("baseline") or {}).get("p99_ms")
    if during is not None and before:
        out["stackpatch_p99_during_le_2x_before"] = {"met": during <= 2 * before, "value": round(during / before, 2),
                                                     "target": 2.0}
    if sp.get("max_ms") is not None:
        out["stackpatch_max_latency_le_1s"] = {"met": sp["max_ms"] <= 1000, "value": sp["max_ms"], "target": 1000}
    sizes = sorted([bd] + list(bd.get("scaling") or []), key=lambda d: d["files"])
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        inc = big["incremental_s"] / small["incremental_s"]
        fresh = big["fresh_clone_s"] / small["fresh_clone_s"]
        files = big["files"] / small["files"]
        # "grows with the change, not with the repo": a repo N x larger costs the 1-file sync well under N x
        out["builddir_grows_with_change"] = {
            "met": inc < max(2.0, files / 4), "files_ratio": round(files, 1),
            "incremental_ratio": round(inc, 2), "fresh_clone_ratio": round(fresh, 2)}
    return out


def assemble(machine: dict, stackpatch: dict, manual: dict, build_dir: dict, competent: dict | None = None,
             **meta: Any) -> dict[str, Any]:
    """The results file: checked against benchmarks/schema.py before it is returned."""
    contenders = {"stackpatch": stackpatch, "manual_routine": manual}
    if competent is not None:
        contenders["competent_script"] = competent
    results = {"machine": machine, "contenders": contenders, "build_dir": build_dir, **meta}
    schema.validate(results)
    results["targets"] = targets(results)
    schema.validate(results)
    return results


def machine() -> dict[str, Any]:
    m = schema.machine_info()
    m["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        # what `uptime` prints, read from /proc: procps is not part of a minimal Debian
        up = float(Path("/proc/uptime").read_text().split()[0])
        m["uptime"] = (f"{time.strftime('%H:%M:%S')} up {int(up // 3600)}:{int(up % 3600 // 60):02d}, load average: "
                       + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
        m["docker_client"] = subprocess.run([shutil.which("docker", path="/usr/bin") or "docker", "version",
                                             "--format", "{{.Client.Version}}"], capture_output=True, text=True,
                                            timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        m["cpu"] = model
    except (OSError, StopIteration):
        pass
    m["platform"] = platform.platform()
    return m


def machine_slug(m: dict) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", (m.get("hostname") or "host").lower()).strip("-")[:24] or "host"
    return f"{host}-{m['cores']}c{round(m['memory_gib'])}g"


# ------------------------------------------------------------------ the run

def _git(*args: str, cwd: Path) -> str:
    from stackpatch import git
    return git.out(*args, cwd=cwd)


def one_line_fix(app: Path, line: str, *, with_start: bool, env: dict[str, str], version: str = HOTFIX,
                 base: str = RELEASE, branch: str | None = None) -> str:
    """hotfix/<version> from 26.11.1 (with `stackpatch start`, or by hand), one line appended, pushed.
    By hand with `branch`: that branch from `base`, pushed, and the checkout back where it was (the
    multi-node runs patch one repo, in which stackpatch's next `start` must find no stray branch)."""
    from stackpatch import git
    back = None
    if with_start:
        r = subprocess.run([CLI, "start", version], cwd=app, env=env, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"stackpatch start failed: {r.stderr[-2000:]}")
    else:
        if branch:
            back = git.run("symbolic-ref", "--quiet", "--short", "HEAD", cwd=app, check=False).stdout.strip() \
                or git.out("rev-parse", "HEAD", cwd=app)
        git.run("checkout", "--quiet", "-b", branch or f"hotfix/{version}", base, cwd=app)
    server = app / "app" / "server.py"
    server.write_text(server.read_text() + line)
    git.run(*IDENTITY, "commit", "--quiet", "-am", "one-line hotfix", cwd=app)
    git.run("push", "--quiet", "--set-upstream", "origin", branch or f"hotfix/{version}", cwd=app)
    sha = git.out("rev-parse", "HEAD", cwd=app)
    if back is not None:
        git.run("checkout", "--quiet", back, cwd=app)
        git.run("branch", "--quiet", "-D", branch, cwd=app)
    return sha


def run_gently(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run, but a timeout, Ctrl-C or the deadline sends SIGTERM first (stackpatch then rolls back
    and removes its verify stack) and SIGKILL only after 60 s."""
    with subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          stdin=subprocess.DEVNULL) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except BaseException:
            p.terminate()
            try:
                p.communicate(timeout=60)
            except BaseException:
                p.kill()
                p.wait()
            raise
        return subprocess.CompletedProcess(argv, p.returncode, out, err)


def registry_creds(env_file: Path) -> tuple[str, str]:
    kv = {}
    for line in Path(env_file).read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
    return (next(v for k, v in kv.items() if k.endswith("_USER")),
            next(v for k, v in kv.items() if k.endswith("_PASSWORD")))


class Cleanup:
    """Undo actions, run last-in first-out, each one whatever the others do."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], Any]]] = []

    def add(self, what: str, fn: Callable[[], Any]) -> None:
        self.actions.append((what, fn))

    def run(self) -> list[str]:
        failed = []
        while self.actions:
            what, fn = self.actions.pop()
            try:
                log(f"cleanup: {what}")
                fn()
            except BaseException as e:  # noqa: BLE001 - go on with the rest
                failed.append(f"{what}: {e}")
                log(f"cleanup: {what} failed: {e}")
        return failed


def remove_images(registry_host: str, namespace: str) -> None:
    """Every local image tagged under this sandbox's registry namespace or a fork's (`<name>-<fork>-prod`:
    each fork pushes under its own), on the sandbox's registry (unique port: ours only)."""
    from stackpatch.sandbox import engine
    c = engine.client()
    prefixes = (f"{registry_host}/{namespace}/", f"{registry_host}/{namespace.lower()}-")
    for img in c.images.list():
        for tag in img.tags:
            if tag.startswith(prefixes) and "/db:" not in tag and "/edge:" not in tag:
                try:
                    c.images.remove(tag, noprune=False)
                except Exception:  # noqa: BLE001 - in use by a task still stopping, or gone
                    pass


def make_fork(info, root: Path, label: str, cleanup: Cleanup, at: str | None = None):
    """A fresh fork for stack `<name>-<label>-prod`, in `root/label`, or in `root/at` after removing the
    fork made there before (its stack is gone by then). stackpatch's forks share one directory: a user's
    checkout stays at one path, so its build directory does too (keyed by the checkout's path), and
    BuildKit sends only the changed files of a context it has seen at that path. A fork at a new path
    made every measured ship send the whole ~190 MB context of the realistic app again (9 s, not 1)."""
    from stackpatch.sandbox import api
    stack = f"{info.name}-{label}-prod"
    cleanup.add(f"remove stack {stack}", lambda: api.remove_stack(stack))
    log(f"fork {stack} at {RELEASE}")
    dst = root / (at or label)
    if at and dst.exists():
        shutil.rmtree(dst)
    return api.fork(info, dst, stack)


class OwnStack:
    """`--nodes N` (N > 1): every run patches the sandbox's own stack on its nodes (a fork is for the
    one-engine sandbox), one run after another in the one repo. stackpatch ships 26.11.1b (the warm-up),
    then c, d… each on top of the last; a script's run patches the release stackpatch shipped last, on a
    branch of its own, and is undone afterwards (`docker service rollback` of the services it updated:
    each one's previous spec is stackpatch's), so that every contender patches the same release and
    stackpatch's next `start` finds its own release deployed."""

    SERVICES = ("phpfiles", "phpha", "web")

    def __init__(self, info, cdn: str) -> None:
        from stackpatch import git
        from stackpatch.sandbox import api
        self.info = info
        self.fork = api.Fork(app_dir=info.app_dir, origin_dir=info.origin_dir, stack=info.stack,
                             front_url=info.front_url, front_port=info.front_port, config_path=info.config_path)
        self.release, self.revision = RELEASE, info.revision  # what the stack runs between two runs
        self.manager = info.connect["unix"]
        self.node_hosts = {n["name"]: n["docker_host"] for n in info.nodes if n.get("docker_host")}
        # the CDN section, as on a fork: hidden from `git status` (the committed file is unchanged)
        git.run("update-index", "--skip-worktree", "stackpatch.toml", cwd=info.app_dir)
        with info.config_path.open("a") as f:
            f.write(cdn)

    def script_args(self) -> list[str]:
        """The scripts' view of a remote swarm: the service commands on the manager, the exec on the node
        that runs the task; builds and pushes on this machine's engine."""
        out = ["--swarm-host", self.manager]
        for node, host in sorted(self.node_hosts.items()):
            out += ["--node-host", f"{node}={host}"]
        return out

    def shipped(self, version: str, revision: str, env: dict[str, str] | None = None) -> None:
        """stackpatch shipped `version`: with `env`, `stackpatch finish` then merges and tags it (step 10 of
        the routine, not measured), so that the next `start` finds the deployed release's tag."""
        if env is not None:
            r = subprocess.run([CLI, "finish"], cwd=self.fork.app_dir, env=env, capture_output=True, text=True,
                               timeout=300, stdin=subprocess.DEVNULL)
            if r.returncode != 0:
                raise RuntimeError(f"stackpatch finish {version} failed: {r.stderr[-1500:]}")
        self.release, self.revision = version, revision

    def images(self) -> dict[str, str]:
        """{service: the image its spec names}, read on the manager."""
        names = [f"{self.info.stack}_{svc}" for svc in self.SERVICES]
        docker = shutil.which("docker", path="/usr/bin:/usr/local/bin:/bin") or "docker"
        out = subprocess.run([docker, "-H", self.manager, "service", "inspect", "--format",
                              "{{.Spec.TaskTemplate.ContainerSpec.Image}}", "--", *names], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL, check=True).stdout.split()
        return dict(zip(self.SERVICES, out))

    def restore(self, before: dict[str, str], timeout: float = 300) -> None:
        """Each service whose image a script changed (from `before`) back to its previous spec, all at once,
        then the front serving stackpatch's last release again."""
        import concurrent.futures
        from stackpatch.sandbox import stack as stack_mod
        now = self.images()
        changed = [svc for svc in self.SERVICES if now.get(svc) != before.get(svc)]

        def back(svc: str) -> subprocess.CompletedProcess:
            docker = shutil.which("docker", path="/usr/bin:/usr/local/bin:/bin") or "docker"
            return subprocess.run([docker, "-H", self.manager, "service", "rollback", "--detach=false",
                                   "--quiet", "--", f"{self.info.stack}_{svc}"], capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        log(f"roll {', '.join(changed) or 'nothing'} back to {self.release}")
        with concurrent.futures.ThreadPoolExecutor(max(1, len(changed))) as pool:
            done = list(pool.map(back, changed))
        failed = [f"{svc}: {r.stderr.strip()[-300:]}" for svc, r in zip(changed, done) if r.returncode != 0]
        if failed:
            raise RuntimeError(f"rolling the script's update back failed: {'; '.join(failed)}")
        stack_mod.wait_version(self.info.front_url, self.release, self.revision, timeout=timeout)


def run_stackpatch(args, info, root: Path, raw: Path, env: dict, cdn: str, cleanup: Cleanup, k: int, version: str,
                   tag: str, warm_s: float, own: OwnStack | None = None) -> dict[str, Any]:
    """stackpatch ship, on a fresh fork whose build dir an earlier ship left at 26.11.1 (or, on several
    nodes, on the sandbox's own stack, whose build dir the previous ship left)."""
    from stackpatch.images import workdir as workdir_mod
    from stackpatch.sandbox import api
    if own is not None:
        fork = own.fork
    else:
        fork = make_fork(info, root, f"sp{k}", cleanup, at=SP_DIR)
        with fork.config_path.open("a") as f:
            f.write(cdn)
        old_env = os.environ.get("STACKPATCH_CACHE_DIR")
        os.environ["STACKPATCH_CACHE_DIR"] = env["STACKPATCH_CACHE_DIR"]
        try:
            workdir_mod.sync(fork.app_dir, "origin", _git("rev-parse", f"{RELEASE}^{{commit}}", cwd=fork.app_dir))
        finally:
            if old_env is None:
                os.environ.pop("STACKPATCH_CACHE_DIR", None)
            else:
                os.environ["STACKPATCH_CACHE_DIR"] = old_env
    base = own.release if own is not None else RELEASE
    sha = one_line_fix(fork.app_dir, fix_line("stackpatch", k), with_start=True, env=env, version=version)
    time.sleep(1.1)  # the build dir was synced before the hotfix was written (no "racily clean" files)
    run_info: dict[str, Any] = {}

    def sp_phases(stdout: str, err_lines: list[tuple[float, str]], t_start: float,
                  t_end: float) -> dict[str, list[float]]:
        out = json.loads(stdout) if stdout.strip() else {}
        run_info["ship"] = out
        if not out.get("run") and not any((fork.app_dir / ".stackpatch" / "runs").glob("*.jsonl")):
            return {}  # it stopped before the deploy (no journal): the exit code says so, below
        recs = journal_records(fork.app_dir, (out.get("run") or {}).get("run_id"))
        run_info["limit"] = limit_figures(recs, err_lines)
        return stackpatch_phases(recs, t_start, t_end, err_lines)

    log(f"stackpatch ship{tag} under {args.rate:g} req/s ({args.post_share:.0%} POSTs) on {fork.front_url}")
    sp = asyncio.run(measure.measure(
        f"{fork.front_url}/version", [CLI, "ship", "--yes", "--json"], raw, run_name("stackpatch", k), rate=args.rate,
        before=args.before, after=args.after, revision=sha, cwd=fork.app_dir, env=env, phases_hook=sp_phases,
        command_timeout=args.command_timeout, max_duration=args.command_timeout + 120,
        post_share=args.post_share, stack=fork.stack, timeout=args.request_timeout,
        docker_hosts=list(own.node_hosts.values()) if own is not None else (),
        title=f"stackpatch ship --yes: {base} → {version}, {args.rate:g} req/s{tag}{nodes_tag(info)}"))
    if sp["exit_code"] != 0:
        raise RuntimeError(f"stackpatch ship failed (exit {sp['exit_code']}); see {raw}/{run_name('stackpatch', k)}.log")
    sp.update(overhead(sp["phase_times"], sp["command_s"], sp["lead_time_s"]))
    sp["revision"] = sha
    ship = run_info.get("ship") or {}
    sp["ship_timings"] = ship.get("timings")
    sp["run_state"] = (ship.get("run") or {}).get("state")
    sp["workdir_cold"] = ship.get("workdir_cold")
    sp["warmup_ship_s"] = round(warm_s, 2)
    if run_info.get("limit"):
        sp["limit_s"] = run_info["limit"]["limit_s"]
        sp["limit_parts_s"] = run_info["limit"]["parts_s"]
    shutil.copy(fork.app_dir / ".stackpatch" / "runs" / f"{(ship.get('run') or {}).get('run_id')}.jsonl",
                raw / f"stackpatch-journal-{k + 1}.jsonl")
    if own is not None:
        own.shipped(version, sha, env)
    else:
        api.remove_stack(fork.stack)
    return sp


def nodes_tag(info) -> str:
    return f", {len(info.nodes)} nodes" if info.connect else ""


def run_manual(args, info, root: Path, raw: Path, name: str, user: str, password: str, cleanup: Cleanup, k: int,
               tag: str, own: OwnStack | None = None) -> dict[str, Any]:
    """benchmarks/manual_routine.sh on a fresh fork (or on the sandbox's own stack, on several nodes)."""
    argv = ["bash", str(SCRIPT), "--version", HOTFIX, "--registry", f"{info.registry}/{name}",
            "--base-image", info.base_image]
    return run_script(args, info, root, raw, cleanup, k, tag, "manual_routine", argv, (user, password),
                      "manual routine script", own=own)


def run_competent(args, info, root: Path, raw: Path, name: str, user: str, password: str, cleanup: Cleanup,
                  k: int, tag: str, workdir: Path, own: OwnStack | None = None) -> dict[str, Any]:
    """benchmarks/competent_script.py on a fresh fork; its checkout is kept in `workdir` across its runs
    and, like stackpatch's build dir, made once at 26.11.1 before its first measured run."""
    argv = [sys.executable, str(COMPETENT), "--version", HOTFIX, "--registry", f"{info.registry}/{name}",
            "--base-image", info.base_image, "--workdir", str(workdir)]
    return run_script(args, info, root, raw, cleanup, k, tag, "competent_script", argv, (user, password),
                      "competent script (cached build, start-first)", kept_checkout=workdir / "src", own=own)


def run_script(args, info, root: Path, raw: Path, cleanup: Cleanup, k: int, tag: str, contender: str,
               argv: list[str], login: tuple[str, str], title: str, kept_checkout: Path | None = None,
               own: OwnStack | None = None) -> dict[str, Any]:
    """A script contender (argv, to which the fork's --repo, --ref and --stack are added) on a fresh fork,
    after the same one-line fix, pushed by hand on hotfix/<HOTFIX>. On several nodes (`own`): on the
    sandbox's own stack, the fix on a branch of its own from stackpatch's last release, the scripts told
    where the manager and the nodes are, and their update rolled back afterwards."""
    from stackpatch import git
    from stackpatch.sandbox import api
    fork = own.fork if own is not None else make_fork(info, root, f"{contender.split('_')[0]}{k}", cleanup)
    base = own.release if own is not None else RELEASE
    if kept_checkout is not None and not (kept_checkout / ".git").is_dir():
        git.run("clone", "--quiet", "--", str(fork.origin_dir), str(kept_checkout), cwd=root)
        git.run("checkout", "--quiet", "--detach", base, cwd=kept_checkout)
    ref = f"bench/{contender}-{k + 1}" if own is not None else f"hotfix/{HOTFIX}"
    sha = one_line_fix(fork.app_dir, fix_line(contender, k), with_start=False, env={}, base=base,
                       branch=ref if own is not None else None)
    # the realistic app's origin as a URL: git clones it through its pack protocol, as from a remote,
    # not by hard-linking the objects of a local path
    repo = fork.origin_dir.as_uri() if args.app == "realistic" else str(fork.origin_dir)
    argv = argv + ["--repo", repo, "--ref", ref, "--stack", fork.stack] + (own.script_args() if own else [])
    log(f"{contender.replace('_', ' ')}{tag} under {args.rate:g} req/s ({args.post_share:.0%} POSTs) on {fork.front_url}")
    before = own.images() if own is not None else {}
    figures = asyncio.run(measure.measure(
        f"{fork.front_url}/version", argv, raw, run_name(contender, k), rate=args.rate, before=args.before,
        after=args.after, revision=sha, env={"REGISTRY_USER": login[0], "REGISTRY_PASSWORD": login[1]},
        command_timeout=args.command_timeout, max_duration=args.command_timeout + 120,
        post_share=args.post_share, stack=fork.stack, timeout=args.request_timeout,
        docker_hosts=list(own.node_hosts.values()) if own is not None else (),
        title=f"{title}: {base} → {HOTFIX}, {args.rate:g} req/s{tag}{nodes_tag(info)}"))
    if figures["exit_code"] != 0:
        raise RuntimeError(f"the {contender.replace('_', ' ')} failed (exit {figures['exit_code']}); "
                           f"see {raw}/{run_name(contender, k)}.log")
    if own is not None:  # the next contender patches stackpatch's release again
        own.restore(before)
    else:
        api.remove_stack(fork.stack)
    return figures


def run_name(contender: str, k: int) -> str:
    """The files of a run in .bench/<stem>/: NAME.jsonl, NAME.png, NAME.log… (the first run keeps the bare name)."""
    return contender if k == 0 else f"{contender}-run{k + 1}"


def fix_line(contender: str, k: int) -> str:
    """The one-line hotfix, distinct per contender and run: every run commits its own sha (forks share
    the registry namespace, and `git-commit-<sha7>` tags are never reused)."""
    return f"# {HOTFIX}: one-line hotfix ({contender}, run {k + 1})\n"


def run(args: argparse.Namespace) -> int:
    from stackpatch.sandbox import api
    from tests.fakes.cloudflare import FakeCloudflare

    t_bench = time.time()
    m = machine()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    stem = f"{stamp}-{machine_slug(m)}" + (f"-nodes{args.nodes}" if args.nodes > 1 else "")
    raw = ROOT / ".bench" / stem
    if raw.exists():
        shutil.rmtree(raw)
    raw.mkdir(parents=True)
    log(f"machine: {m['cores']} cores, {m['memory_gib']} GiB, Docker {m['docker_version']}, load {m['load_average']}")
    cleanup = Cleanup()
    root = Path(tempfile.mkdtemp(prefix="stackpatch-bench-"))
    cleanup.add(f"remove {root}", lambda: shutil.rmtree(root, ignore_errors=True))
    name = args.name or f"bench-{uuid.uuid4().hex[:6]}"
    cf = FakeCloudflare().start()
    cleanup.add("stop the local Cloudflare API", cf.stop)
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(root / "cache"), "BENCH_CF_TOKEN": cf.token}
    app: dict[str, Any] = {"app": args.app}
    hook = None
    if args.app == "realistic":
        spec = bigapp.Spec(files=args.app_files, commits=args.app_commits, history_mb=args.app_history_mb)
        wheel_files = bigapp.wheels()  # before anything starts: no PyPI and no cache refuses here
        log(f"realistic app: {spec.files} files, {spec.commits} commits, {spec.history_mb} MB of history, "
            f"{len(wheel_files)} wheels in its package index")

        def hook(app_dir: Path) -> None:
            t = time.monotonic()
            app.update(bigapp.grow(app_dir, spec, wheel_files))
            app["grow_s"] = round(time.monotonic() - t, 1)
            app["wheels"] = len(wheel_files)
    try:
        sbdir = root / "sandbox"
        cleanup.add(f"sandbox down {name}", lambda: api.down(sbdir))
        log(f"sandbox up {name} in {sbdir}" + (f" on {args.nodes} nodes" if args.nodes > 1 else ""))
        t0 = time.monotonic()
        info = api.up(sbdir, name=name, app_hook=hook, nodes=args.nodes)
        sandbox_s = time.monotonic() - t0
        cleanup.add("remove the images built under the sandbox's registry", lambda: remove_images(info.registry, name))
        user, password = registry_creds(info.registry_env_file)
        cdn = (f'\n[cdn]\nzone = "{cf.zone}"\napi_url = "{cf.api_url}"\ntoken_env = "BENCH_CF_TOKEN"\n'
               'purge = "files"\nitems = ["https://acme.example/static/app.js", '
               '"https://acme.example/static/style.css"]\n')

        # several nodes: every run on the sandbox's own stack, one after another (OwnStack)
        own = OwnStack(info, cdn) if args.nodes > 1 else None
        # warm-up: a throwaway fork ships another one-line fix (BuildKit cache, base layers); on several
        # nodes the stack itself ships it, and the measured runs patch it in turn
        if own is not None:
            warm, warm_version = own.fork, HOTFIX
        else:
            warm, warm_version = make_fork(info, root, "warm", cleanup, at=SP_DIR), WARMUP
            with warm.config_path.open("a") as f:
                f.write(cdn)
        # another version: the registry namespace is shared by the forks and tags are never reused
        warm_sha = one_line_fix(warm.app_dir, "# warm-up: another one-line fix\n", with_start=True, env=env,
                                version=warm_version)
        ship_argv = [CLI, "ship", "--yes", "--json"]
        if args.profile:  # the warm-up ship, profiled (wall clock, every thread), never the measured one
            ship_argv = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o",
                         str(raw / "ship-profile.txt"), "-m", "stackpatch", "ship", "--yes", "--json"]
        log("warm-up ship" + (" under pyinstrument" if args.profile else ""))
        t0 = time.monotonic()
        r = run_gently(ship_argv, cwd=warm.app_dir, env=env, timeout=args.command_timeout)
        warm_s = time.monotonic() - t0
        (raw / "warmup.log").write_text(r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"the warm-up ship failed (exit {r.returncode}): {r.stderr[-1500:]}")
        if own is not None:
            own.shipped(warm_version, warm_sha, env)
        else:
            api.remove_stack(warm.stack)

        sp_runs: list[dict] = []
        mr_runs: list[dict] = []
        cs_runs: list[dict] = []
        competent_dir = root / "competent"   # the competent script's kept checkout, across its runs
        for k in range(args.runs):
            # one round: each contender once, in turn (a load that changes hits each alike); every run has
            # its own fork, its own one-line fix (its own sha) and, for stackpatch, its own version
            # (on several nodes the warm-up shipped 26.11.1b: the runs go on from c)
            version = f"{RELEASE}{chr(ord('b') + k + (own is not None))}" if k or own is not None else HOTFIX
            tag = f" (run {k + 1} of {args.runs})" if args.runs > 1 else ""
            sp_runs.append(run_stackpatch(args, info, root, raw, env, cdn, cleanup, k, version, tag, warm_s, own))
            mr_runs.append(run_manual(args, info, root, raw, name, user, password, cleanup, k, tag, own))
            if args.competent:
                cs_runs.append(run_competent(args, info, root, raw, name, user, password, cleanup, k, tag,
                                             competent_dir, own))
    finally:
        failed = cleanup.run()
    if failed:
        log(f"cleanup left: {failed}")

    log(f"build directory: {args.files} files, 1-file change, vs a fresh clone")
    bd = builddir_bench.measure(args.files, None, args.repeat)
    if args.scaling:
        bd["scaling"] = [builddir_bench.measure(int(n), None, args.repeat) for n in args.scaling.split(",") if n.strip()]

    m["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for c in sp_runs + mr_runs + cs_runs:
        c["revisions"] = compact_revisions(c.pop("revisions"), c["revision"])
        c["command"] = [Path(a).name if a.startswith(str(ROOT)) or a == CLI else a for a in c["command"]]
    sp, mr = combine(sp_runs), combine(mr_runs)
    cs = combine(cs_runs) if cs_runs else None
    limit = {}
    if all(r.get("limit_s") for r in sp_runs):
        import statistics
        limit = {"limit_s": round(statistics.median(r["limit_s"] for r in sp_runs), 3),
                 "limit_parts_s": sp.get("limit_parts_s"),
                 "ship_over_limit": round(sp["command_s"] / statistics.median(r["limit_s"] for r in sp_runs), 2),
                 "lead_time_over_limit": round(sp["lead_time_s"] / statistics.median(r["limit_s"] for r in sp_runs), 2)}
    results = assemble(m, sp, mr, bd, cs, **limit, runs_per_contender=args.runs, date=stamp, generated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       bench={"rate": args.rate, "post_share": args.post_share, "request_timeout_s": args.request_timeout,
                              "before_s": args.before, "after_s": args.after, "sandbox": name, "app": app,
                              "sandbox_up_s": round(sandbox_s, 1), "total_s": round(time.time() - t_bench, 1),
                              "nodes": args.nodes,
                              "hotfix": (f"{RELEASE} → {HOTFIX}, one line appended to app/server.py" if own is None
                                         else "one line appended to app/server.py, on the release stackpatch "
                                              "shipped last (26.11.1b, the warm-up, then each run's own); "
                                              "each script's update rolled back after its run"),
                              "cdn": "stackpatch purges a local server speaking Cloudflare's API; the manual "
                                     "script does not purge (step 9 is by hand), nor does the competent script"})
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stem}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for c in ("stackpatch", "manual_routine", "competent_script"):
        if (raw / f"{c}.png").exists():  # the chart of the contender's last run
            shutil.copy(raw / f"{c}.png", RESULTS / f"{stem}-{c.replace('_', '-')}.png")
    if (raw / "ship-profile.txt").exists():
        shutil.copy(raw / "ship-profile.txt", RESULTS / f"{stem}-ship-profile.txt")
    log(f"wrote {out} (raw requests and logs in {raw})")
    print(json.dumps({"results": str(out), "targets": results["targets"]}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=500.0,
                    help="requests per second offered to the edge, open loop (default 500)")
    ap.add_argument("--post-share", type=float, default=0.2,
                    help="share of the requests that are POSTs writing a row (default 0.2)")
    ap.add_argument("--request-timeout", type=float, default=5.0,
                    help="seconds before a request counts as failed (default 5)")
    ap.add_argument("--before", type=float, default=5.0, help="seconds of load before each command (default 5)")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of load after each command (default 5)")
    ap.add_argument("--files", type=int, default=10_000, help="files of the build-dir repo (default 10000)")
    ap.add_argument("--scaling", default="1000,30000", help="more repo sizes for the build dir ('' for none)")
    ap.add_argument("--repeat", type=int, default=3, help="build-dir rounds per size (medians)")
    ap.add_argument("--name", help="sandbox name (default bench-<random>)")
    ap.add_argument("--command-timeout", type=float, default=900, help="seconds per contender command")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="do not run the warm-up ship under pyinstrument (default: profile it when installed)")
    ap.add_argument("--max-minutes", type=float, default=90, help="the whole benchmark's bound")
    ap.add_argument("--runs", type=int, default=1,
                    help="runs per contender (issue 13 asks for 3 or more: medians, with the range)")
    ap.add_argument("--app", choices=("realistic", "example"), default="realistic",
                    help="realistic (default): the sandbox app grown to the seed's size and build costs "
                         "(benchmarks/bigapp); example: the sandbox's own toy app, quick")
    ap.add_argument("--app-files", type=int, default=20_000, help="the realistic app's generated files (default 20000)")
    ap.add_argument("--app-commits", type=int, default=2_000, help="its generated commits (default 2000)")
    ap.add_argument("--app-history-mb", type=int, default=200,
                    help="the size its generated history packs to, MB (default 200; the wheels add ~95)")
    ap.add_argument("--no-competent", dest="competent", action="store_false",
                    help="leave out the third contender, benchmarks/competent_script.py")
    ap.add_argument("--nodes", type=int, default=1,
                    help="the sandbox's nodes (`sandbox up --nodes N`, default 1): with more, every contender "
                         "patches the sandbox's own stack on a manager and N-1 workers that pull from the "
                         "registry; the results file then ends in -nodesN")
    args = ap.parse_args(argv)
    if not 1 <= args.runs <= 20:
        ap.error("--runs must be between 1 and 20")
    from stackpatch.sandbox.nodes import MAX_NODES
    if not 1 <= args.nodes <= MAX_NODES:
        ap.error(f"--nodes must be between 1 and {MAX_NODES}")
    if args.profile and importlib.util.find_spec("pyinstrument") is None:
        log("pyinstrument is not installed (pip install pyinstrument): the warm-up ship is not profiled")
        args.profile = False

    def bound(signum, frame):
        raise Deadline(f"the benchmark ran out of its {args.max_minutes:g} minutes")

    def term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGALRM, bound)
    signal.signal(signal.SIGTERM, term)
    signal.alarm(int(args.max_minutes * 60))
    try:
        return run(args)
    except (Deadline, KeyboardInterrupt, RuntimeError, subprocess.TimeoutExpired) as e:
        log(f"error: {e}")
        return 1
    except Exception:  # noqa: BLE001 - a bug: the traceback helps, cleanup already ran
        traceback.print_exc()
        return 1
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
