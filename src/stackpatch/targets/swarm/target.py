"""The Docker Swarm target: the only code that reads or changes a swarm stack.

Every engine call goes through `client.Engine`, so every Docker error reaches the rest of stackpatch
as a stackpatch error (see client.py). Services are named without the stack prefix everywhere
outside this package; `{stack}_{service}` is built here only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable

from stackpatch.errors import EngineError, EngineObjectMissing, EngineUnreachable, FaultError
from stackpatch.targets.base import (ImageRef, JobStatus, LockInfo, Observation, ServiceState, TargetState,
                                     same_image)
from stackpatch.targets.swarm import spec as S
from stackpatch.targets.swarm.client import STACK_LABEL, Engine, connect, registry_auth_header

if TYPE_CHECKING:
    import docker

    from stackpatch.config import Config

LabelResolver = Callable[[ImageRef], dict[str, str]]
LOCK_LABEL = "stackpatch.lock"
LOCK_EXPIRES_LABEL = "stackpatch.lock.expires-at"  # the heartbeat's renewed expiry


def lock_name(stack: str) -> str:
    """The Swarm config that holds the stack's deploy lock (names are at most 64 characters)."""
    name = f"stackpatch-lock-{stack}"
    if len(name) <= 64:
        return name
    import hashlib
    return f"stackpatch-lock-{stack[:34]}-{hashlib.sha256(stack.encode()).hexdigest()[:12]}"


def decode_lock(data_b64: str | bytes | None) -> LockInfo:
    try:
        data = json.loads(base64.b64decode(data_b64 or b"").decode())
        return LockInfo(owner=str(data["owner"]), host=str(data["host"]), pid=int(data["pid"]),
                        version=str(data["version"]), run_id=str(data["run_id"]),
                        started_at=float(data["started_at"]), expires_at=float(data["expires_at"]))
    except (ValueError, KeyError, TypeError):
        # unreadable lock: held by an unknown owner, expired (so `unlock --force` can clear it)
        return LockInfo("unknown", "unknown", 0, "?", "?", 0.0, 0.0)


def _lock_of(config: dict) -> LockInfo:
    info = decode_lock(config["Spec"].get("Data"))
    try:
        renewed = float((config["Spec"].get("Labels") or {})[LOCK_EXPIRES_LABEL])
    except (KeyError, ValueError):
        return info
    return LockInfo(info.owner, info.host, info.pid, info.version, info.run_id, info.started_at,
                    max(info.expires_at, renewed))


class SwarmTarget:
    """A stack on a Docker Swarm manager. Connects on first use."""

    kind = "swarm"

    def __init__(self, docker_host: str, stack: str, *, tls_verify: bool = False,
                 tls_cert_path: str | None = None, label_resolver: LabelResolver | None = None,
                 registry: tuple[str, str | None, str | None, bool] | None = None):
        self.docker_host = docker_host
        self.stack = stack
        self._tls = (tls_verify, tls_cert_path)
        self._labels = label_resolver
        self._registry = registry  # (host, user, password, use_docker_config): never logged
        self._client: docker.DockerClient | None = None
        self._engine: Engine | None = None
        self._auth: str | None | bool = False  # False: not computed yet

    # ---------------------------------------------------------------- engine

    @property
    def where(self) -> str:
        return self.docker_host

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._client, self._engine = connect(self.docker_host, *self._tls)
        return self._engine

    def _full(self, name: str) -> str:
        return f"{self.stack}_{name}"

    def _registry_auth(self) -> str | None:
        """X-Registry-Auth for updates and jobs, as `--with-registry-auth` sends it."""
        if self._auth is False:
            self.engine  # noqa: B018 - connect first
            if self._registry is None:
                self._auth = None
            else:
                host, user, password, use_cfg = self._registry
                self._auth = registry_auth_header(self._client, host, user, password, use_cfg)
        return self._auth or None

    def _headers(self) -> dict:
        auth = self._registry_auth()
        return {"X-Registry-Auth": auth} if auth else {}

    def is_unreachable(self, e: BaseException) -> bool:
        return isinstance(e, EngineUnreachable)

    # ---------------------------------------------------------------- reading

    def _raw_services(self) -> list[dict]:
        return self.engine.services(filters={"label": f"{STACK_LABEL}={self.stack}"})

    def _running(self, service_id: str) -> int:
        tasks = self.engine.tasks(filters={"service": service_id, "desired-state": "running"})
        return sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running")

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """Labels of an image: the engine's copy if it has one, else the registry's (resolver)."""
        for cand in ([f"{ref.repository}@{ref.digest}"] if ref.digest else []) + [str(ImageRef(ref.repository,
                                                                                                 ref.tag))]:
            try:
                info = self.engine.inspect_image(cand)
                return dict((info.get("Config") or {}).get("Labels") or {})
            except EngineUnreachable:
                raise
            except EngineError:
                continue
        if self._labels is not None:
            try:
                return self._labels(ref)
            except EngineUnreachable:
                raise
            except Exception:  # noqa: BLE001 - unknown labels are reported as unknown, not as a failure
                return {}
        return {}

    def _state(self, raw: dict, image_labels: bool) -> ServiceState:
        image = ImageRef.parse(raw["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
        return S.service_state(self.stack, raw, self._running(raw["ID"]),
                               self.image_labels(image) if image_labels else {})

    def read_state(self, *, image_labels: bool = True) -> TargetState:
        services = {}
        for raw in self._raw_services():
            if (raw["Spec"].get("Labels") or {}).get(S.JOB_LABEL):
                continue  # a release-phase job is not a service of the stack
            st = self._state(raw, image_labels)
            services[st.name] = st
        return TargetState(stack=self.stack, services=dict(sorted(services.items())), lock=self.read_lock())

    def _inspect(self, name: str) -> dict | None:
        try:
            return self.engine.inspect_service(self._full(name))
        except EngineObjectMissing:
            return None

    def read_service(self, name: str) -> ServiceState | None:
        raw = self._inspect(name)
        return None if raw is None else self._state(raw, True)

    # ---------------------------------------------------------------- updating

    def update_image(self, name: str, image: str, labels: dict[str, str | None],
                     progress: Callable[[str], None]) -> str:
        full = self._full(name)
        for attempt in range(3):
            raw = self._inspect(name)
            if raw is None:
                raise FaultError(f"service {full} does not exist any more: the stack changed under the run; "
                                 "check `docker stack ps` then `stackpatch abort`")
            spec, order = S.updated_spec(raw["Spec"], image, labels)
            try:
                resp = self.engine.post_json("/services/{0}/update", raw["ID"], data=spec,
                                             params={"version": raw["Version"]["Index"]}, headers=self._headers())
            except EngineUnreachable:
                raise
            except EngineError as e:
                if "out of sequence" in str(e) and attempt < 2:
                    continue  # someone else wrote the service in between: re-read and retry
                raise FaultError(f"the engine refused to update {full}: {e}") from None
            for w in resp.get("Warnings") or []:
                progress(f"{full}: engine warning: {w}")
            return order
        raise FaultError(f"could not update {full}: its spec keeps changing")  # pragma: no cover

    def retry_update(self, name: str) -> None:
        raw = self._inspect(name)
        if raw is None:
            raise FaultError(f"service {self._full(name)} does not exist any more")
        self.engine.post_json("/services/{0}/update", raw["ID"], data=S.forced_spec(raw["Spec"]),
                              params={"version": raw["Version"]["Index"]}, headers=self._headers())

    def _health(self, task: dict) -> str | None:
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            return None
        try:
            st = self.engine.inspect_container(cid)["State"]
        except EngineUnreachable:
            raise
        except EngineError:
            return None  # on another node: the task state (running only once healthy) is what we have
        return (st.get("Health") or {}).get("Status")

    def observe(self, name: str, image: str) -> Observation:
        raw = self._inspect(name)
        if raw is None:
            raise FaultError(f"service {self._full(name)} is gone from the stack: check `docker stack ps`")
        tasks = self.engine.tasks(filters={"service": raw["ID"]})

        def health(t: dict) -> str | None:
            # only the tasks that count: running the wanted image, meant to run (an old task being
            # stopped can answer an inspect with an empty body on Docker 20.10)
            live = (t.get("Status") or {}).get("State") == "running" and t.get("DesiredState") == "running"
            return self._health(t) if live and same_image(t["Spec"]["ContainerSpec"]["Image"], image) else None
        views = [S.task_view(t, health(t)) for t in tasks]
        return S.observation(name, raw, views)

    # ---------------------------------------------------------------- the release phase

    def _find_service_id(self, full: str) -> str | None:
        for s in self.engine.services(filters={"name": full}):
            if s["Spec"]["Name"] == full:
                return s["ID"]
        return None

    def start_job(self, name: str, template_service: str, image: str, command: list[str],
                  env: dict[str, str]) -> str:
        full = self._full(name)
        existing = self._find_service_id(full)
        if existing:
            return existing  # the same job of an interrupted run: adopt it, never start a second one
        raw = self._inspect(template_service)
        if raw is None:
            raise FaultError(f"service {self._full(template_service)} does not exist: cannot clone the release job")
        try:
            resp = self.engine.post_json("/services/create", data=S.job_spec(full, raw["Spec"], image, command, env),
                                         headers=self._headers())
        except EngineUnreachable:
            raise
        except EngineError as e:
            raise FaultError(f"could not start the release job from {image}: {e}") from None
        return resp["ID"]

    def job_status(self, job_id: str) -> JobStatus:
        tasks = self.engine.tasks(filters={"service": job_id})
        task = max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)
        if task is None:
            return JobStatus("pending")
        st = task.get("Status") or {}
        cs = st.get("ContainerStatus") or {}
        logs: tuple[str, ...] = ()
        if cs.get("ContainerID"):
            try:
                raw = self.engine.logs(cs["ContainerID"], stdout=True, stderr=True, stream=False, follow=False)
                logs = tuple(raw.decode(errors="replace").splitlines())
            except EngineUnreachable:
                raise
            except EngineError:
                pass
        return JobStatus(st.get("State", "pending"), cs.get("ExitCode"), st.get("Err") or st.get("Message"), logs)

    def remove_job(self, job_id: str) -> None:
        """Remove the job service AND its finished containers: Swarm leaves a completed job's containers
        behind (they would keep the stack's networks and volumes busy)."""
        try:
            self.engine.remove_service(job_id)
        except EngineObjectMissing:
            pass
        for c in self.engine.containers(all=True, filters={"label": f"com.docker.swarm.service.id={job_id}"}):
            try:
                self.engine.remove_container(c["Id"], force=True)
            except EngineObjectMissing:
                pass

    # ---------------------------------------------------------------- exec (command checks)

    def exec(self, service: str, argv: list[str], timeout: float = 60) -> tuple[int, str]:
        full = self._full(service)
        conts = self.engine.containers(filters={"label": f"com.docker.swarm.service.name={full}",
                                                "status": "running"})
        if not conts:
            raise FaultError(f"no running task of {full} on this node to run the check in")
        ex = self.engine.exec_create(conts[0]["Id"], argv, stdout=True, stderr=True)
        out = self.engine.exec_start(ex["Id"], demux=False)
        code = self.engine.exec_inspect(ex["Id"]).get("ExitCode")
        return int(code if code is not None else 1), (out or b"").decode(errors="replace")

    # ---------------------------------------------------------------- the lock (a Swarm config)

    def _lock_config(self) -> dict | None:
        name = lock_name(self.stack)
        for c in self.engine.configs(filters={"name": name}):
            if c["Spec"]["Name"] == name:
                return c
        return None

    def read_lock(self) -> LockInfo | None:
        c = self._lock_config()
        return None if c is None else _lock_of(c)

    def create_lock(self, info: LockInfo) -> bool:
        """Creating a config whose name exists fails (409): atomic across machines."""
        try:
            self.engine.create_config(lock_name(self.stack), json.dumps(asdict(info)).encode(),
                                      labels={LOCK_LABEL: "1", "stackpatch.stack": self.stack})
            return True
        except EngineUnreachable:
            raise
        except EngineError as e:
            if "already exists" in str(e) or "409" in str(e) or "conflict" in str(e).lower():
                return False
            raise EngineError(f"the engine at {self.docker_host} refused to create the lock "
                              f"{lock_name(self.stack)}: {e}") from None

    def remove_lock(self, run_id: str | None) -> bool:
        c = self._lock_config()
        if c is None:
            return False
        if run_id is not None and decode_lock(c["Spec"].get("Data")).run_id != run_id:
            return False
        try:
            self.engine.remove_config(c["ID"])
            return True
        except EngineObjectMissing:
            return False

    def renew_lock(self, run_id: str, expires_at: float) -> bool:
        """A config's data cannot change, its labels can: the renewed expiry is a label."""
        c = self._lock_config()
        if c is None or decode_lock(c["Spec"].get("Data")).run_id != run_id:
            return False
        spec = dict(c["Spec"])
        spec["Labels"] = {**(spec.get("Labels") or {}), LOCK_EXPIRES_LABEL: f"{expires_at:.3f}"}
        self.engine.post_json("/configs/{0}/update", c["ID"], data=spec, params={"version": c["Version"]["Index"]})
        return True


def from_config(cfg: "Config", label_resolver: LabelResolver | None = None) -> SwarmTarget:
    from stackpatch import config as config_mod
    from stackpatch.targets import engine_host
    t = cfg.target
    user, password = config_mod.registry_credentials(cfg)
    return SwarmTarget(engine_host(cfg), t.stack, tls_verify=t.tls_verify, tls_cert_path=t.tls_cert_path,
                       label_resolver=label_resolver,
                       registry=(cfg.registry.host, user, password, cfg.registry.use_docker_config))



