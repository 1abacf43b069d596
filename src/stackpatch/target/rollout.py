"""Acting on a Swarm stack: change one service's image, wait for it to converge, run a one-off job.

Functions over a docker SDK client. Every update reads the live spec first and changes ONLY the image,
stackpatch's labels and (when the service can hold two tasks) the update order; everything else in the
spec stays as the stack file made it. Registry credentials travel in the `X-Registry-Auth` header, as
`docker service update --with-registry-auth` sends them, so every node can pull the private image.
"""

from __future__ import annotations

import time
from typing import Callable

import docker
from docker import auth as docker_auth
from docker.errors import APIError, DockerException, NotFound

from stackpatch.errors import EngineError, FaultError
from stackpatch.target.base import ImageRef, ServiceState

Progress = Callable[[str], None]
StopCheck = Callable[[], None]  # raises to stop a wait (Ctrl-C handling)

STACK_LABEL = "com.docker.stack.namespace"
TERMINAL_BAD = {"failed", "rejected", "orphaned", "remove"}


def _noop(_: str) -> None:
    pass


# ------------------------------------------------------------------ engine

def connect(docker_host: str, tls_verify: bool = False, tls_cert_path: str | None = None,
            timeout: float = 30) -> docker.DockerClient:
    """A client for the swarm manager; EngineError (one line) when it does not answer."""
    kwargs: dict = {"base_url": docker_host, "timeout": int(timeout)}
    if docker_host.startswith("tcp://") and tls_cert_path:
        import os
        from docker.tls import TLSConfig
        kwargs["tls"] = TLSConfig(client_cert=(os.path.join(tls_cert_path, "cert.pem"),
                                               os.path.join(tls_cert_path, "key.pem")),
                                  ca_cert=os.path.join(tls_cert_path, "ca.pem") if tls_verify else None,
                                  verify=tls_verify)
    if docker_host.startswith("ssh://"):
        kwargs["use_ssh_client"] = True
    try:
        client = docker.DockerClient(**kwargs)
        client.ping()
    except (DockerException, OSError) as e:
        raise EngineError(f"the Docker engine at {docker_host} does not answer ({_short(e)}): "
                          "start it or fix target.docker_host") from None
    return client


def connect_target(tcfg) -> docker.DockerClient:
    return connect(tcfg.docker_host, tcfg.tls_verify, tcfg.tls_cert_path)


def unreachable(e: BaseException) -> bool:
    """True when an exception means the engine could not be reached (as opposed to a refusal)."""
    import requests
    return isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError,
                          TimeoutError)) or (isinstance(e, DockerException) and not isinstance(e, APIError))


def _short(e: BaseException) -> str:
    if isinstance(e, APIError):
        msg = e.explanation or str(e)
    else:
        msg = str(e)
    msg = " ".join(str(msg).split())
    return msg[:200]


def registry_auth_header(client: docker.DockerClient, host: str, username: str | None,
                         password: str | None) -> str | None:
    """The X-Registry-Auth value: from explicit credentials, else the docker config (like the CLI)."""
    if username and password:
        raw = docker_auth.encode_header({"username": username, "password": password, "serveraddress": host})
        return raw.decode() if isinstance(raw, bytes) else raw
    try:
        hdr = docker_auth.get_config_header(client.api, host)
    except Exception:  # noqa: BLE001 - an unreadable docker config means no auth, like the CLI
        hdr = None
    if isinstance(hdr, bytes):
        hdr = hdr.decode()
    return hdr or None


# ------------------------------------------------------------------ reading

def _service_name(stack: str, full: str) -> str:
    return full[len(stack) + 1:] if full.startswith(stack + "_") else full


def read_stack(client: docker.DockerClient, stack: str, image_labels: bool = True) -> dict[str, ServiceState]:
    """Every service of `stack`: image, labels, replicas (desired/running), update state."""
    services = client.api.services(filters={"label": f"{STACK_LABEL}={stack}"})
    out: dict[str, ServiceState] = {}
    for s in services:
        st = _state(client, stack, s, image_labels)
        out[st.name] = st
    return out


def read_service(client: docker.DockerClient, stack: str, name: str) -> ServiceState | None:
    try:
        s = client.api.inspect_service(f"{stack}_{name}")
    except NotFound:
        return None
    return _state(client, stack, s, True)


def _state(client, stack: str, s: dict, image_labels: bool) -> ServiceState:
    spec = s["Spec"]
    image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
    mode = spec.get("Mode", {})
    desired = mode.get("Replicated", {}).get("Replicas") if "Replicated" in mode else None
    tasks = client.api.tasks(filters={"service": s["ID"], "desired-state": "running"})
    running = sum(1 for t in tasks if t["Status"]["State"] == "running")
    ilabels: dict[str, str] = {}
    if image_labels:
        ilabels = _image_labels(client, image)
    return ServiceState(name=_service_name(stack, spec["Name"]), full_name=spec["Name"], id=s["ID"],
                        image=ImageRef.parse(image), labels=dict(spec.get("Labels") or {}),
                        image_labels=ilabels, replicas_desired=desired, replicas_running=running,
                        update_state=(s.get("UpdateStatus") or {}).get("State"))


def _image_labels(client, image: str) -> dict[str, str]:
    ref = ImageRef.parse(image)
    for candidate in ([f"{ref.repository}@{ref.digest}"] if ref.digest else []) + [image]:
        try:
            return dict(client.api.inspect_image(candidate)["Config"].get("Labels") or {})
        except (APIError, DockerException):
            continue
    return {}


def same_image(a: str, b: str) -> bool:
    """Two references name the same image: equal digests when both are pinned, else equal strings."""
    ra, rb = ImageRef.parse(a), ImageRef.parse(b)
    if ra.digest and rb.digest:
        return ra.repository == rb.repository and ra.digest == rb.digest
    return str(ra) == str(rb)


# ------------------------------------------------------------------ updating

def can_start_first(spec: dict) -> bool:
    """A service can hold an old and a new task at once unless it publishes a host-mode port
    (the port is bound on the node) or caps replicas per node."""
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    if any((p.get("PublishMode") or "ingress") == "host" for p in ports):
        return False
    if ((spec.get("TaskTemplate") or {}).get("Placement") or {}).get("MaxReplicas"):
        return False
    return True


def update_image(client: docker.DockerClient, full_name: str, image_ref: str, labels: dict[str, str | None],
                 registry_auth: str | None, progress: Progress = _noop) -> str:
    """Point `full_name` at `image_ref` (repo:tag@sha256:…) and set/remove stackpatch labels.

    Reads the live spec first (the version guards against a concurrent writer) and keeps everything
    else. Returns the update order used ("start-first"/"stop-first").
    """
    for attempt in range(3):
        try:
            s = client.api.inspect_service(full_name)
        except NotFound:
            raise FaultError(f"service {full_name} does not exist any more: the stack changed under the run; "
                             "check `docker stack ps` then `stackpatch abort`") from None
        spec = s["Spec"]
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = image_ref
        new_labels = dict(spec.get("Labels") or {})
        for k, v in labels.items():
            if v is None:
                new_labels.pop(k, None)
            else:
                new_labels[k] = v
        spec["Labels"] = new_labels
        order = "start-first" if can_start_first(spec) else "stop-first"
        uc = dict(spec.get("UpdateConfig") or {})
        uc["Order"] = order
        spec["UpdateConfig"] = uc
        headers = {"X-Registry-Auth": registry_auth} if registry_auth else {}
        url = client.api._url("/services/{0}/update", s["ID"])
        resp = client.api._post_json(url, data=spec, params={"version": s["Version"]["Index"]}, headers=headers)
        try:
            client.api._raise_for_status(resp)
        except APIError as e:
            if "out of sequence" in _short(e) and attempt < 2:
                continue  # someone else wrote the service in between: re-read and retry
            raise FaultError(f"the engine refused to update {full_name}: {_short(e)}") from None
        warnings = (resp.json() or {}).get("Warnings") or []
        for w in warnings:
            progress(f"{full_name}: engine warning: {w}")
        return order
    raise FaultError(f"could not update {full_name}: its spec keeps changing")  # pragma: no cover


def wait_converged(client: docker.DockerClient, full_name: str, image_ref: str, timeout: float,
                   progress: Progress = _noop, stop: StopCheck | None = None, poll: float = 0.5,
                   registry_auth: str | None = None, retries: int = 2) -> float:
    """Wait until the service runs `image_ref` everywhere: update completed (or no update status with
    the new spec), running tasks == desired, all running tasks on the new image and healthy.

    Raises FaultError on timeout, on a paused/rolled-back update, or when the new tasks keep failing.
    Returns the seconds it took.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    last_msg = None
    while True:
        if stop:
            stop()
        try:
            ok, msg, fatal = converged(client, full_name, image_ref)
        except UpdatePaused as e:
            if not e.transient or retries <= 0:
                raise FaultError(f"{full_name} did not converge on the new image: {e}") from None
            retries -= 1
            progress(f"{full_name}: {e}: engine hiccup, not the app; retrying the update")
            force_update(client, full_name, registry_auth)
            continue
        if msg != last_msg:
            progress(f"{full_name}: {msg}")
            last_msg = msg
        if ok:
            return time.monotonic() - t0
        if fatal:
            raise FaultError(f"{full_name} did not converge on the new image: {msg}")
        if time.monotonic() >= deadline:
            raise FaultError(f"{full_name} did not converge within {timeout:.0f}s ({msg}): "
                             "raise timeouts.converge if it is just slow")
        time.sleep(poll)


class UpdatePaused(FaultError):
    """Swarm paused the update because a new task failed."""

    def __init__(self, msg: str, transient: bool):
        super().__init__(msg)
        self.transient = transient


def _newest_failure(client, service_id: str, image_ref: str) -> dict | None:
    tasks = [t for t in client.api.tasks(filters={"service": service_id})
             if t["Status"]["State"] in TERMINAL_BAD and same_image(t["Spec"]["ContainerSpec"]["Image"], image_ref)]
    return max(tasks, key=lambda t: t.get("UpdatedAt", ""), default=None)


def failure_is_transient(task: dict | None) -> bool:
    """A task that failed before its process ran (engine hiccup: network sandbox, container create)
    rather than an app that exited: retrying the update is safe."""
    if task is None:
        return False
    cs = task["Status"].get("ContainerStatus") or {}
    if cs.get("ExitCode") not in (None, 0):
        return False
    err = (task["Status"].get("Err") or "").lower()
    if any(w in err for w in ("no such image", "manifest", "unauthorized", "denied", "not found",
                              "exec format", "executable file")):
        return False
    return bool(err)


def force_update(client: docker.DockerClient, full_name: str, registry_auth: str | None) -> None:
    """Re-run a paused update (same spec, ForceUpdate+1), like `docker service update --force`."""
    s = client.api.inspect_service(full_name)
    spec = s["Spec"]
    spec["TaskTemplate"]["ForceUpdate"] = int(spec["TaskTemplate"].get("ForceUpdate") or 0) + 1
    headers = {"X-Registry-Auth": registry_auth} if registry_auth else {}
    resp = client.api._post_json(client.api._url("/services/{0}/update", s["ID"]), data=spec,
                                 params={"version": s["Version"]["Index"]}, headers=headers)
    client.api._raise_for_status(resp)


def converged(client: docker.DockerClient, full_name: str, image_ref: str) -> tuple[bool, str, bool]:
    """(done, human message, fatal). One look; pure reading."""
    s = client.api.inspect_service(full_name)
    spec = s["Spec"]
    if not same_image(spec["TaskTemplate"]["ContainerSpec"]["Image"], image_ref):
        return False, "the service spec names another image", True
    us = s.get("UpdateStatus") or {}
    state = us.get("State")
    if state in ("paused", "rollback_started", "rollback_paused", "rollback_completed"):
        failed = _newest_failure(client, s["ID"], image_ref)
        why = ((failed or {}).get("Status") or {}).get("Err") or us.get("Message", "")
        code = (((failed or {}).get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
        if code not in (None, 0):
            why = f"a new task exited with code {code}" + (f" ({why})" if why else "")
        msg = f"update {state}: {why}".strip()
        if state == "paused":
            raise UpdatePaused(msg, failure_is_transient(failed))
        return False, msg, True
    mode = spec.get("Mode", {})
    desired = mode.get("Replicated", {}).get("Replicas") if "Replicated" in mode else None
    tasks = client.api.tasks(filters={"service": s["ID"]})
    new = [t for t in tasks if same_image(t["Spec"]["ContainerSpec"]["Image"], image_ref)]
    live = [t for t in tasks if t.get("DesiredState") == "running"]
    running = [t for t in live if t["Status"]["State"] == "running"]
    running_new = [t for t in running if same_image(t["Spec"]["ContainerSpec"]["Image"], image_ref)]
    since = (s.get("UpdatedAt") or "")[:19]  # tasks of this update only (not an older one's history)
    failed_new = [t for t in new if t["Status"]["State"] in TERMINAL_BAD and t.get("CreatedAt", "")[:19] >= since]
    want = desired if desired is not None else max(len(live), 1)
    unhealthy = [t for t in running_new if _container_health(client, t) == "unhealthy"]
    msg = f"{len(running_new)}/{want} running on the new image"
    if failed_new:
        err = failed_new[-1]["Status"].get("Err") or failed_new[-1]["Status"].get("Message") or "task failed"
        msg += f", {len(failed_new)} new task(s) failed ({err})"
        if len(failed_new) >= max(3, want + 2):
            return False, msg, True
    if state == "updating":
        return False, msg + " (updating)", False
    done = (len(running_new) == want and len(running) == want and not unhealthy)
    return done, msg, False


def _container_health(client, task: dict) -> str | None:
    cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID")
    if not cid:
        return None
    try:
        st = client.api.inspect_container(cid)["State"]
    except (APIError, DockerException):
        return None  # on another node: the task state (running only once healthy) is what we have
    return (st.get("Health") or {}).get("Status")


# ------------------------------------------------------------------ one-off job (the release phase)

def run_once(client: docker.DockerClient, template_service: str, image_ref: str, command: list[str],
             env: dict[str, str], timeout: float, output: Callable[[str], None], name: str,
             registry_auth: str | None = None, stop: StopCheck | None = None) -> int:
    """Run `command` once from `image_ref` as a `replicated-job` service cloned from `template_service`
    (same networks, env, mounts, secrets as the canary), stream its output, return its exit code.
    The job service is always removed.
    """
    s = client.api.inspect_service(template_service)
    spec = s["Spec"]
    tt = dict(spec["TaskTemplate"])
    cs = dict(tt["ContainerSpec"])
    cs["Image"] = image_ref
    cs["Command"] = list(command)
    cs.pop("Args", None)
    cs.pop("Healthcheck", None)
    cs["Healthcheck"] = {"Test": ["NONE"]}
    envs = [e for e in (cs.get("Env") or []) if e.split("=", 1)[0] not in env]
    envs += [f"{k}={v}" for k, v in env.items()]
    cs["Env"] = envs
    tt["ContainerSpec"] = cs
    tt["RestartPolicy"] = {"Condition": "none", "MaxAttempts": 0}
    labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k == STACK_LABEL}
    labels["stackpatch.job"] = "release"
    job = {"Name": name, "Labels": labels, "TaskTemplate": tt,
           "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}}
    headers = {"X-Registry-Auth": registry_auth} if registry_auth else {}
    resp = client.api._post_json(client.api._url("/services/create"), data=job, headers=headers)
    try:
        client.api._raise_for_status(resp)
    except APIError as e:
        raise FaultError(f"could not start the release job from {image_ref}: {_short(e)}") from None
    job_id = resp.json()["ID"]
    try:
        return _follow_job(client, job_id, timeout, output, stop)
    finally:
        _remove_job(client, job_id)


def _remove_job(client, job_id: str) -> None:
    """Remove the job service AND its finished containers: Swarm leaves a completed job's containers
    behind (they would keep the stack's networks and volumes busy)."""
    try:
        client.api.remove_service(job_id)
    except (APIError, DockerException):
        pass
    for c in client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={job_id}"}):
        try:
            client.api.remove_container(c["Id"], force=True)
        except (APIError, DockerException):
            pass


def _follow_job(client, job_id: str, timeout: float, output: Callable[[str], None],
                stop: StopCheck | None) -> int:
    deadline = time.monotonic() + timeout
    seen_lines = 0
    while True:
        if stop:
            stop()
        tasks = client.api.tasks(filters={"service": job_id})
        task = max(tasks, key=lambda t: t.get("CreatedAt", ""), default=None)
        state = task["Status"]["State"] if task else "pending"
        cid = (task["Status"].get("ContainerStatus") or {}).get("ContainerID") if task else None
        if cid:
            seen_lines = _emit_new_logs(client, cid, seen_lines, output)
        if state == "complete":
            return 0
        if state in ("failed", "rejected", "shutdown", "orphaned"):
            code = (task["Status"].get("ContainerStatus") or {}).get("ExitCode")
            if code is None or code == 0:
                output(f"job task {state}: {task['Status'].get('Err') or task['Status'].get('Message')}")
                return 125 if state == "rejected" else (code or 1)
            return int(code)
        if time.monotonic() >= deadline:
            raise FaultError(f"the release command did not finish within {timeout:.0f}s "
                             "(raise migrations.timeout if it is just slow)")
        time.sleep(0.4)


def _emit_new_logs(client, cid: str, seen: int, output: Callable[[str], None]) -> int:
    try:
        raw = client.api.logs(cid, stdout=True, stderr=True, stream=False, follow=False)
    except (APIError, DockerException):
        return seen
    lines = raw.decode(errors="replace").splitlines()
    for ln in lines[seen:]:
        output(ln)
    return len(lines)


# ------------------------------------------------------------------ exec (command checks)

def exec_in_service(client: docker.DockerClient, full_name: str, argv: list[str],
                    timeout: float = 60) -> tuple[int, str]:
    """Run argv in one running task of the service (on this engine's node). (exit code, output)."""
    conts = client.containers.list(filters={"label": f"com.docker.swarm.service.name={full_name}",
                                            "status": "running"})
    if not conts:
        raise FaultError(f"no running task of {full_name} on this node to run the check in")
    res = conts[0].exec_run(argv, stdout=True, stderr=True, demux=False)
    return res.exit_code, (res.output or b"").decode(errors="replace")
