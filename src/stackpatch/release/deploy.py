"""The second half of `ship` and the commands around it: deploy, resume, abort, rollback, purge, status.

Each one: look (connect, take the lock, read the live stack and the journal), decide (a pure plan from
deploy_plan.py), act (runner.py, journaling every step). The lock is released in every ending except
two where releasing it would hide a problem: the target became unreachable, or a rollback failed. Then
it stays (and expires after `timeouts.lock_ttl`) until `resume` or `abort` finishes the job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from stackpatch import targets
from stackpatch.errors import FaultError, UserError
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.release import lock as lock_mod
from stackpatch.release.deploy_plan import plan_deploy, plan_rollback
from stackpatch.release.model import Release
from stackpatch.release.runner import Context, RunResult, SignalGuard, rollback as run_rollback, run_purge, run_steps
from stackpatch.reporter import Reporter
from stackpatch.targets.base import LockInfo, Target, TargetState, deployed_release


def repo_root(cfg) -> Path:
    return cfg.root


def _lock_info(cfg, run_id: str, version: str) -> LockInfo:
    owner, host, pid = J.owner_host_pid()
    now = time.time()
    return LockInfo(owner=owner, host=host, pid=pid, version=version, run_id=run_id, started_at=now,
                    expires_at=now + cfg.timeouts.lock_ttl)


def _purger(cfg, reporter: Reporter) -> Callable[[], Any]:
    def go():
        from stackpatch import cdn
        reporter.info(f"CDN purge ({cfg.cdn.provider}, {cfg.cdn.purge}) …")
        return cdn.purge(cfg.cdn, env=os.environ,
                         progress=lambda done, total: reporter.info(f"CDN purge: {done}/{total} requests accepted"))
    return go


def _refuse_if_unfinished(cfg) -> None:
    v = history.unfinished(repo_root(cfg), cfg.target.stack)
    if v is not None:
        where = f" at step {v.last_step}" if v.last_step else ""
        raise UserError(f"run {v.run_id} on stack {cfg.target.stack} did not finish ({v.state}{where}): "
                        "`stackpatch resume` continues it or `stackpatch abort` restores the previous images")


def _lock_then_check_unfinished(cfg, target: Target, info: LockInfo) -> None:
    """Take the lock first (another machine's run is refused by it, naming the holder); a lock held by
    this repo's own unfinished run, or an unfinished run found after taking it, is refused with what
    to do (`resume` or `abort`)."""
    try:
        lock_mod.acquire(target, info)
    except lock_mod.LockHeld:
        orphan = _orphan_lock(cfg, target)
        if orphan is not None:
            raise lock_mod.LockHeld(f"stack {target.stack} is locked by run {orphan.run_id} of {orphan.owner}, which "
                                    f"stopped before it changed anything: `stackpatch abort` releases the lock") \
                from None
        v = history.unfinished(repo_root(cfg), target.stack)
        holder = target.read_lock()
        if v is not None and holder is not None and holder.run_id == v.run_id and not _alive(holder):
            _refuse_if_unfinished(cfg)
        raise
    try:
        _refuse_if_unfinished(cfg)
    except UserError:
        lock_mod.release(target, info.run_id)
        raise


def _alive(holder: LockInfo) -> bool:
    """The holder's process still runs (only knowable on the same host)."""
    import socket
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def deployed_now(cfg, state: TargetState) -> tuple[str | None, str | None]:
    """(version, revision) running before a run, for its record: `deployed_release`, the one answer
    `plan` gives too; (None, None) when the stack cannot tell (no revision labels)."""
    try:
        return deployed_release(state, cfg, allow_mixed=True)
    except UserError:
        return None, None


def _start_record(cfg, target: Target, *, run_id: str, op: str, version: str | None, revision: str | None,
                  from_version: str | None, from_revision: str | None, steps: list[dict],
                  release: Release | None) -> dict:
    owner, host, pid = J.owner_host_pid()
    return dict(run_id=run_id, op=op, owner=owner, host=host, pid=pid, stack=cfg.target.stack,
                target={"kind": target.kind, "where": target.where},
                version=version, revision=revision, from_version=from_version, from_revision=from_revision,
                release=release.to_json() if release else None, plan=steps,
                previous={s["service"]: s["previous_image"] for s in steps if s["kind"] == "update"})


def _context(cfg, target: Target | None, jr: J.Journal, run_id: str, reporter: Reporter, guard: SignalGuard,
             yes: bool, from_revision: str | None, job_results: dict[str, int] | None = None) -> Context:
    ttl = cfg.timeouts.lock_ttl
    return Context(cfg=cfg, target=target, journal=jr, run_id=run_id, reporter=reporter, guard=guard, yes=yes,
                   from_revision=from_revision, purge=_purger(cfg, reporter) if cfg.cdn is not None else None,
                   renew=(lambda: lock_mod.renew(target, run_id, ttl)) if target is not None else None,
                   renew_every=min(60.0, ttl / 3), job_results=dict(job_results or {}))


def _begin(cfg, target: Target, *, op: str, version: str | None, revision: str | None, release: Release | None,
           plan: Callable[[TargetState], list[dict]], build_timings: dict | None = None):
    """Take the lock, read the live stack, plan from it and write the run-start: (run id, steps,
    from_version, from_revision, journal). The lock goes back if anything here fails."""
    run_id = J.new_run_id()
    _lock_then_check_unfinished(cfg, target, _lock_info(cfg, run_id, version or "?"))
    try:
        state = target.read_state()
        steps = plan(state)
        from_version, from_revision = deployed_now(cfg, state)
        jr = J.Journal.create(repo_root(cfg), run_id)
        extra = {"build_timings": build_timings or {}} if op == "deploy" else {}
        jr.append("run-start", **_start_record(cfg, target, run_id=run_id, op=op, version=version,
                                               revision=revision, from_version=from_version,
                                               from_revision=from_revision, steps=steps, release=release),
                  **extra)
    except BaseException:
        lock_mod.release(target, run_id)
        raise
    return run_id, steps, from_version, from_revision, jr


# ------------------------------------------------------------------ deploy (ship's second half)

def refuse_unattended_pause(pause: bool, yes: bool, reporter: Reporter) -> None:
    """--pause needs a person at a terminal; without one, --yes skips the pause. `ship` asks this before
    it builds anything, `deploy` before it takes the lock."""
    if pause and not reporter.interactive and not yes:
        raise UserError("--pause asks a person to check the canary, and there is no terminal: "
                        "run it interactively or pass --yes to skip the pause")


def deploy(cfg, release: Release, *, yes: bool, pause: bool, reporter: Reporter,
           build_timings: dict[str, float] | None = None, target: Target | None = None) -> RunResult:
    """Roll `release` out to the stack in waves, with the release phase, gates, rollback and purge.

    build_timings: the build half's phases (seconds) when `ship` ran it, kept in the run-start record."""
    refuse_unattended_pause(pause, yes, reporter)
    target = target or targets.for_config(cfg)
    run_id, steps, from_version, from_revision, jr = _begin(
        cfg, target, op="deploy", version=release.version, revision=release.revision, release=release,
        plan=lambda state: plan_deploy(cfg, release, state.services, pause=pause), build_timings=build_timings)
    reporter.info(f"run {run_id}: {from_version or '?'} → {release.version} on {target.stack} (journal {jr.path})")
    with SignalGuard(reporter.info) as guard:
        ctx = _context(cfg, target, jr, run_id, reporter, guard, yes, from_revision)
        return run_steps(ctx, steps, op="deploy", version=release.version, from_version=from_version,
                         from_revision=from_revision, release_lock=lambda: lock_mod.release(target, run_id))


# ------------------------------------------------------------------ resume / abort

class OrphanLockReleased(Exception):
    """resume/abort found no run to continue, but the lock of a run that died before it wrote its journal
    (killed between taking the lock and its first record): released."""

    def __init__(self, holder: LockInfo):
        super().__init__(holder.run_id)
        self.holder = holder


def _orphan_lock(cfg, target: Target) -> LockInfo | None:
    """The lock of a run that never started: no journal of its run id here, and its process is dead (on
    this host) or its lock expired. Such a run changed nothing; its lock can go."""
    holder = target.read_lock()
    if holder is None or (J.runs_dir(repo_root(cfg)) / f"{holder.run_id}.jsonl").exists():
        return None
    if holder.expired(time.time()) or not _alive(holder):
        return holder
    return None


def _take_over(cfg, target: Target, v: J.RunView) -> None:
    holder = target.read_lock()
    if holder is not None and holder.run_id == v.run_id and _alive(holder):
        raise UserError(f"run {v.run_id} is still running (pid {holder.pid} on {holder.host}): wait for it, "
                        "or stop it with Ctrl-C (it rolls back)")
    lock_mod.acquire(target, _lock_info(cfg, v.run_id, v.version or "?"), take_over_run=True)


def _reopen_unfinished(cfg, verb: str, none_left: str, check=None, target: Target | None = None):
    """The stack's unfinished run, its lock taken over and its journal reopened: (view, target, journal)."""
    root = repo_root(cfg)
    stack = cfg.target.stack
    v = history.unfinished(root, stack)
    if v is None:
        target = target or targets.for_config(cfg)
        orphan = _orphan_lock(cfg, target)
        if orphan is not None:
            lock_mod.release(target, orphan.run_id)
            raise OrphanLockReleased(orphan)
        kind = "interrupted" if verb == "resume" else "unfinished"
        raise UserError(f"no {kind} run on stack {stack} in {J.runs_dir(root)}: {none_left}")
    if check is not None:
        check(v)
    target = target or targets.for_config(cfg)
    _take_over(cfg, target, v)
    return v, target, J.Journal.open(root, v.run_id)


def _orphan_result(cfg, holder: LockInfo, op: str, reporter: Reporter) -> RunResult:
    msg = (f"run {holder.run_id} ({holder.owner}, pid {holder.pid} on {holder.host}) took the lock and stopped "
           "before it changed anything: released its lock; nothing else to do")
    reporter.ok(msg)
    return RunResult(holder.run_id, op, J.ABORTED, holder.version, None, J.runs_dir(repo_root(cfg)), detail=msg)


def resume(cfg, *, reporter: Reporter, yes: bool = True, target: Target | None = None) -> RunResult:
    """Continue the interrupted run from its last completed step, deciding from the LIVE state."""

    def resumable(v: J.RunView) -> None:
        if v.state in (J.ROLLING_BACK, J.ROLLBACK_FAILED):
            raise UserError(f"run {v.run_id} stopped while rolling back: `stackpatch abort` finishes restoring "
                            "the previous images")

    try:
        v, target, jr = _reopen_unfinished(cfg, "resume", "nothing to resume (see `stackpatch history`)",
                                           check=resumable, target=target)
    except OrphanLockReleased as o:
        return _orphan_result(cfg, o.holder, "resume", reporter)
    owner, host, pid = J.owner_host_pid()
    jr.append("resume", owner=owner, host=host, pid=pid, after=v.last_step, done=v.done_steps)
    reporter.info(f"resuming run {v.run_id} ({v.from_version or '?'} → {v.version}) after "
                  f"{v.last_step or 'the start'}")
    from_revision = v.start.get("from_revision")
    with SignalGuard(reporter.info) as guard:
        ctx = _context(cfg, target, jr, v.run_id, reporter, guard, yes, from_revision, v.job_results)
        return run_steps(ctx, v.plan, op=v.op, version=v.version, from_version=v.from_version,
                         from_revision=from_revision, done=v.done_steps, touched=v.started_steps,
                         release_lock=lambda: lock_mod.release(target, v.run_id))


def abort(cfg, *, reporter: Reporter, target: Target | None = None) -> RunResult:
    """Put every service the unfinished run may have changed back on its recorded previous image."""
    try:
        v, target, jr = _reopen_unfinished(cfg, "abort", "nothing to abort (to go back to an earlier release: "
                                                         "`stackpatch rollback`)", target=target)
    except OrphanLockReleased as o:
        return _orphan_result(cfg, o.holder, "abort", reporter)
    owner, host, pid = J.owner_host_pid()
    jr.append("abort", owner=owner, host=host, pid=pid, after=v.last_step)
    reporter.info(f"aborting run {v.run_id}: restoring the images recorded before it")
    steps = v.plan
    touched = [s["id"] for s in steps if s["kind"] == "update"]
    from_revision = v.start.get("from_revision")
    res = RunResult(v.run_id, v.op, J.RUNNING, v.version, v.from_version, jr.path)
    with SignalGuard(reporter.info) as guard:
        ctx = _context(cfg, target, jr, v.run_id, reporter, guard, True, from_revision)
        t0 = time.monotonic()
        state = run_rollback(ctx, steps, touched, from_revision, reason="stackpatch abort")
    res.timings["rollback"] = time.monotonic() - t0
    if state != J.ROLLED_BACK:
        raise FaultError(f"abort of run {v.run_id} did not complete (see {jr.path}): fix the target and "
                         "run `stackpatch abort` again; the lock stays held")
    jr.append("state", state=J.ABORTED)
    res.state = J.ABORTED
    lock_mod.release(target, v.run_id)
    return res


# ------------------------------------------------------------------ rollback command

def rollback(cfg, *, reporter: Reporter, to: str | None = None, target: Target | None = None) -> RunResult:
    """Return every service to a release recorded in the history (default: the one before the last)."""
    images, version, revision = history.rollback_source(repo_root(cfg), cfg.target.stack, to)
    images = {s: img for s, img in images.items() if s in cfg.target.services}
    target = target or targets.for_config(cfg)
    run_id, steps, from_version, from_revision, jr = _begin(
        cfg, target, op="rollback", version=version, revision=revision, release=None,
        plan=lambda state: plan_rollback(cfg, state.services, images, version, revision))
    reporter.info(f"run {run_id}: rollback {from_version or '?'} → {version or '?'} on {target.stack}")
    with SignalGuard(reporter.info) as guard:
        ctx = _context(cfg, target, jr, run_id, reporter, guard, True, from_revision)
        return run_steps(ctx, steps, op="rollback", version=version, from_version=from_version,
                         from_revision=from_revision, release_lock=lambda: lock_mod.release(target, run_id))


# ------------------------------------------------------------------ purge again

def purge(cfg, *, reporter: Reporter) -> RunResult:
    """Retry only the CDN purge of the newest run marked `deployed, purge failed`."""
    root = repo_root(cfg)
    if cfg.cdn is None:
        raise UserError("no [cdn] section in stackpatch.toml: there is nothing to purge")
    for v in history.runs(root):
        if v.start.get("stack") != cfg.target.stack:
            continue
        if v.state != J.PURGE_FAILED:
            raise UserError(f"the newest run {v.run_id} is {v.state}, not `deployed, purge failed`: "
                            "nothing to retry")
        jr = J.Journal.open(root, v.run_id)
        res = RunResult(v.run_id, v.op, v.state, v.version, v.from_version, jr.path)
        ctx = _context(cfg, None, jr, v.run_id, reporter, SignalGuard(reporter.info), True, None)
        run_purge(ctx, res)
        return res
    raise UserError(f"no run recorded in {J.runs_dir(root)}: nothing to purge")


# ------------------------------------------------------------------ status

def status(cfg, target: Target | None = None) -> dict:
    """Per service: version, revision, image digest, replicas; the lock; the newest run."""
    target = target or targets.for_config(cfg)
    state = target.read_state()
    last = history.last_run(repo_root(cfg))
    out_services = {}
    for name, s in state.services.items():
        out_services[name] = {
            "full_name": s.full_name, "version": s.version, "revision": s.revision,
            "image": str(s.image), "digest": s.image.digest,
            "replicas": {"running": s.replicas_running, "desired": s.replicas_desired},
            "update_state": s.update_state, "run_id": s.labels.get("stackpatch.run-id"),
            "previous_image": s.labels.get("stackpatch.previous-image"),
            "managed": name in cfg.target.services}
    from dataclasses import asdict
    lock = state.lock
    return {"stack": target.stack, "engine": target.where, "services": out_services,
            "lock": ({**asdict(lock), "expired": lock.expired(time.time()), "holder": lock_mod.describe(lock)}
                     if lock else None),
            "last_run": last.to_json() if last else None}
