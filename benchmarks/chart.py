"""One PNG per run: every request over time, coloured by revision (successes) and status (failures),
with the deploy phases shaded.

    python benchmarks/chart.py run.jsonl --phases phases.json --out run.png --title "stackpatch ship"

`phases` is `{name: [start, end]}`, in seconds since the load started, or in epoch seconds (values
above 1e9 are taken as epoch and shifted to the load's start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.loadgen import Sample, load, summarize  # noqa: E402

REVISION_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#bcbd22"]
FAIL_COLOURS = {"5xx": "#d62728", "4xx": "#ff7f0e", "error": "#000000"}
# light, distinct, and never the colours of the points
PHASE_COLOURS = ["#fde0dd", "#e0ecf4", "#e5f5e0", "#fff7bc", "#efedf5", "#fee6ce", "#d9f0d3", "#f0f0f0",
                 "#fcc5c0", "#c6dbef", "#ffffcc", "#dadaeb", "#fdd0a2", "#ccece6"]


def _fail_kind(s: Sample) -> str:
    if s.status is None:
        return "error"
    return "5xx" if s.status >= 500 else "4xx"


def relative_phases(phases: Mapping[str, Sequence[float]], start_ts: float) -> dict[str, tuple[float, float]]:
    out = {}
    for name, (a, b) in phases.items():
        a, b = float(a), float(b)
        if a > 1e9:
            a, b = a - start_ts, b - start_ts
        if b < a:
            raise ValueError(f"phase {name!r} ends before it starts ({a} > {b})")
        out[name] = (a, b)
    return out


def chart(samples: Sequence[Sample], phases: Mapping[str, Sequence[float]] | None, out: str | os.PathLike,
          title: str = "requests during the deploy", bin_s: float | None = None) -> Path:
    if not samples:
        raise ValueError("no samples to chart")
    ss = sorted(samples, key=lambda s: (s.ts, s.seq))
    start = ss[0].ts
    summary = summarize(ss)
    if bin_s is None:  # about 120 bars whatever the run's length
        span = max(ss[-1].ts - start, 0.1)
        bin_s = min((b for b in (0.1, 0.25, 0.5, 1, 2, 5, 10, 30) if span / b <= 150), default=60)
    revs = list(dict.fromkeys(s.revision for s in ss if s.ok))
    colour = {r: REVISION_COLOURS[i % len(REVISION_COLOURS)] for i, r in enumerate(revs)}
    label = {r: (r[:7] if r else "no revision") for r in revs}

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    # phases shaded on both axes
    handles = []
    for i, (name, (a, b)) in enumerate(relative_phases(phases or {}, start).items()):
        c = PHASE_COLOURS[i % len(PHASE_COLOURS)]
        for ax in (top, bottom):
            ax.axvspan(a, b, color=c, alpha=0.8, zorder=0, lw=0)
        handles.append(Patch(color=c, label=f"phase: {name} ({b - a:.1f}s)"))

    # top: each request at its due time, its latency; successes by revision, failures by kind
    for r in revs:
        pts = [s for s in ss if s.ok and s.revision == r]
        top.scatter([s.ts - start for s in pts], [max(s.latency_ms, 0.01) for s in pts], s=4, c=colour[r],
                    label=f"200 {label[r]} ({len(pts)})", zorder=2)
    for kind, c in FAIL_COLOURS.items():
        pts = [s for s in ss if not s.ok and _fail_kind(s) == kind]
        if pts:
            top.scatter([s.ts - start for s in pts], [max(s.latency_ms, 0.01) for s in pts], s=12, c=c,
                        marker="x", label=f"{kind} ({len(pts)})", zorder=3)
    top.set_yscale("log")
    top.set_ylabel("latency (ms, log)")
    top.set_title(f"{title}\n{summary['total_requests']} requests, {summary['failed_requests']} failed, "
                  f"longest gap {summary['longest_gap_s']:.2f}s, p50 {summary['p50_ms']} ms, "
                  f"p99 {summary['p99_ms']} ms", fontsize=10)
    top.legend(handles=top.get_legend_handles_labels()[0] + handles, fontsize=7, loc="upper left",
               bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    # bottom: requests per time bin, stacked by revision / failure kind
    bins: dict[str, Counter] = defaultdict(Counter)
    for s in ss:
        key = f"200 {label[s.revision]}" if s.ok else _fail_kind(s)
        bins[key][int((s.ts - start) // bin_s)] += 1
    nbins = int((ss[-1].ts - start) // bin_s) + 1
    xs = [i * bin_s for i in range(nbins)]
    base = [0] * nbins
    keys = [f"200 {label[r]}" for r in revs] + [k for k in FAIL_COLOURS if k in bins]
    for k in keys:
        c = colour[revs[[f"200 {label[r]}" for r in revs].index(k)]] if k.startswith("200 ") else FAIL_COLOURS[k]
        ys = [bins[k].get(i, 0) for i in range(nbins)]
        bottom.bar(xs, ys, width=bin_s, bottom=base, align="edge", color=c, label=k, zorder=2, lw=0)
        base = [a + b for a, b in zip(base, ys)]
    bottom.set_ylabel(f"requests / {bin_s:g}s")
    bottom.set_xlabel("seconds since the load started")
    bottom.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    small(out)
    return out


def small(png: Path) -> None:
    """Re-encode the PNG with a palette of 256 colours: a long run's scatter of latencies made a 340-KB
    chart in 24 bits, a third of that in 8 (the charts are committed beside the results)."""
    from PIL import Image
    with Image.open(png) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    q.save(png, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Chart one load-generator run (JSON lines) as a PNG.")
    ap.add_argument("samples", help="the loadgen JSON-lines file")
    ap.add_argument("--phases", help='JSON file {"name": [start, end], ...} (seconds since start, or epoch)')
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="requests during the deploy")
    args = ap.parse_args(argv)
    phases = json.loads(Path(args.phases).read_text()) if args.phases else {}
    print(chart(load(args.samples), phases, args.out, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
