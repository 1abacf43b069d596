"""The Target protocol and the plain data it reads and returns. No Docker here.

A Target is the one seam between stackpatch and the place that runs the stack. The build half reads
the deployed release through it; the deploy half (release/) updates images, observes convergence,
runs the release phase, execs checks and holds the lock through it, and nothing else. The Docker
Swarm implementation is `targets/swarm/`; a second backend (compose on one host, Kubernetes)
implements the same methods and registers its `target.kind` in `targets/__init__.py`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from stackpatch.errors import UserError

if TYPE_CHECKING:
    from stackpatch.config import Config

# Service labels stackpatch writes on the target (never secrets).
LABEL_VERSION = "stackpatch.version"
LABEL_REVISION = "stackpatch.revision"
LABEL_PREVIOUS = "stackpatch.previous-image"
LABEL_RUN_ID = "stackpatch.run-id"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_VERSION = "org.opencontainers.image.version"


@dataclass(frozen=True)
class ImageRef:
    """`repository[:tag][@digest]` split into its parts."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ImageRef":
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        return cls(ref, tag, digest)

    def __str__(self) -> str:
        s = self.repository
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s


@dataclass(frozen=True)
class UpdateSettings:
    """How the place that runs a service replaces its tasks, and how it tells a task is healthy: the
    input of the update-settings lint (`stackpatch.lint`). Seconds, Swarm's defaults filled in."""

    order: str = "stop-first"          # start-first | stop-first
    failure_action: str = "pause"      # pause | continue | rollback
    monitor: float = 5.0               # seconds the engine watches each new task for a failure
    delay: float = 0.0                 # seconds between two tasks
    parallelism: int = 1
    healthcheck: str = "none"          # service | image | none (no healthcheck) | disabled (NONE)
    health_interval: float | None = None  # seconds, with a healthcheck
    health_retries: int | None = None
    host_ports: tuple[int, ...] = ()   # ports published in host mode (bound on the node)


@dataclass(frozen=True)
class ServiceState:
    name: str                 # without the stack prefix: "phpha"
    full_name: str            # "acme-prod_phpha"
    id: str
    image: ImageRef           # as in the service spec (stack deploy pins a digest)
    labels: dict[str, str]    # service labels
    image_labels: dict[str, str]  # labels of the image (OCI revision/version), {} if unknown
    replicas_desired: int | None  # None for global services
    replicas_running: int
    update_state: str | None  # UpdateStatus.State: updating, completed, paused, rollback_*…
    update: UpdateSettings | None = None  # None: the target cannot tell

    @property
    def revision(self) -> str | None:
        return self.labels.get(LABEL_REVISION) or self.image_labels.get(OCI_REVISION)

    @property
    def version(self) -> str | None:
        return self.labels.get(LABEL_VERSION) or self.image_labels.get(OCI_VERSION)

    def to_json(self) -> dict:
        d = asdict(self)
        d["image"] = str(self.image)
        d["revision"] = self.revision
        d["version"] = self.version
        return d


@dataclass(frozen=True)
class EngineFacts:
    """What `stackpatch doctor` asks the place that runs the stack: its version, whether it can manage
    the stack, and its clock."""

    version: str
    manager: bool          # can change services (a Swarm manager)
    role: str              # for people: "swarm manager", "swarm worker", "not in a swarm"…
    clock: float | None    # the engine's time (unix seconds) when it answered, None if it does not say


@dataclass(frozen=True)
class LockInfo:
    owner: str
    host: str
    pid: int
    version: str
    run_id: str
    started_at: float         # unix time
    expires_at: float
    boot_id: str = ""         # the holder machine's /proc/sys/kernel/random/boot_id ("" when unknown)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class TargetState:
    stack: str
    services: dict[str, ServiceState] = field(default_factory=dict)
    lock: LockInfo | None = None

    def to_json(self) -> dict:
        return {"stack": self.stack,
                "services": {k: v.to_json() for k, v in self.services.items()},
                "lock": asdict(self.lock) if self.lock else None}


Progress = Callable[[str], None]

# task states after which a task will never run again
TERMINAL_BAD = frozenset({"failed", "rejected", "orphaned", "remove"})


def same_image(a: str, b: str) -> bool:
    """Two references name the same image: equal digests when both are pinned, else equal strings."""
    ra, rb = ImageRef.parse(a), ImageRef.parse(b)
    if ra.digest and rb.digest:
        return ra.repository == rb.repository and ra.digest == rb.digest
    return str(ra) == str(rb)


@dataclass(frozen=True)
class TaskView:
    """One task of a service as the target reports it (plain data for the convergence judge)."""

    state: str                  # running, starting, failed, rejected, shutdown, complete…
    desired: str                # running | shutdown | …
    image: str                  # the image the task was created with
    created_at: str = ""        # RFC 3339
    updated_at: str = ""
    err: str | None = None      # the engine's reason for a failed task
    message: str | None = None  # the engine's last word on the task ("started", "finished"…)
    exit_code: int | None = None
    health: str | None = None   # healthy | unhealthy | starting | None (no healthcheck, or unknown)
    node: str | None = None


@dataclass(frozen=True)
class Observation:
    """One look at a service during an update: its spec image, the update's state, its tasks."""

    service: str
    spec_image: str
    update_state: str | None    # updating, completed, paused, rollback_started, rollback_completed…
    update_message: str
    updated_at: str             # when the spec last changed (tasks older than this are history)
    desired: int | None         # None: global service
    tasks: tuple[TaskView, ...] = ()


@dataclass(frozen=True)
class JobStatus:
    """A one-off job (the release phase) as the target reports it."""

    state: str                  # pending, running, complete, failed, rejected, shutdown, orphaned
    exit_code: int | None = None
    detail: str | None = None
    logs: tuple[str, ...] = ()  # every line so far


@dataclass(frozen=True)
class NodePull:
    """One node's part of a pre-pull: whether it has pulled the image."""

    node: str                   # the node's hostname
    state: str                  # pending | pulled | failed
    detail: str | None = None   # the engine's reason when it failed ("No such image: …")


@dataclass(frozen=True)
class TaskLocation:
    """Where one running task of a service is: for people (`shell` says which task and node) and for
    `open_shell`."""

    service: str                # without the stack prefix
    task: str                   # "acme-prod_phpfiles.1"
    task_id: str
    node: str                   # the node's hostname
    container_id: str
    local: bool                 # runs on the node of the engine the target talks to


@dataclass(frozen=True)
class LogLine:
    source: str                 # "acme-prod_phpfiles.1@node-1"
    text: str


class MixedRevisionsError(UserError):
    """Services that run the same image run different revisions."""


class Target(Protocol):
    """What stackpatch needs from a place that runs the stack. Errors: every method raises stackpatch
    errors only (EngineUnreachable when the place does not answer, EngineError when it refuses,
    FaultError when a change is refused mid-run), never a backend's own exceptions."""

    kind: str
    stack: str
    poll_s: float  # seconds between two looks at a converging service, a job or a pre-pull

    @property
    def where(self) -> str:
        """The engine/endpoint it talks to, for people: `unix:///var/run/docker.sock`."""

    def read_state(self, *, image_labels: bool = True) -> TargetState:
        """Every service of the stack with its image, digest, labels and replicas, plus the lock."""

    def read_service(self, name: str) -> ServiceState | None:
        """One service (name without the stack prefix), None when the stack has no such service."""

    def update_image(self, name: str, image: str, labels: dict[str, str | None], progress: Progress) -> str:
        """Point the service at `image` and set (None: remove) stackpatch labels; nothing else in the
        spec changes. Registry credentials travel with the update. Returns the update order used."""

    def retry_update(self, name: str) -> None:
        """Run the service's current update again (after a transient failure)."""

    def observe(self, name: str, image: str) -> Observation:
        """One look at the service's update towards `image`."""

    def start_job(self, name: str, template_service: str, image: str, command: list[str],
                  env: dict[str, str]) -> str:
        """Start `command` once from `image`, cloned from `template_service` (networks, env, mounts).
        A job of that name that exists already is adopted, never started twice. Returns its id."""

    def find_job(self, name: str) -> str | None:
        """The id of the job called `name` if it is still there (never starts one): how resume and abort
        find a job an interrupted run left behind."""

    def job_status(self, job_id: str) -> JobStatus:
        """The job's state, exit code and output so far."""

    def remove_job(self, job_id: str) -> None:
        """Remove the job and whatever it left behind."""

    def start_pull(self, name: str, image: str, services: list[str]) -> str:
        """Start a job called `name` that pulls `image` on every node where a task of `services` may run
        (their placement), with the registry credentials. Adopts a job of that name that is there
        already. Returns its id; `pull_status` follows it, `remove_job` removes it. A target may start
        nothing when no node needs the pull (Swarm: a one-node swarm holding the digest) and say so in
        `pull_status`."""

    def pull_status(self, job_id: str) -> tuple[NodePull, ...]:
        """Per node, whether the pre-pull job has pulled the image there (empty: no node has started)."""

    def exec(self, service: str, argv: list[str], timeout: float) -> tuple[int, str]:
        """Run argv in one running task of the service (the newest): (exit code, output). Wherever the
        task runs: through its node's engine when the target can reach it, else as a one-off job on
        that node from the same image, networks, env and mounts (the output says which)."""

    def running_task(self, service: str) -> TaskLocation:
        """One running task of the service (the lowest slot), and where it runs. UserError when the
        stack has no such service or it has no running task."""

    def open_shell(self, task: TaskLocation, argv: list[str]) -> int:
        """Run argv interactively in the task's container, attached to this terminal; its exit code.
        UserError when the task runs where the target cannot reach it."""

    def logs(self, service: str, *, since: float | None, follow: bool) -> Iterator[LogLine]:
        """The service's output across its tasks (stdout and stderr), oldest first; since: a Unix time;
        follow: keep going until interrupted."""

    def read_lock(self) -> LockInfo | None:
        """The deploy lock held on the stack, or None."""

    def create_lock(self, info: LockInfo) -> bool:
        """Create the lock atomically. False when a lock exists already."""

    def remove_lock(self, run_id: str | None) -> bool:
        """Remove the lock if `run_id` holds it (None: whoever holds it). True when removed."""

    def renew_lock(self, run_id: str, expires_at: float) -> bool:
        """Move the lock's expiry to `expires_at` if `run_id` holds it (the heartbeat). True when renewed."""

    def is_unreachable(self, e: BaseException) -> bool:
        """True when `e` means the target could not be reached (as opposed to a refusal)."""

    def reconnect(self, timeout: float, stop: Callable[[], None] | None = None) -> bool:
        """After `is_unreachable`: connect again, retrying with backoff for at most `timeout` seconds, until
        the target answers for the stack. True when it does; `stop` (called between tries) may raise."""

    def engine_facts(self) -> EngineFacts:
        """The engine's version, role and clock (`stackpatch doctor`)."""


def deployed_release(state: TargetState, cfg: "Config", allow_mixed: bool = False) -> tuple[str | None, str]:
    """(version, revision) deployed on the target. Pure over the state read from it: the one answer
    to "what runs" that `plan`, `start`, `ship` and the journal share.

    Refuses when a configured service is missing, has no revision, or when services that run the same
    image run different revisions (unless allow_mixed: then the revision most services run, the canary's
    on a tie).
    """
    missing = [s for s in cfg.target.services if s not in state.services]
    if missing:
        raise UserError(f"stack {state.stack!r} has no service {', '.join(missing)} "
                        f"(it has: {', '.join(state.services) or 'none'}): check target.stack and target.services")
    unknown = [s for s in cfg.target.services if not state.services[s].revision]
    if len(unknown) == len(cfg.target.services):
        raise UserError(f"cannot find the deployed commit of stack {state.stack!r}: no service has a "
                        "stackpatch.revision label or an image labelled org.opencontainers.image.revision; "
                        "label the images (docker build --label org.opencontainers.image.revision=<sha>)")
    by_image: dict[str, dict[str, list[str]]] = {}
    for svc, img in cfg.target.services.items():
        rev = state.services[svc].revision
        if rev:
            by_image.setdefault(img, {}).setdefault(rev, []).append(svc)
    if not allow_mixed:
        for img, revs in by_image.items():
            if len(revs) > 1:
                parts = "; ".join(f"{', '.join(svcs)} at {rev[:7]}" for rev, svcs in revs.items())
                raise MixedRevisionsError(f"services running image {img!r} run different revisions ({parts}): "
                                          "finish or roll back the half-done deploy, or pass --allow-mixed")
    counts = Counter(state.services[s].revision for s in cfg.target.services if state.services[s].revision)
    canary = cfg.target.resolved_waves()[0].services[0]
    top = max(counts.values())
    tied = [r for r, n in counts.items() if n == top]
    rev = state.services[canary].revision if state.services[canary].revision in tied else tied[0]
    version = next((state.services[s].version for s in cfg.target.services
                    if state.services[s].revision == rev and state.services[s].version), None)
    return version, rev
