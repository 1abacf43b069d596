"""The Docker SDK client of the swarm target, and the ONE place Docker errors become stackpatch errors.

Every call to the engine goes through `Engine`, a thin proxy over docker-py's low-level APIClient that
maps what docker-py, requests, urllib3 and paramiko raise into three stackpatch errors, the way httpx's
`map_httpcore_exceptions` maps its transport's:
  - EngineUnreachable: the engine did not answer (socket missing, refused, reset, timeout, ssh);
  - EngineObjectMissing: 404 (a service, task, container or config that does not exist);
  - EngineError: the engine answered with a refusal; "not a swarm manager" says what to point at.
"""

from __future__ import annotations

import os
import time
from typing import Any

import docker
import docker.errors
import docker.tls
from docker import auth as docker_auth

from stackpatch.errors import EngineError, EngineObjectMissing, EngineUnreachable, StackpatchError

STACK_LABEL = "com.docker.stack.namespace"


def short(e: BaseException | str, n: int = 200) -> str:
    if isinstance(e, docker.errors.APIError):
        msg = e.explanation or str(e)
    else:
        msg = str(e) or type(e).__name__
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[:n] + "…"


def map_error(host: str, e: BaseException) -> StackpatchError:
    """The stackpatch error for an exception raised while talking to the engine at `host`."""
    if isinstance(e, StackpatchError):
        return e
    if isinstance(e, docker.errors.NotFound):
        return EngineObjectMissing(f"the Docker engine at {host} has no such object: {short(e)}")
    if isinstance(e, docker.errors.APIError):
        msg = short(e)
        low = msg.lower()
        if "not a swarm manager" in low or ("swarm" in low and "manager" in low):
            return EngineError(f"the Docker engine at {host} is not a swarm manager: point target.docker_host "
                               "(or DOCKER_HOST) at a manager node, or `docker swarm init` there")
        return EngineError(f"the Docker engine at {host} refused a request: {msg}")
    reason = short(e, 160)
    if isinstance(e, ValueError):  # it answered, with a body that is not the JSON it promised
        return EngineError(f"the Docker engine at {host} sent an unreadable reply ({reason})")
    if "Permission denied" in reason:
        return EngineUnreachable(f"the Docker engine at {host} refused access (permission denied): add your "
                                 "user to the docker group, or fix target.docker_host / DOCKER_HOST")
    return EngineUnreachable(f"the Docker engine at {host} does not answer ({reason}): start it, or fix "
                             "target.docker_host / DOCKER_HOST")


class Engine:
    """docker-py's APIClient with every call's errors mapped (see the module doc). Attributes that are
    not callables pass through; `post_json` is the one place that sends a raw request (a full service
    spec with the X-Registry-Auth header, which docker-py's update_service cannot send)."""

    def __init__(self, api: docker.APIClient, host: str):
        self._api = api
        self.host = host

    # calls that only read: an engine hiccup (a reset connection, an empty reply under load) is retried
    READS = frozenset({"ping", "version", "info", "services", "inspect_service", "tasks", "inspect_task",
                       "containers", "inspect_container", "inspect_image", "configs", "inspect_config",
                       "logs", "exec_inspect", "nodes", "inspect_node"})

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if not callable(attr):
            return attr
        tries = 3 if name in self.READS else 1

        def call(*a: Any, **kw: Any) -> Any:
            for attempt in range(tries):
                try:
                    return attr(*a, **kw)
                except Exception as e:  # noqa: BLE001 - mapped, never swallowed
                    err = map_error(self.host, e)
                    transient = not isinstance(e, docker.errors.APIError) or \
                        (e.status_code or 0) >= 500 and not isinstance(err, EngineObjectMissing)
                    if attempt + 1 < tries and transient and "not a swarm manager" not in str(err):
                        time.sleep(0.3 * (attempt + 1))
                        continue
                    raise err from None
        return call

    def post_json(self, path: str, *args: str, data: dict, params: dict | None = None,
                  headers: dict | None = None) -> dict:
        try:
            resp = self._api._post_json(self._api._url(path, *args), data=data, params=params or {},
                                        headers=headers or {})
            self._api._raise_for_status(resp)
            # some answers have no body (a config update: 200 and nothing): not an unreadable reply
            return (resp.json() if resp.content.strip() else None) or {}
        except Exception as e:  # noqa: BLE001
            raise map_error(self.host, e) from None


def connect(docker_host: str, tls_verify: bool = False, tls_cert_path: str | None = None,
            timeout: int = 30) -> tuple[docker.DockerClient, Engine]:
    """A client for the swarm manager that has answered a ping, and its mapped low-level API."""
    tls: docker.tls.TLSConfig | bool = False
    if docker_host.startswith("tcp://") and (tls_verify or tls_cert_path):
        d = tls_cert_path or ""
        tls = docker.tls.TLSConfig(
            client_cert=(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")) if d else None,
            ca_cert=os.path.join(d, "ca.pem") if d and tls_verify else None, verify=tls_verify)
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on many machines) replace the CA given here:
    # with a private CA (tls_cert_path/ca.pem), the environment's bundle is kept out of the way
    own_ca = bool(tls) and tls.ca_cert is not None
    saved = {k: os.environ.pop(k) for k in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if own_ca and k in os.environ}
    try:
        # ssh://: docker-py's own client (paramiko: one connection, a channel per request; measured 10 calls
        # in 1.9 s where running the ssh program per connection took 13 s). It reads ~/.ssh/config
        # (HostName, User, Port, IdentityFile) and trusts only the host keys in ~/.ssh/known_hosts.
        client = docker.DockerClient(base_url=docker_host, tls=tls, timeout=timeout, use_ssh_client=False)
        if own_ca:
            client.api.trust_env = False
        client.ping()
    except Exception as e:  # noqa: BLE001 - requests/urllib3/ssh errors of every flavour
        err = map_error(docker_host, e)
        if not isinstance(err, EngineUnreachable) and isinstance(e, docker.errors.APIError):
            err = EngineUnreachable(str(err))
        raise err from None
    finally:
        os.environ.update(saved)
    return client, Engine(client.api, docker_host)


def registry_auth_header(client: docker.DockerClient, host: str, username: str | None,
                         password: str | None, use_docker_config: bool) -> str | None:
    """The X-Registry-Auth value: from explicit credentials, else the docker config (like the CLI)."""
    if username and password:
        raw = docker_auth.encode_header({"username": username, "password": password, "serveraddress": host})
        return raw.decode() if isinstance(raw, bytes) else raw
    if not use_docker_config:
        return None
    try:
        hdr = docker_auth.get_config_header(client.api, host)
    except Exception:  # noqa: BLE001 - an unreadable docker config means no auth, like the CLI
        hdr = None
    if isinstance(hdr, bytes):
        hdr = hdr.decode()
    return hdr or None
