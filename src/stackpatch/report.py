"""The deploy report: one self-contained HTML page per run, made from its journal.

`render(records, …)` is pure: the journal's records (and, when known, the commits `deployed..hotfix`)
in, one HTML page out. No script, no external asset, no network: inline CSS, an inline SVG timeline
drawn to scale, and a Content-Security-Policy that forbids the page to load anything.

`write_for_run(repo_root, run_id)` writes `.stackpatch/runs/<run-id>.html` next to the journal (the
commits are read with git, through git.py) and `write_index(repo_root)` writes `index.html` linking
every run. After every run (ship, deploy, rollback, abort, resume, purge) the page is written by
`write_for_run`, or by `with after_run(repo_root): …` around the command, which also covers a run that
ends in an exception (failed, rolled back, interrupted) and never raises itself.

What the page shows, and where it comes from in the journal:
  header      run-start: op, version, from_version, owner, host, pid, stack; the last state record
  timeline    run-start.build_timings (durations of the build half, drawn back to back up to the run
              start; verify beside the push when the release tags were put on afterwards, `tag`; the
              builds in run-start.build_beside from one start), then every intent → result pair
              (timestamps and `seconds`), rollback steps
              (`undo`), and markers for state changes, resume and abort
  services    run-start.plan update steps: image and labels before → after, and each one's outcome
  purge       the purge intents/results (their `detail` is the CDN's answer, with the items)
  failure     the first failed step, its detail, and what to do next for the run's state
"""

from __future__ import annotations

import html
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any, Iterable, Iterator

from stackpatch.release import journal as J
from stackpatch.targets.base import LABEL_REVISION, LABEL_VERSION

INDEX_NAME = "index.html"


# ------------------------------------------------------------------ reading the journal (pure)

@dataclass(frozen=True)
class Phase:
    """One bar of the timeline."""

    step: str            # journal step id; rollback steps are "undo:<step>"
    label: str
    kind: str            # workdir, build, verify, push, lock, update, gate, migrate, serving, purge, undo
    start: float         # seconds since the timeline's origin
    seconds: float
    ok: bool | None      # None: the journal has no result (the run stopped during it)
    detail: str | None = None
    timed: bool = True   # False: placed from a duration only (the build half has no timestamps)


@dataclass(frozen=True)
class Marker:
    at: float            # seconds since the origin
    label: str
    kind: str            # lock, state, resume, abort


@dataclass(frozen=True)
class Side:
    version: str | None
    revision: str | None
    image: str | None

    @property
    def digest(self) -> str | None:
        return self.image.split("@", 1)[1] if self.image and "@" in self.image else None

    @property
    def tag(self) -> str | None:
        if not self.image:
            return None
        name = self.image.split("@", 1)[0]
        last = name.rsplit("/", 1)[-1]
        return last.rsplit(":", 1)[1] if ":" in last else None


@dataclass(frozen=True)
class ServiceChange:
    service: str
    wave: str
    before: Side
    after: Side
    outcome: str         # updated, rolled back, failed, interrupted, not reached
    seconds: float | None


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    date: str
    subject: str


@dataclass
class Run:
    """A run as the report tells it."""

    start: dict
    view: J.RunView
    origin: float                      # epoch seconds of the timeline's 0
    end: float                         # epoch seconds of the last record
    phases: list[Phase] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    services: list[ServiceChange] = field(default_factory=list)
    purges: list[dict] = field(default_factory=list)  # {ok, seconds, detail, at}
    failed: dict | None = None                       # the first failed forward step: {step, detail}

    @property
    def span(self) -> float:
        return max(self.end - self.origin, 0.0)


def _step_label(step: str, plan_step: dict | None, undo: bool = False) -> tuple[str, str]:
    """(label, kind) of a journal step."""
    kind = (plan_step or {}).get("kind") or step.split(":", 1)[0]
    rest = step.split(":", 1)[1] if ":" in step else ""
    if undo:
        return f"rollback {rest or step}", "undo"
    if kind == "update":
        wave = (plan_step or {}).get("wave")
        return (f"{wave} · update {rest}" if wave else f"update {rest}"), "update"
    if kind == "gate":
        return f"gate after {rest}", "gate"
    if kind == "migrate":
        return (f"migrate {rest}" if rest else "migrate"), "migrate"
    if kind == "prepull":
        return "pre-pull on the nodes", "prepull"
    if kind == "serving":
        return "front serves the release", "serving"
    if kind == "purge":
        return "CDN purge", "purge"
    return step, kind


def _build_phase(name: str) -> tuple[str, str]:
    if name == "workdir":
        return "clean build dir", "workdir"
    if name.startswith("build:"):
        return f"build {name.split(':', 1)[1]}", "build"
    if name.startswith("verify"):
        return "verify", "verify"
    if name.startswith("push"):
        return name.replace(":", " "), "push"
    if name == "tag":
        return "release tags", "push"
    return name, "build"


def read_run(records: list[dict]) -> Run | None:
    """The report's view of a run's records. None when they hold no run-start."""
    v = J.view(records)
    if v is None:
        return None
    start = records[0]
    plan = {s["id"]: s for s in start.get("plan", [])}
    build = {k: float(s) for k, s in (start.get("build_timings") or {}).items()}
    lock_s = start.get("lock_seconds")  # when the deploy half records how long taking the lock took
    # verify and the push run side by side when the release tags were put on afterwards (`tag`)
    beside = {"push", "verify"} & set(build) if "tag" in build else set()
    together = set(start.get("build_beside") or ()) & set(build)  # the builds, run side by side from one start
    span = (sum(s for k, s in build.items() if k not in beside and k not in together)
            + max((build[k] for k in beside), default=0.0) + max((build[k] for k in together), default=0.0))
    origin = start["ts"] - span - float(lock_s or 0)
    run = Run(start=start, view=v, origin=origin, end=max(r.get("ts", start["ts"]) for r in records))

    t = 0.0
    split = None
    at_once = None
    for name, secs in build.items():
        label, kind = _build_phase(name)
        at = t
        if name in beside:
            split = t if split is None else split
            at = split
        elif name in together:
            at_once = t if at_once is None else at_once
            at = at_once
        run.phases.append(Phase(name, label, kind, at, secs, True, timed=False))
        t = max(t, at + secs)
    if lock_s is not None:
        run.phases.append(Phase("lock", "take the lock", "lock", t, float(lock_s), True, timed=False))
    else:
        run.markers.append(Marker(start["ts"] - origin, "lock held", "lock"))

    open_: dict[tuple[str, bool], dict] = {}
    order: list[tuple[float, int, Phase]] = []
    for n, r in enumerate(records[1:], 1):
        k = r.get("kind")
        if k == "intent":
            open_[(r["step"], bool(r.get("undo")))] = r
        elif k == "result":
            undo = bool(r.get("undo"))
            it = open_.pop((r["step"], undo), None)
            begin = it["ts"] if it else r["ts"] - float(r.get("seconds") or 0)
            secs = float(r["seconds"]) if r.get("seconds") is not None else max(r["ts"] - begin, 0.0)
            label, kind = _step_label(r["step"], plan.get(r["step"]), undo)
            detail = r.get("detail")
            if r["step"] == "purge" and not undo:
                run.purges.append({"ok": bool(r.get("ok")), "seconds": secs, "detail": detail, "at": begin})
            order.append((begin, n, Phase(("undo:" if undo else "") + r["step"], label, kind, begin - origin,
                                          secs, bool(r.get("ok")),
                                          detail if isinstance(detail, str) else None)))
            if not r.get("ok") and not undo and run.failed is None and r["step"] != "purge":
                run.failed = {"step": r["step"], "label": label, "detail": detail}
        elif k == "state":
            run.markers.append(Marker(r["ts"] - origin, r["state"], "state"))
        elif k in ("resume", "abort"):
            run.markers.append(Marker(r["ts"] - origin, k, k))
    for (sid, undo), it in open_.items():  # an intent without a result: the run stopped during it
        label, kind = _step_label(sid, plan.get(sid), undo)
        order.append((it["ts"], 10**9, Phase(("undo:" if undo else "") + sid, label, kind, it["ts"] - origin,
                                             max(run.end - it["ts"], 0.0), None,
                                             "no result: the run stopped during this step")))
        if not undo and run.failed is None:
            run.failed = {"step": sid, "label": label, "detail": "the run stopped during this step"}
    run.phases += [p for _, _, p in sorted(order, key=lambda x: (x[0], x[1]))]
    run.services = _services(start, run.phases)
    return run


def _services(start: dict, phases: list[Phase]) -> list[ServiceChange]:
    out = []
    for s in start.get("plan", []):
        if s.get("kind") != "update":
            continue
        prev = s.get("previous_labels") or {}
        new = s.get("labels") or {}
        before = Side(prev.get(LABEL_VERSION) or start.get("from_version"),
                      prev.get(LABEL_REVISION) or start.get("from_revision"), s.get("previous_image"))
        after = Side(new.get(LABEL_VERSION) or start.get("version"),
                     new.get(LABEL_REVISION) or start.get("revision"), s.get("image"))
        mine = [p for p in phases if p.step in (s["id"], "undo:" + s["id"])]
        fwd = [p for p in mine if p.step == s["id"]]
        if any(p.step.startswith("undo:") and p.ok for p in mine):
            outcome = "rolled back"
        elif any(p.ok for p in fwd):
            outcome = "updated"
        elif any(p.ok is False for p in fwd):
            outcome = "failed"
        elif fwd:
            outcome = "interrupted"
        else:
            outcome = "not reached"
        secs = next((p.seconds for p in reversed(fwd) if p.ok), None)
        out.append(ServiceChange(s["service"], s.get("wave") or "", before, after, outcome, secs))
    return out


NEXT_STEPS = {
    J.DEPLOYED: "Nothing to do: every service runs the release. Finish the hotfix with `stackpatch finish`.",
    J.PURGE_FAILED: "The release is deployed; only the CDN purge failed. `stackpatch purge` retries the purge.",
    J.FAILED: "Nothing was changed on the stack. Fix the cause above, push, and run `stackpatch ship --yes` again.",
    J.ROLLED_BACK: "Every changed service is back on its exact previous image and the old revision serves. "
                   "Fix the hotfix on its branch, push, and run `stackpatch ship --yes` again.",
    J.ROLLBACK_FAILED: "The rollback did not complete and the lock stays held: fix the target (see the failed "
                       "step), then run `stackpatch abort` to restore the recorded previous images.",
    J.ROLLING_BACK: "The run stopped while rolling back: `stackpatch abort` finishes restoring the previous images.",
    J.ABORTED: "The run was aborted: every service it changed is back on the image recorded before it.",
    J.RUNNING: "The run has no end in its journal (killed, or the target stopped answering): "
               "`stackpatch resume` continues it from its last completed step, `stackpatch abort` "
               "restores the previous images.",
    J.INTERRUPTED: "The target stopped answering: once it is back, `stackpatch resume` continues the run, "
                   "or `stackpatch abort` restores the previous images.",
}


def next_step(run: Run) -> str:
    text = NEXT_STEPS.get(run.view.state, "See `stackpatch history` and `stackpatch status`.")
    migrated = any(p.kind == "migrate" and p.ok for p in run.phases)
    if run.view.state in (J.ROLLED_BACK, J.ABORTED, J.ROLLBACK_FAILED) and migrated:
        text += " Migrations that ran are not reversed: check the database."
    return text


# ------------------------------------------------------------------ rendering (pure)

def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 10:
        return f"{s:.2f} s"
    if s < 600:
        return f"{s:.1f} s"
    return f"{s:.0f} s"


def fmt_time(t: float | None) -> str:
    if not t:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _short(v: str | None, n: int) -> str:
    return (v or "")[:n] or "–"


COLORS = {"workdir": "#8d6e63", "build": "#1e88e5", "verify": "#7e57c2", "push": "#00897b", "lock": "#455a64", "prepull": "#26a69a",
          "update": "#43a047", "gate": "#f9a825", "migrate": "#ef6c00", "serving": "#00acc1",
          "purge": "#607d8b", "undo": "#8e24aa"}
FAILED_COLOR = "#d32f2f"
RUNNING_COLOR = "#9e9e9e"
STATE_CLASS = {J.DEPLOYED: "ok", J.PURGE_FAILED: "warn", J.ABORTED: "warn", J.ROLLED_BACK: "bad",
               J.FAILED: "bad", J.ROLLBACK_FAILED: "bad", J.ROLLING_BACK: "bad", J.RUNNING: "warn",
               J.INTERRUPTED: "bad"}


def _ticks(span: float) -> list[float]:
    target = span / 8 if span > 0 else 1
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if step >= target:
            break
    n = int(span / step) + 1
    return [round(i * step, 3) for i in range(n + 1) if i * step <= span + 1e-9]


def timeline_svg(run: Run, width: int = 1040) -> str:
    """The phases as a Gantt chart, x to scale (seconds since the origin)."""
    label_w, dur_w, row_h, top = 230, 80, 22, 40
    area = width - label_w - dur_w - 10
    span = max(run.span, max((p.start + p.seconds for p in run.phases), default=0.0), 0.001)
    scale = area / span
    rows = run.phases
    height = top + row_h * len(rows) + 34
    out = [f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline of run {e(run.view.run_id)}">']
    # grid and axis
    for tck in _ticks(span):
        x = label_w + tck * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 30}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{height - 14}" class="tick" text-anchor="middle">{tck:g} s</text>')
    last_x, last_label = -1e9, None
    for m in run.markers:
        x = label_w + m.at * scale
        text = ""
        if m.label != last_label and x - last_x > 70:  # a label only where it does not overlap the last
            text = f'<text x="{x + 3:.1f}" y="{top - 4}" class="mlabel">{e(m.label)}</text>'
            last_x, last_label = x, m.label
        out.append(f'<g class="marker" data-marker="{e(m.label)}"><line x1="{x:.1f}" y1="{top - 14}" '
                   f'x2="{x:.1f}" y2="{height - 30}"/>{text}<title>{e(m.label)} at {m.at:.2f} s</title></g>')
    for i, p in enumerate(rows):
        y = top + i * row_h
        x = label_w + p.start * scale
        w = max(p.seconds * scale, 2.0)
        color = FAILED_COLOR if p.ok is False else RUNNING_COLOR if p.ok is None else COLORS.get(p.kind, "#546e7a")
        status = "failed" if p.ok is False else "no result" if p.ok is None else "ok"
        tip = f"{p.label}: {fmt_seconds(p.seconds)}, {status}" + (f" — {p.detail}" if p.detail else "")
        faded = "" if p.timed else ' fill-opacity="0.75"'
        if not p.timed:
            tip += " (duration from the build half; drawn back to back)"
        out.append(
            f'<g class="phase" data-step="{e(p.step)}" data-kind="{e(p.kind)}" data-seconds="{p.seconds:.3f}" '
            f'data-ok="{status}"><title>{e(tip)}</title>'
            f'<text x="{label_w - 8}" y="{y + 15}" text-anchor="end" class="label">{e(p.label)}</text>'
            f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="{color}"{faded}/>'
            f'<text x="{width - dur_w}" y="{y + 15}" class="dur">{e(fmt_seconds(p.seconds))}</text></g>')
    out.append(f'<text x="{label_w}" y="14" class="axis">0 s = {e(fmt_time(run.origin))}; '
               f'total {e(fmt_seconds(run.span))}</text>')
    out.append("</svg>")
    return "".join(out)


def _badge(state: str) -> str:
    return f'<span class="badge {STATE_CLASS.get(state, "warn")}">{e(state)}</span>'


def _side(s: Side) -> str:
    return (f'<div><b>{e(s.version or "?")}</b></div><div class="mono">rev {e(_short(s.revision, 12))}</div>'
            f'<div class="mono" title="{e(s.image)}">{e(s.tag or "–")} @ {e(_short(s.digest, 19))}</div>')


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "") -> str:
    h = "".join(f"<th>{x}</th>" for x in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>'


def _services_html(run: Run) -> str:
    if not run.services:
        return "<p>This run changed no service.</p>"
    rows = []
    for s in run.services:
        cls = {"updated": "ok", "rolled back": "bad", "failed": "bad"}.get(s.outcome, "warn")
        rows.append([f'<b class="svc" data-service="{e(s.service)}">{e(s.service)}</b>', e(s.wave or "–"),
                     _side(s.before), "→", _side(s.after),
                     f'<span class="badge {cls}">{e(s.outcome)}</span>'
                     + (f' <span class="dur">{e(fmt_seconds(s.seconds))}</span>' if s.seconds is not None else "")])
    return _table(["service", "wave", "before", "", "after", "outcome"], rows, "services")


def _phases_table(run: Run) -> str:
    rows = [[e(p.label), f'<span class="mono">{e(p.step)}</span>', e(fmt_seconds(p.start) if p.timed else "–"),
             f'<span class="dur">{e(fmt_seconds(p.seconds))}</span>',
             "failed" if p.ok is False else "no result" if p.ok is None else "ok", e(p.detail or "")]
            for p in run.phases]
    return _table(["phase", "step", "starts at", "duration", "result", "detail"], rows, "phases")


def _commits_html(run: Run, commits: list[Commit] | None) -> str:
    st = run.start
    a, b = st.get("from_revision"), st.get("revision")
    rng = f"{_short(a, 7)}..{_short(b, 7)}"
    if commits is None:
        return (f'<p>Commits <span class="mono">{e(rng)}</span>: not available here (this repo does not have '
                f"both commits).</p>")
    if not commits:
        return f'<p>No commit in <span class="mono">{e(rng)}</span>.</p>'
    rows = [[f'<span class="mono">{e(c.sha[:7])}</span>', e(c.subject), e(c.author), e(c.date)] for c in commits]
    return f'<p class="mono">{e(rng)} ({len(commits)})</p>' + _table(["commit", "subject", "author", "date"], rows)


def _release_html(run: Run) -> str:
    rel = run.start.get("release") or {}
    imgs = rel.get("images") or {}
    if not imgs:
        return ""
    rows = [[e(n), f'<span class="mono">{e(i.get("repository"))}</span>', e(", ".join(i.get("tags") or [])),
             f'<span class="mono">{e(i.get("digest"))}</span>', e(f'{i.get("bytes_pushed", 0):,}')]
            for n, i in imgs.items()]
    return "<h2>Images</h2>" + _table(["image", "repository", "tags", "digest", "bytes pushed"], rows)


def _purge_html(run: Run, config_items: list[str] | None) -> str:
    planned = any(s.get("kind") == "purge" for s in run.start.get("plan", []))
    if not run.purges and not planned:
        return ""
    parts = ["<h2>CDN purge</h2>"]
    if not run.purges:
        parts.append("<p>Planned, not run (it runs only after every service runs the release).</p>")
    for n, p in enumerate(run.purges, 1):
        d = p["detail"]
        head = (f'<p>Attempt {n} at {e(fmt_time(p["at"]))}: '
                f'<span class="badge {"ok" if p["ok"] else "bad"}">{"ok" if p["ok"] else "failed"}</span> '
                f'in <span class="dur">{e(fmt_seconds(p["seconds"]))}</span></p>')
        parts.append(head)
        if isinstance(d, dict):
            parts.append(_table(["provider", "mode", "requests", "items purged", "retries", "ids"], [[
                e(d.get("provider")), e(d.get("mode")), e(d.get("requests")),
                e(f'{d.get("purged", 0)} of {d.get("total", 0)}'), e(d.get("retries")),
                f'<span class="mono">{e(", ".join(d.get("ids") or []))}</span>']]))
            items = d.get("items")
            if items is None:
                items, src = config_items, " (as configured in stackpatch.toml now)"
            else:
                src = ""
            if items:
                parts.append(f"<p>Items{e(src)}:</p><ul class='items'>"
                             + "".join(f'<li class="mono">{e(i)}</li>' for i in items) + "</ul>")
            elif d.get("mode") == "everything":
                parts.append("<p>Items: everything in the zone.</p>")
        elif d:
            parts.append(f'<p class="fail">{e(d)}</p>')
    return "".join(parts)


def _failure_html(run: Run) -> str:
    state = run.view.state
    if state == J.DEPLOYED and not run.failed:
        return ""
    parts = [f'<section class="failure {STATE_CLASS.get(state, "warn")}"><h2>What happened, what next</h2>']
    if run.failed:
        parts.append(f'<p>Failing step: <b class="mono">{e(run.failed["step"])}</b> ({e(run.failed["label"])})</p>')
        if run.failed.get("detail"):
            parts.append(f'<pre>{e(run.failed["detail"])}</pre>')
    elif run.view.detail and state != J.DEPLOYED:
        parts.append(f"<pre>{e(run.view.detail)}</pre>")
    parts.append(f'<p class="next">{e(next_step(run))}</p></section>')
    return "".join(parts)


CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2430;
margin:0 auto;padding:20px 28px;max-width:1120px;background:#fff}h1{font-size:22px;margin:0 0 4px}
h2{font-size:16px;margin:26px 0 8px;border-bottom:1px solid #e3e7ee;padding-bottom:4px}
.mono,pre,code{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{text-align:left;padding:5px 8px;
border-bottom:1px solid #eef1f5;vertical-align:top}th{font-weight:600;color:#4a5568;background:#f7f9fb}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.badge.ok{background:#e3f4e5;color:#1b5e20}.badge.warn{background:#fff4d6;color:#7a5200}
.badge.bad{background:#fde4e4;color:#b71c1c}.facts{display:grid;grid-template-columns:repeat(4,1fr);gap:6px 18px;
margin:10px 0}.facts div b{display:block;color:#4a5568;font-size:11.5px;font-weight:600;text-transform:uppercase}
.timeline{display:block;max-width:100%;height:auto}.timeline .label{font-size:12px;fill:#1d2430}
.timeline .dur{font-size:12px;fill:#1d2430;font-weight:600}.timeline .tick,.timeline .axis{font-size:11px;fill:#6b7785}
.timeline .grid{stroke:#eef1f5}.timeline .mlabel{font-size:10.5px;fill:#6b7785}.timeline .marker line{stroke:#b0bac6;stroke-dasharray:3 3}
.failure{border-left:4px solid #d32f2f;background:#fff7f7;padding:4px 14px;margin-top:18px}
.failure.warn{border-color:#f9a825;background:#fffbef}.failure pre{white-space:pre-wrap}.next{font-weight:600}
.legend span{display:inline-block;margin-right:12px;font-size:12px}.legend i{display:inline-block;width:10px;
height:10px;margin-right:4px;border-radius:2px}details pre{max-height:420px;overflow:auto;background:#f7f9fb;
padding:8px}ul.items{margin:4px 0 0 18px;padding:0}footer{margin-top:28px;color:#6b7785;font-size:12px}
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title><style>$css</style></head>
<body>$body
<footer>Written by stackpatch $version from the journal $journal at $generated.</footer>
</body></html>
""")


def render(records: list[dict], commits: list[Commit] | None = None, *, config_items: list[str] | None = None,
           journal_name: str = "", generated_at: float | None = None) -> str:
    """The run's page, from its journal records. Pure."""
    from stackpatch import __version__
    run = read_run(records)
    if run is None:
        raise ValueError("the journal has no run-start record")
    v, st = run.view, run.start
    op = "ship" if v.op == "deploy" and st.get("build_timings") else v.op  # ship = build half + deploy
    title = f"{op} {v.from_version or '?'} → {v.version or '?'} on {st.get('stack')}: {v.state}"
    facts = [("run", f'<span class="mono">{e(v.run_id)}</span>'), ("operation", e(op)),
             ("result", _badge(v.state)), ("stack (target)", e(st.get("stack"))),
             ("who", e(st.get("owner"))), ("where", e(f"{st.get('host')} (pid {st.get('pid')})")),
             ("started", e(fmt_time(v.started_at))), ("ended", e(fmt_time(v.ended_at))),
             ("from", f'{e(v.from_version or "?")} <span class="mono">{e(_short(st.get("from_revision"), 12))}</span>'),
             ("to", f'{e(v.version or "?")} <span class="mono">{e(_short(st.get("revision"), 12))}</span>'),
             ("wall time", e(fmt_seconds(run.span))),
             ("deploy steps", e(f"{len(v.done_steps)} done, {len(v.failed_steps)} failed"))]
    kinds = {p.kind for p in run.phases}
    legend = "".join(f'<span><i style="background:{c}"></i>{e(k)}</span>' for k, c in COLORS.items() if k in kinds)
    if any(p.ok is False for p in run.phases):
        legend += f'<span><i style="background:{FAILED_COLOR}"></i>failed</span>'
    if any(p.ok is None for p in run.phases):
        legend += f'<span><i style="background:{RUNNING_COLOR}"></i>no result</span>'
    body = [f"<h1>{e(title)}</h1>",
            '<div class="facts">' + "".join(f"<div><b>{k}</b>{val}</div>" for k, val in facts) + "</div>",
            _failure_html(run),
            "<h2>Timeline</h2>", f'<div class="legend">{legend}</div>', timeline_svg(run),
            "<h2>Services</h2>", _services_html(run),
            "<h2>Commits</h2>", _commits_html(run, commits),
            _release_html(run),
            _purge_html(run, config_items),
            "<h2>Phases</h2>", _phases_table(run),
            "<details><summary>The journal</summary><pre>"
            + e("\n".join(json.dumps(r, sort_keys=False, default=str) for r in records)) + "</pre></details>"]
    return PAGE.substitute(title=e(title), css=CSS, body="\n".join(b for b in body if b), version=e(__version__),
                           journal=e(journal_name or f"{v.run_id}.jsonl"),
                           generated=e(fmt_time(generated_at or time.time())))


def render_index(entries: list[tuple[J.RunView, str]], *, generated_at: float | None = None) -> str:
    """The index of runs, newest first: (view, page file name) pairs. Pure."""
    from stackpatch import __version__
    rows = []
    for v, page in entries:
        took = fmt_seconds(v.ended_at - v.started_at) if v.ended_at else "–"
        rows.append([f'<a class="mono" href="{e(page)}">{e(v.run_id)}</a>', e(v.op),
                     e(f"{v.from_version or '?'} → {v.version or '?'}"), _badge(v.state),
                     e(v.start.get("stack")), e(took), e(fmt_time(v.started_at)),
                     e(f"{v.start.get('owner')}@{v.start.get('host')}")])
    body = ("<h1>stackpatch runs</h1>"
            + (_table(["run", "op", "versions", "result", "stack", "took", "started", "who"], rows, "runs")
               if rows else "<p>No run recorded yet.</p>"))
    return PAGE.substitute(title="stackpatch runs", css=CSS, body=body, version=e(__version__), journal="files",
                           generated=e(fmt_time(generated_at or time.time())))


# ------------------------------------------------------------------ writing (I/O)

def page_path(repo_root: Path, run_id: str) -> Path:
    return J.runs_dir(repo_root) / f"{run_id}.html"


def commits_between(repo_root: Path, start: dict) -> list[Commit] | None:
    """The commits from_revision..revision (revision..from_revision for a rollback), oldest first;
    None when either is unknown or not in this repo."""
    from stackpatch import git
    a, b = start.get("from_revision"), start.get("revision")
    if not (a and b):
        return None
    if start.get("op") == "rollback":
        a, b = b, a
    try:
        if not (git.rev(a, cwd=repo_root) and git.rev(b, cwd=repo_root)):
            return None
        return [Commit(*c) for c in git.log(f"{a}..{b}", cwd=repo_root)]
    except Exception:  # noqa: BLE001 - no git, not a repo: the page says the commits are not available
        return None


def _config_items(repo_root: Path) -> list[str] | None:
    try:
        from stackpatch import config as config_mod
        cfg = config_mod.load(Path(repo_root))
        return list(cfg.cdn.items) if cfg.cdn is not None else None
    except Exception:  # noqa: BLE001 - no or a broken config: the page shows what the journal has
        return None


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_for_run(repo_root: Path, run_id: str) -> Path:
    """Write (or rewrite) `.stackpatch/runs/<run-id>.html` from the run's journal; returns its path.
    Raises FileNotFoundError when the run has no journal, ValueError when it has no run-start."""
    root = Path(repo_root)
    jpath = J.runs_dir(root) / f"{run_id}.jsonl"
    if not jpath.is_file():
        raise FileNotFoundError(jpath)
    records = J.read_records(jpath)
    if not records or records[0].get("kind") != "run-start":
        raise ValueError(f"{jpath} has no run-start record")
    purged = [r for r in records if r.get("kind") == "result" and r.get("step") == "purge"]
    needs_items = any(isinstance(r.get("detail"), dict) and "items" not in r["detail"] for r in purged)
    page = render(records, commits_between(root, records[0]),
                  config_items=_config_items(root) if needs_items else None, journal_name=jpath.name)
    out = page_path(root, run_id)
    _write(out, page)
    return out


def write_latest(repo_root: Path) -> Path | None:
    """The newest run's page, written when it is missing or older than the journal. Never raises: a page
    that cannot be written must not hide how the run ended (None then, and when no run is recorded)."""
    from stackpatch.release import history
    try:
        v = history.last_run(Path(repo_root))
        if v is None:
            return None
        return write_for_run(repo_root, v.run_id) if is_stale(repo_root, v.run_id) else page_path(repo_root, v.run_id)
    except Exception:  # noqa: BLE001 - best effort, see above
        return None


@contextmanager
def after_run(repo_root: Path) -> Iterator[None]:
    """Around a command that runs (ship, deploy, resume, abort, rollback, purge): when it ends, however it
    ends (done, refused, failed, rolled back, interrupted), the newest run's page is (re)written."""
    try:
        yield
    finally:
        write_latest(repo_root)


def is_stale(repo_root: Path, run_id: str) -> bool:
    """True when the run's page is missing or older than its journal (a resume or a purge appended)."""
    page = page_path(repo_root, run_id)
    jpath = J.runs_dir(repo_root) / f"{run_id}.jsonl"
    return not page.is_file() or (jpath.is_file() and jpath.stat().st_mtime > page.stat().st_mtime)


def write_index(repo_root: Path) -> Path:
    """Write `.stackpatch/runs/index.html` linking every run's page (writing the missing or stale ones)."""
    from stackpatch.release import history
    root = Path(repo_root)
    entries = []
    for v in history.runs(root):
        if is_stale(root, v.run_id):
            write_for_run(root, v.run_id)
        entries.append((v, page_path(root, v.run_id).name))
    d = J.runs_dir(root)
    d.mkdir(parents=True, exist_ok=True)
    out = d / INDEX_NAME
    _write(out, render_index(entries))
    return out
