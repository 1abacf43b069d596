"""A fixed-rate (open-loop) HTTP load generator for the sandbox front, 127.0.0.1 only.

Request i is sent at start + i/rate whatever happened to the ones before it, so a stalled or dead
server does not lower the offered load (no coordinated omission). Every request is recorded as one JSON
line: its wall-clock start, status or error, latency and the `revision` of a `/version` JSON answer.

    python benchmarks/loadgen.py http://127.0.0.1:8080/version --rate 100 --duration 30 --out run.jsonl
    python benchmarks/loadgen.py URL --stop-file /tmp/stop --max-duration 900 --out run.jsonl

By default every request opens a new connection (`Connection: close`): each one then proves that
something is listening, which is what a deploy's gap is about. `--keepalive` reuses connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

import httpx

ALLOWED_HOST = "127.0.0.1"
HARD_MAX_DURATION = 3600.0   # no run lasts longer than this, whatever it is asked
MAX_RATE = 2000.0


def check_url(url: str) -> str:
    """Load goes to 127.0.0.1 only; anything else is refused."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname != ALLOWED_HOST:
        raise ValueError(f"refusing to send load to {url!r}: only http://{ALLOWED_HOST}[:port]/... is allowed")
    return url


@dataclass
class Sample:
    seq: int
    ts: float                 # wall-clock time the request was due (epoch seconds)
    t: float                  # the same, in seconds since the run started
    status: int | None        # HTTP status, None when no answer came
    error: str | None         # exception class and message when no answer came
    latency_ms: float         # from the moment it was sent to the end of the answer (or the error)
    lag_ms: float             # how late the generator sent it after it was due (client saturation)
    revision: str | None      # `revision` of a JSON answer, if any

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Sample":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def _revision(resp: httpx.Response) -> str | None:
    if "json" not in resp.headers.get("content-type", "") and not resp.content[:1] == b"{":
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    rev = data.get("revision") if isinstance(data, dict) else None
    return str(rev) if rev is not None else None


async def run(url: str, rate: float = 100.0, duration: float | None = None, *,
              stop_file: str | os.PathLike | None = None, stop_event: asyncio.Event | None = None,
              out: str | os.PathLike | None = None, timeout: float = 2.0,
              max_duration: float = 900.0, keepalive: bool = False) -> list[Sample]:
    """Send `rate` requests/s to `url` until `duration` passed, `stop_file` exists or `stop_event` is set,
    and never longer than `max_duration`. Returns the samples sorted by due time; writes them to `out`
    (JSON lines, in completion order, flushed as they come) when given."""
    check_url(url)
    if not (0 < rate <= MAX_RATE):
        raise ValueError(f"rate must be in (0, {MAX_RATE:g}] requests/s, not {rate}")
    if duration is None and stop_file is None and stop_event is None:
        raise ValueError("give a duration, a stop file or a stop event: the load must be bounded")
    limit = min(max_duration, HARD_MAX_DURATION)
    if duration is not None:
        limit = min(limit, duration)
    stop_path = Path(stop_file) if stop_file is not None else None

    in_flight = max(16, math.ceil(rate * (timeout + 1)))
    limits = httpx.Limits(max_connections=in_flight,
                          max_keepalive_connections=in_flight if keepalive else 0)
    headers = {} if keepalive else {"Connection": "close"}
    samples: list[Sample] = []
    sink = open(out, "w", encoding="utf-8") if out is not None else None
    loop = asyncio.get_running_loop()

    async def one(client: httpx.AsyncClient, seq: int, due_mono: float, due_wall: float) -> None:
        sent = loop.time()
        status = error = revision = None
        try:
            resp = await client.get(url, headers=headers)
            status = resp.status_code
            revision = _revision(resp)
        except (httpx.HTTPError, OSError) as e:
            error = f"{type(e).__name__}: {e}".strip()[:200]
        done = loop.time()
        s = Sample(seq, due_wall, due_mono - t0_mono, status, error, round((done - sent) * 1000, 3),
                   round(max(0.0, sent - due_mono) * 1000, 3), revision)
        samples.append(s)
        if sink is not None:
            sink.write(json.dumps(s.to_json()) + "\n")

    tasks: set[asyncio.Task] = set()
    check_every = max(1, int(rate / 20))  # look for the stop file ~20 times a second
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits, trust_env=False) as client:
            # the clock starts once the client is built (building it costs ~0.2 s: not the server's fault)
            t0_mono = loop.time()
            t0_wall = time.time()
            i = 0
            while True:
                due = i / rate
                if due >= limit:
                    break
                if stop_event is not None and stop_event.is_set():
                    break
                if stop_path is not None and i % check_every == 0 and stop_path.exists():
                    break
                wait = t0_mono + due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                task = asyncio.create_task(one(client, i, t0_mono + due, t0_wall + due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if sink is not None:
            sink.close()
    samples.sort(key=lambda s: s.seq)
    return samples


def load(path: str | os.PathLike) -> list[Sample]:
    with open(path, encoding="utf-8") as f:
        samples = [Sample.from_json(json.loads(line)) for line in f if line.strip()]
    samples.sort(key=lambda s: (s.ts, s.seq))
    return samples


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def summarize(samples: Iterable[Sample]) -> dict[str, Any]:
    """Failed requests (no answer or not 2xx), the longest stretch with no successful answer, p50/p99
    latency of the successful ones, and which revision answered, over time (runs of equal revision)."""
    ss = sorted(samples, key=lambda s: (s.ts, s.seq))
    if not ss:
        return {"total_requests": 0, "failed_requests": 0, "longest_gap_s": 0.0, "p50_ms": None,
                "p99_ms": None, "duration_s": 0.0, "statuses": {}, "revisions": []}
    start = ss[0].ts
    end = max(s.ts + s.latency_ms / 1000 for s in ss)
    ok = [s for s in ss if s.ok]
    # a gap: time between two consecutive successful answers (their arrival), and from the first request
    # to the first answer, and from the last successful answer to the end of the run
    arrivals = sorted(s.ts + s.latency_ms / 1000 for s in ok)
    points = [start, *arrivals, end]
    gap = max((b - a for a, b in zip(points, points[1:])), default=end - start)
    lat = sorted(s.latency_ms for s in ok)
    statuses: dict[str, int] = {}
    for s in ss:
        key = str(s.status) if s.status is not None else (s.error or "error").split(":")[0]
        statuses[key] = statuses.get(key, 0) + 1
    revisions: list[dict[str, Any]] = []
    for s in ok:
        if revisions and revisions[-1]["revision"] == s.revision:
            revisions[-1]["to_s"] = round(s.ts - start, 3)
            revisions[-1]["count"] += 1
        else:
            revisions.append({"revision": s.revision, "from_s": round(s.ts - start, 3),
                              "to_s": round(s.ts - start, 3), "count": 1})
    return {
        "total_requests": len(ss),
        "failed_requests": len(ss) - len(ok),
        "longest_gap_s": round(gap, 3),
        "p50_ms": round(_percentile(lat, 50), 3) if lat else None,
        "p99_ms": round(_percentile(lat, 99), 3) if lat else None,
        "duration_s": round(end - start, 3),
        "start_ts": start,
        "statuses": statuses,
        "revisions": revisions,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help=f"http://{ALLOWED_HOST}:PORT/path (no other host is accepted)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    ap.add_argument("--duration", type=float, help="seconds to run")
    ap.add_argument("--stop-file", help="stop as soon as this file exists")
    ap.add_argument("--max-duration", type=float, default=900.0, help="never run longer (default 900 s)")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds (default 2)")
    ap.add_argument("--keepalive", action="store_true", help="reuse connections instead of one per request")
    ap.add_argument("--out", help="write every request as a JSON line here")
    args = ap.parse_args(argv)
    try:
        check_url(args.url)
        samples = asyncio.run(run(args.url, args.rate, args.duration, stop_file=args.stop_file,
                                  out=args.out, timeout=args.timeout, max_duration=args.max_duration,
                                  keepalive=args.keepalive))
    except ValueError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summarize(samples), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
