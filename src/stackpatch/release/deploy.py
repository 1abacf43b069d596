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

from stackpatch import hooks, notify, targets
from stackpatch.errors import FaultError, UserError
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.release import lock as lock_mod
from stackpatch.release.deploy_plan import plan_deploy, plan_rollback
from stackpatch.release.model import Release
from stackpatch.release.runner import (Context, RunResult, SignalGuard, rollback as run_rollback, run_purge, run_steps,
                                      settle_jobs)
from stackpatch.reporter import Reporter
from stackpatch.targets.base import LockInfo, Target, TargetState, deployed_release


def repo_root(cfg) -> Path:
    return cfg.root


def _lock_info(cfg, run_id: str, version: str) -> LockInfo:
    owner, host, pid = J.owner_host_pid()
    now = time.time()
    return LockInfo(owner=owner, host=host, pid=pid, version=version, run_id=run_id, started_at=now,
                    expires_at=now + cfg.timeouts.lock_ttl, boot_id=lock_mod.boot_id())


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
                                    f"{_orphan_words(cfg, orphan)}: `stackpatch abort` releases the lock") \
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
    """The holder may still run: see `lock.holder_alive` (an expired lock's holder counts as gone)."""
    return lock_mod.holder_alive(holder)


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
                target={"kind": target.kind, "where": target.where, "name": cfg.target_name},
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
           plan: Callable[[TargetState], list[dict]], build_timings: dict | None = None, run_id: str | None = None,
           extra: dict | None = None):
    """Take the lock, read the live stack, plan from it and write the run-start: (run id, steps,
    from_version, from_revision, journal). The lock goes back if anything here fails."""
    run_id = run_id or J.new_run_id()
    _lock_then_check_unfinished(cfg, target, _lock_info(cfg, run_id, version or "?"))
    try:
        state = target.read_state()
        steps = plan(state)
        from_version, from_revision = deployed_now(cfg, state)
        jr = J.Journal.create(repo_root(cfg), run_id)
        extra = {**({"build_timings": build_timings or {}} if op == "deploy" else {}), **(extra or {})}
        jr.append("run-start", **_start_record(cfg, target, run_id=run_id, op=op, version=version,
                                               revision=revision, from_version=from_version,
                                               from_revision=from_revision, steps=steps, release=release),
                  **extra)
    except BaseException:
        lock_mod.release(target, run_id)
        raise
    return run_id, steps, from_version, from_revision, jr


# ------------------------------------------------------------------ after a run: post hooks

def _outcome(op: str, state: str) -> tuple[str | None, str | None]:
    """(post hook, event) of a run that ended in `state`: what the team is told, and how."""
    if state in (J.ROLLED_BACK, J.ABORTED, J.ROLLBACK_FAILED):
        return "post-rollback", ("failed" if state == J.ROLLBACK_FAILED else "rolled-back")
    if state in (J.DEPLOYED, J.PURGE_FAILED):
        hook = "post-rollback" if op == "rollback" else "post-deploy"
        if state == J.PURGE_FAILED:
            return hook, "purge-failed"
        return hook, ("rolled-back" if op == "rollback" else "deployed")
    return None, "failed"   # failed before anything changed, or interrupted (target unreachable)


def after_run(cfg, jr: J.Journal, reporter: Reporter) -> None:
    """The post hook and the notifications of a run that just ended (its state read back from the
    journal, so every ending is covered: success, automatic rollback, a failure before any change).
    Both are journaled; neither raises nor changes the outcome."""
    try:
        v = J.view(jr.records())
    except OSError:
        return
    if v is None:
        return
    hook, event = _outcome(v.op, v.state)
    op = "abort" if v.state == J.ABORTED else v.op
    env = hooks.variables(cfg, version=v.version, revision=v.start.get("revision"),
                          previous_version=v.from_version, run_id=v.run_id, operation=op, result=v.state)
    if hook is not None:
        hooks.post(repo_root(cfg), cfg.hooks, hook, env, reporter, journal=jr)
    if cfg.notify and event is not None:
        s = notify.summary(event, op=op, state=v.state, version=v.version, revision=v.start.get("revision"),
                           previous_version=v.from_version, target=env["STACKPATCH_TARGET"], stack=cfg.target.stack,
                           run_id=v.run_id, performer=v.start.get("owner") or env["STACKPATCH_PERFORMER"],
                           services=list(cfg.target.services), detail=v.detail, journal=str(jr.path),
                           steps_done=v.done_steps, started_at=v.started_at, ended_at=v.ended_at)
        notify.send(cfg.notify, event, s, reporter, journal=jr)


def _ending(cfg, jr: J.Journal, reporter: Reporter, go: Callable[[SignalGuard], RunResult]) -> RunResult:
    """Run `go` under the signal guard (Ctrl-C rolls back), then, outside it, the post hook."""
    try:
        with SignalGuard(reporter.info) as guard:
            res = go(guard)
    except BaseException:
        after_run(cfg, jr, reporter)
        raise
    after_run(cfg, jr, reporter)
    return res


# ------------------------------------------------------------------ deploy (ship's second half)

def refuse_unattended_pause(pause: bool, yes: bool, reporter: Reporter) -> None:
    """--pause needs a person at a terminal; without one, --yes skips the pause. `ship` asks this before
    it builds anything, `deploy` before it takes the lock."""
    if pause and not reporter.interactive and not yes:
        raise UserError("--pause asks a person to check the canary, and there is no terminal: "
                        "run it interactively or pass --yes to skip the pause")


def deploy(cfg, release: Release, *, yes: bool, pause: bool, reporter: Reporter,
           build_timings: dict[str, float] | None = None, target: Target | None = None,
           promoted_from: str | None = None, build_beside: tuple[str, ...] = ()) -> RunResult:
    """Roll `release` out to the stack in waves, with the release phase, gates, rollback and purge.

    build_timings: the build half's phases (seconds) when `ship` ran it, kept in the run-start record;
    build_beside: those of them that ran side by side from one start (the builds), kept there too;
    promoted_from: the target `promote` took the release from, kept there too."""
    refuse_unattended_pause(pause, yes, reporter)
    target = target or targets.for_config(cfg)
    run_id = J.new_run_id()
    if hooks.find(repo_root(cfg), cfg.hooks, "pre-deploy", reporter) is not None:
        previous, _ = deployed_now(cfg, target.read_state())
        hooks.pre(repo_root(cfg), cfg.hooks, "pre-deploy",
                  hooks.variables(cfg, version=release.version, revision=release.revision,
                                  previous_version=previous, run_id=run_id, operation="deploy"),
                  reporter, unchanged=f"the images are pushed; stack {target.stack} was not touched")
    run_id, steps, from_version, from_revision, jr = _begin(
        cfg, target, op="deploy", version=release.version, revision=release.revision, release=release,
        plan=lambda state: plan_deploy(cfg, release, state.services, pause=pause), build_timings=build_timings,
        run_id=run_id, extra={**({"promoted_from": promoted_from} if promoted_from else {}),
                              **({"build_beside": list(build_beside)} if build_beside else {})} or None)
    reporter.info(f"run {run_id}: {from_version or '?'} → {release.version} on {target.stack} (journal {jr.path})")
    return _ending(cfg, jr, reporter, lambda guard: run_steps(
        _context(cfg, target, jr, run_id, reporter, guard, yes, from_revision), steps, op="deploy",
        version=release.version, from_version=from_version, from_revision=from_revision,
        release_lock=lambda: lock_mod.release(target, run_id)))


# ------------------------------------------------------------------ resume / abort

class OrphanLockReleased(Exception):
    """resume/abort found no run to continue, but the lock of a run that died before it wrote its journal
    (killed between taking the lock and its first record): released."""

    def __init__(self, holder: LockInfo):
        super().__init__(holder.run_id)
        self.holder = holder


def _orphan_lock(cfg, target: Target) -> LockInfo | None:
    """The lock of a run with nothing left to do: no journal of its run id here (it died between taking
    the lock and its first record: it changed nothing), or a journal that reached a final state (it died
    between its last record and handing the lock back); and its process is dead (on this host) or its
    lock expired. Such a lock can go."""
    holder = target.read_lock()
    if holder is None:
        return None
    path = J.runs_dir(repo_root(cfg)) / f"{holder.run_id}.jsonl"
    if path.exists():
        v = J.view(J.read_records(path))
        if v is None or not v.finished:
            return None
    elif _changed_by(target, holder.run_id):
        return None   # it did change the stack: its journal is elsewhere (another clone, another machine)
    if not _alive(holder):
        return holder
    return None


def _changed_by(target: Target, run_id: str) -> list[str]:
    """The services that carry the run's id label: it changed them (the runner labels every update)."""
    from stackpatch.targets.base import LABEL_RUN_ID
    return [n for n, s in target.read_state(image_labels=False).services.items()
            if s.labels.get(LABEL_RUN_ID) == run_id]


def _journal_elsewhere(cfg, target: Target) -> None:
    """No unfinished run here, but the lock's run changed services: its journal lives in another clone.
    Refuse (never release that lock as an orphan), saying where it is and what to do."""
    holder = target.read_lock()
    if holder is None or (J.runs_dir(repo_root(cfg)) / f"{holder.run_id}.jsonl").exists():
        return
    changed = _changed_by(target, holder.run_id)
    if changed:
        raise UserError(f"stack {target.stack} is locked by run {holder.run_id} of {holder.owner} on {holder.host}, "
                        f"which changed {', '.join(changed)}, and its journal is not in {J.runs_dir(repo_root(cfg))}: "
                        f"run `stackpatch resume` or `abort` in the clone that started it, or copy its "
                        f"{holder.run_id}.jsonl from {holder.host} into that directory and run it here")


def _orphan_words(cfg, holder: LockInfo) -> str:
    path = J.runs_dir(repo_root(cfg)) / f"{holder.run_id}.jsonl"
    v = J.view(J.read_records(path)) if path.exists() else None
    if v is not None:
        return f"ended ({v.state}) but stopped before it released the lock"
    return "took the lock and stopped before it changed anything"


def _take_over(cfg, target: Target, v: J.RunView) -> None:
    holder = target.read_lock()
    if holder is not None and holder.run_id == v.run_id and _alive(holder):
        import socket
        elsewhere = holder.host != socket.gethostname() or (holder.boot_id and holder.boot_id != lock_mod.boot_id())
        raise UserError(f"run {v.run_id} may still be running (pid {holder.pid} on {holder.host}): " + (
            f"it is another machine, so only its lock's expiry proves it gone ({lock_mod.describe(holder)}); "
            "stop it there, or wait for the expiry" if elsewhere else
            "wait for it, or stop it with Ctrl-C (it rolls back)"))
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
        _journal_elsewhere(cfg, target)
        kind = "interrupted" if verb == "resume" else "unfinished"
        raise UserError(f"no {kind} run on stack {stack} in {J.runs_dir(root)}: {none_left}")
    if check is not None:
        check(v)
    target = target or targets.for_config(cfg)
    _take_over(cfg, target, v)
    return v, target, J.Journal.open(root, v.run_id)


def _orphan_result(cfg, holder: LockInfo, op: str, reporter: Reporter) -> RunResult:
    msg = (f"run {holder.run_id} ({holder.owner}, pid {holder.pid} on {holder.host}) {_orphan_words(cfg, holder)}: "
           "released its lock; nothing else to do")
    reporter.ok(msg)
    return RunResult(holder.run_id, op, J.ABORTED, holder.version, None, J.runs_dir(repo_root(cfg)), detail=msg)


def resume(cfg, *, reporter: Reporter, yes: bool = True, target: Target | None = None) -> RunResult:
    """Continue the interrupted run from its last completed step, deciding from the LIVE state. A run
    stopped while it was being undone (its rollback or an `abort` interrupted) is undone to the end."""
    try:
        v, target, jr = _reopen_unfinished(cfg, "resume", "nothing to resume (see `stackpatch history`)",
                                           target=target)
    except OrphanLockReleased as o:
        return _orphan_result(cfg, o.holder, "resume", reporter)
    owner, host, pid = J.owner_host_pid()
    jr.append("resume", owner=owner, host=host, pid=pid, after=v.last_step, done=v.done_steps)
    if v.aborting or v.state in (J.ROLLING_BACK, J.ROLLBACK_FAILED):
        what = "an abort" if v.aborting else "a rollback"
        reporter.info(f"run {v.run_id} stopped during {what}: finishing it (restoring the images recorded "
                      "before the run)")
        return _restore(cfg, v, target, jr, reporter, final=J.ABORTED if v.aborting else J.ROLLED_BACK,
                        reason=v.detail if v.state == J.ROLLING_BACK and v.detail else f"resume of {what}")
    reporter.info(f"resuming run {v.run_id} ({v.from_version or '?'} → {v.version}) after "
                  f"{v.last_step or 'the start'}")
    from_revision = v.start.get("from_revision")
    return _ending(cfg, jr, reporter, lambda guard: run_steps(
        _context(cfg, target, jr, v.run_id, reporter, guard, yes, from_revision, v.job_results), v.plan, op=v.op,
        version=v.version, from_version=v.from_version, from_revision=from_revision, done=v.done_steps,
        touched=v.started_steps, release_lock=lambda: lock_mod.release(target, v.run_id)))


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
    return _restore(cfg, v, target, jr, reporter, final=J.ABORTED, reason="stackpatch abort")


def _restore(cfg, v: J.RunView, target: Target, jr: J.Journal, reporter: Reporter, *, final: str,
             reason: str) -> RunResult:
    """Undo an unfinished run: its release jobs end first (never cut mid-migration, never left behind),
    then every update step goes back to its recorded previous image (a no-op where it already is)."""
    steps = v.plan
    touched = [s["id"] for s in steps if s["kind"] == "update"]
    from_revision = v.start.get("from_revision")
    res = RunResult(v.run_id, v.op, J.RUNNING, v.version, v.from_version, jr.path)

    def go(guard: SignalGuard) -> RunResult:
        ctx = _context(cfg, target, jr, v.run_id, reporter, guard, True, from_revision, v.job_results)
        settle_jobs(ctx, steps, v.started_steps)
        t0 = time.monotonic()
        state = run_rollback(ctx, steps, touched, from_revision, reason=reason)
        res.timings["rollback"] = time.monotonic() - t0
        if state != J.ROLLED_BACK:
            verb = "abort" if final == J.ABORTED else "rollback"
            raise FaultError(f"the {verb} of run {v.run_id} did not complete (see {jr.path}): fix the target and "
                             f"run `stackpatch {'abort' if final == J.ABORTED else 'resume'}` again; the lock "
                             "stays held")
        if final == J.ABORTED:
            jr.append("state", state=J.ABORTED)
        res.state = final
        lock_mod.release(target, v.run_id)
        return res
    return _ending(cfg, jr, reporter, go)


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
    return _ending(cfg, jr, reporter, lambda guard: run_steps(
        _context(cfg, target, jr, run_id, reporter, guard, True, from_revision), steps, op="rollback",
        version=version, from_version=from_version, from_revision=from_revision,
        release_lock=lambda: lock_mod.release(target, run_id)))


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
    return {"target": cfg.target_name, "stack": target.stack, "engine": target.where, "services": out_services,
            "lock": ({**asdict(lock), "expired": lock.expired(time.time()), "holder": lock_mod.describe(lock)}
                     if lock else None),
            "last_run": last.to_json() if last else None}
