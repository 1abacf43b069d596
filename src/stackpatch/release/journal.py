"""The run journal: append-only JSON lines per run in `<repo>/.stackpatch/runs/<run-id>.jsonl`.

Every record is one line, flushed and fsync'ed before the action it announces, so a `kill -9` at any
point leaves a journal that says exactly which step was about to run and which ones finished.

Record kinds (field `kind`):
  run-start   {run_id, op, owner, host, pid, version, revision, stack, target: {kind, where, name},
               plan: [step…], previous: {svc: image}}
  intent      {step: id, …step data}           written before a step acts
  result      {step: id, ok: bool, detail}     written after it
  state       {state: <run state>, detail}      run-level transitions (rolling-back, rolled-back, deployed…)
  job         {step: id, job: name, exit_code}  a release-phase job ended (written before the job is removed)
  hook        {hook, ok, exit_code, timed_out, seconds, detail}  a post-* hook after the run ended
  notify      {event, name, ok, attempts, detail}                a notification after the run ended
  resume      {owner, host, pid, after, done}   `resume` took the run over
  abort       {owner, host, pid, after}         `abort` took it over: from then on it is only undone
  reconnect   {step, phase: lost|back|gave-up, detail, seconds}  the target stopped answering mid-run
              (lost), then answered again (back: the step runs again) or not within timeouts.reconnect
Never secrets: images, versions, names and timings only.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

RUNS_DIR = Path(".stackpatch") / "runs"

# run states, in the order they usually happen
RUNNING = "running"
DEPLOYED = "deployed"
PURGING = "purging"        # every service runs the release; the CDN purge is due (not final: resume sends it)
PURGE_FAILED = "deployed-purge-failed"
ROLLING_BACK = "rolling-back"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
ABORTED = "aborted"
FAILED = "failed"          # stopped before anything changed
INTERRUPTED = "interrupted"  # inferred: no end record (kill -9, lost connection)

FINAL_STATES = {DEPLOYED, PURGE_FAILED, ROLLED_BACK, ABORTED, FAILED}


def new_run_id(now: float | None = None) -> str:
    """UTC time to the millisecond, then 6 random hex digits: ids sort in start order (two runs in one
    second included), and two machines starting in the same millisecond still differ."""
    now = now or time.time()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}Z-"
            + secrets.token_hex(3))


def runs_dir(repo_root: Path) -> Path:
    return Path(repo_root) / RUNS_DIR


def ensure_ignored(repo_root: Path) -> None:
    """Make sure `.stackpatch/` never gets committed: add it to .git/info/exclude if git does not ignore it."""
    root = Path(repo_root)
    from stackpatch import git
    res = git.run("check-ignore", "-q", ".stackpatch/runs/x.jsonl", cwd=root, check=False)
    if res.returncode == 0 or res.returncode == 128:  # ignored, or not a git repo
        return
    git_dir = git.out("rev-parse", "--git-common-dir", cwd=root)
    exclude = (root / git_dir / "info" / "exclude") if not os.path.isabs(git_dir) else Path(git_dir) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text() if exclude.exists() else ""
    if ".stackpatch/" not in text.splitlines():
        with exclude.open("a") as f:
            f.write(("" if text.endswith("\n") or not text else "\n") + ".stackpatch/\n")


class Journal:
    """One run's journal file. Append-only; each record fsync'ed."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def create(cls, repo_root: Path, run_id: str) -> "Journal":
        d = runs_dir(repo_root)
        d.mkdir(parents=True, exist_ok=True)
        ensure_ignored(repo_root)
        j = cls(d / f"{run_id}.jsonl")
        if j.path.exists():
            raise FileExistsError(j.path)
        return j

    @classmethod
    def open(cls, repo_root: Path, run_id: str) -> "Journal":
        return cls(runs_dir(repo_root) / f"{run_id}.jsonl")

    def append(self, kind: str, **data: Any) -> dict:
        rec = {"ts": round(time.time(), 3), "kind": kind, **data}
        line = json.dumps(rec, sort_keys=False, default=str)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return rec

    def records(self) -> list[dict]:
        return read_records(self.path)


def read_records(path: Path) -> list[dict]:
    """All complete records; a torn last line (crash mid-write) is ignored."""
    out: list[dict] = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


@dataclass
class RunView:
    """A run as its journal tells it (pure: computed from the records)."""

    run_id: str
    op: str
    start: dict
    state: str
    started_at: float
    ended_at: float | None
    done_steps: list[str] = field(default_factory=list)     # result ok
    failed_steps: list[str] = field(default_factory=list)
    started_steps: list[str] = field(default_factory=list)  # intent written
    last_step: str | None = None                            # last intent
    detail: str | None = None
    undone_steps: list[str] = field(default_factory=list)   # rolled back ok
    job_results: dict[str, int] = field(default_factory=dict)  # step id -> exit code of its ended job
    aborting: bool = False                                  # `abort` started on it: only undoing is left

    @property
    def version(self) -> str | None:
        return self.start.get("version")

    @property
    def from_version(self) -> str | None:
        return self.start.get("from_version")

    @property
    def plan(self) -> list[dict]:
        return self.start.get("plan", [])

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "op": self.op, "state": self.state,
                "version": self.version, "from_version": self.from_version,
                "revision": self.start.get("revision"), "owner": self.start.get("owner"),
                "host": self.start.get("host"), "stack": self.start.get("stack"),
                "target": (self.start.get("target") or {}).get("name"),
                "started_at": self.started_at, "ended_at": self.ended_at,
                "done_steps": self.done_steps, "last_step": self.last_step, "detail": self.detail}


def view(records: list[dict]) -> RunView | None:
    """Fold a run's records into its current state. None when there is no run-start."""
    if not records or records[0].get("kind") != "run-start":
        return None
    start = records[0]
    v = RunView(run_id=start["run_id"], op=start.get("op", "deploy"), start=start, state=RUNNING,
                started_at=start["ts"], ended_at=None)
    for r in records[1:]:
        k = r.get("kind")
        if k == "intent":
            sid = r["step"]
            v.last_step = sid
            if sid not in v.started_steps:
                v.started_steps.append(sid)
        elif k == "result":
            sid = r["step"]
            if r.get("undo"):
                if r.get("ok") and sid not in v.undone_steps:
                    v.undone_steps.append(sid)
                continue
            if r.get("ok"):
                if sid not in v.done_steps:
                    v.done_steps.append(sid)
                if sid in v.failed_steps:
                    v.failed_steps.remove(sid)
            else:
                v.failed_steps.append(sid)
                v.detail = r.get("detail")
        elif k == "state":
            v.state = r["state"]
            if r.get("detail"):
                v.detail = r["detail"]
            v.ended_at = r["ts"] if r["state"] in FINAL_STATES else None
        elif k == "resume":
            if v.state not in (PURGING, ROLLING_BACK, ROLLBACK_FAILED):
                v.state = RUNNING
            v.ended_at = None
        elif k == "abort":
            v.aborting = True
        elif k == "job":
            v.job_results[r["step"]] = int(r.get("exit_code", 1))
    return v


def iter_runs(repo_root: Path) -> Iterator[RunView]:
    d = runs_dir(repo_root)
    if not d.is_dir():
        return
    for p in sorted(d.glob("*.jsonl")):
        v = view(read_records(p))
        if v is not None:
            yield v


def owner_host_pid() -> tuple[str, str, int]:
    import getpass
    import socket
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user database in some containers
        user = str(os.getuid())
    from stackpatch import git
    try:
        name = git.config_get("user.name")
    except Exception:  # noqa: BLE001 - git missing: the user name is enough
        name = None
    return (f"{name} ({user})" if name else user), socket.gethostname(), os.getpid()
