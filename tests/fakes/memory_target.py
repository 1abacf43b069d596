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
  "monitor"    the new tasks run healthy at once, but Swarm keeps the update `updating` for
               `monitor_looks` more looks (its monitor window) before it calls it completed
  "late-crash" the same, then a new task exits 1 inside the window: Swarm pauses the update

Pre-pulls run on `nodes`; `pull_fail` (node -> the engine's reason) makes a node fail to pull.

It is a narrow fake for speed (httpx's MockTransport in spirit), never a replacement: the real swarm
runs every path that reaches Docker in the other tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from typing import Iterator

from stackpatch.errors import EngineUnreachable, FaultError, UserError
from stackpatch.targets.base import (ImageRef, JobStatus, LockInfo, LogLine, NodePull, Observation, ServiceState,
                                     TargetState, TaskLocation, TaskView)


@dataclass
class _Service:
    image: str
    labels: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    behaviour: str = "ok"
    update_state: str | None = None
    updated_at: str = "2026-01-01T00:00:00"
    retried: bool = False
    looks: int = 0            # observations since the update (the monitor window's clock)


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
    poll_s = 0.01  # its state changes per look, not with time: waiting between looks only slows the tests

    def __init__(self, stack: str, services: dict[str, str], *, replicas: dict[str, int] | None = None,
                 labels: dict[str, dict[str, str]] | None = None):
        self.stack = stack
        self.services = {n: _Service(img, dict((labels or {}).get(n, {})), (replicas or {}).get(n, 1))
                         for n, img in services.items()}
        self.behaviour: dict[str, str] = {}          # image ref -> behaviour
        self.job_exit: dict[str, int] = {}           # job env value (tenant) or "" -> exit code
        self.job_polls = 1                           # looks before a job completes
        self.monitor_looks = 3                       # looks a "monitor"/"late-crash" window stays open
        self.exec_results: dict[str, tuple[int, str]] = {}  # service -> (code, output)
        self.jobs: dict[str, Job] = {}
        self.job_starts: list[str] = []              # names of jobs really started (not adopted)
        self.updates: list[tuple[str, str]] = []     # (service, image) in order
        self.lock: LockInfo | None = None
        self.renewals = 0
        self.shells: list[tuple[str, list[str]]] = []       # (task, argv) of every shell opened
        self.log_lines: dict[str, list[tuple[float, str]]] = {}  # service -> (unix time, line)
        self.nodes: list[str] = ["memory-node"]          # where pre-pulls run
        self.pull_fail: dict[str, str] = {}             # node -> the engine's reason it cannot pull
        self.pulls: list[tuple[str, str, list[str]]] = []  # (job, image, services) of every pull started
        self.reachable = True
        self.unreachable_after: dict[str, int] = {}  # method name -> calls left before the target goes away
        self.comes_back = False                      # `reconnect` finds the target answering again
        self.reconnects = 0                          # calls of `reconnect`
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

    def reconnect(self, timeout: float, stop=None) -> bool:
        """The target answers again when `comes_back` says so (scripted), at once: no waiting here."""
        self.reconnects += 1
        if stop is not None:
            stop()
        if self.comes_back and not self.reachable:
            self.reachable = True
            self.unreachable_after.clear()
        return self.reachable

    def engine_facts(self):
        import time
        from stackpatch.targets.base import EngineFacts
        self._call("engine_facts")
        return EngineFacts("memory", True, "in-memory stack", time.time())

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
        s.looks = 0
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
        return (s.behaviour == "ok" or (s.behaviour == "flaky" and s.retried)
                or (s.behaviour == "monitor" and s.looks > self.monitor_looks))

    def observe(self, name: str, image: str) -> Observation:
        self._call("observe")
        s = self.services[name]
        s.looks += 1
        b = "ok" if self._converged(s) else s.behaviour
        if b in ("monitor", "late-crash") and s.looks <= self.monitor_looks:
            tasks = [TaskView("running", "running", s.image, s.updated_at, s.updated_at, health="healthy")
                     for _ in range(s.replicas)]
            return Observation(name, s.image, "updating", "", s.updated_at, s.replicas, tuple(tasks))
        if b == "late-crash":
            b = "crash"
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

    def find_job(self, name: str) -> str | None:
        self._call("find_job")
        return name if name in self.jobs and not self.jobs[name].removed else None

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

    # ------------------------------------------------------------ pre-pull

    def start_pull(self, name: str, image: str, services: list[str]) -> str:
        self._call("start_pull")
        if name in self.jobs and not self.jobs[name].removed:
            return name
        self.jobs[name] = Job(name, ",".join(services), image, ["true"], {})
        self.pulls.append((name, image, list(services)))
        return name

    def pull_status(self, job_id: str) -> tuple[NodePull, ...]:
        self._call("pull_status")
        j = self.jobs[job_id]
        j.polls += 1
        if j.polls < self.job_polls:
            return tuple(NodePull(n, "pending", "preparing") for n in self.nodes)
        return tuple(NodePull(n, "failed", self.pull_fail[n]) if n in self.pull_fail else NodePull(n, "pulled")
                     for n in self.nodes)

    # ------------------------------------------------------------ exec

    def exec(self, service: str, argv: list[str], timeout: float) -> tuple[int, str]:
        self._call("exec")
        return self.exec_results.get(service, (0, "ok\n"))

    # ------------------------------------------------------------ the developers' shell and logs

    def running_task(self, service: str) -> TaskLocation:
        self._call("running_task")
        if service not in self.services:
            raise UserError(f"stack {self.stack} has no service {service}")
        return TaskLocation(service=service, task=f"{self.stack}_{service}.1", task_id=f"task-{service}-1",
                            node="memory-node", container_id=f"container-{service}-1", local=True)

    def open_shell(self, task: TaskLocation, argv: list[str]) -> int:
        self._call("open_shell")
        self.shells.append((task.task, list(argv)))
        return 0

    def logs(self, service: str, *, since: float | None, follow: bool) -> Iterator[LogLine]:
        self._call("logs")
        if service not in self.services:
            raise UserError(f"stack {self.stack} has no service {service}")
        for t, text in self.log_lines.get(service, []):
            if since is None or t >= since:
                yield LogLine(f"{self.stack}_{service}.1@memory-node", text)

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

    # ------------------------------------------------------------ as plain data (the file-backed variant)

    def to_json(self) -> dict:
        from dataclasses import asdict
        return {"stack": self.stack, "services": {n: asdict(s) for n, s in self.services.items()},
                "behaviour": self.behaviour, "job_exit": self.job_exit, "job_polls": self.job_polls,
                "exec_results": {k: list(v) for k, v in self.exec_results.items()},
                "jobs": {n: asdict(j) for n, j in self.jobs.items()}, "job_starts": self.job_starts,
                "updates": [list(u) for u in self.updates], "lock": asdict(self.lock) if self.lock else None,
                "renewals": self.renewals, "reachable": self.reachable, "nodes": self.nodes,
                "pull_fail": self.pull_fail, "pulls": [list(x) for x in self.pulls],
                "unreachable_after": self.unreachable_after, "clock": self._clock,
                "comes_back": self.comes_back, "reconnects": self.reconnects}

    @classmethod
    def from_json(cls, d: dict) -> "MemoryTarget":
        t = cls(d["stack"], {})
        t.services = {n: _Service(**s) for n, s in d["services"].items()}
        t.behaviour, t.job_exit, t.job_polls = dict(d["behaviour"]), dict(d["job_exit"]), d["job_polls"]
        t.exec_results = {k: (v[0], v[1]) for k, v in d["exec_results"].items()}
        t.jobs = {n: Job(**j) for n, j in d["jobs"].items()}
        t.job_starts, t.updates = list(d["job_starts"]), [tuple(u) for u in d["updates"]]
        t.lock = LockInfo(**d["lock"]) if d["lock"] else None
        t.renewals, t.reachable = d["renewals"], d["reachable"]
        t.nodes, t.pull_fail = list(d.get("nodes", t.nodes)), dict(d.get("pull_fail", {}))
        t.pulls = [(a, b, list(c)) for a, b, c in d.get("pulls", [])]
        t.unreachable_after, t._clock = dict(d["unreachable_after"]), d["clock"]
        t.comes_back, t.reconnects = bool(d.get("comes_back")), int(d.get("reconnects", 0))
        return t
