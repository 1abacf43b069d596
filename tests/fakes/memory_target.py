"""An in-memory Target: the state machine of a stack in plain Python, so the runner, rollback, resume and
abort run in milliseconds without Docker. It implements the whole `stackpatch.targets.base.Target`
protocol; what an image does when a service is pointed at it is scripted per image:

  "ok"         the new tasks run healthy at the next look (the default)
  "unhealthy"  the new tasks run but their healthcheck fails: the update never converges
  "stuck"      the new tasks never start (pending): the update never converges
  "crash"      the new tasks exit 1: Swarm pauses the update (not transient)
  "flaky"      the first attempt fails before the process runs (an engine hiccup: transient pause),
               `retry_update` then succeeds
  "swarm-rollback"  Swarm's own failure_action rolled the service back (update_state rollback_completed)
  "refuse"     the engine refuses the update itself (FaultError), e.g. to make a rollback fail

It is a narrow fake for speed (httpx's MockTransport in spirit), never a replacement: the real swarm
runs every path that reaches Docker in the other tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from stackpatch.errors import EngineUnreachable, FaultError
from stackpatch.targets.base import (ImageRef, JobStatus, LockInfo, Observation, ServiceState, TargetState,
                                     TaskView)


@dataclass
class _Service:
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    behaviour: str = "ok"
    update_state: str | None = None
    updated_at: str = "2026-01-01T00:00:00"
    retried: bool = False


@dataclass
class Job:
    name: str
    template: str
    image: str
    command: list[str]
    env: dict[str, str]
    polls: int = 0
    removed: bool = False


class MemoryTarget:
    kind = "memory"

    def __init__(self, stack: str, services: dict[str, str], *, replicas: dict[str, int] | None = None,
                 labels: dict[str, dict[str, str]] | None = None):
        self.stack = stack
        self.services = {n: _Service(img, dict((labels or {}).get(n, {})), (replicas or {}).get(n, 1))
                         for n, img in services.items()}
        self.behaviour: dict[str, str] = {}          # image ref -> behaviour
        self.job_exit: dict[str, int] = {}           # job env value (tenant) or "" -> exit code
        self.job_polls = 1                           # looks before a job completes
        self.exec_results: dict[str, tuple[int, str]] = {}  # service -> (code, output)
        self.jobs: dict[str, Job] = {}
        self.job_starts: list[str] = []              # names of jobs really started (not adopted)
        self.updates: list[tuple[str, str]] = []     # (service, image) in order
        self.lock: LockInfo | None = None
        self.renewals = 0
        self.reachable = True
        self.unreachable_after: dict[str, int] = {}  # method name -> calls left before the target goes away
        self._clock = 0

    # ------------------------------------------------------------ plumbing

    @property
    def where(self) -> str:
        return f"memory://{self.stack}"

    def _call(self, what: str) -> None:
        left = self.unreachable_after.get(what)
        if left is not None:
            if left <= 0:
                self.reachable = False
            else:
                self.unreachable_after[what] = left - 1
        if not self.reachable:
            raise EngineUnreachable(f"the target {self.where} does not answer ({what})")

    def is_unreachable(self, e: BaseException) -> bool:
        return isinstance(e, EngineUnreachable)

    def _tick(self) -> str:
        self._clock += 1
        return f"2026-01-01T00:{self._clock // 60:02d}:{self._clock % 60:02d}"

    # ------------------------------------------------------------ reading

    def _state(self, name: str) -> ServiceState:
        s = self.services[name]
        running = s.replicas if self._converged(s) else 0
        return ServiceState(name=name, full_name=f"{self.stack}_{name}", id=name, image=ImageRef.parse(s.image),
                            labels=dict(s.labels), image_labels={}, replicas_desired=s.replicas,
                            replicas_running=running, update_state=s.update_state)

    def read_state(self, *, image_labels: bool = True) -> TargetState:
        self._call("read_state")
        return TargetState(self.stack, {n: self._state(n) for n in sorted(self.services)}, self.lock)

    def read_service(self, name: str) -> ServiceState | None:
        self._call("read_service")
        return self._state(name) if name in self.services else None

    # ------------------------------------------------------------ updating

    def update_image(self, name: str, image: str, labels: dict[str, str | None], progress) -> str:
        self._call("update_image")
        s = self.services[name]
        behaviour = self.behaviour.get(image, "ok")
        if behaviour == "refuse":
            raise FaultError(f"the engine refused to update {self.stack}_{name}: scripted refusal")
        s.image = image
        for k, v in labels.items():
            if v is None:
                s.labels.pop(k, None)
            else:
                s.labels[k] = v
        s.behaviour = behaviour
        s.retried = False
        s.updated_at = self._tick()
        s.update_state = "completed" if behaviour == "ok" else None
        self.updates.append((name, image))
        return "start-first"

    def retry_update(self, name: str) -> None:
        self._call("retry_update")
        s = self.services[name]
        s.retried = True
        s.updated_at = self._tick()

    def _converged(self, s: _Service) -> bool:
        return s.behaviour == "ok" or (s.behaviour == "flaky" and s.retried)

    def observe(self, name: str, image: str) -> Observation:
        self._call("observe")
        s = self.services[name]
        b = "ok" if self._converged(s) else s.behaviour
        if b == "ok":
            tasks = [TaskView("running", "running", s.image, s.updated_at, s.updated_at, health="healthy")
                     for _ in range(s.replicas)]
            return Observation(name, s.image, "completed", "update completed", s.updated_at, s.replicas, tuple(tasks))
        if b == "unhealthy":
            tasks = [TaskView("running", "running", s.image, s.updated_at, s.updated_at, health="unhealthy")
                     for _ in range(s.replicas)]
            return Observation(name, s.image, "updating", "", s.updated_at, s.replicas, tuple(tasks))
        if b == "stuck":
            tasks = [TaskView("pending", "running", s.image, s.updated_at, s.updated_at) for _ in range(s.replicas)]
            return Observation(name, s.image, "updating", "", s.updated_at, s.replicas, tuple(tasks))
        if b == "crash":
            failed = TaskView("failed", "shutdown", s.image, s.updated_at, s.updated_at,
                              err="task: non-zero exit (1)", exit_code=1)
            return Observation(name, s.image, "paused", "update paused due to failure or early termination of "
                               "task x", s.updated_at, s.replicas, (failed,))
        if b == "flaky":
            failed = TaskView("failed", "shutdown", s.image, s.updated_at, s.updated_at,
                              err="failed to create network sandbox", exit_code=None)
            return Observation(name, s.image, "paused", "update paused", s.updated_at, s.replicas, (failed,))
        if b == "swarm-rollback":
            failed = TaskView("failed", "shutdown", s.image, s.updated_at, s.updated_at,
                              err="task: non-zero exit (2)", exit_code=2)
            return Observation(name, s.image, "rollback_completed", "rollback completed", s.updated_at,
                               s.replicas, (failed,))
        raise AssertionError(f"unknown behaviour {b!r}")

    # ------------------------------------------------------------ jobs

    def start_job(self, name: str, template_service: str, image: str, command: list[str],
                  env: dict[str, str]) -> str:
        self._call("start_job")
        if name in self.jobs and not self.jobs[name].removed:
            return name  # adopted, as the swarm target does
        self.jobs[name] = Job(name, template_service, image, list(command), dict(env))
        self.job_starts.append(name)
        return name

    def job_status(self, job_id: str) -> JobStatus:
        self._call("job_status")
        j = self.jobs[job_id]
        j.polls += 1
        key = next(iter(j.env.values()), "")
        if j.polls < self.job_polls:
            return JobStatus("running", logs=(f"migrating {key}",))
        code = self.job_exit.get(key, 0)
        return JobStatus("complete" if code == 0 else "failed", code, None,
                         (f"migrating {key}", f"done {key}" if code == 0 else f"migration {key} failed"))

    def remove_job(self, job_id: str) -> None:
        self._call("remove_job")
        self.jobs[job_id].removed = True

    # ------------------------------------------------------------ exec

    def exec(self, service: str, argv: list[str], timeout: float) -> tuple[int, str]:
        self._call("exec")
        return self.exec_results.get(service, (0, "ok\n"))

    # ------------------------------------------------------------ lock

    def read_lock(self) -> LockInfo | None:
        self._call("read_lock")
        return self.lock

    def create_lock(self, info: LockInfo) -> bool:
        self._call("create_lock")
        if self.lock is not None:
            return False
        self.lock = replace(info)
        return True

    def remove_lock(self, run_id: str | None) -> bool:
        self._call("remove_lock")
        if self.lock is None or (run_id is not None and self.lock.run_id != run_id):
            return False
        self.lock = None
        return True

    def renew_lock(self, run_id: str, expires_at: float) -> bool:
        self._call("renew_lock")
        if self.lock is None or self.lock.run_id != run_id:
            return False
        self.lock = replace(self.lock, expires_at=expires_at)
        self.renewals += 1
        return True

    # ------------------------------------------------------------ for assertions

    def images(self) -> dict[str, str]:
        return {n: s.image for n, s in self.services.items()}
