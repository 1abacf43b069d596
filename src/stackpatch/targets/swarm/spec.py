"""Pure functions over Swarm's JSON: service specs in, service specs and plain data out.

Building the request apart from sending it (Kamal's commands/ vs cli/): every function here is
testable without an engine.
"""

from __future__ import annotations

import copy

from stackpatch.targets.base import EngineFacts, ImageRef, Observation, ServiceState, TaskView, UpdateSettings
from stackpatch.targets.swarm.client import STACK_LABEL

JOB_LABEL = "stackpatch.job"


def service_name(stack: str, full: str) -> str:
    return full[len(stack) + 1:] if full.startswith(stack + "_") else full


def desired_replicas(spec: dict) -> int | None:
    """Replicas a replicated service wants (Swarm's default 1 when unset); None for a global one."""
    mode = spec.get("Mode") or {}
    if "Replicated" in mode:
        return (mode["Replicated"] or {}).get("Replicas", 1)
    return None


NS = 1e9


def update_settings(spec: dict, image_healthcheck: dict | None | bool) -> UpdateSettings:
    """The update settings of a service spec, Swarm's defaults filled in (monitor 5 s, delay 0,
    order stop-first, failure_action pause; a healthcheck's interval 30 s and retries 3). The
    healthcheck is the spec's, else the image's (`image_healthcheck`: its Config.Healthcheck, None
    when it has none, False when the image could not be read)."""
    uc = spec.get("UpdateConfig") or {}
    hc = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Healthcheck")
    source = "service"
    if not hc or not hc.get("Test"):
        hc, source = (image_healthcheck or None), "image"
        if image_healthcheck is False:
            source = "unknown"
    if source != "unknown" and (not hc or not hc.get("Test")):
        source = "none"
    elif hc and hc.get("Test") and hc["Test"][0] == "NONE":
        source = "disabled"
    with_hc = source in ("service", "image")
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    return UpdateSettings(
        order=uc.get("Order") or "stop-first", failure_action=uc.get("FailureAction") or "pause",
        monitor=(uc.get("Monitor") or 5 * NS) / NS, delay=(uc.get("Delay") or 0) / NS,
        parallelism=int(uc.get("Parallelism") if uc.get("Parallelism") is not None else 1),
        healthcheck=source,
        health_interval=((hc.get("Interval") or 30 * NS) / NS) if with_hc else None,
        health_retries=(hc.get("Retries") or 3) if with_hc else None,
        host_ports=tuple(int(p["PublishedPort"]) for p in ports
                         if (p.get("PublishMode") or "ingress") == "host" and p.get("PublishedPort")))


def service_state(stack: str, raw: dict, running: int, image_labels: dict[str, str],
                  image_healthcheck: dict | None | bool = False) -> ServiceState:
    spec = raw["Spec"]
    return ServiceState(name=service_name(stack, spec["Name"]), full_name=spec["Name"], id=raw["ID"],
                        image=ImageRef.parse(spec["TaskTemplate"]["ContainerSpec"]["Image"]),
                        labels=dict(spec.get("Labels") or {}), image_labels=image_labels,
                        replicas_desired=desired_replicas(spec), replicas_running=running,
                        update_state=(raw.get("UpdateStatus") or {}).get("State"),
                        update=update_settings(spec, image_healthcheck))


def can_start_first(spec: dict) -> bool:
    """A service can hold an old and a new task at once unless it publishes a host-mode port
    (the port is bound on the node) or caps replicas per node."""
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    if any((p.get("PublishMode") or "ingress") == "host" for p in ports):
        return False
    if ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("MaxReplicas"):
        return False
    return True


def updated_spec(spec: dict, image: str, labels: dict[str, str | None]) -> tuple[dict, str]:
    """The spec with ONLY the image, stackpatch's labels and (when the service can hold two tasks) the
    update order changed. Returns (new spec, order)."""
    new = copy.deepcopy(spec)
    new["TaskTemplate"]["ContainerSpec"]["Image"] = image
    new_labels = dict(new.get("Labels") or {})
    for k, v in labels.items():
        if v is None:
            new_labels.pop(k, None)
        else:
            new_labels[k] = v
    new["Labels"] = new_labels
    order = "start-first" if can_start_first(new) else "stop-first"
    new["UpdateConfig"] = {**(new.get("UpdateConfig") or {}), "Order": order}
    return new, order


def forced_spec(spec: dict) -> dict:
    """The same spec with ForceUpdate+1, like `docker service update --force`."""
    new = copy.deepcopy(spec)
    new["TaskTemplate"]["ForceUpdate"] = int(new["TaskTemplate"].get("ForceUpdate") or 0) + 1
    return new


def job_spec(name: str, template: dict, image: str, command: list[str], env: dict[str, str]) -> dict:
    """A `replicated-job` service that runs `command` once from `image`, cloned from the template
    service's spec (same networks, env, mounts, secrets), with no healthcheck and no restart. Not the
    service's network aliases: `docker stack deploy` gives each service its short name as an alias, and
    Swarm's DNS answers `<alias>` and `tasks.<alias>` with every task that carries it, so a job with the
    alias joins the service's answer (at once: it has no healthcheck) and the proxies send it requests
    it refuses, then, once it exited, connects that time out."""
    tt = copy.deepcopy(template["TaskTemplate"])
    for net in tt.get("Networks") or []:
        net.pop("Aliases", None)
    cs = tt["ContainerSpec"]
    cs["Image"] = image
    cs["Command"] = list(command)
    cs.pop("Args", None)
    cs["Healthcheck"] = {"Test": ["NONE"]}
    cs["Env"] = [e for e in (cs.get("Env") or []) if e.split("=", 1)[0] not in env] + \
        [f"{k}={v}" for k, v in env.items()]
    tt["RestartPolicy"] = {"Condition": "none", "MaxAttempts": 0}
    labels = {k: v for k, v in (template.get("Labels") or {}).items() if k == STACK_LABEL}
    labels[JOB_LABEL] = "release"
    return {"Name": name, "Labels": labels, "TaskTemplate": tt,
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}}


def task_health(t: dict, has_healthcheck: bool) -> str | None:
    """A task's health from the manager's task status alone (no container inspect, so any node): Swarm
    keeps a task with a healthcheck `starting` until it is healthy, and fails it as an "unhealthy
    container" when it is not."""
    st = t.get("Status") or {}
    state = st.get("State")
    if "unhealthy" in (st.get("Err") or ""):
        return "unhealthy"
    if not has_healthcheck:
        return None
    if state == "starting":
        return "starting"
    if state == "running":
        return "healthy"
    return None


def has_healthcheck(spec: dict, image_config: dict | None) -> bool:
    """The service's tasks run a healthcheck: the spec's, else the image's (None: unknown image)."""
    hc = ((spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Healthcheck") or {}
    if not hc.get("Test"):
        hc = (image_config or {}).get("Healthcheck") or {}
    return bool(hc.get("Test")) and hc["Test"][0] != "NONE"


def pinned_to_node(spec: dict, node_id: str) -> dict:
    """A job spec whose one task runs on node `node_id` (next to the task it stands in for)."""
    new = copy.deepcopy(spec)
    pl = dict(new["TaskTemplate"].get("Placement") or {})
    pl["Constraints"] = [*(pl.get("Constraints") or []), f"node.id=={node_id}"]
    pl.pop("Preferences", None)
    pl.pop("MaxReplicas", None)
    new["TaskTemplate"]["Placement"] = pl
    return new


def pull_spec(name: str, stack: str, image: str, placement: dict) -> dict:
    """A `global-job` that runs `true` from `image` once on every node `placement` allows: each node
    pulls the image before its task starts (the pre-pull). No network, mount or secret; no restart."""
    pl = {k: v for k, v in (placement or {}).items() if k in ("Constraints", "Platforms")}
    return {"Name": name, "Labels": {STACK_LABEL: stack, JOB_LABEL: "prepull"},
            "TaskTemplate": {"ContainerSpec": {"Image": image, "Command": ["true"],
                                               "Healthcheck": {"Test": ["NONE"]}},
                             "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
                             "Placement": pl},
            "Mode": {"GlobalJob": {}}}


PULLED_STATES = frozenset({"starting", "running", "complete"})


def node_pull(t: dict) -> tuple[str, str | None]:
    """(pending | pulled | failed, the engine's reason) of one pre-pull task. A task that got a container
    has its image, whatever `true` then did (an image without `true` still counts as pulled); one
    rejected before it had a container could not pull."""
    st = t.get("Status") or {}
    state = st.get("State") or ""
    has_container = bool((st.get("ContainerStatus") or {}).get("ContainerID"))
    if state in PULLED_STATES or (state == "failed" and has_container):
        return "pulled", None
    if state in ("failed", "rejected", "orphaned", "shutdown", "remove"):
        return "failed", st.get("Err") or st.get("Message") or state
    return "pending", st.get("Message") or state or None


def task_view(t: dict, health: str | None) -> TaskView:
    st = t.get("Status") or {}
    cs = st.get("ContainerStatus") or {}
    return TaskView(state=st.get("State", ""), desired=t.get("DesiredState", ""),
                    image=t["Spec"]["ContainerSpec"]["Image"], created_at=t.get("CreatedAt", ""),
                    updated_at=t.get("UpdatedAt", ""), err=st.get("Err"), message=st.get("Message"),
                    exit_code=cs.get("ExitCode"), health=health, node=t.get("NodeID"))


def observation(name: str, raw: dict, tasks: list[TaskView]) -> Observation:
    spec = raw["Spec"]
    us = raw.get("UpdateStatus") or {}
    return Observation(service=name, spec_image=spec["TaskTemplate"]["ContainerSpec"]["Image"],
                       update_state=us.get("State"), update_message=us.get("Message", ""),
                       updated_at=raw.get("UpdatedAt") or "", desired=desired_replicas(spec), tasks=tuple(tasks))


def engine_facts(info: dict) -> EngineFacts:
    """`GET /info` → version, role, clock."""
    from datetime import datetime
    sw = info.get("Swarm") or {}
    state = sw.get("LocalNodeState") or "inactive"
    manager = state == "active" and bool(sw.get("ControlAvailable"))
    role = ("swarm manager" if manager else "swarm worker (cannot change services)" if state == "active"
            else f"not in a swarm (node state {state})")
    clock = None
    raw = info.get("SystemTime") or ""
    if raw:
        head, _, frac = raw.partition(".")
        tz = ""
        for sep in ("Z", "+", "-"):
            if sep in frac:
                i = frac.index(sep)
                frac, tz = frac[:i], frac[i:]
                break
        try:
            stamp = head + (("." + frac[:6]) if frac else "") + ("+00:00" if tz in ("Z", "") else tz)
            clock = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            clock = None
    return EngineFacts(version=str(info.get("ServerVersion") or "?"), manager=manager, role=role, clock=clock)
