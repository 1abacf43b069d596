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

from stackpatch import config as config_mod
from stackpatch import ui
from stackpatch.errors import UserError
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.release.deploy_plan import deployed_from, plan_deploy, plan_rollback
from stackpatch.release.model import Release
from stackpatch.release.runner import Context, RunResult, SignalGuard, rollback as run_rollback, run_purge, run_steps
from stackpatch.target import lock as lock_mod
from stackpatch.target import rollout
from stackpatch.target.base import LockInfo

Progress = Callable[[str], None]


def _progress(progress: Progress | None) -> Progress:
    # plain text: image refs and the release command's output must not be read as Rich markup
    return progress or (lambda msg: ui.err.print(msg, markup=False, highlight=False))


def repo_root(cfg) -> Path:
    return cfg.root


def _registry_auth(cfg, client) -> str | None:
    user, password = config_mod.registry_credentials(cfg)
    if not (user and password) and not cfg.registry.use_docker_config:
        return None
    return rollout.registry_auth_header(client, cfg.registry.host, user, password)


def _lock_info(cfg, run_id: str, version: str) -> LockInfo:
    owner, host, pid = J.owner_host_pid()
    now = time.time()
    return LockInfo(owner=owner, host=host, pid=pid, version=version, run_id=run_id, started_at=now,
                    expires_at=now + cfg.timeouts.lock_ttl)


def _purger(cfg, progress: Progress) -> Callable[[], Any]:
    def go():
        from stackpatch import cdn
        progress(f"CDN purge ({cfg.cdn.provider}, {cfg.cdn.purge}) …")
        return cdn.purge(cfg.cdn, env=os.environ,
                         progress=lambda done, total: progress(f"CDN purge: {done}/{total} requests accepted"))
    return go


def _refuse_if_unfinished(cfg) -> None:
    v = history.unfinished(repo_root(cfg), cfg.target.stack)
    if v is not None:
        where = f" at step {v.last_step}" if v.last_step else ""
        raise UserError(f"run {v.run_id} on stack {cfg.target.stack} did not finish ({v.state}{where}): "
                        "`stackpatch resume` continues it or `stackpatch abort` restores the previous images")


def _lock_then_check_unfinished(cfg, client, info: LockInfo) -> None:
    """Take the lock first (another machine's run is refused by it, naming the holder); a lock held by
    this repo's own unfinished run, or an unfinished run found after taking it, is refused with what
    to do (`resume` or `abort`)."""
    stack = cfg.target.stack
    try:
        lock_mod.acquire(client, stack, info)
    except lock_mod.LockHeld:
        v = history.unfinished(repo_root(cfg), stack)
        holder = lock_mod.read(client, stack)
        if v is not None and holder is not None and holder.run_id == v.run_id and not _alive(holder):
            _refuse_if_unfinished(cfg)
        raise
    try:
        _refuse_if_unfinished(cfg)
    except UserError:
        lock_mod.release(client, stack, info.run_id)
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


def _start_record(cfg, *, run_id: str, op: str, version: str | None, revision: str | None,
                  from_version: str | None, from_revision: str | None, steps: list[dict],
                  release: Release | None) -> dict:
    owner, host, pid = J.owner_host_pid()
    return dict(run_id=run_id, op=op, owner=owner, host=host, pid=pid, stack=cfg.target.stack,
                version=version, revision=revision, from_version=from_version, from_revision=from_revision,
                release=release.to_json() if release else None, plan=steps,
                previous={s["service"]: s["previous_image"] for s in steps if s["kind"] == "update"})


def _context(cfg, client, jr: J.Journal, run_id: str, progress: Progress, guard: SignalGuard,
             yes: bool, from_revision: str | None) -> Context:
    return Context(cfg=cfg, client=client, journal=jr, run_id=run_id,
                   registry_auth=_registry_auth(cfg, client) if client is not None else None,
                   progress=progress, guard=guard, yes=yes, from_revision=from_revision,
                   purge=_purger(cfg, progress) if cfg.cdn is not None else None)


def _release_lock(client, stack: str, run_id: str) -> Callable[[], None]:
    return lambda: lock_mod.release(client, stack, run_id)


# ------------------------------------------------------------------ deploy (ship's second half)

def deploy(cfg, release: Release, *, yes: bool, pause: bool, progress: Progress | None = None,
           build_timings: dict[str, float] | None = None) -> RunResult:
    """Roll `release` out to the stack in waves, with the release phase, gates, rollback and purge.

    build_timings: the build half's phases (seconds) when `ship` ran it, kept in the run-start record."""
    progress = _progress(progress)
    if pause and not ui.is_tty() and not yes:
        raise UserError("--pause asks a person to check the canary, and there is no terminal: "
                        "run it interactively or pass --yes to skip the pause")
    stack = cfg.target.stack
    client = rollout.connect_target(cfg.target)
    run_id = J.new_run_id()
    _lock_then_check_unfinished(cfg, client, _lock_info(cfg, run_id, release.version))
    try:
        services = rollout.read_stack(client, stack)
        steps = plan_deploy(cfg, release, services, run_id, pause=pause)
        from_version, from_revision = deployed_from(services, list(cfg.target.services))
        jr = J.Journal.create(repo_root(cfg), run_id)
        jr.append("run-start", **_start_record(cfg, run_id=run_id, op="deploy", version=release.version,
                                               revision=release.revision, from_version=from_version,
                                               from_revision=from_revision, steps=steps, release=release),
                  build_timings=build_timings or {})
    except BaseException:
        lock_mod.release(client, stack, run_id)
        raise
    progress(f"run {run_id}: {from_version or '?'} → {release.version} on {stack} (journal {jr.path})")
    with SignalGuard(progress) as guard:
        ctx = _context(cfg, client, jr, run_id, progress, guard, yes, from_revision)
        return run_steps(ctx, steps, op="deploy", version=release.version, from_version=from_version,
                         from_revision=from_revision, release_lock=_release_lock(client, stack, run_id))


# ------------------------------------------------------------------ resume / abort

def _take_over(cfg, client, v: J.RunView) -> None:
    holder = lock_mod.read(client, cfg.target.stack)
    if holder is not None and holder.run_id == v.run_id and _alive(holder):
        raise UserError(f"run {v.run_id} is still running (pid {holder.pid} on {holder.host}): wait for it, "
                        "or stop it with Ctrl-C (it rolls back)")
    lock_mod.acquire(client, cfg.target.stack, _lock_info(cfg, v.run_id, v.version or "?"), take_over_run=True)


def _reopen_unfinished(cfg, verb: str, none_left: str, check=None):
    """The stack's unfinished run, its lock taken over and its journal reopened: (view, client, journal)."""
    root = repo_root(cfg)
    stack = cfg.target.stack
    v = history.unfinished(root, stack)
    if v is None:
        kind = "interrupted" if verb == "resume" else "unfinished"
        raise UserError(f"no {kind} run on stack {stack} in {J.runs_dir(root)}: {none_left}")
    if check is not None:
        check(v)
    client = rollout.connect_target(cfg.target)
    _take_over(cfg, client, v)
    return v, client, J.Journal.open(root, v.run_id)


def resume(cfg, *, yes: bool = True, progress: Progress | None = None) -> RunResult:
    """Continue the interrupted run from its last completed step, deciding from the LIVE state."""
    progress = _progress(progress)
    stack = cfg.target.stack

    def resumable(v: J.RunView) -> None:
        if v.state in (J.ROLLING_BACK, J.ROLLBACK_FAILED):
            raise UserError(f"run {v.run_id} stopped while rolling back: `stackpatch abort` finishes restoring "
                            "the previous images")

    v, client, jr = _reopen_unfinished(cfg, "resume", "nothing to resume (see `stackpatch history`)",
                                       check=resumable)
    owner, host, pid = J.owner_host_pid()
    jr.append("resume", owner=owner, host=host, pid=pid, after=v.last_step, done=v.done_steps)
    progress(f"resuming run {v.run_id} ({v.from_version or '?'} → {v.version}) after {v.last_step or 'the start'}")
    from_revision = v.start.get("from_revision")
    steps = v.plan
    with SignalGuard(progress) as guard:
        ctx = _context(cfg, client, jr, v.run_id, progress, guard, yes, from_revision)
        return run_steps(ctx, steps, op=v.op, version=v.version, from_version=v.from_version,
                         from_revision=from_revision, done=v.done_steps, touched=v.started_steps,
                         release_lock=_release_lock(client, stack, v.run_id))


def abort(cfg, *, progress: Progress | None = None) -> RunResult:
    """Put every service the unfinished run may have changed back on its recorded previous image."""
    progress = _progress(progress)
    stack = cfg.target.stack
    v, client, jr = _reopen_unfinished(cfg, "abort", "nothing to abort (to go back to an earlier release: "
                                                     "`stackpatch rollback`)")
    owner, host, pid = J.owner_host_pid()
    jr.append("abort", owner=owner, host=host, pid=pid, after=v.last_step)
    progress(f"aborting run {v.run_id}: restoring the images recorded before it")
    steps = v.plan
    touched = [s["id"] for s in steps if s["kind"] == "update"]
    from_revision = v.start.get("from_revision")
    res = RunResult(v.run_id, v.op, J.RUNNING, v.version, v.from_version, jr.path)
    with SignalGuard(progress) as guard:
        ctx = _context(cfg, client, jr, v.run_id, progress, guard, True, from_revision)
        t0 = time.monotonic()
        state = run_rollback(ctx, steps, touched, from_revision, reason="stackpatch abort")
    res.timings["rollback"] = time.monotonic() - t0
    if state != J.ROLLED_BACK:
        from stackpatch.errors import FaultError
        raise FaultError(f"abort of run {v.run_id} did not complete (see {jr.path}): fix the target and "
                         "run `stackpatch abort` again; the lock stays held")
    jr.append("state", state=J.ABORTED)
    res.state = J.ABORTED
    lock_mod.release(client, stack, v.run_id)
    return res


# ------------------------------------------------------------------ rollback command

def rollback(cfg, *, to: str | None = None, progress: Progress | None = None) -> RunResult:
    """Return every service to a release recorded in the history (default: the one before the last)."""
    progress = _progress(progress)
    root = repo_root(cfg)
    stack = cfg.target.stack
    images, version, revision = history.rollback_source(root, stack, to)
    client = rollout.connect_target(cfg.target)
    run_id = J.new_run_id()
    _lock_then_check_unfinished(cfg, client, _lock_info(cfg, run_id, version or "?"))
    try:
        services = rollout.read_stack(client, stack)
        images = {s: img for s, img in images.items() if s in cfg.target.services}
        steps = plan_rollback(cfg, services, images, version, revision, run_id)
        from_version, from_revision = deployed_from(services, list(cfg.target.services))
        jr = J.Journal.create(root, run_id)
        jr.append("run-start", **_start_record(cfg, run_id=run_id, op="rollback", version=version,
                                               revision=revision, from_version=from_version,
                                               from_revision=from_revision, steps=steps, release=None))
    except BaseException:
        lock_mod.release(client, stack, run_id)
        raise
    progress(f"run {run_id}: rollback {from_version or '?'} → {version or '?'} on {stack}")
    with SignalGuard(progress) as guard:
        ctx = _context(cfg, client, jr, run_id, progress, guard, True, from_revision)
        return run_steps(ctx, steps, op="rollback", version=version, from_version=from_version,
                         from_revision=from_revision, release_lock=_release_lock(client, stack, run_id))


# ------------------------------------------------------------------ purge again

def purge(cfg, *, progress: Progress | None = None) -> RunResult:
    """Retry only the CDN purge of the newest run marked `deployed, purge failed`."""
    progress = _progress(progress)
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
        ctx = Context(cfg=cfg, client=None, journal=jr, run_id=v.run_id, registry_auth=None,
                      progress=progress, guard=SignalGuard(progress), purge=_purger(cfg, progress))
        run_purge(ctx, res)
        return res
    raise UserError(f"no run recorded in {J.runs_dir(root)}: nothing to purge")


# ------------------------------------------------------------------ status

def status(cfg) -> dict:
    """Per service: version, revision, image digest, replicas; the lock; the newest run."""
    client = rollout.connect_target(cfg.target)
    stack = cfg.target.stack
    services = rollout.read_stack(client, stack)
    lock = lock_mod.read(client, stack)
    last = history.last_run(repo_root(cfg))
    out_services = {}
    for name, s in sorted(services.items()):
        out_services[name] = {
            "full_name": s.full_name, "version": s.version, "revision": s.revision,
            "image": str(s.image), "digest": s.image.digest,
            "replicas": {"running": s.replicas_running, "desired": s.replicas_desired},
            "update_state": s.update_state, "run_id": s.labels.get("stackpatch.run-id"),
            "previous_image": s.labels.get("stackpatch.previous-image"),
            "managed": name in cfg.target.services}
    from dataclasses import asdict
    return {"stack": stack, "services": out_services,
            "lock": ({**asdict(lock), "expired": lock.expired(time.time()), "holder": lock_mod.describe(lock)}
                     if lock else None),
            "last_run": last.to_json() if last else None}
