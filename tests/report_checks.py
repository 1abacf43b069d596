"""Reading a report page the way a person reads it, and checking it against the run's journal.

Used on the page as written (fast) and on the DOM Chromium built from it (tests/browser.py).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

# attributes and CSS that load something from elsewhere
EXTERNAL = re.compile(r"""(?:\b(?:src|href|xlink:href|action|poster|srcset|data|background)\s*=\s*["']?\s*"""
                      r"""|url\(\s*["']?\s*|@import\s+["']?)(?:[a-z][a-z0-9+.-]*:)?//""", re.I)


def external_refs(page: str) -> list[str]:
    """Every place where the page would load something over the network."""
    return [page[max(m.start() - 20, 0):m.end() + 40] for m in EXTERNAL.finditer(page)]


class Dom(HTMLParser):
    """The parts of a report page the tests read: timeline rows, services, links and the text."""

    def __init__(self, text: str):
        super().__init__()
        self.phases: list[dict] = []     # {step, kind, ok, seconds, label, dur, x, width}
        self.services: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self._phase: dict | None = None
        self._in: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = a.get("class") or ""
        if tag == "g" and cls == "phase":
            self._phase = {"step": a["data-step"], "seconds": float(a["data-seconds"]), "ok": a.get("data-ok"),
                           "kind": a.get("data-kind"), "label": "", "dur": ""}
            self.phases.append(self._phase)
        elif self._phase is not None and tag == "text" and cls in ("label", "dur"):
            self._in = cls
        elif self._phase is not None and tag == "rect":
            self._phase["x"], self._phase["width"] = float(a["x"]), float(a["width"])
        elif "svc" in cls.split() and a.get("data-service"):
            self.services.append(a["data-service"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "text":
            self._in = None
        elif tag == "g":
            self._phase = None

    def handle_data(self, data):
        self.text.append(data)
        if self._phase is not None and self._in:
            self._phase[self._in] += data

    @property
    def all_text(self) -> str:
        return " ".join(" ".join(self.text).split())


def expected_phases(records: list[dict]) -> list[tuple[str, float]]:
    """(step, seconds) of every phase the journal records, read straight from the records: the build
    half's durations, then each result (its `seconds`, or the time since its intent for a failure)."""
    start = records[0]
    out = [(k, float(v)) for k, v in (start.get("build_timings") or {}).items()]
    intents: dict[tuple[str, bool], float] = {}
    for r in records[1:]:
        key = (r.get("step"), bool(r.get("undo")))
        if r["kind"] == "intent":
            intents[key] = r["ts"]
        elif r["kind"] == "result":
            secs = r.get("seconds")
            if secs is None:
                secs = r["ts"] - intents[key]
            out.append((("undo:" if r.get("undo") else "") + r["step"], float(secs)))
    return out


def services_of(records: list[dict]) -> list[str]:
    return [s["service"] for s in records[0].get("plan", []) if s.get("kind") == "update"]


def check_report(dom: Dom, records: list[dict]) -> None:
    """Every service and every phase of the journal is on the page, each phase with its duration,
    and the timeline is drawn to scale."""
    want = expected_phases(records)
    assert want, "the journal records no phase"
    rows = list(dom.phases)
    for step, secs in want:
        match = [r for r in rows if r["step"] == step and abs(r["seconds"] - secs) < 0.002]
        assert match, f"phase {step} ({secs:.3f} s) is not on the timeline: {[r['step'] for r in dom.phases]}"
        row = match[0]
        rows.remove(row)
        shown = float(row["dur"].split()[0])
        assert abs(shown - secs) <= (0.0051 if secs < 10 else 0.051), (step, row["dur"], secs)
        if ":" in step:  # the label names the service, wave, tenant or image
            assert step.rsplit(":", 1)[1] in row["label"], (step, row["label"])
        assert row["label"] in dom.all_text and row["dur"] in dom.all_text
    # to scale: pixels per second the same for every bar long enough to measure
    scales = [r["width"] / r["seconds"] for r in dom.phases if r["seconds"] >= 1]
    assert scales and max(scales) - min(scales) < 0.02 * max(scales), scales
    for svc in services_of(records):
        assert svc in dom.services, f"service {svc} is missing from the page: {dom.services}"
