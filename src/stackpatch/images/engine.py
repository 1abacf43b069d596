"""The local engine that builds and verifies: the docker CLI (for BuildKit and `stack deploy`) and an SDK client."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import docker
import docker.errors

from stackpatch.errors import EngineError


@functools.lru_cache(maxsize=None)
def docker_cli() -> str:
    """Debian's client in /usr/bin first (it has the builtin BuildKit builder), then PATH."""
    path = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
    if not path:
        raise EngineError("the docker CLI is not installed: install docker.io (apt-get install docker.io)")
    return path


@functools.lru_cache(maxsize=None)
def buildkit_available(cli: str | None = None) -> bool:
    """True when `DOCKER_BUILDKIT=1 docker build` works with this client and engine.

    STACKPATCH_BUILDKIT=0/1 forces the answer (to test the legacy path, or a buildx-less CI).
    """
    forced = os.environ.get("STACKPATCH_BUILDKIT")
    if forced in ("0", "1"):
        return forced == "1"
    cli = cli or docker_cli()
    env = {**os.environ, "DOCKER_CLI_HINTS": "false"}
    try:
        if subprocess.run([cli, "buildx", "version"], capture_output=True, env=env, timeout=20).returncode == 0:
            return True
        res = subprocess.run([cli, "version", "--format", "{{.Client.Version}}|{{.Server.Version}}"],
                             capture_output=True, text=True, env=env, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if res.returncode != 0:
        return False
    client_v, _, server_v = res.stdout.strip().partition("|")

    def major(v: str) -> int:
        try:
            return int(v.split(".")[0])
        except ValueError:
            return 0
    # clients before 23.0 carry the builtin BuildKit builder; engines from 18.09 have BuildKit
    return 18 <= major(client_v) < 23 and major(server_v) >= 18


def local_client(docker_host: str | None = None) -> docker.DockerClient:
    try:
        client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001
        where = docker_host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        reason = " ".join(str(e).split())[:160]
        raise EngineError(f"cannot reach the local Docker engine at {where} ({reason}): start dockerd "
                          "or fix DOCKER_HOST") from None


def cli_env(docker_host: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "DOCKER_CLI_HINTS": "false", **extra}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return env
