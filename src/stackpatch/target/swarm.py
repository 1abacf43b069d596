"""Docker Swarm target: read a stack's services (image, pinned digest, labels, replicas, update state)
and find the deployed release from them.

The deploy half (rollout, lock) lives in target/rollout.py and target/lock.py.
"""

from __future__ import annotations

from collections import Counter
from typing import Callable

import docker
import docker.errors
import docker.tls

from stackpatch.config import Config
from stackpatch.errors import EngineError, UserError
from stackpatch.target.base import (ImageRef, LockInfo, ServiceState, TargetState)

STACK_LABEL = "com.docker.stack.namespace"

# image ref -> labels of that image ({} when unknown); used when the image is not local
LabelResolver = Callable[[ImageRef], dict[str, str]]


class MixedRevisionsError(UserError):
    """Services that run the same image run different revisions."""


def docker_host_of(cfg: Config) -> str:
    """The configured target engine; DOCKER_HOST applies when target.docker_host is not set in the file."""
    import os
    if "docker_host" not in cfg.target.model_fields_set and os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return cfg.target.docker_host


def connect(docker_host: str, tls_verify: bool = False, tls_cert_path: str | None = None,
            timeout: int = 30) -> docker.DockerClient:
    """A client for `docker_host` that has answered a ping; one-line EngineError naming the host otherwise."""
    tls: docker.tls.TLSConfig | bool = False
    if docker_host.startswith("tcp://") and (tls_verify or tls_cert_path):
        import os
        d = tls_cert_path or ""
        tls = docker.tls.TLSConfig(
            client_cert=(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")) if d else None,
            ca_cert=os.path.join(d, "ca.pem") if d and tls_verify else None, verify=tls_verify)
    try:
        client = docker.DockerClient(base_url=docker_host, tls=tls, timeout=timeout,
                                     use_ssh_client=docker_host.startswith("ssh://"))
        client.ping()
        return client
    except docker.errors.DockerException as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Permission denied" in reason:
            raise EngineError(f"the Docker engine at {docker_host} refused access (permission denied): "
                              "add your user to the docker group or fix target.docker_host") from None
        raise EngineError(f"cannot reach the Docker engine at {docker_host} ({_short(reason)}): start it "
                          "or fix target.docker_host / DOCKER_HOST") from None
    except Exception as e:  # noqa: BLE001  (requests/urllib3/ssh errors of every flavour)
        raise EngineError(f"cannot reach the Docker engine at {docker_host} ({_short(str(e))}): start it "
                          "or fix target.docker_host / DOCKER_HOST") from None


def _short(reason: str, n: int = 160) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= n else reason[:n] + "…"


class SwarmTarget:
    """A stack on a Docker Swarm manager."""

    def __init__(self, docker_host: str, stack: str, tls_verify: bool = False, tls_cert_path: str | None = None,
                 label_resolver: LabelResolver | None = None, client: docker.DockerClient | None = None):
        self.docker_host = docker_host
        self.stack = stack
        self._tls = (tls_verify, tls_cert_path)
        self._client = client
        self._labels = label_resolver

    @classmethod
    def from_config(cls, cfg: Config, label_resolver: LabelResolver | None = None) -> "SwarmTarget":
        t = cfg.target
        return cls(docker_host_of(cfg), t.stack, t.tls_verify, t.tls_cert_path, label_resolver)

    @property
    def client(self) -> docker.DockerClient:
        if self._client is None:
            self._client = connect(self.docker_host, *self._tls)
        return self._client

    def _api(self, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except docker.errors.APIError as e:
            msg = e.explanation if isinstance(e.explanation, str) else str(e)
            if "not a swarm manager" in msg or "swarm" in msg.lower() and "manager" in msg.lower():
                raise EngineError(f"the Docker engine at {self.docker_host} is not a swarm manager: point "
                                  "target.docker_host at a manager node") from None
            raise EngineError(f"the Docker engine at {self.docker_host} refused a request: {_short(msg)}") from None
        except docker.errors.DockerException as e:
            raise EngineError(f"lost the Docker engine at {self.docker_host} ({_short(str(e))})") from None
        except Exception as e:  # noqa: BLE001  (connection reset, timeouts)
            raise EngineError(f"lost the Docker engine at {self.docker_host} ({_short(str(e))})") from None

    def image_labels(self, ref: ImageRef) -> dict[str, str]:
        """Labels of the image a service runs: the local image if present, else the registry (resolver)."""
        api = self.client.api
        for cand in ([ref.digest and f"{ref.repository}@{ref.digest}", str(ImageRef(ref.repository, ref.tag))]):
            if not cand:
                continue
            try:
                info = api.inspect_image(cand)
                return dict((info.get("Config") or {}).get("Labels") or {})
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError:
                continue
        if self._labels is not None:
            try:
                return self._labels(ref)
            except UserError:
                return {}
        return {}

    def read_state(self) -> TargetState:
        api = self.client.api
        services = self._api(api.services, filters={"label": f"{STACK_LABEL}={self.stack}"})
        out: dict[str, ServiceState] = {}
        for s in services:
            spec = s["Spec"]
            full = spec["Name"]
            name = full[len(self.stack) + 1:] if full.startswith(self.stack + "_") else full
            image = ImageRef.parse(spec["TaskTemplate"]["ContainerSpec"]["Image"])
            mode = spec.get("Mode", {})
            desired = mode["Replicated"].get("Replicas", 1) if "Replicated" in mode else None
            tasks = self._api(api.tasks, filters={"service": s["ID"], "desired-state": "running"})
            running = sum(1 for t in tasks if t.get("Status", {}).get("State") == "running")
            out[name] = ServiceState(
                name=name, full_name=full, id=s["ID"], image=image, labels=dict(spec.get("Labels") or {}),
                image_labels=self.image_labels(image), replicas_desired=desired, replicas_running=running,
                update_state=(s.get("UpdateStatus") or {}).get("State"))
        return TargetState(stack=self.stack, services=dict(sorted(out.items())), lock=self.read_lock())

    def read_lock(self) -> LockInfo | None:
        """The deploy lock held on this stack (target/lock.py), or None."""
        from stackpatch.target import lock as lock_mod
        return lock_mod.read(self.client, self.stack)

    def deployed_release(self, cfg: Config, allow_mixed: bool = False,
                         state: TargetState | None = None) -> tuple[str | None, str]:
        return deployed_release(state or self.read_state(), cfg, allow_mixed)


def deployed_release(state: TargetState, cfg: Config, allow_mixed: bool = False) -> tuple[str | None, str]:
    """(version, revision) deployed on the target. Pure over the state read from it.

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
