"""Run one contender's command under steady load and turn it into the figures of issue 6.

    python benchmarks/measure.py --url http://127.0.0.1:PORT/version --name manual_routine \
        --out-dir benchmarks/results/2026-11-26-host --revision SHA -- benchmarks/manual_routine.sh ...

1. the load generator starts (`--rate`, default 100 req/s) and runs `--before` seconds alone;
2. the command runs (an argv list, never a shell string); every stdout line that is JSON with
   `{"phase", "event": "start"|"end", "ts"}` marks a phase (manual_routine.sh prints them), and a
   `--phases-file` written by the command (`{name: [start, end]}`, epoch seconds) is read after it;
3. the load goes on `--after` seconds, then stops.
Writes NAME.jsonl (every request), NAME.png (the chart), NAME.log (the command's stderr, each line with
its arrival time since the command started), NAME.out (its stdout) and
NAME.contender.json (the figures, as `schema.Contender` wants them). The lead time runs from the
command's start to the first successful answer of the new revision after which no other revision
answered; when that never happens it is the command's wall time and `new_revision_served` is false.

With `post_share` (`--post-share`), that share of the requests are POSTs that each write one row (the
example app's `POST /notes`); with `stack` (`--stack`), the rows are counted in that stack's database
afterwards (`notes_rows`) and set against the answers: `post_requests`, `post_applied_twice`, ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import loadgen, schema  # noqa: E402
from benchmarks.chart import chart  # noqa: E402


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the tools roll back and release what they hold), SIGKILL after 60 s."""
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 60)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


def notes_rows(stack: str, tag: str, timeout: float = 60, hosts: Sequence[str] = ()) -> dict[str, int]:
    """{request id: rows} of the example app's `notes` table for the request ids `<tag>-...`, read with
    psql in the running task of the stack's `db` service: this engine's container, or with `hosts` (the
    docker hosts of a multi-node swarm's nodes) the container on whichever node runs it."""
    if not re.fullmatch(r"[A-Za-z0-9]{1,40}", tag):
        raise ValueError(f"tag {tag!r}: letters and digits only")
    docker = shutil.which("docker", path="/usr/bin:/usr/local/bin:/bin") or "docker"
    ids: list[str] = []
    flags: list[str] = []
    for host in hosts or [None]:
        flags = ["-H", host] if host else []
        ids = subprocess.run([docker, *flags, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={stack}_db",
                              "--filter", "status=running"], capture_output=True, text=True, timeout=timeout,
                             check=True).stdout.split()
        if ids:
            break
    if not ids:
        raise RuntimeError(f"no running container of {stack}_db to count the rows in")
    sql = f"SELECT request_id, count(*) FROM notes WHERE request_id LIKE '{tag}-%' GROUP BY request_id"
    out = subprocess.run([docker, *flags, "exec", ids[0], "psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres",
                          "-AtF", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"counting the rows in {stack}_db failed: {out.stderr.strip()[:300]}")
    rows: dict[str, int] = {}
    for line in out.stdout.splitlines():
        if "\t" in line:
            rid, n = line.rsplit("\t", 1)
            rows[rid] = int(n)
    return rows


def window(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: summary.get(k) for k in ("total_requests", "failed_requests", "longest_gap_s", "p50_ms", "p99_ms",
                                        "max_ms")}


def phases_from_lines(lines: Sequence[str]) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """{name: [start, end]} from phase JSON lines, and the last non-phase fields seen (e.g. revision)."""
    phases: dict[str, list[float]] = {}
    extra: dict[str, Any] = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if not isinstance(d, dict) or "phase" not in d or "ts" not in d:
            continue
        name, ts = str(d["phase"]), float(d["ts"])
        if d.get("event") == "start":
            phases[name] = [ts, ts]
        elif d.get("event") == "end" and name in phases:
            phases[name][1] = ts
        extra.update({k: v for k, v in d.items() if k not in ("phase", "event", "ts")})
    return phases, extra


def serving_since(samples: Sequence[loadgen.Sample], revision: str, after: float) -> float | None:
    """Arrival time of the first successful answer of `revision` (at or after `after`) such that every later
    successful answer is of `revision` too; None when the new revision never took over. Only the GETs say
    which revision answered: a POST's answer names none and must not count as an old one (it did until
    2026-11-27, which put the lead time of a run with POSTs at the first GET after the last POST, near the
    end of the load; benchmarks/relead.py recomputes a results file's lead times from its raw requests)."""
    ok = sorted((s for s in samples if s.ok and s.method == "GET"), key=lambda s: s.ts + s.latency_ms / 1000)
    since = None
    for s in ok:
        arrival = s.ts + s.latency_ms / 1000
        if s.revision == revision or (revision and s.revision and s.revision.startswith(revision)):
            if since is None and arrival >= after:
                since = arrival
        else:
            since = None
    return since


async def measure(url: str, argv: Sequence[str], out_dir: Path, name: str, *, rate: float = 100.0,
                  before: float = 3.0, after: float = 5.0, revision: str | None = None,
                  phases_file: Path | None = None, timeout: float = 2.0, max_duration: float = 3600.0,
                  title: str | None = None, env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  phases_hook: Callable[[str, list[tuple[float, str]], float, float], dict[str, list[float]]] | None = None,
                  command_timeout: float | None = None, post_share: float = 0.0, post_path: str = "/notes",
                  stack: str | None = None, docker_hosts: Sequence[str] = ()) -> dict[str, Any]:
    """`env` is added to the command's environment (secrets go there, never in `argv`: argv is recorded).
    The command's stdout is kept in NAME.out, its stderr in NAME.log with each line's arrival time.
    `phases_hook(stdout, [(ts, stderr line)], t_start, t_end)`, when given, returns more phases ({name: [start, end]}, epoch)
    once the command ended. After `command_timeout` seconds the command gets SIGTERM (then SIGKILL)."""
    loadgen.check_url(url)
    out_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    tag = loadgen.new_tag()
    load = asyncio.create_task(loadgen.run(url, rate, stop_event=stop, out=out_dir / f"{name}.jsonl",
                                           timeout=timeout, max_duration=max_duration, post_share=post_share,
                                           post_path=post_path, tag=tag))
    try:
        await asyncio.sleep(before)
        t_start = time.time()
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE, cwd=cwd,
                                                    env={**os.environ, **(env or {})}, limit=1 << 20)
        lines: list[str] = []
        err_lines: list[tuple[float, str]] = []

        async def read_out() -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                lines.append(raw.decode("utf-8", "replace"))

        async def read_err() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                err_lines.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))

        try:
            await asyncio.wait_for(asyncio.gather(read_out(), read_err(), proc.wait()), command_timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            await _stop(proc)
            raise
        code = proc.returncode
        t_end = time.time()
        (out_dir / f"{name}.out").write_text("".join(lines))
        with open(out_dir / f"{name}.log", "w", encoding="utf-8") as log:
            log.writelines(f"[{ts - t_start:8.3f}s] {line}\n" for ts, line in err_lines)
        await asyncio.sleep(after)
    finally:
        stop.set()
    samples = await load
    phases, extra = phases_from_lines(lines)
    if phases_hook is not None:
        phases.update(phases_hook("".join(lines), err_lines, t_start, t_end))
    if phases_file is not None and phases_file.exists():
        phases.update({k: [float(v[0]), float(v[1])] for k, v in json.loads(phases_file.read_text()).items()})
    if not phases:
        phases = {"command": [t_start, t_end]}
    revision = revision or extra.get("revision")
    since = serving_since(samples, revision, t_start) if revision else None
    lead = (since - t_start) if since is not None else (t_end - t_start)
    summary = loadgen.summarize(samples)
    # the same front, same load, before the command started: how it fares with nothing deploying
    baseline = loadgen.summarize([s for s in samples if s.ts < t_start])
    during = loadgen.summarize([s for s in samples if t_start <= s.ts <= t_end])
    posts: dict[str, Any] = {"post_requests": summary["post_requests"], "post_ok": summary["post_ok"],
                             "post_applied_twice": None}
    if post_share > 0 and stack:
        posts = loadgen.post_figures(samples, await asyncio.to_thread(notes_rows, stack, tag, 60, docker_hosts))
    figures = schema.contender_figures(
        summary, phases, lead, command_s=round(t_end - t_start, 3), exit_code=code, revision=revision,
        new_revision_served=since is not None, statuses=summary["statuses"], revisions=summary["revisions"],
        phase_times={k: [round(a - t_start, 3), round(b - t_start, 3)] for k, (a, b) in phases.items()},
        rate=rate, post_share=post_share, command=list(argv), max_ms=summary["max_ms"],
        p99_during_ms=during["p99_ms"], baseline=window(baseline), during=window(during), **posts)
    (out_dir / f"{name}.contender.json").write_text(json.dumps(figures, indent=2) + "\n")
    chart(samples, phases, out_dir / f"{name}.png", title=title or f"{name}: {rate:g} req/s")
    return figures


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--" not in args:
        print("usage: measure.py --url URL --name NAME --out-dir DIR [options] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    cut = args.index("--")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="http://127.0.0.1:PORT/version of the front")
    ap.add_argument("--name", required=True, help="contender name: stackpatch or manual_routine")
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--before", type=float, default=3.0, help="seconds of load before the command")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of load after the command")
    ap.add_argument("--revision", help="the revision the command deploys (else from its JSON lines)")
    ap.add_argument("--phases-file", type=Path, help="{name: [start, end]} the command writes")
    ap.add_argument("--post-share", type=float, default=0.0, help="share of POSTs (0-1, default 0)")
    ap.add_argument("--post-path", default="/notes", help="where the POSTs go (default /notes)")
    ap.add_argument("--stack", help="count the POSTs' rows in this stack's db service afterwards")
    ap.add_argument("--title")
    opts = ap.parse_args(args[:cut])
    command = args[cut + 1:]
    if not command:
        print("measure.py: error: no command after --", file=sys.stderr)
        return 2
    try:
        figures = asyncio.run(measure(opts.url, command, opts.out_dir, opts.name, rate=opts.rate,
                                      before=opts.before, after=opts.after, revision=opts.revision,
                                      phases_file=opts.phases_file, title=opts.title,
                                      post_share=opts.post_share, post_path=opts.post_path, stack=opts.stack))
    except ValueError as e:
        print(f"measure.py: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: figures[k] for k in ("failed_requests", "total_requests", "longest_gap_s", "p50_ms",
                                             "p99_ms", "p99_during_ms", "max_ms", "post_requests",
                                             "post_applied_twice", "lead_time_s", "new_revision_served",
                                             "exit_code")}))
    return int(figures["exit_code"] != 0)


if __name__ == "__main__":
    sys.exit(main())
