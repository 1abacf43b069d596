"""Zero downtime: steady requests (20/s, 127.0.0.1 only, bounded) to the sandbox front while the deploy
patches phpfiles, phpha and web. No request may fail while phpfiles and phpha are replaced.

The front (`web`) publishes its port in host mode (this kernel has no IPVS, so no routing mesh): two
tasks cannot hold the port at once, so Swarm must stop the old front before starting the new one.
That gap is MEASURED here and printed (and documented in README.md), never hidden: requests failing
during web's replacement are counted and reported, requests failing at any other moment fail the test.
"""

from __future__ import annotations

import json
import time

import pytest

from deploy_helpers import RequestLoop, cli, drop_lock, journal_records, release, write_release

pytestmark = pytest.mark.docker


@pytest.fixture
def dfork(fork):
    try:
        yield fork
    finally:
        drop_lock(fork.stack)


def test_no_request_fails_during_the_rollout(sandbox, dfork, tmp_path):
    rel = release(sandbox, "good")
    loop = RequestLoop(dfork.front_url, rate=20, max_seconds=240)
    wall0 = time.time()
    loop.start()
    time.sleep(1.0)
    r = cli("deploy", "--repo", str(dfork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes", "--json")
    time.sleep(1.0)
    samples = loop.stop()
    assert r.returncode == 0, r.stderr
    recs = journal_records(dfork.app_dir)
    spans = {}
    for rec in recs:
        if rec["kind"] in ("intent", "result") and not rec.get("undo"):
            spans.setdefault(rec["step"], [None, None])[0 if rec["kind"] == "intent" else 1] = rec["ts"] - wall0
    web_start, web_end = spans["update:web"]
    in_web = [s for s in samples if not s.ok and web_start <= s.t <= web_end]
    elsewhere = [s for s in samples if not s.ok and not (web_start <= s.t <= web_end)]
    gaps = loop.gaps()
    web_gap = max((end - start for start, end, _ in gaps if web_start <= start <= web_end), default=0.0)
    print(f"\n{len(samples)} requests over {samples[-1].t:.1f}s; phases: "
          + ", ".join(f"{k} {v[1] - v[0]:.1f}s" for k, v in spans.items() if v[0] is not None and v[1] is not None))
    print(f"failed while phpfiles/phpha were replaced (and the rest of the run): {len(elsewhere)}")
    print(f"web (host-mode port, stop-first) gap: {len(in_web)} failed requests over {web_gap:.2f}s"
          + (f"; first error: {in_web[0].error}" if in_web else ""))
    assert len(samples) >= 20 * 10  # the loop really ran during the deploy
    assert not elsewhere, [f"{s.t:.2f}s {s.error}" for s in elsewhere[:5]]
    # the front's own replacement: measured above; it must stay a short blip, not an outage
    assert web_gap < 10, f"web gap {web_gap:.1f}s"
    revs = [s.revision for s in samples if s.ok]
    assert revs[0] == sandbox.revision and revs[-1] == rel.revision
    assert json.loads(r.stdout)["state"] == "deployed"
