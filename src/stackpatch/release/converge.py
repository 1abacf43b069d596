"""Waiting for a service to run a new image everywhere, healthy: a pure judge over one Observation
and the loop that asks the target for observations. Any target that can `observe` gets the same rules.

Swarm's own automatic rollback (`rollback_started`, `rollback_completed`…) is a failure here: a
service Swarm rolled back does not run the release, whatever `docker stack deploy` exit code says.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from stackpatch.errors import FaultError
from stackpatch.targets.base import TERMINAL_BAD, Observation, Target, TaskView, same_image

Progress = Callable[[str], None]
StopCheck = Callable[[], None]  # raises to stop a wait (Ctrl-C handling)

PAUSED = "paused"
ROLLBACK_STATES = ("rollback_started", "rollback_paused", "rollback_completed")


@dataclass(frozen=True)
class Verdict:
    done: bool
    message: str
    fatal: bool = False
    paused: bool = False      # the update paused on a failed task …
    transient: bool = False   # … that failed before its process ran: retrying the update is safe
    settling: bool = False    # every task runs the new image, healthy; Swarm's monitor window is still open


def failure_is_transient(task: TaskView | None) -> bool:
    """A task that failed before its process ran (engine hiccup: network sandbox, container create)
    rather than an app that exited: retrying the update is safe."""
    if task is None:
        return False
    if task.exit_code not in (None, 0):
        return False
    err = (task.err or "").lower()
    if any(w in err for w in ("no such image", "manifest", "unauthorized", "denied", "not found",
                              "exec format", "executable file")):
        return False
    return bool(err)


def judge(obs: Observation, image: str) -> Verdict:
    """Is the service on `image` everywhere? Pure."""
    if not same_image(obs.spec_image, image):
        return Verdict(False, "the service spec names another image", fatal=True)
    state = obs.update_state
    if state == PAUSED or state in ROLLBACK_STATES:
        failed = max((t for t in obs.tasks if t.state in TERMINAL_BAD and same_image(t.image, image)),
                     key=lambda t: t.updated_at, default=None)
        why = (failed.err if failed else None) or obs.update_message
        if failed is not None and failed.exit_code not in (None, 0):
            why = f"a new task exited with code {failed.exit_code}" + (f" ({why})" if why else "")
        msg = f"update {state}: {why}".strip()
        if state == PAUSED:
            return Verdict(False, msg, paused=True, transient=failure_is_transient(failed))
        return Verdict(False, msg + " (the engine rolled the service back by itself)", fatal=True)
    new = [t for t in obs.tasks if same_image(t.image, image)]
    live = [t for t in obs.tasks if t.desired == "running"]
    running = [t for t in live if t.state == "running"]
    running_new = [t for t in running if same_image(t.image, image)]
    since = obs.updated_at[:19]  # tasks of this update only (not an older one's history)
    failed_new = [t for t in new if t.state in TERMINAL_BAD and t.created_at[:19] >= since]
    want = obs.desired if obs.desired is not None else max(len(live), 1)
    unhealthy = [t for t in running_new if t.health == "unhealthy"]
    msg = f"{len(running_new)}/{want} running on the new image"
    if unhealthy:
        msg += f", {len(unhealthy)} unhealthy"
    if failed_new:
        err = failed_new[-1].err or failed_new[-1].message or "task failed"
        msg += f", {len(failed_new)} new task(s) failed ({err})"
        if len(failed_new) >= max(3, want + 2):
            return Verdict(False, msg, fatal=True)
    if state == "updating":
        # Swarm calls an update completed `update_config.monitor` after the last new task started. A task
        # is only "running" once its healthcheck passed (moby#24545): when every task runs the new image,
        # healthy, the window is all that is left, and stackpatch can watch it instead of sitting in it
        healthy = bool(running_new) and all(t.health == "healthy" for t in running_new)
        if len(running_new) == want and len(running) == want and healthy and not failed_new:
            return Verdict(False, msg + ", healthy (Swarm's monitor window is open)", settling=True)
        return Verdict(False, msg + " (updating)")
    return Verdict(len(running_new) == want and len(running) == want and not unhealthy, msg)


def wait_converged(target: Target, service: str, image: str, timeout: float, progress: Progress,
                   stop: StopCheck | None = None, retries: int = 2,
                   early: bool = False) -> float:
    """Wait until the service runs `image` everywhere, healthy. Retries a paused update whose failure
    was the engine's, not the app's, `retries` times. FaultError on a fatal verdict or the timeout.
    With `early`, a settling verdict (every task new and healthy, Swarm's monitor window still open)
    ends the wait too: the caller then watches the window (`watch_settling`) while it does other work.
    Returns the seconds it took."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = None
    while True:
        if stop:
            stop()
        v = judge(target.observe(service, image), image)
        if v.message != last:
            progress(f"{service}: {v.message}")
            last = v.message
        if v.done or (early and v.settling):
            return time.monotonic() - t0
        if v.paused:
            if not v.transient or retries <= 0:
                raise FaultError(f"{service} did not converge on the new image: {v.message}")
            retries -= 1
            progress(f"{service}: {v.message}: engine hiccup, not the app; retrying the update")
            target.retry_update(service)
            continue
        if v.fatal:
            raise FaultError(f"{service} did not converge on the new image: {v.message}")
        if time.monotonic() >= deadline:
            raise FaultError(f"{service} did not converge within {timeout:.0f}s ({v.message}): "
                             "raise timeouts.converge if it is just slow")
        time.sleep(target.poll_s)


def watch_settling(target: Target, service: str, image: str) -> bool:
    """One look at a service whose wait ended early (settling): True once Swarm completed the update,
    False while its monitor window is still open and nothing failed. FaultError when a new task failed
    or turned unhealthy in the window (Swarm paused or rolled back the update): the run must roll back."""
    v = judge(target.observe(service, image), image)
    if v.done:
        return True
    if v.fatal or v.paused:
        raise FaultError(f"{service} failed in Swarm's monitor window, after its new tasks had started "
                         f"healthy: {v.message}")
    return False
