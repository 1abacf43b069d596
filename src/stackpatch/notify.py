"""Notifications: tell the team's webhooks how a run ended.

Each `[[notify]]` entry names the environment variable that holds a webhook URL (a secret: it never
appears in output, logs or the journal), a format (`slack`: `{"text": …}`; `json`: the full run
summary) and the events it wants: deployed, rolled-back, failed, purge-failed, finished. A request
is retried after network errors, 429 and 5xx with exponential backoff (honouring `Retry-After`);
a failure is reported and journaled (record kind `notify`) and never changes the run's outcome.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stackpatch.reporter import Reporter

VERBS = {"deployed": "deployed", "rolled-back": "rolled back", "failed": "FAILED",
         "purge-failed": "deployed (CDN purge failed)", "finished": "finished"}


@dataclass
class Delivery:
    name: str
    event: str
    ok: bool
    attempts: int
    detail: str | None = None


def summary(event: str, *, op: str, state: str, version: str | None, revision: str | None,
            previous_version: str | None, target: str, stack: str, run_id: str | None, performer: str,
            services: list[str], detail: str | None = None, journal: str | None = None,
            steps_done: list[str] | None = None, started_at: float | None = None,
            ended_at: float | None = None) -> dict[str, Any]:
    """The `json` format's body (and what the `slack` text is made from)."""
    return {"event": event, "operation": op, "state": state, "version": version, "revision": revision,
            "previous_version": previous_version, "target": target, "stack": stack, "run_id": run_id,
            "performer": performer, "services": services, "detail": detail, "journal": journal,
            "steps_done": steps_done or [], "started_at": started_at, "ended_at": ended_at}


def text(s: dict[str, Any]) -> str:
    """One line for a chat: who did what to which stack, and how it ended."""
    what = s["version"] or "?"
    if s["event"] == "finished":
        return f"stackpatch: {s['performer']} finished hotfix {what} (merged, tagged, pushed)"
    verb = VERBS.get(s["event"], s["event"])
    if s["event"] == "purge-failed" and s["operation"] == "rollback":
        verb = "rolled back (CDN purge failed)"
    line = f"stackpatch: {s['operation']} of {what} on {s['stack']} ({s['target']}) by {s['performer']}: {verb}"
    if s.get("previous_version"):
        line += f" (was {s['previous_version']})"
    if s["event"] in ("failed", "rolled-back", "purge-failed") and s.get("detail"):
        line += f": {s['detail'][:300]}"
    if s.get("run_id"):
        line += f" [run {s['run_id']}]"
    return line


def body(fmt: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"text": text(s)} if fmt == "slack" else s


def _post(url: str, payload: dict, timeout: float) -> tuple[int, str, str | None]:
    data = json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "stackpatch"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - the team's webhook
            return r.status, r.read(2000).decode(errors="replace"), None
    except urllib.error.HTTPError as e:
        return e.code, e.read(2000).decode(errors="replace"), e.headers.get("Retry-After")


def deliver(entry, event: str, s: dict[str, Any], *, env: dict[str, str] | None = None,
            sleep: Callable[[float], None] = time.sleep, backoff: float = 0.5, max_wait: float = 30) -> Delivery:
    """Send one event to one entry, retrying; never raises. Its detail never contains the URL."""
    env = os.environ if env is None else env
    url = env.get(entry.url_env)
    if not url:
        return Delivery(entry.label, event, False, 0, f"environment variable {entry.url_env} is not set")
    if not url.startswith(("http://", "https://")):
        return Delivery(entry.label, event, False, 0, f"{entry.url_env} does not hold an http(s) URL")
    payload = body(entry.format, s)
    attempts = 0
    last = ""
    while True:
        attempts += 1
        retry_after = None
        try:
            code, answer, retry_after = _post(url, payload, entry.timeout)
            if 200 <= code < 300:
                return Delivery(entry.label, event, True, attempts)
            last = f"HTTP {code}" + (f": {' '.join(answer.split())[:120]}" if answer.strip() else "")
            retryable = code == 429 or code >= 500
        except (OSError, urllib.error.URLError, ValueError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            last = f"{type(e).__name__}: {reason}".replace(url, "<url>")
            retryable = True
        if not retryable or attempts > entry.retries:
            return Delivery(entry.label, event, False, attempts, last)
        wait = backoff * 2 ** (attempts - 1)
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                pass
        sleep(min(wait, max_wait))


def send(entries: list, event: str, s: dict[str, Any], reporter: Reporter, journal=None) -> list[Delivery]:
    """Send `event` to every entry that wants it; warn and journal each failure, journal each delivery."""
    out = []
    for entry in entries:
        if event not in entry.events:
            continue
        d = deliver(entry, event, s)
        out.append(d)
        if journal is not None:
            try:
                journal.append("notify", event=event, name=d.name, ok=d.ok, attempts=d.attempts, detail=d.detail)
            except OSError as e:
                reporter.warn(f"could not journal notification {d.name}: {e}")
        if d.ok:
            reporter.info(f"notified {d.name}: {event}")
        else:
            reporter.warn(f"notification {d.name} ({event}) not delivered after {d.attempts} attempt"
                          f"{'s' if d.attempts != 1 else ''}: {d.detail} (the outcome stands)")
    return out


def entries_for(root: Path, cfg: Any = None) -> list:
    """The `[[notify]]` entries: from a loaded Config, else only that part of the repo's file."""
    if cfg is not None:
        return list(cfg.notify)
    from stackpatch import config as config_mod
    return config_mod.load_section(root, "notify", list[config_mod.NotifyConfig]) or []
