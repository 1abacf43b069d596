"""The sandbox's private registry: Debian's docker-registry (distribution v2), htpasswd bcrypt auth,
running detached (its own session) on 127.0.0.1, with config, storage, pid and log in the sandbox dir."""

from __future__ import annotations

import base64
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt

from stackpatch.errors import FaultError, UserError

USER = "stackpatch"
USER_KEY = "SANDBOX_REGISTRY_USER"
PASSWORD_KEY = "SANDBOX_REGISTRY_PASSWORD"
# `htpasswd -B`'s default cost: the registry checks the hash on every request of a push, and the password is
# 24 random bytes, so a higher cost would only slow pushes down
BCRYPT_COST = 5
MANIFEST_TYPES = ", ".join([
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
])


def free_port() -> int:
    """A port free on all addresses (host-mode publishing binds 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


def port_is_free(port: int, addr: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like the registry's own listener: connections left in TIME_WAIT do not make a port taken
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((addr, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def executable() -> str:
    """Debian's docker-registry, or a one-line UserError saying how to install it."""
    exe = shutil.which("docker-registry")
    if not exe:
        raise UserError("docker-registry is not installed: `apt-get install docker-registry` "
                        "(or `make setup`) and retry")
    return exe


def htpasswd_line(user: str, password: str) -> str:
    """One htpasswd line with a bcrypt hash, as `htpasswd -B` writes it (Python's bcrypt says $2b$, Apache
    $2y$: the registry checks it with Go's bcrypt, which reads both). No apache2-utils needed."""
    if ":" in user or "\n" in user:
        raise ValueError(f"an htpasswd user name cannot hold ':' or a newline: {user!r}")
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=BCRYPT_COST)).decode()
    return f"{user}:{hashed}\n"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a secret or its hash)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Registry:
    """With `tls` (certificate, key, CA files): HTTPS on `addr` (the multi-node sandbox's bridge address),
    the clients here verifying it against that CA; else plain HTTP on 127.0.0.1 (Docker's loopback rule)."""

    def __init__(self, dir: Path, port: int, addr: str = "127.0.0.1",
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        self.dir = dir / "registry"
        self.port = port
        self.addr = addr
        self.tls = tls
        self.env_file = dir / "registry.env"

    @property
    def host(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def _context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.tls[2])) if self.tls else None

    @property
    def pid_file(self) -> Path:
        return self.dir / "registry.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "registry.log"

    @property
    def storage(self) -> Path:
        return self.dir / "storage"

    # ------------------------------------------------------------ credentials

    def credentials(self) -> tuple[str, str]:
        vals: dict[str, str] = {}
        if self.env_file.is_file():
            for line in self.env_file.read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    vals[k.strip()] = v.strip()
        if USER_KEY in vals and PASSWORD_KEY in vals:
            return vals[USER_KEY], vals[PASSWORD_KEY]
        raise FaultError(f"{self.env_file} has no registry credentials: run `stackpatch sandbox down` then `up`")

    def ensure_credentials(self) -> bool:
        """Create the env file and htpasswd once (random password). True when created now."""
        htpasswd = self.dir / "htpasswd"
        if self.env_file.is_file() and htpasswd.is_file():
            return False
        password = secrets.token_urlsafe(24)
        self.dir.mkdir(parents=True, exist_ok=True)
        _write_private(htpasswd, htpasswd_line(USER, password))
        _write_private(self.env_file,
                       "# credentials of the stackpatch sandbox registry (written by `stackpatch sandbox up`)\n"
                       f"{USER_KEY}={USER}\n{PASSWORD_KEY}={password}\n")
        return True

    # ------------------------------------------------------------ process

    def pid(self) -> int | None:
        """The registry's pid when it is alive and really our docker-registry."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if any(b"docker-registry" in a for a in cmdline[:1]) and str(self.config_file).encode() in cmdline:
            return pid
        return None

    @property
    def config_file(self) -> Path:
        return self.dir / "config.yml"

    def write_config(self) -> None:
        self.storage.mkdir(parents=True, exist_ok=True)
        secret_file = self.dir / "http-secret"
        if not secret_file.is_file():
            secret_file.write_text(secrets.token_hex(16))
        cfg = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secret_file.read_text().strip(),
                     **({"tls": {"certificate": str(self.tls[0]), "key": str(self.tls[1])}} if self.tls else {})},
            "auth": {"htpasswd": {"realm": "stackpatch-sandbox", "path": str(self.dir / "htpasswd")}},
        }
        # YAML is a superset of JSON: no YAML library needed
        self.config_file.write_text(json.dumps(cfg, indent=2) + "\n")

    def start(self, timeout: float = 20) -> None:
        if not port_is_free(self.port, self.addr):
            raise UserError(f"port {self.port} on {self.addr} is taken by another process: free it, or use "
                            "another --registry-port (or `stackpatch sandbox down` to start afresh)")
        exe = executable()
        self.write_config()
        log = open(self.log_file, "ab")
        try:
            proc = subprocess.Popen([exe, "serve", str(self.config_file)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=str(self.dir), close_fds=True)
        finally:
            log.close()
        self.pid_file.write_text(f"{proc.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
                raise FaultError(f"the registry exited at start (status {proc.returncode}): {tail[0][:200]} "
                                 f"(log: {self.log_file})")
            if self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise FaultError(f"the registry did not answer on {self.host} within {timeout:.0f}s (log: {self.log_file})")

    def answers(self) -> bool:
        """True when /v2/ answers 401 (auth on) or 200."""
        try:
            urllib.request.urlopen(f"{self.base}/v2/", timeout=1, context=self._context())
            return True
        except urllib.error.HTTPError as e:
            return e.code in (401, 200)
        except OSError:
            return False

    def stop(self, timeout: float = 10) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() == pid:
            time.sleep(0.05)
        if self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    # ------------------------------------------------------------ API

    def _auth(self) -> str:
        user, password = self.credentials()
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """The digest the registry holds for repository:tag, or None when it holds no such tag."""
        req = urllib.request.Request(f"{self.base}/v2/{repository}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": MANIFEST_TYPES, "Authorization": self._auth()})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._context()) as resp:
                return resp.headers.get("Docker-Content-Digest")
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise FaultError(f"the registry answered {e.code} for {repository}:{tag}") from None
        except OSError as e:
            raise FaultError(f"the registry at {self.host} does not answer: {e}") from None
