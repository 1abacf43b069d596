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

from deploy_helpers import RequestLoop, cli, journal_records, release, write_release

pytestmark = pytest.mark.docker


def test_no_request_fails_during_the_rollout(sandbox, fork, tmp_path):
    rel = release(sandbox, "good")
    loop = RequestLoop(fork.front_url, rate=20, max_seconds=240)
    wall0 = time.time()
    loop.start()
    time.sleep(1.0)
    r = cli("deploy", "--repo", str(fork.app_dir), "--release", str(write_release(rel, tmp_path / "r.json")),
            "--yes", "--json")
    time.sleep(1.0)
    samples = loop.stop()
    assert r.returncode == 0, r.stderr
    recs = journal_records(fork.app_dir)
    spans = {}
    for rec in recs:
        if rec["kind"] in ("intent", "result") and not rec.get("undo"):
            spans.setdefault(rec["step"], [None, None])[0 if rec["kind"] == "intent" else 1] = rec["ts"] - wall0
    failed = [s for s in samples if not s.ok]
    gaps = loop.gaps()
    longest = max((end - start for start, end, _ in gaps), default=0.0)
    print(f"\n{len(samples)} requests over {samples[-1].t:.1f}s; phases: "
          + ", ".join(f"{k} {v[1] - v[0]:.1f}s" for k, v in spans.items() if v[0] is not None and v[1] is not None))
    print(f"failed requests: {len(failed)}; longest stretch without a successful answer: {longest:.2f}s")
    assert len(samples) >= 20 * 10  # the loop really ran during the deploy
    assert {"update:phpfiles", "update:phpha", "update:web"} <= set(spans)  # all three were replaced
    # phpfiles and phpha start-first behind web; web start-first behind the edge that holds the port
    assert not failed, [f"{s.t:.2f}s {s.error}" for s in failed[:5]]
    revs = [s.revision for s in samples if s.ok]
    assert revs[0] == sandbox.revision and revs[-1] == rel.revision
    assert json.loads(r.stdout)["state"] == "deployed"
