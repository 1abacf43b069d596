#!/usr/bin/env python3
"""Recompute the lead times of a `make bench` results file from its raw requests.

    python benchmarks/relead.py RESULTS.json RAW_DIR [--write]

Until 2026-11-27 `measure.serving_since` counted a POST's answer (which names no revision) as an answer
of the old revision, so in a run with POSTs (`--post-share`, 0.2 by default since issue 16) the "new
revision serves from" moment fell on the first GET after the last POST: the end of the load, not the
cut-over. This reads each run's requests (RAW_DIR/NAME.jsonl, NAME as `run.run_name` names it) and its
figures (NAME.contender.json), and takes the lead time again with the fixed `serving_since`, from the
command's start: the due time of the first request not in the run's baseline (the baseline is every
request due before the start, so the start lies within one request interval before it: 2 ms at 500 req/s).

It prints old and new per run and, with --write, rewrites RESULTS.json: each run's `lead_time_s` (and for
stackpatch `overhead_share_of_lead_time`), each contender's median and range, `lead_time_over_limit`, the
targets, and a `lead_time_recomputed` note. Nothing else changes: every other figure does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
from benchmarks import loadgen, measure, schema  # noqa: E402
from benchmarks.run import overhead, run_name, targets  # noqa: E402


def samples(path: Path) -> list[loadgen.Sample]:
    fields = loadgen.Sample.__dataclass_fields__
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            out.append(loadgen.Sample(**{k: v for k, v in d.items() if k in fields}))
    return sorted(out, key=lambda s: s.seq)


def lead_of(raw: Path, name: str) -> tuple[float, dict]:
    """(the lead time, the run's contender figures) of run NAME in RAW_DIR."""
    fig = json.loads((raw / f"{name}.contender.json").read_text())
    ss = samples(raw / f"{name}.jsonl")
    n = fig["baseline"]["total_requests"]  # requests due before the command started
    if not 0 < n < len(ss):
        raise ValueError(f"{name}: its baseline ({n} requests) does not fit its {len(ss)} requests")
    t_start = ss[n].ts
    since = measure.serving_since(ss, fig["revision"], t_start)
    return (round(since - t_start, 3) if since is not None else fig["command_s"]), fig


def relead(results: dict, raw: Path) -> list[tuple[str, float, float]]:
    """Rewrite `results` in place; returns (run, old lead, new lead) for each run."""
    changes = []
    for contender, c in results["contenders"].items():
        for k, run in enumerate(c["runs"]):
            name = run_name(contender, k)
            lead, fig = lead_of(raw, name)
            changes.append((name, run["lead_time_s"], lead))
            run["lead_time_s"] = lead
            if contender == "stackpatch" and fig.get("phase_times"):
                o = overhead(fig["phase_times"], fig["command_s"], lead)
                run["overhead_share_of_lead_time"] = o["overhead_share_of_lead_time"]
        leads = [r["lead_time_s"] for r in c["runs"]]
        c["lead_time_s"] = round(statistics.median(leads), 4)
        c.setdefault("range", {})["lead_time_s"] = [min(leads), max(leads)]
        shares = [r.get("overhead_share_of_lead_time") for r in c["runs"]]
        if contender == "stackpatch" and all(v is not None for v in shares):
            c["overhead_share_of_lead_time"] = round(statistics.median(shares), 4)
    sp = results["contenders"]["stackpatch"]
    if results.get("limit_s"):
        results["lead_time_over_limit"] = round(sp["lead_time_s"] / results["limit_s"], 2)
    results["targets"] = targets(results)
    results["lead_time_recomputed"] = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "why": "measure.serving_since counted POST answers (no revision) as old ones until 2026-11-27: the lead "
               "time fell on the first GET after the last POST; recomputed from the raw requests by "
               "benchmarks/relead.py",
        "before": {name: old for name, old, _ in changes}}
    schema.validate(results)
    return changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("raw", type=Path, help="the run's .bench/<stem>/ directory (NAME.jsonl, NAME.contender.json)")
    ap.add_argument("--write", action="store_true", help="rewrite RESULTS.json (default: print only)")
    args = ap.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        changes = relead(results, args.raw)
    except (OSError, ValueError, KeyError) as e:
        print(f"relead: error: {e}", file=sys.stderr)
        return 2
    for name, old, new in changes:
        print(f"{name:24s} lead time {old:8.2f} s -> {new:8.2f} s")
    if args.write:
        args.results.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
