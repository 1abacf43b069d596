"""The README's figures from a results file, as Markdown (ratios first, then the figures they come from).

    python benchmarks/report.py benchmarks/results/2026-11-26-vm-2c24g.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import schema  # noqa: E402


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f} ms" if v >= 100 else f"{v:.1f} ms"


def _mark(t: dict[str, Any] | None) -> str:
    return "–" if not t else ("met" if t["met"] else "**missed**")


def render(data: dict[str, Any], name: str = "") -> str:
    schema.validate(data)
    m, sp, mr, bd = data["machine"], data["contenders"]["stackpatch"], data["contenders"]["manual_routine"], \
        data["build_dir"]
    t = data.get("targets") or {}
    load = m.get("load_average") or []
    ratio = mr["lead_time_s"] / sp["lead_time_s"]
    rate = sp.get("rate") or (data.get("bench") or {}).get("rate")
    lines = [
        (f"{rate:g} requests/s offered to the edge, open loop"
         + (f", {sp['post_requests']:,} of stackpatch's {sp['total_requests']:,} requests POSTs that write a row"
            if sp.get("post_requests") else "") + ". " if rate else "") +
        f"Measured {data.get('date', '')} on {m['cores']} cores, {m['memory_gib']:g} GiB, Docker "
        f"{m['docker_version']}, kernel {m.get('kernel', '?')}"
        + (f", load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min) at the start"
           if len(load) == 3 else "")
        + (f" ({name})" if name else "") + ".",
        "",
        "| target | stackpatch | manual routine | ratio / share | |",
        "|---|---|---|---|---|",
        f"| 0 failed requests | {sp['failed_requests']} of {sp['total_requests']:,} | {mr['failed_requests']} of "
        f"{mr['total_requests']:,} | {sp['failed_requests'] / max(1, mr['failed_requests']):.2f}× the manual "
        f"routine's failures | {_mark(t.get('stackpatch_zero_failed'))} |",
        f"| no gap > 1 s | longest {sp['longest_gap_s']:.2f} s | longest {mr['longest_gap_s']:.2f} s | "
        f"{sp['longest_gap_s'] / mr['longest_gap_s']:.2f}× | {_mark(t.get('stackpatch_gap_le_1s'))} |",
        f"| lead time ≥ 5× shorter | {sp['lead_time_s']:.1f} s | {mr['lead_time_s']:.1f} s | "
        + (f"{ratio:.2f}× shorter" if ratio >= 1 else f"{1 / ratio:.2f}× longer (5× shorter is the target)")
        + f" | {_mark(t.get('lead_time_5x_shorter'))} |",
        f"| overhead ≤ 10 % | {sp['overhead_s']:.1f} s of {sp.get('command_s', sp['lead_time_s']):.1f} s | – | "
        f"{sp['overhead_share']:.1%} of ship's wall time"
        + (f", {sp['overhead_share_of_lead_time']:.1%} of its lead time" if "overhead_share_of_lead_time" in sp
           else "") + f" | {_mark(t.get('overhead_le_10pct'))} |",
    ]
    cs = data["contenders"].get("competent_script")
    if cs:
        lines.append(
            f"| lead time ≤ 1.3× the competent script's | {sp['lead_time_s']:.1f} s | competent script "
            f"{cs['lead_time_s']:.1f} s ({cs['failed_requests']} of {cs['total_requests']:,} failed) | "
            f"{sp['lead_time_s'] / cs['lead_time_s']:.2f}× | {_mark(t.get('lead_time_le_1_3x_competent'))} |")
        lines.append(f"| overhead ≤ 5 % | {sp['overhead_share']:.1%} | – | – | {_mark(t.get('overhead_le_5pct'))} |")
    if sp.get("post_applied_twice") is not None:
        lines.append(
            f"| no POST applied twice | {sp['post_applied_twice']} of {sp['post_requests']:,} POSTs | "
            + (f"{mr['post_applied_twice']} of {mr['post_requests']:,} POSTs" if mr.get("post_applied_twice")
               is not None else "–") + f" | rows counted against the answers | "
            f"{_mark(t.get('stackpatch_no_post_applied_twice'))} |")
    if sp.get("p99_during_ms") is not None:
        before = (sp.get("baseline") or {}).get("p99_ms")
        lines.append(
            f"| p99 during ≤ 2× p99 before | {_ms(sp['p99_during_ms'])} during, {_ms(before)} before | "
            + (f"{_ms(mr.get('p99_during_ms'))} during" if mr.get("p99_during_ms") is not None else "–")
            + f" | " + (f"{sp['p99_during_ms'] / before:.2f}×" if before else "–")
            + f" | {_mark(t.get('stackpatch_p99_during_le_2x_before'))} |")
    if sp.get("max_ms") is not None:
        lines.append(f"| none slower than 1 s | slowest {_ms(sp['max_ms'])} | slowest {_ms(mr.get('max_ms'))} | – | "
                     f"{_mark(t.get('stackpatch_max_latency_le_1s'))} |")
    sizes = sorted([bd] + list(bd.get("scaling") or []), key=lambda d: d["files"])
    g = t.get("builddir_grows_with_change")
    lines.append(
        f"| build dir grows with the change | " + ", ".join(f"{d['incremental_s']:.2f} s" for d in sizes)
        + " (incremental) | " + ", ".join(f"{d['fresh_clone_s']:.2f} s" for d in sizes) + " (fresh clone) | "
        + (f"{g['files_ratio']:g}× the files: incremental {g['incremental_ratio']:.2f}×, fresh clone "
           f"{g['fresh_clone_ratio']:.2f}×" if g else "") + f" | {_mark(g)} |")
    lines += ["", f"Build dir at {bd['files']:,} files, 1 file changed: incremental sync {bd['incremental_s']:.2f} s "
              f"vs fresh clone {bd['fresh_clone_s']:.2f} s ({bd['fresh_clone_s'] / bd['incremental_s']:.1f}× faster); "
              "sizes " + ", ".join(f"{d['files']:,}" for d in sizes) + ".", ""]
    lines += ["| latency | stackpatch | manual routine | baseline (no deploy, before stackpatch / manual) |",
              "|---|---|---|---|",
              f"| p50 | {_ms(sp['p50_ms'])} | {_ms(mr['p50_ms'])} | {_ms(sp.get('baseline', {}).get('p50_ms'))} / "
              f"{_ms(mr.get('baseline', {}).get('p50_ms'))} |",
              f"| p99 | {_ms(sp['p99_ms'])} | {_ms(mr['p99_ms'])} | {_ms(sp.get('baseline', {}).get('p99_ms'))} / "
              f"{_ms(mr.get('baseline', {}).get('p99_ms'))} |", ""]
    lines += ["stackpatch's phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in sp["phases"].items()) + ".",
              "",
              "manual routine's phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in mr["phases"].items()) + "."]
    if cs:
        lines += ["", "competent script's phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in cs["phases"].items())
                  + "."]
    runs = data.get("runs_per_contender") or 1
    if runs > 1:
        rng = {c: (d.get("range") or {}).get("lead_time_s") for c, d in data["contenders"].items()}
        lines += ["", f"Each contender ran {runs} times; its figures are the medians. Lead time range: "
                  + ", ".join(f"{c.replace('_', ' ')} {r[0]:.1f}–{r[1]:.1f} s" for c, r in rng.items() if r) + "."]
    if data.get("limit_s"):
        parts = data.get("limit_parts_s") or {}
        lines += ["", f"Limit line: {data['limit_s']:.1f} s (" + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
                  + f"); ship's wall time is {data.get('ship_over_limit', 0):.2f}× it, its lead time "
                  f"{data.get('lead_time_over_limit', 0):.2f}×."]
    if sp.get("overhead_parts_s"):
        lines += ["", "stackpatch's overhead (s): " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                              sp["overhead_parts_s"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0] in ("-h", "--help"):
        print("usage: python benchmarks/report.py RESULTS.json: the README's tables of a benchmark's results")
        return 0
    if len(args) != 1:
        print("usage: python benchmarks/report.py RESULTS.json", file=sys.stderr)
        return 2
    p = Path(args[0])
    print(render(json.loads(p.read_text()), p.name), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
