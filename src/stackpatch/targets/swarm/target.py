"""The Docker Swarm target: the only code that reads or changes a swarm stack.

Every engine call goes through `client.Engine`, so every Docker error reaches the rest of stackpatch
as a stackpatch error (see client.py). Services are named without the stack prefix everywhere
outside this package; `{stack}_{service}` is built here only.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Callable, Iterator

from stackpatch.errors import EngineError, EngineObjectMissing, EngineUnreachable, FaultError, UserError
from stackpatch.targets.base import (ImageRef, JobStatus, LockInfo, LogLine, NodePull, Observation, ServiceState,
                                     TargetState, TaskLocation)
from stackpatch.targets.swarm import spec as S
from stackpatch.targets.swarm.client import STACK_LABEL, Engine, connect, registry_auth_header

if TYPE_CHECKING:
    import docker

    from stackpatch.config import Config

HELD = "held:"  # start_pull's id when the only node holds the image already (no job): "held:<hostname>"
ImageReader = Callable[[ImageRef], "dict | None"]  # an image's config (Labels, Healthcheck) from the registry
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
                        started_at=float(data["started_at"]), expires_at=float(data["expires_at"]),
                        boot_id=str(data.get("boot_id") or ""))
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
                    max(info.expires_at, renewed), info.boot_id)


def _hostname(node: dict) -> str:
    """A node's name as the user knows it (`docker node ls`): its hostname, else its id."""
    return (node.get("Description") or {}).get("Hostname") or node["ID"]


class SwarmTarget:
    """A stack on a Docker Swarm manager. Connects on first use."""

    kind = "swarm"
    poll_s = 0.4  # each look is a few API calls to the manager; a task's state changes in tenths of a second

    def __init__(self, docker_host: str, stack: str, *, tls_verify: bool = False,
                 tls_cert_path: str | None = None, image_reader: ImageReader | None = None,
                 registry: tuple[str, str | None, str | None, bool] | None = None,
                 node_hosts: dict[str, str] | None = None):
        self.docker_host = docker_host
        self.stack = stack
        self._tls = (tls_verify, tls_cert_path)
        self._image_reader = image_reader
        self._node_hosts = dict(node_hosts or {})  # node hostname -> that node's engine (exec, shell)
        self._node_engines: dict[str, Engine] = {}
        self._image_configs: dict[str, dict | None] = {}
        self._own_node: str | None = None
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

    # what a manager's engine answers while its swarm is not back yet (a restarted dockerd answers pings
    # before its raft has a leader): mid-run, as much a lost target as a refused connection
    NOT_READY = ("does not have a leader", "is not a swarm manager", "not part of a swarm", "swarm is not ready")

    def is_unreachable(self, e: BaseException) -> bool:
        if isinstance(e, EngineUnreachable):
            return True
        return isinstance(e, EngineError) and any(w in str(e).lower() for w in self.NOT_READY)

    def reconnect(self, timeout: float, stop: Callable[[], None] | None = None) -> bool:
        """A new connection to the manager, tried with backoff (0.5 s doubling to 5 s) for `timeout`
        seconds, until it answers as the manager of the stack again (listing the stack's services): True
        then, False when the time is up. `stop` is called before each try (it raises to give up early)."""
        import time
        deadline = time.monotonic() + timeout
        delay = 0.5
        while True:
            if stop is not None:
                stop()
            try:
                client, engine = connect(self.docker_host, *self._tls)
                engine.services(filters={"label": f"{STACK_LABEL}={self.stack}"})
            except (EngineUnreachable, EngineError):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(delay, left))
                delay = min(delay * 2, 5.0)
                continue
            old, self._client, self._engine = self._client, client, engine
            self._node_engines.clear()   # the nodes' connections may be as stale
            if old is not None:
                try:
                    old.close()
                except Exception:  # noqa: BLE001 - a dead connection's close may fail: it is gone anyway
                    pass
            return True

    def engine_facts(self):
        return S.engine_facts(self.engine.info())

    # ---------------------------------------------------------------- reading

    def _raw_services(self) -> list[dict]:
        return self.engine.services(filters={"label": f"{STACK_LABEL}={self.stack}"})

    def _running(self, service_id: str) -> int:
        tasks = self.engine.tasks(filters={"service": service_id, "desired-state": "running"})
        return sum(1 for t in tasks if (t.get("Status") or {}).get("State") == "running")

    def _local_image(self, ref: ImageRef) -> dict | None:
        """The engine's copy of an image (inspect), None when it has none."""
        for cand in ([f"{ref.repository}@{ref.digest}"] if ref.digest else []) + [str(ImageRef(ref.repository,
                                                                                                 ref.tag))]:
            try:
                return self.engine.inspect_image(cand)
            except EngineUnreachable:
                raise
            except EngineError:
                continue
        return None

    def image_config(self, ref: ImageRef) -> dict | None:
        """An image's config (Labels, Healthcheck…): the engine's copy when it has one, else the registry's
        (manifest and config blob): the manager need not hold the images its workers run. None when
        neither can tell."""
        key = str(ref)
        if key in self._image_configs:
            return self._image_configs[key]
        info = self._local_image(ref)
        conf: dict | None = None
        if info is not None:
            conf = dict(info.get("Config") or {})
        elif self._image_reader is not None:
            try:
                conf = self._image_reader(ref)
            except EngineUnreachable:
                raise
            except Exception:  # noqa: BLE001 - unknown labels are reported as unknown, not as a failure
                conf = None
        if conf is not None or ref.digest:   # a digest's config never changes: remember it
            self._image_configs[key] = conf
        return conf

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        return dict((self.image_config(ref) or {}).get("Labels") or {})

    def _state(self, raw: dict, image_labels: bool) -> ServiceState:
        image = ImageRef.parse(raw["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])
        hc: dict | None | bool = None
        if not ((raw["Spec"]["TaskTemplate"]["ContainerSpec"].get("Healthcheck") or {}).get("Test")):
            conf = self.image_config(image)  # no healthcheck in the spec: the image's counts
            hc = False if conf is None else (conf.get("Healthcheck") or None)
        return S.service_state(self.stack, raw, self._running(raw["ID"]),
                               self.image_labels(image) if image_labels else {}, hc)

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

    def observe(self, name: str, image: str) -> Observation:
        """Health comes from the manager's task status (S.task_health), never from a container inspect:
        the tasks may run on any node."""
        raw = self._inspect(name)
        if raw is None:
            raise FaultError(f"service {self._full(name)} is gone from the stack: check `docker stack ps`")
        tasks = self.engine.tasks(filters={"service": raw["ID"]})
        checked = S.has_healthcheck(raw["Spec"], self.image_config(ImageRef.parse(image)))
        views = [S.task_view(t, S.task_health(t, checked)) for t in tasks]
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

    def find_job(self, name: str) -> str | None:
        """The job's id (a pre-pull of several placements: its ids joined by commas), None when gone."""
        full = self._full(name)
        ids = [x["ID"] for x in self.engine.services(filters={"name": full})
               if x["Spec"]["Name"] == full or (x["Spec"]["Name"].startswith(full + "-")
                                               and x["Spec"]["Name"][len(full) + 1:].isdigit())]
        return ",".join(ids) or None

    def _job_logs(self, job_id: str) -> tuple[str, ...]:
        """The job's output through the manager (`docker service logs`), oldest first: its task may run
        on any node."""
        try:
            raw = self.engine.service_logs(job_id, stdout=True, stderr=True, follow=False, timestamps=True)
            lines = [ln.decode(errors="replace").rstrip("\n") for ln in raw]
        except (EngineUnreachable, EngineObjectMissing):
            raise
        except EngineError:
            return ()
        stamped = sorted((ln.partition(" ")[0], i, ln.partition(" ")[2]) for i, ln in enumerate(lines) if ln)
        return tuple(text for _, _, text in stamped)

    def job_status(self, job_id: str) -> JobStatus:
        tasks = self.engine.tasks(filters={"service": job_id})
        task = max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)
        if task is None:
            return JobStatus("pending")
        st = task.get("Status") or {}
        cs = st.get("ContainerStatus") or {}
        logs = self._job_logs(job_id) if cs.get("ContainerID") else ()
        return JobStatus(st.get("State", "pending"), cs.get("ExitCode"), st.get("Err") or st.get("Message"), logs)

    def remove_job(self, job_id: str) -> None:
        """Remove the job service(s); Swarm then removes their tasks' containers on every node. Those on
        this engine's node are removed at once too (a completed job's containers can linger and keep the
        stack's networks and volumes busy)."""
        if job_id.startswith(HELD):
            return  # start_pull started nothing
        for jid in job_id.split(","):
            try:
                self.engine.remove_service(jid)
            except EngineObjectMissing:
                pass
            for c in self.engine.containers(all=True, filters={"label": f"com.docker.swarm.service.id={jid}"}):
                try:
                    self.engine.remove_container(c["Id"], force=True)
                except EngineObjectMissing:
                    pass

    # ---------------------------------------------------------------- pre-pull

    def start_pull(self, name: str, image: str, services: list[str]) -> str:
        """One global job per distinct placement of `services`: Swarm runs it on every node that placement
        allows, and each node pulls the image (with the registry credentials) before its task starts.
        Returns the ids joined by commas (one "job" to the caller). No job when the swarm is this engine
        alone and its store holds the image by digest (it built and pushed it): Swarm starts a task from
        a digest the node holds without pulling, so a job would pull nothing and cost a task start (5 s of
        ship's 71 under load, measured in the benchmark)."""
        held = self._held_by_the_only_node(image)
        if held:
            return HELD + held
        placements: list[dict] = []
        for svc in services:
            raw = self._inspect(svc)
            if raw is None:
                raise FaultError(f"service {self._full(svc)} does not exist: cannot pre-pull its image")
            pl = raw["Spec"]["TaskTemplate"].get("Placement") or {}
            key = {k: pl[k] for k in ("Constraints", "Platforms") if pl.get(k)}
            if key not in placements:
                placements.append(key)
        ids = []
        for i, pl in enumerate(placements):
            full = self._full(name if i == 0 else f"{name}-{i}")
            existing = self._find_service_id(full)
            if existing:
                ids.append(existing)  # an interrupted run's pull: adopt it
                continue
            try:
                resp = self.engine.post_json("/services/create", data=S.pull_spec(full, self.stack, image, pl),
                                             headers=self._headers())
            except EngineUnreachable:
                raise
            except EngineError as e:
                raise FaultError(f"could not start the pre-pull of {image}: {e}") from None
            ids.append(resp["ID"])
        return ",".join(ids)

    def _held_by_the_only_node(self, image: str) -> str | None:
        """This node's hostname when it is the swarm's only node and holds `image` (a digest-pinned ref)."""
        ref = ImageRef.parse(image)
        if not ref.digest:
            return None
        nodes = self.engine.nodes()
        if len(nodes) != 1 or nodes[0].get("ID") != self._own_node_id():
            return None
        try:
            self.engine.inspect_image(f"{ref.repository}@{ref.digest}")
        except EngineUnreachable:
            raise
        except EngineError:
            return None
        return _hostname(nodes[0])

    def _node_names(self) -> dict[str, str]:
        return {n["ID"]: _hostname(n) for n in self.engine.nodes()}

    def pull_status(self, job_id: str) -> tuple[NodePull, ...]:
        if job_id.startswith(HELD):
            return (NodePull(job_id[len(HELD):], "pulled", "held already: no pull needed"),)
        names: dict[str, str] | None = None
        per_node: dict[str, NodePull] = {}
        for jid in job_id.split(","):
            tasks = self.engine.tasks(filters={"service": jid})
            for t in sorted(tasks, key=lambda t: t.get("CreatedAt", "")):
                nid = t.get("NodeID") or ""
                if not nid:
                    continue
                if names is None:
                    names = self._node_names()
                state, detail = S.node_pull(t)
                node = names.get(nid, nid[:12])
                prev = per_node.get(node)
                if prev is None or prev.state != "failed":
                    per_node[node] = NodePull(node, state, detail)
        return tuple(per_node[k] for k in sorted(per_node))

    # ---------------------------------------------------------------- exec (command checks)

    def _own_node_id(self) -> str:
        if self._own_node is None:
            self._own_node = (self.engine.info().get("Swarm") or {}).get("NodeID") or ""
        return self._own_node

    def _node_engine(self, node: str) -> Engine | None:
        """The engine of node `node` (hostname) when target.node_hosts names one; None otherwise."""
        host = self._node_hosts.get(node)
        if not host:
            return None
        if host not in self._node_engines:
            self._node_engines[host] = connect(host, *self._tls)[1]
        return self._node_engines[host]

    def node_host_checks(self) -> list[tuple[str, bool, str]]:
        """(node, ok, detail) for each target.node_hosts entry: the node is in this swarm, and the engine
        named for it answers and is that node's (a wrong entry would send a gate's command check or
        `stackpatch shell` to another node). `stackpatch doctor` shows them."""
        if not self._node_hosts:
            return []
        nodes = {_hostname(n): n["ID"] for n in self.engine.nodes()}
        out: list[tuple[str, bool, str]] = []
        for node, host in sorted(self._node_hosts.items()):
            if node not in nodes:
                out.append((node, False, f"no node {node} in the swarm (its nodes: {', '.join(sorted(nodes))}): "
                                         "name a node's hostname in target.node_hosts"))
                continue
            try:
                info = self._node_engine(node).info()
            except (UserError, FaultError) as e:
                out.append((node, False, f"{host}: {e}"))
                continue
            node_id = (info.get("Swarm") or {}).get("NodeID")
            if node_id != nodes[node]:
                out.append((node, False, f"{host} is the engine of {info.get('Name') or 'another machine'}, not of "
                                         f"{node}: give target.node_hosts.{node} that node's engine"))
            else:
                out.append((node, True, f"{host} answers as {node}"))
        return out

    def _exec_in(self, engine: Engine, container_id: str, argv: list[str]) -> tuple[int, str]:
        ex = engine.exec_create(container_id, argv, stdout=True, stderr=True)
        out = engine.exec_start(ex["Id"], demux=False)
        code = engine.exec_inspect(ex["Id"]).get("ExitCode")
        return int(code if code is not None else 1), (out or b"").decode(errors="replace")

    def exec(self, service: str, argv: list[str], timeout: float = 60) -> tuple[int, str]:
        """In the newest running task, wherever it runs: through this engine when the task is on its node,
        through the node's own engine when target.node_hosts names it, else as a one-off job from the
        task's image, networks, env and mounts, pinned to the task's node (its first output line says so:
        it runs beside the task, not inside it)."""
        full = self._full(service)
        sid = self._find_service_id(full)
        if sid is None:
            raise FaultError(f"service {full} does not exist: cannot run the check")
        tasks = [t for t in self.engine.tasks(filters={"service": sid, "desired-state": "running"})
                 if (t.get("Status") or {}).get("State") == "running"
                 and ((t.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")]
        if not tasks:
            raise FaultError(f"no running task of {full} to run the check in")
        t = max(tasks, key=lambda t: (t.get("CreatedAt", ""), t["ID"]))
        cid = t["Status"]["ContainerStatus"]["ContainerID"]
        if t.get("NodeID") == self._own_node_id():
            return self._exec_in(self.engine, cid, argv)
        node = self._node_names().get(t["NodeID"], t["NodeID"])
        engine = self._node_engine(node)
        if engine is not None:
            return self._exec_in(engine, cid, argv)
        return self._exec_as_job(full, t, node, argv, timeout)

    def _exec_as_job(self, full: str, task: dict, node: str, argv: list[str], timeout: float) -> tuple[int, str]:
        import time
        import uuid
        raw = self.engine.inspect_service(full)
        image = task["Spec"]["ContainerSpec"]["Image"]
        name = f"{self.stack}_sp-check-{uuid.uuid4().hex[:8]}"
        spec = S.pinned_to_node(S.job_spec(name, raw["Spec"], image, argv, {}), task["NodeID"])
        spec["Labels"][S.JOB_LABEL] = "check"
        try:
            jid = self.engine.post_json("/services/create", data=spec, headers=self._headers())["ID"]
        except EngineUnreachable:
            raise
        except EngineError as e:
            raise FaultError(f"could not start the check as a job on node {node}: {e}") from None
        head = (f"[ran as job {name} on node {node}, beside task {full}.{task.get('Slot') or ''}: "
                f"no engine for {node} in target.node_hosts]\n")
        try:
            deadline = time.monotonic() + timeout
            while True:
                st = self.job_status(jid)
                if st.state in ("complete", "failed", "rejected", "shutdown", "orphaned"):
                    code = st.exit_code if st.exit_code is not None else (0 if st.state == "complete" else 125)
                    detail = "" if st.state == "complete" or st.exit_code is not None else f"{st.detail}\n"
                    return int(code), head + "".join(ln + "\n" for ln in st.logs) + detail
                if time.monotonic() >= deadline:
                    return 124, head + f"the check did not end within {timeout:.0f}s ({st.state})\n"
                time.sleep(0.3)
        finally:
            self.remove_job(jid)

    # ---------------------------------------------------------------- the developers' shell and logs

    def running_task(self, service: str) -> TaskLocation:
        full = self._full(service)
        sid = self._find_service_id(full)
        if sid is None:
            raise UserError(f"stack {self.stack} has no service {service} (engine {self.docker_host}): "
                            "see `stackpatch status`")
        tasks = [t for t in self.engine.tasks(filters={"service": sid, "desired-state": "running"})
                 if t.get("Status", {}).get("State") == "running"
                 and t.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")]
        if not tasks:
            raise UserError(f"{full} has no running task: see `stackpatch status`")
        t = min(tasks, key=lambda t: (t.get("Slot") or 0, t["ID"]))
        node = self.engine.inspect_node(t["NodeID"])
        own = self._own_node_id()
        return TaskLocation(service=service, task=f"{full}.{t.get('Slot') or t['NodeID']}", task_id=t["ID"],
                            node=node.get("Description", {}).get("Hostname") or t["NodeID"],
                            container_id=t["Status"]["ContainerStatus"]["ContainerID"], local=t["NodeID"] == own)

    def open_shell(self, task: TaskLocation, argv: list[str]) -> int:
        """`docker exec -it` through the same engine (the docker CLI relays the terminal)."""
        import os
        import shutil
        import subprocess
        host = self.docker_host if task.local else self._node_hosts.get(task.node)
        if host is None:
            raise UserError(f"task {task.task} runs on node {task.node}, and {self.docker_host} is another node: "
                            f"name {task.node}'s engine in target.node_hosts (e.g. {task.node} = "
                            f"\"ssh://{task.node}\") to open a shell there")
        docker_cli = shutil.which("docker")
        if docker_cli is None:
            raise UserError("the docker command line is not installed: install it (Debian: docker.io)")
        env = {**os.environ, "DOCKER_HOST": host}
        tls_verify, cert_path = self._tls
        if tls_verify:
            env["DOCKER_TLS_VERIFY"] = "1"
        if cert_path:
            env["DOCKER_CERT_PATH"] = cert_path
        return subprocess.call([docker_cli, "exec", "-it", task.container_id, *argv], env=env)

    def logs(self, service: str, *, since: float | None, follow: bool) -> Iterator[LogLine]:
        full = self._full(service)
        sid = self._find_service_id(full)
        if sid is None:
            raise UserError(f"stack {self.stack} has no service {service} (engine {self.docker_host}): "
                            "see `stackpatch status`")
        names: dict[str, str] = {}
        nodes: dict[str, str] = {}

        def source(attrs: dict[str, str]) -> str:
            tid, nid = attrs.get("com.docker.swarm.task.id", ""), attrs.get("com.docker.swarm.node.id", "")
            if tid and tid not in names:
                for t in self.engine.tasks(filters={"service": sid}):
                    names[t["ID"]] = f"{full}.{t.get('Slot') or t['NodeID']}"
            if nid and nid not in nodes:
                for n in self.engine.nodes():
                    nodes[n["ID"]] = _hostname(n)
            return f"{names.get(tid, tid[:12] or full)}@{nodes.get(nid, nid[:12] or '?')}"

        stream = self.engine.service_logs(sid, details=True, stdout=True, stderr=True, follow=follow,
                                          since=int(since or 0), timestamps=False)
        try:
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                head, _, text = line.partition(" ")
                attrs = dict(kv.split("=", 1) for kv in head.split(",") if "=" in kv)
                if not attrs:   # no details prefix: the whole line is the message
                    attrs, text = {}, line
                yield LogLine(source(attrs), text)
        except Exception as e:  # noqa: BLE001 - a stream that breaks mid-way: the one error map
            from stackpatch.targets.swarm.client import map_error
            raise map_error(self.docker_host, e) from None

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


def from_config(cfg: "Config", image_reader: ImageReader | None = None) -> SwarmTarget:
    from stackpatch import config as config_mod
    from stackpatch.targets import engine_host
    t = cfg.target
    user, password = config_mod.registry_credentials(cfg)
    return SwarmTarget(engine_host(cfg), t.stack, tls_verify=t.tls_verify, tls_cert_path=t.tls_cert_path,
                       image_reader=image_reader, node_hosts=t.node_hosts,
                       registry=(cfg.registry.host, user, password, cfg.registry.use_docker_config))



