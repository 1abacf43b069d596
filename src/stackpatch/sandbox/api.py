"""The sandbox's Python API, used by the CLI and by tests.

    info = up(Path(".sandbox"))          # idempotent; info.report says what was built and reused
    status(Path(".sandbox"))             # what runs, without changing anything
    fork(info, tmp, "t-abc12-prod")      # an independent repo + origin + stack for one test
    remove_stack("t-abc12-prod")
    down(Path(".sandbox"), all=False)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from stackpatch import git, ui
from stackpatch.errors import FaultError, UserError
from stackpatch.sandbox import apprepo, baseimage, engine, nodes as nodes_mod, stack as stack_mod
from stackpatch.sandbox.progress import Report, timed
from stackpatch.sandbox.registry import Registry, free_port, port_is_free
from stackpatch.sandbox.registry import executable as registry_exe

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
STACK_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$")
STATE = "state.json"
SERVICES = ("phpfiles", "phpha", "web", "edge", "db")  # edge: holds the public port, never patched
IMAGES = {"app": "docker/app/Dockerfile", "front": "docker/front/Dockerfile"}
BASE_IMAGES = ("db", "edge")  # the base image, as it is: PostgreSQL for db, HAProxy for edge
# everything up writes into DIR; down removes exactly these
OWNED = (STATE, "registry", "registry.env", "docker-config", "build", "_nodes")


@dataclass
class State:
    name: str
    registry_port: int
    front_port: int
    base_image: str = ""
    release: str = apprepo.RELEASE
    revision: str = ""
    images: dict[str, str] = field(default_factory=dict)  # app/front/db -> host/ns/repo:tag@sha256:...
    # ownership: the directory this state was written in (a copy elsewhere proves nothing), and the
    # engine objects this sandbox's deploys created, by id (stack.objects()); `down` removes only these
    dir: str = ""
    owned: dict[str, dict[str, str]] = field(default_factory=dict)
    staging_front_port: int | None = None   # set by `up --with-staging`
    owned_staging: dict[str, dict[str, str]] = field(default_factory=dict)  # what its deploy created
    # `up --nodes N` (N > 1): the nodes, bridge, namespaces, daemons and files it made (nodes.plan());
    # empty for the one-engine sandbox
    nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def stack(self) -> str:
        return f"{self.name}-prod"

    @property
    def staging_stack(self) -> str:
        return f"{self.name}-staging"

    @classmethod
    def load(cls, dir: Path) -> "State | None":
        p = dir / STATE
        if not p.is_file():
            return None
        try:
            return cls(**json.loads(p.read_text()))
        except (ValueError, TypeError) as e:
            raise UserError(f"{p} is damaged ({e}): run `stackpatch sandbox down --dir {dir}` and `up` again") from None

    def save(self, dir: Path) -> None:
        tmp = dir / (STATE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(dir / STATE)


@dataclass
class SandboxInfo:
    dir: Path
    name: str
    stack: str
    front_url: str
    front_port: int
    registry: str
    registry_env_file: Path
    registry_running: bool
    registry_pid: int | None
    docker_config: Path
    app_dir: Path
    origin_dir: Path
    config_path: Path
    base_image: str
    release: str
    revision: str
    images: dict[str, str]
    services: dict[str, dict[str, Any]]
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float | None = None
    serving: dict[str, str] | None = None  # what the front's /version answered at the end of `up`
    nodes: list[dict[str, Any]] = field(default_factory=list)       # [{name, role, addr, docker_host, state}]
    tasks: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # service -> [{node, state, image}]
    connect: dict[str, Any] = field(default_factory=dict)           # the manager's three ways (--nodes N > 1)

    @property
    def healthy(self) -> bool:
        return self.registry_running and stack_mod.is_converged(self.services, set(SERVICES))

    def to_json(self) -> dict[str, Any]:
        return {
            "front_url": self.front_url,
            "registry": self.registry,
            "registry_env_file": str(self.registry_env_file),
            "app_dir": str(self.app_dir),
            "origin_dir": str(self.origin_dir),
            "stack": self.stack,
            "services": {n: {**{k: s[k] for k in ("image", "replicas_running", "replicas_desired")},
                             "tasks": self.tasks.get(n, [])}
                         for n, s in self.services.items()},
            "nodes": self.nodes,
            "connect": self.connect,
            "name": self.name,
            "dir": str(self.dir),
            "config_path": str(self.config_path),
            "release": self.release,
            "revision": self.revision,
            "images": self.images,
            "base_image": self.base_image,
            "registry_running": self.registry_running,
            "docker_config": str(self.docker_config),
            "healthy": self.healthy,
            "built": self.built,
            "reused": self.reused,
        }


@dataclass
class Fork:
    app_dir: Path
    origin_dir: Path
    stack: str
    front_url: str
    front_port: int
    config_path: Path


# ---------------------------------------------------------------- helpers

def _paths(dir: Path, name: str) -> tuple[Path, Path]:
    return dir / name, dir / f"{name}-origin.git"


def _prepare_dir(dir: Path) -> Path:
    try:
        dir = dir.expanduser().resolve()
        dir.mkdir(parents=True, exist_ok=True)
        probe = dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot use {dir} as the sandbox dir ({e.strerror or e}): pass a writable --dir") from None
    return dir


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"sandbox name {name!r} is not valid: use lowercase letters, digits and '-', starting "
                        "with a letter, at most 30 characters")


def _login(reg: Registry, config_dir: Path) -> None:
    user, password = reg.credentials()
    config_dir.mkdir(parents=True, exist_ok=True)
    engine.cli("login", "--username", user, "--password-stdin", reg.host, config_dir=config_dir,
               input=password, timeout=60, what=f"docker login {reg.host}")


def _deploy_env(st: State, front_port: int) -> dict[str, str]:
    env = {"IMAGE_APP": st.images["app"], "IMAGE_FRONT": st.images["front"], "IMAGE_DB": st.images["db"],
           "IMAGE_EDGE": st.images["edge"],
           "FRONT_PORT": str(front_port), "RELEASE_VERSION": st.release, "RELEASE_REVISION": st.revision}
    if st.nodes:  # deployed on the nodes' manager, one phpha per node
        env |= {"DOCKER_HOST": nodes_mod.unix_host(st.nodes), "PHPHA_REPLICAS": str(st.nodes["count"])}
    return env


def _overrides(st: State, app_dir: Path) -> tuple[Path, ...]:
    return (app_dir / "deploy" / "stack.nodes.yml",) if st.nodes else ()


def _registry(dir: Path, st: State) -> Registry:
    """The sandbox's registry: 127.0.0.1, plain HTTP; with --nodes, on the bridge with TLS (the sandbox's CA)."""
    if not st.nodes:
        return Registry(dir, st.registry_port)
    n = dir / "_nodes"
    return Registry(dir, st.registry_port, addr=st.nodes["host_addr"],
                    tls=(n / "registry-cert.pem", n / "registry-key.pem", n / "ca.pem"))


def _front_url(st: State) -> str:
    return f"http://{nodes_mod.manager(st.nodes)['addr'] if st.nodes else '127.0.0.1'}:{st.front_port}"


def _stack_client(c, st: State):
    """The engine the stack runs on: this one, or the manager of the sandbox's nodes."""
    return nodes_mod.client(st.nodes, "manager") if st.nodes else c


def _node_clients(st: State) -> dict | None:
    return {n["hostname"]: nodes_mod.client(st.nodes, n["name"]) for n in st.nodes["nodes"]} if st.nodes else None


def _pinned(reg: Registry, repo: str, tag: str) -> str | None:
    digest = reg.manifest_digest(repo, tag)
    return f"{reg.host}/{repo}:{tag}@{digest}" if digest else None


def _build_and_push(reg: Registry, st: State, name: str, origin: Path, dir: Path, config_dir: Path) -> dict[str, str]:
    """Build app and front from the pushed tag (git archive of the origin), push, return pinned refs."""
    tag = f"git-commit-{st.revision[:7]}"
    build_root = dir / "build"
    build_root.mkdir(exist_ok=True)
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="src-", dir=build_root) as tmp:
        src = Path(tmp) / "src"
        tar = Path(tmp) / "src.tar"
        git.run("archive", "--format=tar", "-o", str(tar), st.revision, cwd=origin)
        with tarfile.open(tar) as tf:
            tf.extractall(src, filter="data")
        _, buildkit = engine.docker_cli()
        created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        for image, dockerfile in IMAGES.items():
            ref = f"{reg.host}/{name}/{image}:{tag}"
            with timed(f"build {image} image {ref}"):
                engine.cli("build", "--file", str(src / dockerfile),
                           "--build-arg", f"BASE_IMAGE={st.base_image}",
                           "--build-arg", f"REVISION={st.revision}",
                           "--build-arg", f"VERSION={st.release}",
                           "--label", f"org.opencontainers.image.revision={st.revision}",
                           "--label", f"org.opencontainers.image.version={st.release}",
                           "--label", f"org.opencontainers.image.source={origin}",
                           "--label", f"org.opencontainers.image.created={created}",
                           "--tag", ref, str(src),
                           env={"DOCKER_BUILDKIT": "1" if buildkit else "0"}, config_dir=config_dir,
                           what=f"building the {image} image")
            with timed(f"push {ref}"):
                engine.cli("push", ref, config_dir=config_dir, what=f"docker push {ref}")
            pinned = _pinned(reg, f"{name}/{image}", tag)
            if not pinned:
                raise FaultError(f"the registry does not hold {ref} right after pushing it")
            out[image] = pinned
    return out


# ---------------------------------------------------------------- up

def up(dir: Path, name: str = "acme", registry_port: int | None = None, with_staging: bool = False,
       nodes: int = 1, app_hook: Callable[[Path], Any] | None = None) -> SandboxInfo:
    """Bring the sandbox up (idempotent). Progress goes to stderr; the result says what was reused.

    `app_hook(app_dir)`, when given, runs while the example repo is first created, on its develop branch
    before the release is cut, and may commit there (the benchmark's realistic app grows the repo with it).

    Every refusal comes before anything is started or written; should one still happen on a first
    `up` (a registry port taken meanwhile), what this run made is undone."""
    _check_name(name)
    nodes_mod.check_count(nodes)
    if nodes > 1 and with_staging:
        raise UserError("--with-staging is for the one-engine sandbox: drop it, or --nodes")
    c = engine.client()
    dir = Path(dir).expanduser().absolute()
    st = State.load(dir) if dir.is_dir() else None
    if st is not None and st.name != name:
        raise UserError(f"{dir} holds sandbox {st.name!r}, not {name!r}: pass --name {st.name}, or another --dir")
    if registry_port is not None and st is not None and registry_port != st.registry_port:
        raise UserError(f"this sandbox's registry uses port {st.registry_port}: drop --registry-port, or "
                        "`stackpatch sandbox down` first")
    if registry_port is not None and not (1024 <= registry_port <= 65535):
        raise UserError(f"--registry-port {registry_port} is out of range: use a port in 1024-65535")
    had = (st.nodes or {}).get("count", 1) if st is not None else None
    if had is not None and had != nodes:
        raise UserError(f"this sandbox has {had} node{'s' if had > 1 else ''}: pass --nodes {had}, or "
                        "`stackpatch sandbox down` first")
    if nodes > 1:
        nodes_mod.preflight()
    if registry_port is not None and st is None and nodes == 1 and not port_is_free(registry_port):
        raise UserError(f"--registry-port {registry_port}: the port is taken on 127.0.0.1 by another process: "
                        "choose a free port, or leave the option out to get one")
    _preflight(c, dir, st, name, multi=nodes > 1)  # nothing is started or written before this passes
    fresh = st is None
    made_dir = not dir.exists()
    dir = _prepare_dir(dir)
    if st is None:
        st = State(name=name, registry_port=registry_port or free_port(), front_port=free_port())
        if nodes > 1:
            st.nodes = nodes_mod.plan(nodes)
    st.dir = str(dir)
    try:
        return _up(c, dir, st, with_staging, app_hook)
    except UserError:
        if fresh:  # a first `up` refused half-way leaves nothing behind
            if st.nodes:
                nodes_mod.remove(dir, st.nodes, lambda: None)
            _remove_local(c, dir, st)
            if made_dir:
                _rmdir_if_empty(dir)
        raise


def _preflight(c, dir: Path, st: State | None, name: str, multi: bool = False) -> None:
    """Every check `up` can make before it changes anything: tools, swarm, stack ownership, ports."""
    if st is not None and st.dir and Path(st.dir) != dir.resolve():
        raise UserError(f"{dir / STATE} was written for the sandbox in {st.dir} (a copy?): use "
                        f"--dir {st.dir}, or delete {dir}")
    engine.docker_cli()
    registry_exe()
    if not baseimage.exists(c):
        baseimage.mmdebstrap()
    if multi:  # the stack runs on the nodes' own swarm, made by this sandbox: nothing of it on this engine
        return
    engine.swarm_state(c)
    stack = f"{name}-prod"
    found = stack_mod.objects(c, stack)
    foreign = stack_mod.not_owned(found, st.owned if st else {})
    if foreign:
        legacy = " (this sandbox's state.json predates ownership records)" if st is not None and not st.dir else ""
        raise UserError(f"stack {stack} already runs on this engine and is not this sandbox's{legacy} "
                        f"({', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''}): pass another --name, "
                        "or remove that stack")
    if st is not None:
        reg = Registry(dir, st.registry_port)
        if not reg.pid() and not port_is_free(st.registry_port):
            raise UserError(f"this sandbox's registry port {st.registry_port} is taken by another process: free "
                            "it, or `stackpatch sandbox down` and `up` to pick another")
        if not found["services"] and not port_is_free(st.front_port):
            raise UserError(f"the front port {st.front_port} is taken by another process: free it, or "
                            "`stackpatch sandbox down` and `up` to pick another")


def _up(c, dir: Path, st: State, with_staging: bool = False,
        app_hook: Callable[[Path], Any] | None = None) -> SandboxInfo:
    report = Report()
    name = st.name
    app_dir, origin_dir = _paths(dir, name)
    config_dir = dir / "docker-config"

    rec = st.nodes
    # swarm
    if rec:
        def save() -> None:
            st.save(dir)
        save()
        with timed(f"make {rec['count']} nodes' network: bridge {rec['bridge']} {rec['subnet']}, namespaces, CA"):
            nodes_mod.make_pki(dir, rec, st.registry_port)
            nodes_mod.make_network(dir, rec, save)
            nodes_mod.trust_registry_on_host(dir, rec, save, _registry(dir, st).host)
    else:
        how = engine.ensure_swarm(c)
        if how == "reused":
            report.reuse("the engine's swarm")
        else:
            report.did("swarm")
            ui.ok("made the engine a one-node swarm (advertise 127.0.0.1)")

    # registry
    reg = _registry(dir, st)
    if reg.ensure_credentials():
        report.did("registry credentials")
    if reg.pid() and reg.answers():
        report.reuse(f"registry on {reg.host} (pid {reg.pid()})")
    else:
        with timed(f"start registry on {reg.host} (storage {reg.storage})"):
            reg.stop()
            reg.start()
        report.did("registry")
    st.save(dir)
    if rec and nodes_mod.running(dir, rec):
        nodes_mod.make_swarm(rec)  # checks every node is in the swarm and ready
        report.reuse(f"{rec['count']} nodes ({', '.join(n['hostname'] for n in rec['nodes'])}) and the manager's sshd")
    elif rec:
        with timed(f"start {rec['count']} dockerd (empty image stores), swarm, the manager's sshd"):
            nodes_mod.start_daemons(dir, rec, save, st.registry_port)
            nodes_mod.make_swarm(rec)
            nodes_mod.start_sshd(dir, rec, save)
        report.did(f"{rec['count']} nodes")
    _login(reg, config_dir)
    ui.info(f"  [dim]docker login kept in {config_dir} (DOCKER_CONFIG); ~/.docker is untouched[/]")

    # base image
    st.base_image = baseimage.tag()
    if baseimage.exists(c):
        report.reuse(f"base image {st.base_image}")
    else:
        with timed(f"build base image {st.base_image} (mmdebstrap {', '.join(baseimage.PACKAGES)})"):
            baseimage.build(dir / "build")
        report.did("base image")

    # example repo
    values = {"REGISTRY": reg.host, "NAME": name, "ENV_FILE": str(reg.env_file), "BASE_IMAGE": st.base_image,
              "DOCKER_HOST": nodes_mod.unix_host(rec) if rec else engine.docker_host(), "STACK": st.stack,
              "FRONT_URL": _front_url(st)}
    if apprepo.is_valid(app_dir, origin_dir):
        st.revision = git.rev(apprepo.RELEASE, cwd=origin_dir) or ""
        report.reuse(f"app repo {app_dir} (release {apprepo.RELEASE} at {st.revision[:12]})")
    else:
        with timed(f"create app repo {app_dir} with origin {origin_dir}"):
            st.revision = apprepo.create(app_dir, origin_dir, values, grow=app_hook)
        report.did("app repo")
    st.save(dir)

    # images in the registry
    tag = f"git-commit-{st.revision[:7]}"
    have = {img: _pinned(reg, f"{name}/{img}", tag) for img in IMAGES}
    if all(have.values()):
        report.reuse(f"images {', '.join(f'{name}/{i}:{tag}' for i in IMAGES)} in the registry")
        st.images.update({k: v for k, v in have.items() if v})
    else:
        st.images.update(_build_and_push(reg, st, name, origin_dir, dir, config_dir))
        report.did("app images")
    st.save(dir)
    # db (PostgreSQL) and edge (HAProxy) run the base image itself, pushed under two names
    base_tag = f"base-{baseimage.spec_hash()}"
    for image in BASE_IMAGES:
        pinned = _pinned(reg, f"{name}/{image}", base_tag)
        if pinned:
            report.reuse(f"{image} image {name}/{image}:{base_tag} in the registry")
        else:
            ref = f"{reg.host}/{name}/{image}:{base_tag}"
            with timed(f"push {image} image {ref}"):
                engine.cli("tag", st.base_image, ref)
                st.images[image] = ref  # the local tag is this sandbox's from now on (down removes it)
                st.save(dir)
                engine.cli("push", ref, config_dir=config_dir, what=f"docker push {ref}")
            pinned = _pinned(reg, f"{name}/{image}", base_tag)
            if not pinned:
                raise FaultError(f"the registry does not hold {ref} right after pushing it")
            report.did(f"{image} image")
        st.images[image] = pinned
    st.save(dir)

    # stack
    front_url = _front_url(st)
    c = _stack_client(c, st)  # the nodes' manager with --nodes
    foreign = stack_mod.not_owned(stack_mod.objects(c, st.stack), st.owned)
    if foreign:  # deployed by someone else since the preflight: up undoes this run's work
        raise UserError(f"stack {st.stack} appeared on this engine meanwhile and is not this sandbox's "
                        f"({', '.join(foreign[:3])}): pass another --name, or remove that stack")
    current = stack_mod.states(c, st.stack)
    expected_images = {"phpfiles": st.images["app"], "phpha": st.images["app"], "web": st.images["front"],
                       "edge": st.images["edge"], "db": st.images["db"]}
    same = set(current) == set(SERVICES) and all(current[s]["image"] == expected_images[s] for s in SERVICES)
    # a stack stackpatch has patched since (images of this sandbox's registry, other tags) is left as it is
    patched = (not same and set(current) == set(SERVICES)
               and all(current[s]["image"].startswith(f"{reg.host}/{name}/") for s in SERVICES))
    expect_release, expect_revision = st.release, st.revision
    if (same or patched) and stack_mod.is_converged(current, set(SERVICES)):
        labels = current["phpfiles"]["labels"]
        if patched and labels.get("stackpatch.version") and labels.get("stackpatch.revision"):
            expect_release, expect_revision = labels["stackpatch.version"], labels["stackpatch.revision"]
        report.reuse(f"stack {st.stack} at {expect_release} (all services at full healthy replicas)"
                     + (f"; patched since {st.release}, left as it is" if patched else ""))
    else:
        with timed(f"deploy stack {st.stack} from {apprepo.RELEASE} and wait until healthy"):
            try:
                stack_mod.deploy(st.stack, app_dir / "deploy" / "stack.yml", _deploy_env(st, st.front_port),
                                 config_dir, overrides=_overrides(st, app_dir))
                stack_mod.wait_healthy(c, st.stack, set(SERVICES))
            finally:  # whatever the deploy made is this sandbox's: record it, even when the wait failed
                _record_owned(c, dir, st)
        with timed("run migrations in phpfiles"):
            stack_mod.run_in_service(c, st.stack, "phpfiles", ["python3", "/app/migrate.py"],
                                     node_clients=_node_clients(st))
        _record_owned(c, dir, st)  # the volumes the tasks made while starting
        report.did("stack")
    got = stack_mod.wait_version(front_url, expect_release, expect_revision)
    ui.ok(f"{front_url}/version answers release {got['release']} at {got['revision']}")
    info = _info(c, dir, st)
    if with_staging:
        if st.staging_front_port is None:
            st.staging_front_port = free_port()
            st.save(dir)
        fresh = not stack_mod.objects(c, st.staging_stack)["services"]
        add_staging(info, app_dir, st.staging_stack, st.staging_front_port)
        if fresh or st.owned_staging:  # a staging stack that was there before and is not ours stays not ours
            st.owned_staging = stack_mod.objects(c, st.staging_stack)
            st.save(dir)
        report.did("staging stack")
    info.built, info.reused, info.seconds = report.built, report.reused, round(report.elapsed(), 1)
    info.serving = {"release": got["release"], "revision": got["revision"]}
    return info


def _record_owned(c, dir: Path, st: State) -> None:
    """After this sandbox's own deploy: every object under the stack's label is its (the preflight
    refused any that were there before and were not)."""
    st.owned = stack_mod.objects(c, st.stack)
    st.save(dir)


def _info(c, dir: Path, st: State) -> SandboxInfo:
    reg = _registry(dir, st)
    app_dir, origin_dir = _paths(dir, st.name)
    pid = reg.pid()
    if c is not None:
        c = _stack_client(c, st)
    nodes, tasks, connect = [], {}, {}
    if st.nodes:
        nodes = nodes_mod.nodes_status(st.nodes)
        connect = {"unix": nodes_mod.unix_host(st.nodes), "ssh": nodes_mod.ssh_host(st.nodes),
                   "tcp": nodes_mod.tcp_host(st.nodes), "tls_cert_path": str(nodes_mod.client_cert_dir(dir)),
                   "ssh_home": str(nodes_mod.ssh_home(dir))}
    elif c is not None:
        try:
            sw = c.info().get("Swarm") or {}
            nodes = [{"name": n.attrs.get("Description", {}).get("Hostname", n.id),
                      "role": n.attrs.get("Spec", {}).get("Role", "?"), "addr": n.attrs.get("Status", {}).get("Addr", ""),
                      "docker_host": engine.docker_host() if n.id == sw.get("NodeID") else "",
                      "state": n.attrs.get("Status", {}).get("State", "?")} for n in c.nodes.list()]
        except Exception:  # noqa: BLE001 - not a swarm (any more): status reports what it can read
            nodes = []
    if c is not None:
        try:
            tasks = nodes_mod.tasks(c, st.stack)
        except Exception:  # noqa: BLE001 - status reports what it can read
            tasks = {}
    return SandboxInfo(
        nodes=nodes, tasks=tasks, connect=connect,
        dir=dir, name=st.name, stack=st.stack, front_url=_front_url(st),
        front_port=st.front_port, registry=reg.host, registry_env_file=reg.env_file,
        registry_running=bool(pid), registry_pid=pid, docker_config=dir / "docker-config",
        app_dir=app_dir, origin_dir=origin_dir, config_path=app_dir / "stackpatch.toml",
        base_image=st.base_image, release=st.release, revision=st.revision, images=dict(st.images),
        services=stack_mod.states(c, st.stack) if c is not None else {})


def _load(dir: Path) -> tuple[Path, State]:
    dir = Path(dir).expanduser().resolve()
    st = State.load(dir) if dir.is_dir() else None
    if st is None:
        raise UserError(f"no sandbox in {dir}: run `stackpatch sandbox up --dir {dir}` first")
    return dir, st


def status(dir: Path) -> SandboxInfo:
    dir, st = _load(dir)
    return _info(engine.client(), dir, st)



def _nodes_state(dir: Path) -> tuple[Path, State]:
    dir, st = _load(dir)
    if not st.nodes:
        raise UserError(f"the sandbox in {dir} has one node, on this machine's engine: stopping and starting "
                        "nodes is for `sandbox up --nodes N` (N > 1)")
    return dir, st


def stop_node(dir: Path, node: str, sig: int = 15) -> int | None:
    """Stop one node's dockerd of a multi-node sandbox (`node`: manager, worker1… or its hostname) with
    signal `sig` (9: a crash, its containers left running; 15: a clean stop); its pid, None if it was not
    running. `start_node` (or a second `sandbox up`) starts it again."""
    dir, st = _nodes_state(dir)
    return nodes_mod.stop_daemon(st.nodes, node, sig)


def link_node(dir: Path, node: str, up: bool) -> None:
    """Cut one node of a multi-node sandbox off the bridge (up=False) or reconnect it (up=True)."""
    dir, st = _nodes_state(dir)
    nodes_mod.set_link(st.nodes, node, up)


def start_node(dir: Path, node: str, timeout: float = 120) -> bool:
    """Start one node's dockerd again with the arguments `up` gave it, and wait until the swarm counts
    every node ready. True when it had to be started."""
    dir, st = _nodes_state(dir)
    return nodes_mod.start_daemon(dir, st.nodes, lambda: st.save(dir), node, timeout=timeout)


# ---------------------------------------------------------------- down

def down(dir: Path, all: bool = False) -> dict[str, Any]:
    """Remove what this sandbox's state says it created: its stack's services, volumes and networks (by
    id), its registry process, the local tags of its images, and what up wrote in DIR. Anything else of
    the same name (another sandbox's stack, a process it did not start) is left alone. The base image
    stays cached unless all."""
    dir = Path(dir).expanduser().resolve()
    st = State.load(dir) if dir.is_dir() else None
    done: dict[str, Any] = {"stack": None, "registry_stopped": False, "files": [], "base_image_removed": False,
                            "left_alone": []}
    if st is None and not all:
        ui.warn(f"no sandbox in {dir}: nothing to remove")
        return done
    if st is not None and st.dir and Path(st.dir) != dir:
        raise UserError(f"{dir / STATE} was written for the sandbox in {st.dir} (a copy?): run "
                        f"`stackpatch sandbox down --dir {st.dir}` for that one; nothing was removed")
    c = engine.client()
    errors: list[str] = []
    if st is not None and st.nodes:  # the stack dies with the nodes' swarm: namespaces, daemons, bridge, CA
        with timed(f"remove the {st.nodes['count']} nodes (daemons, namespaces, bridge {st.nodes['bridge']}, "
                   "iptables rule, CA)"):
            done["nodes"] = nodes_mod.remove(dir, st.nodes, lambda: st.save(dir))
        if st.nodes["made"]:
            raise FaultError(f"sandbox down could not remove {st.nodes['made'][0]}: run `stackpatch sandbox down` again")
        done["registry_stopped"] = _remove_local(c, dir, st, files=False)
    elif st is not None:
        found = stack_mod.objects(c, st.stack)
        done["left_alone"] = stack_mod.not_owned(found, st.owned)
        if done["left_alone"]:
            ui.warn(f"left alone on stack {st.stack}, not created by this sandbox: {', '.join(done['left_alone'])}")
        mine = {k: dict(st.owned.get(k) or {}) for k in ("services", "volumes", "networks", "configs")}
        if any(mine.values()):
            try:
                with timed(f"remove what this sandbox deployed on stack {st.stack}"):
                    done["stack"] = {"name": st.stack, **stack_mod.remove(c, st.stack, only=mine)}
            except FaultError as e:  # go on: the registry and the files must still go
                errors.append(str(e))
        staging_mine = {k: dict((st.owned_staging or {}).get(k) or {}) for k in ("services", "volumes", "networks")}
        if any(staging_mine.values()):
            try:
                with timed(f"remove what this sandbox deployed on staging stack {st.staging_stack}"):
                    done["staging_stack"] = {"name": st.staging_stack,
                                             **stack_mod.remove(c, st.staging_stack, only=staging_mine)}
            except FaultError as e:
                errors.append(str(e))
        done["registry_stopped"] = _remove_local(c, dir, st, files=False)
        if errors:  # keep the state so that `down` can be run again
            raise FaultError(f"sandbox down stopped the registry but: {errors[0]}: run `stackpatch sandbox down` again")
    done["files"] = _remove_files(dir, st)
    if all:
        done["base_image_removed"] = baseimage.remove(c)
        if done["base_image_removed"]:
            ui.ok(f"removed base image {baseimage.tag()}")
    return done


def _remove_local(c, dir: Path, st: State, files: bool = True) -> bool:
    """Stop this sandbox's registry (its pid file and config path prove it), remove the local tags of its
    images and (with files) what up wrote in dir. True when a registry was stopped."""
    reg = _registry(dir, st)
    stopped = reg.stop()
    if stopped:
        ui.ok(f"stopped the registry on {reg.host}")
    for ref in st.images.values():  # local tags of the images built/pushed for this sandbox
        try:
            c.images.remove(ref.split("@", 1)[0], noprune=False)
        except Exception:  # noqa: BLE001 - already gone or still used: nothing to undo
            pass
    if files:
        _remove_files(dir, st)
    return stopped


def _remove_files(dir: Path, st: State | None) -> list[str]:
    """What up writes in dir (the app repo, its origin and OWNED), then dir itself when that leaves it empty."""
    removed = []
    paths = list(_paths(dir, st.name)) if st is not None else []
    for p in [*paths, *(dir / rel for rel in OWNED)]:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
            removed.append(str(p))
        elif p.exists() or p.is_symlink():
            p.unlink()
            removed.append(str(p))
    _rmdir_if_empty(dir)
    return removed


def _rmdir_if_empty(dir: Path) -> None:
    try:
        dir.rmdir()  # only when empty: never remove what we did not write
    except OSError:
        pass


# ---------------------------------------------------------------- fork and remove_stack

def fork(info: SandboxInfo, dst: Path, stack: str, timeout: float = 180) -> Fork:
    """An independent copy for one test: new bare origin + clone (same history and tags) under dst, its
    stackpatch.toml rewritten for `stack`, its own registry namespace and a new free front port (the edit is hidden from `git status`
    with `git update-index --skip-worktree`, the committed file is unchanged), and `stack` deployed from
    the already pushed release images, healthy and migrated."""
    if not STACK_RE.match(stack):
        raise UserError(f"stack name {stack!r} is not valid: letters, digits, '_', '.', '-'")
    if info.connect:
        raise UserError("a fork is made on the one-engine sandbox: this one has several nodes (`up --nodes 1`)")
    c = engine.client()
    dst = Path(dst).resolve()
    dst.mkdir(parents=True, exist_ok=True)
    app, origin = apprepo.clone(info.origin_dir, dst)
    port = free_port()
    front_url = f"http://127.0.0.1:{port}"
    cfg = app / "stackpatch.toml"
    text = cfg.read_text()
    text = re.sub(r'(?m)^stack = ".*"$', f'stack = "{stack}"', text, count=1)
    text = re.sub(r'(?m)^front_url = ".*"$', f'front_url = "{front_url}"', text, count=1)
    # its own registry namespace: tags are never reused, so two forks shipping the same version
    # (26.11.1b) must not share repositories; the running 26.11.1 images stay the sandbox's
    text = re.sub(r'(?m)^namespace = ".*"$', f'namespace = "{stack.lower()}"', text, count=1)
    cfg.write_text(text)
    git.run("update-index", "--skip-worktree", "stackpatch.toml", cwd=app)
    t0 = time.monotonic()
    _deploy_release_stack(c, info, app, stack, port, timeout)
    ui.ok(f"fork {stack} is up at {front_url} ({time.monotonic() - t0:.1f}s)")
    return Fork(app_dir=app, origin_dir=origin, stack=stack, front_url=front_url, front_port=port, config_path=cfg)


def _deploy_release_stack(c, info: SandboxInfo, app: Path, stack: str, port: int, timeout: float = 180) -> None:
    """`stack` deployed from the sandbox's pushed release images with its front on `port`: healthy,
    migrated, serving the release."""
    st = State(name=info.name, registry_port=int(info.registry.rsplit(":", 1)[1]), front_port=port,
               base_image=info.base_image, release=info.release, revision=info.revision, images=dict(info.images))
    stack_mod.deploy(stack, app / "deploy" / "stack.yml", _deploy_env(st, port), info.docker_config)
    stack_mod.wait_healthy(c, stack, set(SERVICES), timeout=timeout)
    stack_mod.run_in_service(c, stack, "phpfiles", ["python3", "/app/migrate.py"])
    stack_mod.wait_version(f"http://127.0.0.1:{port}", info.release, info.revision)


# ---------------------------------------------------------------- staging beside production

def with_staging_targets(text: str, staging_stack: str, staging_url: str) -> str:
    """The app's stackpatch.toml with its `[target]` renamed `[targets.production]`, a copy of it as
    `[targets.staging]` (its own stack and front URL), and `require_target = true`."""
    lines = text.splitlines()
    start = lines.index("[target]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")
                and not lines[i].startswith(("[[target.", "[target."))), len(lines))
    block, rest = lines[start:end], lines[:start] + lines[end:]

    def renamed(name: str) -> list[str]:
        out = []
        for ln in block:
            ln = ln.replace("[[target.", f"[[targets.{name}.").replace("[target]", f"[targets.{name}]")
            if name == "staging" and ln.startswith("stack = "):
                ln = f'stack = "{staging_stack}"'
            elif name == "staging" and ln.startswith("front_url = "):
                ln = f'front_url = "{staging_url}"'
            out.append(ln)
        return out

    first_table = next(i for i, ln in enumerate(rest) if ln.startswith("["))
    head = rest[:first_table] + ["# every command that reads or changes a stack names it: --target staging|production",
                                 "require_target = true", ""]
    return "\n".join(head + rest[first_table:] + [""] + renamed("staging") + [""] + renamed("production")) + "\n"


def add_staging(info: SandboxInfo, app: Path, stack: str, port: int | None = None, timeout: float = 180) -> str:
    """Deploy `stack` from the release beside production and name it `staging` in the app's
    stackpatch.toml (production becomes `[targets.production]`; the edit is hidden from `git status`
    as a fork's is). Returns the staging front URL. Idempotent: a healthy staging stack is reused."""
    c = engine.client()
    cfg = Path(app) / "stackpatch.toml"
    text = cfg.read_text()
    if port is None:
        port = free_port()
    url = f"http://127.0.0.1:{port}"
    current = stack_mod.states(c, stack)
    if set(current) == set(SERVICES) and stack_mod.is_converged(current, set(SERVICES)):
        ui.ok(f"staging stack {stack} is up at {url} (reused)")
    else:
        with timed(f"deploy staging stack {stack} from {info.release} and wait until healthy"):
            _deploy_release_stack(c, info, Path(app), stack, port, timeout)
    if "[targets.staging]" not in text:
        cfg.write_text(with_staging_targets(text, stack, url))
        git.run("update-index", "--skip-worktree", "stackpatch.toml", cwd=app)
    return url


def remove_stack(stack: str, timeout: float = 120) -> dict[str, int]:
    """Remove a stack and its volumes and networks, waiting for its tasks to stop first, and the deploy
    lock a run on it may have left (a Swarm config object; it carries no stack label)."""
    from stackpatch.targets.swarm import lock_name
    c = engine.client()
    for cfg in c.api.configs(filters={"name": lock_name(stack)}):
        c.api.remove_config(cfg["ID"])
    return stack_mod.remove(c, stack, timeout=timeout)
