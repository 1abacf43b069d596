"""Zero downtime: an open-loop load of 100 requests/s (a fifth of them POSTs that each write a row), to the
sandbox's public port on 127.0.0.1, bounded, while the deploy patches phpfiles, phpha and web.

The stack is the example's: HAProxy (edge) holds the host-mode port and is never patched; nginx (web)
and the app are replaced start-first behind it. The test asserts what issue 16 asks of it:
- no request fails, and none stalls (over STALL_MS: a request a proxy held on to while it waited for a
  timeout or retried its way round a dead task);
- no POST is applied twice (rows in the database against the answers), none answered 2xx is lost;
- every latency is recorded and printed (p99 before and during, the slowest): the latency targets
  (none slower than 1 s, p99 during at most twice p99 before) are `make bench`'s, measured on a machine
  that runs nothing else; asserted here they failed whenever another process loaded the 2 cores
  (a 2-s POST at a load average of 15, with 0 failed requests) — speed is measured, not asserted;
- the page (nginx's index.html, no-cache) and its fingerprinted assets load at every moment: the
  release changes style.css, so its page names another style.<hash>.css, and a page of either release
  finds its assets whichever web task answers; the old release's assets stay servable afterwards.
The 500 requests/s version, against the manual routine's stop-first redeploy, is `make bench`'s.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest

from benchmarks import loadgen, measure
from deploy_helpers import AssetPoller, Load, cli, journal_records, p99, release, write_release

pytestmark = pytest.mark.docker

RATE = 100
BEFORE_S = 10.0  # the baseline: the same load with nothing deploying
STALL_MS = 5000  # the edge gives up a connect after 1 s and retries; over 5 s, a request waited on a hung task
#                 (the edge's server timeout is 10 s: a stall the old load test counted as a success)


def print_proxy_and_app_errors(stack: str, t0: float) -> None:
    """What the edge logged (it logs only errors, retries and redispatches), nginx's errors and the app's
    slow database calls, with seconds since the deploy started: to read when a figure is off."""
    import docker
    c = docker.from_env()
    for svc in ("edge", "web", "phpha", "phpfiles"):
        for ctr in c.containers.list(all=True, filters={"label": f"com.docker.swarm.service.name={stack}_{svc}"}):
            for line in ctr.logs(timestamps=True, since=int(t0) - 15).decode(errors="replace").splitlines():
                if any(k in line for k in ("[error]", " took ", "/<NOSRV>", " 50", "DOWN", "draining")):
                    print(f"  {svc}: {line[:220]}")


def test_no_request_fails_during_the_rollout(sandbox, fork, tmp_path):
    rel = release(sandbox, "good")
    load = Load(fork.front_url, RATE, post_share=0.2, max_seconds=300).start()
    pages = AssetPoller(fork.front_url).start()
    wall0 = time.time()
    try:
        time.sleep(BEFORE_S)
        t_start = time.time()
        r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
                "--yes", "--json")
        t_end = time.time()
        time.sleep(2.0)
    finally:
        pages.stop()
        samples = load.stop()
    assert r.returncode == 0, r.stderr
    spans = {}
    for rec in journal_records(fork.app_dir):
        if rec["kind"] in ("intent", "result") and not rec.get("undo"):
            spans.setdefault(rec["step"], [None, None])[0 if rec["kind"] == "intent" else 1] = rec["ts"] - wall0
    before = [s for s in samples if s.ok and s.ts < t_start]
    during = [s for s in samples if s.ok and t_start <= s.ts <= t_end]
    failed = [s for s in samples if not s.ok]
    slowest = max(samples, key=lambda s: s.latency_ms)
    posts = loadgen.post_figures(samples, measure.notes_rows(fork.stack, load.tag))
    summary = loadgen.summarize(samples)
    print(f"\n{len(samples)} requests ({posts['post_requests']} POSTs) at {RATE}/s over {summary['duration_s']:.1f}s; "
          "phases: " + ", ".join(f"{k} {v[1] - v[0]:.1f}s" for k, v in spans.items() if None not in v))
    print(f"failed {len(failed)}; p99 before {p99(before):.1f} ms, during {p99(during):.1f} ms; slowest "
          f"{slowest.latency_ms:.0f} ms ({slowest.method} at {slowest.ts - t_start:+.1f}s); longest gap "
          f"{summary['longest_gap_s']:.2f}s; POSTs {json.dumps(posts)}; load average {os.getloadavg()}")
    print_proxy_and_app_errors(fork.stack, t_start)

    assert len(before) >= RATE * BEFORE_S * 0.9 and len(during) >= RATE * 10  # the load really ran
    assert {"update:phpfiles", "update:phpha", "update:web"} <= set(spans)  # all three were replaced
    assert not failed, [f"{s.t:.2f}s {s.method} {s.status} {s.error}" for s in failed[:5]]
    assert posts["post_requests"] >= RATE * 0.2 * 10
    assert posts["post_applied_twice"] == 0, posts
    assert posts["post_lost"] == 0 and posts["post_rows"] == posts["post_ok"] == posts["post_requests"], posts
    assert slowest.latency_ms <= STALL_MS, f"{slowest.method} stalled {slowest.latency_ms:.0f} ms at {slowest.ts - t_start:+.1f}s"
    revs = [s.revision for s in samples if s.ok and s.method == "GET"]
    assert revs[0] == sandbox.revision and revs[-1] == rel.revision
    assert json.loads(r.stdout)["state"] == "deployed"
    # the assets: both releases' style sheets were asked for, every asset answer was a 200
    styles = sorted({name for _, name, _ in pages.answers if name.startswith("style.")})
    bad = [(round(ts - t_start, 2), name, status) for ts, name, status in pages.answers if status != 200]
    print(f"pages loaded: {pages.pages}, asset answers: {len(pages.answers)}, style sheets: {styles}")
    assert len(styles) == 2 and pages.pages >= 50, (styles, pages.pages)
    assert not bad, bad[:5]
    for name in styles:  # the new web task carries the old release's assets too
        with urllib.request.urlopen(f"{fork.front_url}/static/{name}", timeout=5) as a:
            assert a.status == 200 and a.headers["Cache-Control"] == "public, max-age=31536000, immutable"
