"""A fixed-rate (open-loop) HTTP load generator for the sandbox front, 127.0.0.1 only.

Request i is sent at start + i/rate whatever happened to the ones before it, so a stalled or dead
server does not lower the offered load (no coordinated omission). Every request is recorded as one JSON
line: its wall-clock start, status or error, latency and the `revision` of a `/version` JSON answer.

    python benchmarks/loadgen.py http://127.0.0.1:8080/version --rate 100 --duration 30 --out run.jsonl
    python benchmarks/loadgen.py URL --stop-file /tmp/stop --max-duration 900 --out run.jsonl
    python benchmarks/loadgen.py URL --rate 500 --duration 10 --post-share 0.2 --post-path /notes
    python benchmarks/loadgen.py http://127.0.0.1:8080/version --also-get /files/revision --duration 30

With `--post-share S`, that share of the requests (spread evenly: with 0.2, every fifth) is a
`POST <post-path>` of `{"request_id": "<tag>-<seq>", "text": "loadgen"}` instead of the GET, each with its
own request id, so the rows the app wrote can be counted against the answers (`post_figures`): a request
a proxy sent twice shows up as two rows with one request id. With `--also-get PATH` (repeatable), the GETs
go to the URL's path and these paths in turn (the example app: /files/... is answered by another service).

Every request opens its own connection (`Connection: close`), so each one proves that something is
listening, which is what a deploy's gap is about. Plain asyncio streams, no client library: the generator
stays cheap on a busy 2-core machine (an httpx pool degrades badly with hundreds of requests waiting on a
stalled server, which is exactly the moment we measure).
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

ALLOWED_HOST = "127.0.0.1"
# the multi-node sandbox's addresses (RFC 2544, benchmarking only: never a real network); its edge holds the
# public port on the manager's address there
ALLOWED_NET = "198.18.0.0/15"
HARD_MAX_DURATION = 3600.0   # no run lasts longer than this, whatever it is asked
MAX_RATE = 2000.0


def check_url(url: str) -> str:
    """Load goes to 127.0.0.1, or to the benchmarking range 198.18.0.0/15 of the multi-node sandbox;
    anything else is refused."""
    import ipaddress
    parts = urlsplit(url)
    try:
        ours = parts.hostname == ALLOWED_HOST or ipaddress.ip_address(parts.hostname or "") in \
            ipaddress.ip_network(ALLOWED_NET)
    except ValueError:
        ours = False
    if parts.scheme != "http" or not ours:
        raise ValueError(f"refusing to send load to {url!r}: only http://{ALLOWED_HOST}[:port]/... or an address "
                         f"in {ALLOWED_NET} (the multi-node sandbox) is allowed")
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
    method: str = "GET"
    request_id: str | None = None  # a POST's request id (what the app stores with its row)
    path: str | None = None        # the request's path
    connect_ms: float | None = None  # how long the TCP connect took (None: it never connected)

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Sample":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class BadAnswer(ValueError):
    """The connection closed without a complete HTTP answer."""


def _revision(body: bytes) -> str | None:
    if not body.lstrip()[:1] == b"{":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    rev = data.get("revision") if isinstance(data, dict) else None
    return str(rev) if rev is not None else None


async def get(host: str, port: int, target: str, timeout: float, *, method: str = "GET",
              payload: bytes | None = None, timing: dict | None = None) -> tuple[int, bytes]:
    """One HTTP/1.1 request (GET unless told) on a new connection; (status, body). Raises OSError,
    asyncio.TimeoutError, ValueError (a malformed answer). `timing["connected"]`: the loop time the TCP
    connection was up (a connect that takes 1 s or 3 s is a SYN the server side dropped)."""
    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        if timing is not None:
            timing["connected"] = asyncio.get_running_loop().time()
        try:
            head = (f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: stackpatch-loadgen\r\n"
                    "Accept: application/json\r\nConnection: close\r\n")
            if payload is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            writer.write(head.encode() + b"\r\n" + (payload or b""))
            await writer.drain()
            raw = await reader.read(-1)  # the server closes: Connection: close
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].split()
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
            raise BadAnswer(f"not an HTTP answer ({len(raw)} bytes)")
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            body = _unchunk(body)
        return int(status_line[1]), body
    return await asyncio.wait_for(exchange(), timeout)


def _unchunk(data: bytes) -> bytes:
    out, i = bytearray(), 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return bytes(out)
        size = int(data[i:j].split(b";")[0] or b"0", 16)
        if size == 0:
            return bytes(out)
        out += data[j + 2:j + 2 + size]
        i = j + 2 + size + 2


def is_post(seq: int, share: float) -> bool:
    """Request `seq` is a POST: `share` of the requests, spread evenly (0.2: seq 4, 9, 14, ...)."""
    return share > 0 and math.floor((seq + 1) * share + 1e-9) > math.floor(seq * share + 1e-9)


def new_tag() -> str:
    """A request-id prefix that no earlier run used: `lg<epoch seconds hex><random hex>`."""
    return f"lg{int(time.time()):x}{os.urandom(3).hex()}"


async def run(url: str, rate: float = 100.0, duration: float | None = None, *,
              stop_file: str | os.PathLike | None = None, stop_event: asyncio.Event | None = None,
              out: str | os.PathLike | None = None, timeout: float = 2.0,
              max_duration: float = 900.0, post_share: float = 0.0, post_path: str = "/notes",
              tag: str | None = None, also_get: Iterable[str] = ()) -> list[Sample]:
    """Send `rate` requests/s to `url` until `duration` passed, `stop_file` exists or `stop_event` is set,
    and never longer than `max_duration`; `post_share` of them are POSTs to `post_path` on the same host,
    with request ids `<tag>-<seq>`; the GETs go to the URL's path and the `also_get` paths in turn. Returns the samples sorted by due time; writes them to `out`
    (JSON lines, in completion order, flushed as they come) when given."""
    check_url(url)
    if not (0 < rate <= MAX_RATE):
        raise ValueError(f"rate must be in (0, {MAX_RATE:g}] requests/s, not {rate}")
    if not (0 <= post_share <= 1):
        raise ValueError(f"post_share must be between 0 and 1, not {post_share}")
    also_get = list(also_get)
    for p in [post_path, *also_get]:
        if not p.startswith("/"):
            raise ValueError(f"a path must start with '/', not {p!r}")
    tag = tag or new_tag()
    if duration is None and stop_file is None and stop_event is None:
        raise ValueError("give a duration, a stop file or a stop event: the load must be bounded")
    limit = min(max_duration, HARD_MAX_DURATION)
    if duration is not None:
        limit = min(limit, duration)
    stop_path = Path(stop_file) if stop_file is not None else None
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    targets = [(parts.path or "/") + (f"?{parts.query}" if parts.query else ""), *also_get]
    samples: list[Sample] = []
    sink = open(out, "w", encoding="utf-8") if out is not None else None
    loop = asyncio.get_running_loop()

    async def one(seq: int, due_mono: float, due_wall: float) -> None:
        sent = loop.time()
        timing: dict = {}
        status = error = revision = request_id = None
        method = "GET"
        # the GETs in turn over the targets: the n-th GET (n = seq minus the POSTs before it)
        path = post_path if is_post(seq, post_share) else \
            targets[(seq - math.floor(seq * post_share + 1e-9)) % len(targets)]
        try:
            if is_post(seq, post_share):
                method, request_id = "POST", f"{tag}-{seq}"
                payload = json.dumps({"request_id": request_id, "text": "loadgen"}).encode()
                status, body = await get(host, port, path, timeout, method="POST", payload=payload, timing=timing)
            else:
                status, body = await get(host, port, path, timeout, timing=timing)
            revision = _revision(body)
        except asyncio.TimeoutError:
            error = f"Timeout: no complete answer within {timeout:g}s"
        except (OSError, ValueError) as e:
            error = f"{type(e).__name__}: {e}".strip()[:200]
        done = loop.time()
        s = Sample(seq, due_wall, due_mono - t0_mono, status, error, round((done - sent) * 1000, 3),
                   round(max(0.0, sent - due_mono) * 1000, 3), revision, method, request_id, path,
                   round((timing["connected"] - sent) * 1000, 3) if "connected" in timing else None)
        samples.append(s)
        if sink is not None:
            sink.write(json.dumps(s.to_json()) + "\n")
            sink.flush()

    tasks: set[asyncio.Task] = set()
    check_every = max(1, int(rate / 20))  # look for the stop file ~20 times a second
    try:
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
            # always yield, even when late, so answers are read while the generator catches up
            await asyncio.sleep(max(0.0, wait))
            task = asyncio.create_task(one(i, t0_mono + due, t0_wall + due))
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
                "p99_ms": None, "max_ms": None, "duration_s": 0.0, "statuses": {}, "revisions": [],
                "post_requests": 0, "post_ok": 0}
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
        if s.method != "GET":
            continue  # which release answered: the GETs of /version say it
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
        # the slowest request, answered or not (a timeout counts with the time it waited)
        "max_ms": round(max(s.latency_ms for s in ss), 3),
        "duration_s": round(end - start, 3),
        "start_ts": start,
        "statuses": statuses,
        "revisions": revisions,
        "post_requests": sum(1 for s in ss if s.method == "POST"),
        "post_ok": sum(1 for s in ss if s.method == "POST" and s.ok),
    }


def post_figures(samples: Iterable[Sample], rows: dict[str, int]) -> dict[str, Any]:
    """The POSTs against the rows the app wrote for them (`rows`: request id -> rows with that id).

    post_applied_twice: POSTs with more than one row (a proxy or a client sent them twice);
    post_lost: POSTs answered 2xx without a row; post_applied_unanswered: POSTs that got no 2xx answer but
    whose row exists (the write happened, the answer was lost on the way)."""
    posts = [s for s in samples if s.method == "POST" and s.request_id]
    ok = {s.request_id for s in posts if s.ok}
    ids = {s.request_id for s in posts}
    return {
        "post_requests": len(posts),
        "post_ok": len(ok),
        "post_rows": sum(n for rid, n in rows.items() if rid in ids),
        "post_applied_twice": sum(1 for rid in ids if rows.get(rid, 0) > 1),
        "post_lost": sum(1 for rid in ok if rows.get(rid, 0) == 0),
        "post_applied_unanswered": sum(1 for rid in ids - ok if rows.get(rid, 0) > 0),
        "post_unknown_rows": sum(n for rid, n in rows.items() if rid not in ids),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help=f"http://{ALLOWED_HOST}:PORT/path, or an address in {ALLOWED_NET} (no other "
                                "host is accepted)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    ap.add_argument("--duration", type=float, help="seconds to run")
    ap.add_argument("--stop-file", help="stop as soon as this file exists")
    ap.add_argument("--max-duration", type=float, default=900.0, help="never run longer (default 900 s)")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, seconds (default 2)")
    ap.add_argument("--out", help="write every request as a JSON line here")
    ap.add_argument("--post-share", type=float, default=0.0,
                    help="share of the requests that are POSTs, 0-1 (default 0: only GETs)")
    ap.add_argument("--post-path", default="/notes", help="where the POSTs go (default /notes)")
    ap.add_argument("--also-get", action="append", default=[], metavar="PATH",
                    help="another path for the GETs, in turn with the URL's (repeatable)")
    ap.add_argument("--tag", help="request-id prefix of the POSTs (default: a new one, printed)")
    args = ap.parse_args(argv)
    try:
        check_url(args.url)
        tag = args.tag or new_tag()
        samples = asyncio.run(run(args.url, args.rate, args.duration, stop_file=args.stop_file,
                                  out=args.out, timeout=args.timeout, max_duration=args.max_duration,
                                  post_share=args.post_share, post_path=args.post_path, tag=tag,
                                  also_get=args.also_get))
    except ValueError as e:
        print(f"loadgen: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({**summarize(samples), "tag": tag}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
