"""Acting on a plan: run the steps one by one, journal intent before and result after, roll back on failure.

The runner trusts nothing it remembers: before a step it can look at the live service, and a resumed
run decides from the live state which update steps are already done. Rollback puts every service the
run touched back on the EXACT image recorded before it (never Swarm's one-level rollback) and then
checks that the old revision is serving.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stackpatch.errors import EngineError, FaultError, StackpatchError, UserError
from stackpatch.release import journal as J
from stackpatch.release.converge import wait_converged, watch_settling
from stackpatch.release.deploy_plan import undo_order
from stackpatch.reporter import Reporter
from stackpatch.targets.base import LABEL_RUN_ID, Target, same_image

Progress = Callable[[str], None]


class Interrupted(FaultError):
    """Ctrl-C or SIGTERM arrived: the run stops and rolls back."""


class TargetUnreachable(FaultError):
    """The engine stopped answering mid-run: nothing can be changed or undone until it is back."""


@dataclass
class RunResult:
    run_id: str
    op: str
    state: str
    version: str | None
    from_version: str | None
    journal: Path
    timings: dict[str, float] = field(default_factory=dict)
    detail: str | None = None
    purge_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state in (J.DEPLOYED, J.PURGE_FAILED)

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "op": self.op, "state": self.state, "version": self.version,
                "from_version": self.from_version, "journal": str(self.journal),
                "timings": {k: round(v, 2) for k, v in self.timings.items()}, "detail": self.detail,
                "purge_error": self.purge_error}


class SignalGuard:
    """SIGINT/SIGTERM set a flag that the runner checks between and inside steps (never mid-API-call).
    While rolling back, signals are noted but do not stop the rollback."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.signum: int | None = None
        self.shielded = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.shielded:
            self.progress("signal received while rolling back: finishing the rollback first")
            return
        self.signum = signum

    def check(self) -> None:
        if self.signum is not None and not self.shielded:
            name = signal.Signals(self.signum).name
            raise Interrupted(f"interrupted by {name}")


@dataclass
class Context:
    """Everything the steps act on. Built by deploy.py; the only path to the stack is `target`, the
    only path to a person is `reporter`."""

    cfg: Any
    target: Target | None
    journal: J.Journal
    run_id: str
    reporter: Reporter
    guard: SignalGuard
    yes: bool = False
    from_revision: str | None = None
    purge: Callable[[], Any] | None = None
    renew: Callable[[], Any] | None = None   # renews the lock (the run's heartbeat)
    renew_every: float = 60.0
    job_results: dict[str, int] = field(default_factory=dict)  # from the journal: jobs that ended
    settling: dict[str, dict] = field(default_factory=dict)    # update steps whose monitor window is open
    reconnects: int = 0                                         # outages of the target survived so far
    _renewed: float = field(default_factory=time.monotonic)

    def progress(self, msg: str) -> None:
        self.reporter.info(msg)

    def renew_if_due(self) -> None:
        """The heartbeat: renew the lock every `renew_every` seconds while the run lives, so a run longer
        than timeouts.lock_ttl keeps it. Called from every wait; a renewal that fails is reported, and
        the run goes on (an unreachable target stops it as any other call would)."""
        if self.renew is None or time.monotonic() - self._renewed < self.renew_every:
            return
        self._renewed = time.monotonic()
        try:
            self.renew()
        except Exception as e:  # noqa: BLE001
            if self.target is not None and self.target.is_unreachable(e):
                raise
            self.reporter.warn(f"could not renew the lock: {e}")

    def tick(self) -> None:
        """Between and inside waits: stop on a pending signal, keep the lock alive."""
        self.guard.check()
        self.renew_if_due()


def _http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"User-Agent": "stackpatch", "Cache-Control": "no-cache"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - configured URL
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _retry(ctx: Context, what: str, timeout: float, fn: Callable[[], tuple[bool, str]],
           stop: bool = True) -> None:
    """Call fn until it says ok, every 0.5 s for `timeout` seconds; then a FaultError with its last word.
    With stop, a pending SIGINT/SIGTERM interrupts the wait (not during a rollback's own checks)."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        if stop:
            ctx.guard.check()
        ctx.renew_if_due()
        try:
            ok, last = fn()
        except (OSError, urllib.error.URLError, ValueError) as e:
            ok, last = False, str(getattr(e, "reason", e))
        if ok:
            return
        if time.monotonic() >= deadline:
            raise FaultError(f"{what} failed for {timeout:.0f}s: {last}")
        time.sleep(0.5)


MAX_RECONNECTS = 5  # outages one run waits out; then the next one stops it for `resume`


def reconnecting(ctx: Context, where: str, fn: Callable[[], Any], again: Callable[[], Any] | None = None) -> Any:
    """Run fn (a step, or one part of a step); when the target stops answering in it, wait for the target
    (`_await_target`), then run `again` (if given) and fn again. Every step is safe to run twice: an
    update already made is not sent again, a pre-pull or release job of the run is adopted by its name, a
    release job that ended is never started again, a wait or a check only looks."""
    retry = False
    while True:
        try:
            if retry and again is not None:
                again()
            return fn()
        except BaseException as e:  # noqa: BLE001 - anything but a lost target goes on as it was
            if not _await_target(ctx, where, e):
                raise
            retry = True


def _await_target(ctx: Context, where: str, e: BaseException) -> bool:
    """The target stopped answering (a manager's dockerd restarting, a dropped ssh connection): wait for
    it to answer again, at most timeouts.reconnect seconds, journaled. True when it is back; False for any
    other error, when waiting is off (0), or after MAX_RECONNECTS outages in this run."""
    if isinstance(e, TargetUnreachable) or ctx.target is None or not ctx.target.is_unreachable(e):
        return False
    budget = float(getattr(getattr(ctx.cfg, "timeouts", None), "reconnect", 0) or 0)
    if budget <= 0 or ctx.reconnects >= MAX_RECONNECTS:
        return False
    ctx.reconnects += 1
    detail = _describe(e)
    ctx.journal.append("reconnect", step=where, phase="lost", detail=detail)
    ctx.reporter.warn(f"the target stopped answering during {where} ({detail}): reconnecting, for up to "
                      f"{budget:.0f}s (timeouts.reconnect)")
    t0 = time.monotonic()
    back = ctx.target.reconnect(budget, stop=ctx.guard.check)
    took = round(time.monotonic() - t0, 3)
    ctx.journal.append("reconnect", step=where, phase="back" if back else "gave-up", seconds=took)
    if back:
        ctx.progress(f"the target answers again after {took:.1f}s: {where} goes on from the live state")
    return back


# ------------------------------------------------------------------ the steps

def start_update(ctx: Context, step: dict, *, undo: bool = False) -> None:
    """Point the service at the step's image (its previous one for an undo) unless it runs it already."""
    image = step["previous_image"] if undo else step["image"]
    labels = dict(step["previous_labels"]) if undo else {**step["labels"], LABEL_RUN_ID: ctx.run_id}
    svc = step["service"]
    live = ctx.target.read_service(svc)
    if live is None:
        raise FaultError(f"service {svc} is gone from stack {ctx.target.stack}: check `docker stack ps`")
    if not same_image(str(live.image), image) or any(live.labels.get(k) != v for k, v in labels.items()):
        order = ctx.target.update_image(svc, image, labels, ctx.progress)
        ctx.progress(f"{svc}: → {image} ({order})")


def wait_update(ctx: Context, step: dict, *, undo: bool = False, early: bool = False) -> float:
    """Wait until every task of the service runs the step's image, healthy. With `early` (a later step
    of the run will look again), the wait ends when only Swarm's monitor window is left; the step is
    then watched (`settle`) by the steps that follow instead of waited for."""
    image = step["previous_image"] if undo else step["image"]
    took = wait_converged(ctx.target, step["service"], image, step.get("timeout", 300), ctx.progress,
                          stop=ctx.renew_if_due if undo else ctx.tick, early=early and not undo)
    if early and not undo:
        ctx.settling[step["id"]] = step
    return took


def settle(ctx: Context, *, final: bool) -> None:
    """Look at the services whose monitor window is open: a new task that failed or turned unhealthy in
    it fails the current step (the run rolls back). With `final`, wait until Swarm completed each of
    their updates: the run is never called deployed inside a window."""
    for sid, step in list(ctx.settling.items()):
        if final:
            wait_converged(ctx.target, step["service"], step["image"], step.get("timeout", 300), ctx.progress,
                           stop=ctx.tick)
            done = True
        else:
            done = watch_settling(ctx.target, step["service"], step["image"])
        if done:
            del ctx.settling[sid]
            ctx.progress(f"{step['service']}: update completed by Swarm")


def do_update(ctx: Context, step: dict, *, undo: bool = False) -> float:
    start_update(ctx, step, undo=undo)
    return wait_update(ctx, step, undo=undo)


def do_gate(ctx: Context, step: dict) -> None:
    cfg = ctx.cfg
    front = (cfg.target.front_url or "").rstrip("/")
    for c in step["checks"]:
        name = c["name"]
        if c.get("url"):
            url = c["url"].replace("{front_url}", front)
            want = (c.get("body_contains") or "").replace("{revision}", step["revision"]).replace(
                "{version}", step["version"])

            def probe(url=url, want=want, status=c["status"]) -> tuple[bool, str]:
                code, body = _http_get(url)
                if code != status:
                    return False, f"GET {url} answered {code}, expected {status}"
                if want and want not in body:
                    return False, f"GET {url} body does not contain {want!r}"
                return True, "ok"
        else:
            argv = [a.replace("{revision}", step["revision"]).replace("{version}", step["version"])
                    for a in c["command"]]

            said: set[str] = set()

            def probe(svc=c["service"], argv=argv, said=said) -> tuple[bool, str]:
                code, out = ctx.target.exec(svc, argv, 60)
                head = out.split("\n", 1)[0]
                if head.startswith("[ran as job ") and svc not in said:  # where the check ran, said once
                    said.add(svc)
                    ctx.progress(f"check {name}: {head.strip('[]')}")
                tail = out.strip().splitlines()[-1:] or [""]
                return code == 0, f"`{' '.join(argv)}` in {svc} exited {code}: {tail[0][:200]}"
        _retry(ctx, f"check {name!r}", step.get("timeout", 60), probe)
        ctx.progress(f"check {name}: ok")
    if step.get("pause"):
        if ctx.reporter.interactive:
            name = getattr(cfg, "target_name", None)
            ctx.progress(f"wave {step['wave']} is live: check inside it now: `stackpatch shell"
                         f"{f' --target {name}' if name and cfg.targets else ''}` in another terminal opens a "
                         f"shell in a task of {cfg.target.resolved_waves()[0].services[0]} on stack "
                         f"{cfg.target.stack} (engine {ctx.target.where})")
            if not ctx.reporter.confirm("Continue the rollout?"):
                raise Interrupted("stopped at the pause by the person checking the canary")
        elif ctx.yes:
            ctx.progress(f"pause after wave {step['wave']} skipped: no terminal and --yes")
        else:  # deploy() refuses this combination up front; this is the last guard
            raise UserError("--pause needs a terminal: run it interactively or pass --yes")


def job_name(run_id: str, step_id: str) -> str:
    """The release job's service name: deterministic from the run and the step (tenant included), so a
    resumed run finds the job an interrupted one started instead of starting a second."""
    import hashlib
    return "sp-release-" + hashlib.sha256(f"{run_id}/{step_id}".encode()).hexdigest()[:12]


def run_job(target: Target, name: str, step: dict, output: Callable[[str], None], *,
            ended: Callable[[int], None] = lambda code: None, every: Callable[[], None] = lambda: None) -> int:
    """Run the step's command once (adopting a job of the same name that is still there), stream its
    output, return its exit code. `ended(code)` runs before the job is removed (the journal records it
    there, so a resumed run never starts it again); `every()` runs at each look (the heartbeat)."""
    job_id = target.start_job(name, step["service"], step["image"], step["command"], step["env"])
    return follow_job(target, job_id, name, step, output, ended=ended, every=every)


def follow_job(target: Target, job_id: str, name: str, step: dict, output: Callable[[str], None], *,
               ended: Callable[[int], None] = lambda code: None, every: Callable[[], None] = lambda: None
               ) -> int:
    """Wait for a started job to end: its exit code, journaled by `ended` before the job is removed."""
    deadline = time.monotonic() + step.get("timeout", 600)
    seen = 0
    while True:
        every()
        st = target.job_status(job_id)
        for ln in st.logs[seen:]:
            output(ln)
        seen = max(seen, len(st.logs))
        if st.state == "complete":
            break
        if st.state in ("failed", "rejected", "shutdown", "orphaned"):
            code = st.exit_code
            if code is None or code == 0:
                output(f"job task {st.state}: {st.detail}")
                code = 125 if st.state == "rejected" else (code or 1)
            ended(int(code))
            target.remove_job(job_id)
            return int(code)
        if time.monotonic() >= deadline:
            raise FaultError(f"the release command did not finish within {step.get('timeout', 600):.0f}s "
                             "(raise migrations.timeout if it is just slow); the job is left running as "
                             f"{name}: check it before `stackpatch resume` or `abort`")
        time.sleep(target.poll_s)
    ended(0)
    target.remove_job(job_id)
    return 0


def pull_name(run_id: str, step_id: str, i: int) -> str:
    """The pre-pull job of the step's i-th image: deterministic, so a resumed run adopts it."""
    import hashlib
    return "sp-pull-" + hashlib.sha256(f"{run_id}/{step_id}/{i}".encode()).hexdigest()[:12]


def do_prepull(ctx: Context, step: dict) -> None:
    """Every node that may run a new task pulls its image, all images at once; the first node that cannot
    pull fails the step naming the node and the engine's reason. The jobs are removed in every ending."""
    t = ctx.target
    jobs: list[tuple[str, dict]] = []
    try:
        for i, item in enumerate(step["images"]):
            jobs.append((t.start_pull(pull_name(ctx.run_id, step["id"], i), item["image"], item["services"]),
                         item))
        deadline = time.monotonic() + step.get("timeout", 300)
        reported: set[tuple[str, str]] = set()
        while True:
            ctx.tick()
            waiting = []
            for jid, item in jobs:
                nodes = t.pull_status(jid)
                for n in nodes:
                    if n.state == "failed":
                        raise FaultError(f"node {n.node} could not pull {item['image']} (for "
                                         f"{', '.join(item['services'])}): {n.detail}: check the registry "
                                         "credentials ([registry]) and that node's access to the registry")
                    if n.state == "pulled" and (n.node, item["image"]) not in reported:
                        reported.add((n.node, item["image"]))
                        ctx.progress(f"pre-pull: {n.node} has {item['image']}")
                pending = [n.node for n in nodes if n.state != "pulled"]
                if pending or not nodes:
                    waiting.append(f"{item['image']} on {', '.join(pending) or 'no node yet'}")
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise FaultError(f"the pre-pull did not finish within {step.get('timeout', 300):.0f}s (waiting for "
                                 f"{'; '.join(waiting)}): check those nodes (`docker node ls`) or raise "
                                 "timeouts.prepull")
            time.sleep(t.poll_s)
    finally:
        for jid, _ in jobs:
            try:
                t.remove_job(jid)
            except Exception as e:  # noqa: BLE001 - never mask the step's outcome; abort/resume remove it
                if t.is_unreachable(e):
                    raise
                ctx.progress(f"could not remove the pre-pull job: {e}")


def settle_jobs(ctx: Context, steps: list[dict], started: list[str]) -> None:
    """Before an interrupted run is undone: every release job it may have started ends first. A job
    still running is waited for (a migration is never cut in the middle) and its end journaled; a job
    whose end is journaled but that is still there (killed before its removal) is removed. A pre-pull
    job left behind is removed (a pull changes nothing that needs waiting for)."""
    for step in steps:
        sid = step["id"]
        if step["kind"] == "prepull" and sid in started:
            for i in range(len(step["images"])):
                left = ctx.target.find_job(pull_name(ctx.run_id, sid, i))
                if left is not None:
                    ctx.target.remove_job(left)
                    ctx.progress(f"{sid}: removed its pre-pull job, left by the interrupted run")
            continue
        if step["kind"] != "migrate" or sid not in started:
            continue
        name = job_name(ctx.run_id, sid)
        job_id = ctx.target.find_job(name)
        if job_id is None:
            continue
        if sid in ctx.job_results:
            ctx.target.remove_job(job_id)
            ctx.progress(f"release phase {sid}: removed its job {name}, which had ended")
            continue
        ctx.progress(f"release phase {sid}: its job {name} is still there; waiting for it to end")
        code = follow_job(ctx.target, job_id, name, step, lambda ln: ctx.progress(f"  │ {ln}"),
                          ended=lambda c, sid=sid, name=name: _job_ended(ctx, sid, name, c), every=ctx.renew_if_due)
        ctx.progress(f"release phase {sid}: its job ended (exit {code})")


def _job_ended(ctx: Context, sid: str, name: str, code: int) -> None:
    ctx.journal.append("job", step=sid, job=name, exit_code=code)
    ctx.job_results[sid] = code


def do_migrate(ctx: Context, step: dict) -> None:
    ctx.progress(f"release phase: `{' '.join(step['command'])}` once from {step['image']}"
                 + (f" ({', '.join(f'{k}={v}' for k, v in step['env'].items())})" if step["env"] else ""))
    sid = step["id"]
    if sid in ctx.job_results:  # the job ended before the run was interrupted: never run it twice
        code = ctx.job_results[sid]
        ctx.progress(f"release phase {sid}: its job already ended (exit {code}) before the interruption")
        left = ctx.target.find_job(job_name(ctx.run_id, sid))
        if left is not None:  # killed between journaling its end and removing it
            ctx.target.remove_job(left)
    else:
        name = job_name(ctx.run_id, sid)
        # never interrupted mid-migration: a signal acts after it
        code = run_job(ctx.target, name, step, lambda ln: ctx.progress(f"  │ {ln}"),
                       ended=lambda c: _job_ended(ctx, sid, name, c), every=ctx.renew_if_due)
    if code != 0:
        raise FaultError(f"the release command `{' '.join(step['command'])}` exited {code}")


def check_serving(ctx: Context, url: str, revision: str, timeout: float, stop: bool = True) -> None:
    def probe() -> tuple[bool, str]:
        code, body = _http_get(url)
        if code != 200:
            return False, f"GET {url} answered {code}"
        got = json.loads(body).get("revision")
        return got == revision, f"{url} serves revision {got}, expected {revision}"
    _retry(ctx, "the check that the front serves the expected revision", timeout, probe, stop=stop)


STEP_FUNCS = {"update": do_update, "gate": do_gate, "migrate": do_migrate, "prepull": do_prepull}
WATCHING = ("gate", "migrate", "serving")  # the steps after which the open monitor windows are looked at


# ------------------------------------------------------------------ running

def run_steps(ctx: Context, steps: list[dict], *, op: str, version: str | None, from_version: str | None,
              from_revision: str | None, done: list[str] | None = None,
              touched: list[str] | None = None, release_lock: Callable[[], None] | None = None) -> RunResult:
    """Run `steps`; on a failure after something changed, roll back. Always journals where it stopped."""
    jr = ctx.journal
    done = list(done or [])
    res = RunResult(ctx.run_id, op, J.RUNNING, version, from_version, jr.path)
    touched = [sid for sid in (touched or done) if sid.startswith("update:")]
    t_run = time.monotonic()
    current = None
    def intent(step: dict) -> None:
        ctx.progress(f"{step['id']} …")
        jr.append("intent", step=step["id"], step_kind=step["kind"],
                  **{k: v for k, v in step.items() if k not in ("id", "kind")})

    def result(sid: str, took: float) -> None:
        res.timings[sid] = took
        jr.append("result", step=sid, ok=True, seconds=round(took, 3))
        ctx.progress(f"{sid}: ok ({took:.1f}s)")

    try:
        i = 0
        while i < len(steps):
            step = steps[i]
            sid = step["id"]
            current = sid
            ctx.guard.check()
            if step["kind"] == "update":
                # the services of one wave update together: every update is sent, then each is waited for
                group = [step]
                while i + len(group) < len(steps) and steps[i + len(group)]["kind"] == "update" \
                        and steps[i + len(group)].get("wave") == step.get("wave"):
                    group.append(steps[i + len(group)])
                t0 = time.monotonic()
                for u in group:
                    current = u["id"]
                    intent(u)
                    if u["id"] not in touched:
                        touched.append(u["id"])
                    reconnecting(ctx, u["id"], lambda u=u: start_update(ctx, u))
                # a later gate, release phase or serving check watches Swarm's monitor window instead
                early = any(s["kind"] in WATCHING and s["id"] not in done for s in steps[i + len(group):])
                for u in group:
                    current = u["id"]
                    # after a lost target, the update is made again first if the live service lacks it
                    reconnecting(ctx, u["id"], lambda u=u: wait_update(ctx, u, early=early),
                                 again=lambda u=u: start_update(ctx, u))
                    result(u["id"], time.monotonic() - t0)
                i += len(group)
                continue
            i += 1
            if sid in done:
                ctx.progress(f"{sid}: done before, skipped")
                continue
            if step["kind"] == "purge":
                break  # after success only, handled below
            intent(step)
            t0 = time.monotonic()
            if step["kind"] == "serving":
                check_serving(ctx, step["url"], step["revision"], step.get("timeout", 60))
            else:
                reconnecting(ctx, sid, lambda step=step: STEP_FUNCS[step["kind"]](ctx, step))
            if ctx.settling:
                final = not any(s["kind"] in WATCHING and s["id"] not in done for s in steps[i:])
                reconnecting(ctx, sid, lambda final=final: settle(ctx, final=final))
            result(sid, time.monotonic() - t0)
        if ctx.settling:  # never reached by a plan's steps (a watching step comes last); a safety net
            reconnecting(ctx, "settle", lambda: settle(ctx, final=True))
        current = None
    except BaseException as e:  # noqa: BLE001 - every way out is journaled, then re-raised as a FaultError
        detail = _describe(e)
        if current:
            jr.append("result", step=current, ok=False, detail=detail)
        if _is_unreachable(ctx, e):
            jr.append("state", state=J.INTERRUPTED, detail=f"target unreachable at {current}: {detail}")
            res.state, res.detail = J.INTERRUPTED, detail
            raise TargetUnreachable(
                f"the target stopped answering at step {current} ({detail}): nothing was undone; once it is "
                f"back, `stackpatch resume` continues run {ctx.run_id} or `stackpatch abort` restores the "
                "previous images") from None
        if not touched:
            jr.append("state", state=J.FAILED, detail=f"at {current}: {detail}")
            res.state = J.FAILED
            _release(release_lock)
            raise _as_fault(e, f"{detail} (stopped at {current}; nothing was changed)") from None
        state = rollback(ctx, steps, touched, from_revision, reason=f"at {current}: {detail}")
        res.state = state
        if state == J.ROLLED_BACK:
            _release(release_lock)
            raise _as_fault(e, f"{detail} (at {current}); rolled back every changed service to its previous "
                            f"image, the old revision serves again (journal {jr.path})") from None
        raise FaultError(f"{detail} (at {current}); the rollback did not complete ({_what_runs(ctx, steps, touched)}): "
                         f"the lock stays held; fix the target, then `stackpatch abort` (journal {jr.path})") from None

    res.timings["total"] = time.monotonic() - t_run
    if any(s["kind"] == "purge" for s in steps) and "purge" not in done:
        # not final until the purge's result is written: a run killed during the purge is resumed
        jr.append("state", state=J.PURGING, seconds=round(res.timings["total"], 3))
        res.state = J.PURGING
        run_purge(ctx, res)
    else:
        jr.append("state", state=J.DEPLOYED, seconds=round(res.timings["total"], 3))
        res.state = J.DEPLOYED
    _release(release_lock)
    return res


def run_purge(ctx: Context, res: RunResult) -> None:
    """The CDN purge, after success only. A failure leaves the run `deployed, purge failed`."""
    jr = ctx.journal
    jr.append("intent", step="purge", step_kind="purge")
    t0 = time.monotonic()
    try:
        detail = ctx.purge() if ctx.purge else None
    except Exception as e:  # noqa: BLE001 - any purge failure is "deployed, purge failed"
        msg = _describe(e)
        jr.append("result", step="purge", ok=False, detail=msg)
        jr.append("state", state=J.PURGE_FAILED, detail=msg)
        res.state, res.purge_error = J.PURGE_FAILED, msg
        ctx.progress(f"CDN purge failed: {msg}: the release is deployed; `stackpatch purge` retries the purge")
        return
    res.timings["purge"] = time.monotonic() - t0
    jr.append("result", step="purge", ok=True, seconds=round(res.timings["purge"], 3),
              detail=detail.to_json() if hasattr(detail, "to_json") else None)
    ctx.progress("CDN purge: ok")
    jr.append("state", state=J.DEPLOYED, detail="purged")
    res.state = J.DEPLOYED


def rollback(ctx: Context, steps: list[dict], touched: list[str], from_revision: str | None,
             reason: str) -> str:
    """Undo every update step the run touched, newest first, to the exact recorded previous image."""
    jr = ctx.journal
    jr.append("state", state=J.ROLLING_BACK, detail=reason)
    ctx.progress(f"rolling back ({reason})")
    ctx.guard.shielded = True
    t0 = time.monotonic()
    try:
        for step in undo_order(steps, touched):
            sid = step["id"]
            jr.append("intent", step=sid, undo=True, image=step["previous_image"])
            try:
                took = reconnecting(ctx, f"undo {sid}", lambda step=step: do_update(ctx, step, undo=True))
            except BaseException as e:  # noqa: BLE001
                jr.append("result", step=sid, undo=True, ok=False, detail=_describe(e))
                jr.append("state", state=J.ROLLBACK_FAILED, detail=f"undo {sid}: {_describe(e)}")
                ctx.progress(f"rollback of {step['service']} failed: {_describe(e)}")
                return J.ROLLBACK_FAILED
            jr.append("result", step=sid, undo=True, ok=True, seconds=round(took, 3))
            ctx.progress(f"{step['service']}: back on {step['previous_image']}")
        if ctx.cfg.target.front_url and from_revision:
            try:
                check_serving(ctx, ctx.cfg.target.front_url.rstrip("/") + "/version", from_revision,
                              ctx.cfg.timeouts.check, stop=False)
            except FaultError as e:
                jr.append("state", state=J.ROLLBACK_FAILED, detail=str(e))
                return J.ROLLBACK_FAILED
        took = time.monotonic() - t0
        jr.append("state", state=J.ROLLED_BACK, seconds=round(took, 3), detail=reason)
        ctx.progress(f"rolled back in {took:.1f}s")
        return J.ROLLED_BACK
    finally:
        ctx.guard.shielded = False


def _what_runs(ctx: Context, steps: list[dict], touched: list[str]) -> str:
    """Where a failed rollback left each touched service: "phpfiles on the previous image, phpha on the
    new one", from a fresh look at the target."""
    parts = []
    for step in (s for s in steps if s["id"] in touched):
        try:
            live = ctx.target.read_service(step["service"])
        except Exception:  # noqa: BLE001 - the message must come out even when the target does not answer
            parts.append(f"{step['service']} unknown (the target does not answer)")
            continue
        if live is None:
            parts.append(f"{step['service']} gone")
        elif same_image(str(live.image), step["previous_image"]):
            parts.append(f"{step['service']} back on the previous image")
        elif same_image(str(live.image), step["image"]):
            parts.append(f"{step['service']} still on the new image")
        else:
            parts.append(f"{step['service']} on {live.image}")
    return ", ".join(parts) or "no service was changed"


def _release(release_lock: Callable[[], None] | None) -> None:
    if release_lock:
        try:
            release_lock()
        except Exception:  # noqa: BLE001 - the lock expires anyway; never mask the run's outcome
            pass


def _describe(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by SIGINT"
    if isinstance(e, StackpatchError):
        return str(e)
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def _is_unreachable(ctx: Context, e: BaseException) -> bool:
    return isinstance(e, TargetUnreachable) or (ctx.target is not None and ctx.target.is_unreachable(e))


def _as_fault(e: BaseException, msg: str) -> StackpatchError:
    if isinstance(e, UserError) and not isinstance(e, EngineError):
        return UserError(msg)
    if isinstance(e, (Interrupted, KeyboardInterrupt)):
        return Interrupted(msg)
    return FaultError(msg)
