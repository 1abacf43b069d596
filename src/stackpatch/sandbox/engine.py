"""The Docker engine: reach it, make it a swarm, run the docker CLI (list-of-args only)."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import docker
from docker.errors import APIError, DockerException

from stackpatch.errors import EngineError, FaultError, UserError

START_HINT = ("start one (`make setup` as root, or `setsid dockerd >/var/log/dockerd.log 2>&1 &`) "
              "or point DOCKER_HOST at a running engine, then retry")


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client() -> docker.DockerClient:
    """A client of a reachable engine, or a one-line EngineError saying how to get one."""
    host = docker_host()
    if host.startswith("unix://"):
        sock = host[len("unix://"):]
        if not os.path.exists(sock):
            raise EngineError(f"no Docker engine: the socket {sock} does not exist: {START_HINT}")
        if not os.access(sock, os.R_OK | os.W_OK):
            raise EngineError(f"not permitted to use the Docker socket {sock}: run as root or add your user "
                              "to the `docker` group (then log in again), and retry")
    try:
        c = docker.DockerClient(base_url=host, timeout=120)
        c.ping()
    except PermissionError:
        raise EngineError(f"not permitted to use the Docker engine at {host}: run as root or join the "
                          "`docker` group, and retry") from None
    except (DockerException, OSError) as e:
        text = str(e)
        if "Permission denied" in text:
            raise EngineError(f"not permitted to use the Docker engine at {host}: run as root or join the "
                              "`docker` group, and retry") from None
        raise EngineError(f"no Docker engine answers at {host}: {START_HINT}") from None
    return c


def describe(timeout: float = 3) -> str:
    """One line: the engine at DOCKER_HOST (or the default socket), its version and the API version
    stackpatch talks to it with, or that it does not answer. Never raises (for `--version`)."""
    host = docker_host()
    try:
        api = docker.APIClient(base_url=host, timeout=timeout, version="auto")  # negotiates: GET /version
        try:
            v = api.version(api_version=False)
        finally:
            api.close()
        return f"Docker engine {v.get('Version', '?')} at {host}, API {api.api_version}"
    except Exception:  # noqa: BLE001 - any failure is "does not answer": --version must always work
        return f"Docker engine: none answers at {host} (stackpatch needs one to ship; `make setup` starts it)"


@lru_cache(maxsize=1)
def docker_cli() -> tuple[str, bool]:
    """(path of the docker CLI, whether it supports BuildKit). Debian's 20.10 client in /usr/bin first."""
    path = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    if not path:
        raise UserError("the docker command-line client is not installed: install docker.io and retry")
    if path.startswith("/usr/bin/"):
        return path, True  # Debian's client: the engine's built-in BuildKit
    probe = subprocess.run([path, "buildx", "version"], capture_output=True, text=True, env=_env(None),
                           stdin=subprocess.DEVNULL)
    return path, probe.returncode == 0


def _env(config_dir: Path | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if config_dir is not None:
        env["DOCKER_CONFIG"] = str(config_dir)
    if extra:
        env.update(extra)
    return env


def cli(*args: str, config_dir: Path | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None, input: str | None = None, timeout: float = 1800,
        check: bool = True, what: str | None = None) -> subprocess.CompletedProcess:
    """Run the docker CLI with an argv list. A failure is a FaultError with its last line."""
    path, _ = docker_cli()
    full_env = _env(config_dir, env)
    try:
        proc = subprocess.run([path, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                              input=input, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FaultError(f"`docker {args[0]}` did not finish within {timeout:.0f}s") from None
    if check and proc.returncode != 0:
        raise FaultError(f"{what or 'docker ' + ' '.join(args[:2])} failed: {last_line(proc.stderr or proc.stdout)}")
    return proc


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln
    return lines[-1] if lines else "(no output)"


def swarm_state(c: docker.DockerClient) -> str:
    """'active' (a manager) or 'inactive'; a worker or a pending/locked/broken swarm is refused."""
    sw = c.info().get("Swarm") or {}
    state = sw.get("LocalNodeState")
    if state == "active":
        if not sw.get("ControlAvailable"):
            raise UserError("this engine is a swarm worker, not a manager: run the sandbox on a manager node")
        return "active"
    if state in ("pending", "locked", "error"):
        raise UserError(f"the engine's swarm is {state}: fix it (`docker swarm unlock`, or leave and retry)")
    return "inactive"


def ensure_swarm(c: docker.DockerClient) -> str:
    """Make the engine a one-node swarm if it is not one. Returns 'reused' or 'initialised'."""
    if swarm_state(c) == "active":
        return "reused"
    try:
        c.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
    except APIError as e:
        raise FaultError(f"docker swarm init failed: {e.explanation or e}") from None
    return "initialised"
