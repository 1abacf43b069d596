"""Deploy a stack from its compose file, wait until every service is at full healthy replicas,
run the migrations in the canary, and remove a stack with its volumes and networks."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, NotFound

from stackpatch import ui
from stackpatch.errors import FaultError
from stackpatch.sandbox import engine

NS = "com.docker.stack.namespace"


def deploy(stack: str, stack_file: Path, env: dict[str, str], config_dir: Path,
           overrides: tuple[Path, ...] = ()) -> None:
    """`docker stack deploy` of stack_file (and override files merged over it) on the engine env's
    DOCKER_HOST names (the process's own otherwise)."""
    files = [a for f in (stack_file, *overrides) for a in ("-c", str(f))]
    engine.cli("stack", "deploy", "--with-registry-auth", "--prune", *files, stack,
               config_dir=config_dir, env=env, cwd=stack_file.parent, what=f"docker stack deploy {stack}")


def services(c: docker.DockerClient, stack: str) -> list[Any]:
    return c.services.list(filters={"label": f"{NS}={stack}"})


def _local_node(c: docker.DockerClient) -> str:
    return (c.info().get("Swarm") or {}).get("NodeID", "")


def _healthy(c: docker.DockerClient, task: dict, local_node: str | None = None) -> bool:
    if task.get("Status", {}).get("State") != "running":
        return False
    cid = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
    if not cid:
        return False
    if local_node is not None and task.get("NodeID") != local_node:
        # on another node (a multi-node sandbox): swarm reports a task with a healthcheck `running` only
        # once its container is healthy ("starting" before)
        return True
    try:
        state = c.api.inspect_container(cid)["State"]
    except NotFound:
        return False
    health = state.get("Health")
    return state.get("Running", False) and (health is None or health.get("Status") == "healthy")


def service_state(c: docker.DockerClient, svc: Any) -> dict[str, Any]:
    """{'image', 'replicas_running' (running and healthy), 'replicas_desired', 'error'} of one service."""
    spec = svc.attrs["Spec"]
    desired = spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 1)
    image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
    running = 0
    error = ""
    local = _local_node(c)
    for t in c.api.tasks(filters={"service": svc.id}):
        if t.get("DesiredState") != "running":
            if t.get("Status", {}).get("Err") and not error:
                error = t["Status"]["Err"]
            continue
        if t.get("Spec", {}).get("ContainerSpec", {}).get("Image") != image:
            continue
        if _healthy(c, t, local):
            running += 1
    return {"image": image, "replicas_running": running, "replicas_desired": desired, "error": error,
            "labels": dict(spec.get("Labels") or {})}


def states(c: docker.DockerClient, stack: str) -> dict[str, dict[str, Any]]:
    prefix = f"{stack}_"
    out = {}
    for svc in sorted(services(c, stack), key=lambda s: s.name):
        out[svc.name.removeprefix(prefix)] = service_state(c, svc)
    return out


def is_converged(st: dict[str, dict[str, Any]], expected: set[str]) -> bool:
    return set(st) >= expected and all(s["replicas_running"] >= s["replicas_desired"] for s in st.values())


def wait_healthy(c: docker.DockerClient, stack: str, expected: set[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    t0 = time.monotonic()
    while True:
        st = states(c, stack)
        line = ", ".join(f"{n} {s['replicas_running']}/{s['replicas_desired']}" for n, s in st.items())
        if is_converged(st, expected):
            return
        if line != last:
            ui.info(f"  [dim]{time.monotonic() - t0:5.1f}s[/] {stack}: {line or 'no services yet'}")
            last = line
        if time.monotonic() > deadline:
            errs = "; ".join(f"{n}: {s['error']}" for n, s in st.items() if s["error"])
            raise FaultError(f"stack {stack} did not reach full healthy replicas within {timeout:.0f}s "
                             f"({line}){': ' + errs if errs else ''}: see `docker stack ps {stack} --no-trunc`")
        time.sleep(0.5)


def run_in_service(c: docker.DockerClient, stack: str, service: str, argv: list[str],
                   node_clients: dict[str, docker.DockerClient] | None = None) -> str:
    """Run argv once in a running task of stack_service: a local container, or (node_clients: the
    engine of each node by hostname, a multi-node sandbox) one on the node that runs it."""
    name = f"{stack}_{service}"
    if node_clients:
        hosts = {n.id: n.attrs.get("Description", {}).get("Hostname") for n in c.nodes.list()}
        for t in c.api.tasks(filters={"service": name, "desired-state": "running"}):
            if t.get("Status", {}).get("State") == "running" and hosts.get(t.get("NodeID")) in node_clients:
                c = node_clients[hosts[t["NodeID"]]]
                break
    containers = c.containers.list(filters={"label": f"com.docker.swarm.service.name={name}", "status": "running"})
    if not containers:
        raise FaultError(f"no running container of {name} to run {' '.join(argv)} in")
    res = containers[0].exec_run(argv, demux=False)
    out = res.output.decode(errors="replace") if res.output else ""
    if res.exit_code != 0:
        last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise FaultError(f"`{' '.join(argv)}` in {name} exited {res.exit_code}: {last[0]}")
    return out


def fetch_json(url: str, timeout: float = 2) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def wait_version(front_url: str, release: str, revision: str, timeout: float = 60) -> dict:
    """Poll front_url/version until it names release and revision."""
    deadline = time.monotonic() + timeout
    got: Any = None
    while time.monotonic() < deadline:
        try:
            got = fetch_json(f"{front_url}/version")
            if got.get("release") == release and got.get("revision") == revision:
                return got
        except (OSError, ValueError, urllib.error.URLError) as e:
            got = f"{type(e).__name__}: {e}"
        time.sleep(0.3)
    raise FaultError(f"{front_url}/version does not answer release {release} at {revision[:12]} "
                     f"within {timeout:.0f}s (last answer: {str(got)[:200]})")


def objects(c: docker.DockerClient, stack: str) -> dict[str, dict[str, str]]:
    """What the engine holds under the stack's namespace label, identified beyond its name:
    {"services": {name: id}, "volumes": {name: CreatedAt}, "networks": {id: name}, "configs": {id: name}}
    (configs: the edge's haproxy.cfg)."""
    flt = {"label": f"{NS}={stack}"}
    return {
        "services": {svc.name: svc.id for svc in services(c, stack)},
        "volumes": {v["Name"]: v.get("CreatedAt", "") for v in c.api.volumes(filters=flt).get("Volumes") or []},
        "networks": {n["Id"]: n["Name"] for n in c.api.networks(filters=flt)},
        "configs": {x["ID"]: x["Spec"]["Name"] for x in c.api.configs(filters=flt)},
    }


def not_owned(found: dict[str, dict[str, str]], owned: dict[str, dict[str, str]]) -> list[str]:
    """The objects of `found` (see objects()) that `owned` does not name with the same id: the names."""
    mine = {k: owned.get(k) or {} for k in ("services", "volumes", "networks", "configs")}
    return ([f"service {n}" for n, i in found["services"].items() if i not in mine["services"].values()]
            + [f"volume {n}" for n, t in found["volumes"].items() if mine["volumes"].get(n) != t]
            + [f"network {n}" for i, n in found["networks"].items() if i not in mine["networks"]]
            + [f"config {n}" for i, n in (found.get("configs") or {}).items() if i not in mine["configs"]])


def remove(c: docker.DockerClient, stack: str, timeout: float = 120,
           only: dict[str, dict[str, str]] | None = None) -> dict[str, int]:
    """Remove the stack's services, wait until their containers are gone, then its volumes, networks and
    configs. With `only` (a record of objects()), remove just the objects it names with the same id,
    nothing else."""
    removed = {"services": 0, "volumes": 0, "networks": 0, "configs": 0}
    ids = set((only or {}).get("services", {}).values())
    svcs = [s for s in services(c, stack) if only is None or s.id in ids]
    for svc in svcs:
        try:
            svc.remove()
            removed["services"] += 1
        except NotFound:
            pass
    deadline = time.monotonic() + timeout
    flt = {"label": f"{NS}={stack}"}
    while True:
        try:
            left = c.api.containers(all=True, filters=flt)
        except APIError:  # Docker 20.10 can answer 404 while it removes a listed container: look again
            left = [{"State": "removing", "Labels": {}}]
        if only is not None:  # only the containers of the services removed above (or being removed)
            left = [x for x in left if (x.get("Labels") or {}).get("com.docker.swarm.service.id", "?") in ids
                    or x.get("State") == "removing" and not x.get("Labels")]
        if not left:
            break
        if time.monotonic() > deadline:
            raise FaultError(f"the containers of stack {stack} did not stop within {timeout:.0f}s")
        for ctr in left:
            # the services are gone; a container that has stopped is only waiting for swarm's reaper
            if ctr.get("State") in ("exited", "dead", "created"):
                try:
                    c.api.remove_container(ctr["Id"], v=False, force=False)
                except (NotFound, APIError):
                    pass
        time.sleep(0.2)
    vols = (only or {}).get("volumes", {})
    for vol in c.volumes.list(filters=flt):
        if only is not None and vols.get(vol.name) != vol.attrs.get("CreatedAt", ""):
            continue
        while True:
            try:
                vol.remove()
                removed["volumes"] += 1
                break
            except NotFound:
                break
            except APIError as e:
                if time.monotonic() > deadline:
                    raise FaultError(f"cannot remove volume {vol.name}: {e.explanation or e}") from None
                time.sleep(0.25)  # the engine releases the volume a moment after the container goes
    nets = (only or {}).get("networks", {})
    for net in c.networks.list(filters=flt):
        if only is not None and net.id not in nets:
            continue
        while True:
            try:
                net.remove()
                removed["networks"] += 1
                break
            except NotFound:
                break
            except APIError as e:
                if time.monotonic() > deadline:
                    raise FaultError(f"cannot remove network {net.name}: {e.explanation or e}") from None
                time.sleep(0.25)
    cfgs = (only or {}).get("configs", {})
    for cfg in c.api.configs(filters=flt):
        if only is not None and cfg["ID"] not in cfgs:
            continue
        try:
            c.api.remove_config(cfg["ID"])
            removed["configs"] += 1
        except NotFound:
            pass
    return removed
