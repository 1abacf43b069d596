"""Pure functions over Swarm's JSON: service specs in, service specs and plain data out.

Building the request apart from sending it (Kamal's commands/ vs cli/): every function here is
testable without an engine.
"""

from __future__ import annotations

import copy

from stackpatch.targets.base import ImageRef, Observation, ServiceState, TaskView
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


def service_state(stack: str, raw: dict, running: int, image_labels: dict[str, str]) -> ServiceState:
    spec = raw["Spec"]
    return ServiceState(name=service_name(stack, spec["Name"]), full_name=spec["Name"], id=raw["ID"],
                        image=ImageRef.parse(spec["TaskTemplate"]["ContainerSpec"]["Image"]),
                        labels=dict(spec.get("Labels") or {}), image_labels=image_labels,
                        replicas_desired=desired_replicas(spec), replicas_running=running,
                        update_state=(raw.get("UpdateStatus") or {}).get("State"))


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
    service's spec (same networks, env, mounts, secrets), with no healthcheck and no restart."""
    tt = copy.deepcopy(template["TaskTemplate"])
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
