"""Build the images through the docker CLI (BuildKit when the engine has it), tagged and OCI-labelled."""

from __future__ import annotations

import errno
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker
import docker.errors

from stackpatch.images.engine import buildkit_available, cli_env, docker_cli
from stackpatch.images.registry import Credentials
from stackpatch.reporter import Reporter
from stackpatch.errors import FaultError, UserError
from stackpatch.targets.base import OCI_REVISION, OCI_VERSION

OCI_SOURCE = "org.opencontainers.image.source"
OCI_CREATED = "org.opencontainers.image.created"


class BuildError(UserError):
    """The Dockerfile failed or the build context is missing: fix the code, push, ship again."""


class DiskFullError(FaultError):
    """No space left while building or logging."""


@dataclass(frozen=True)
class BuildSpec:
    name: str
    repository: str
    tags: tuple[str, ...]
    dockerfile: str          # relative to the build dir
    context: str             # relative to the build dir
    build_args: dict[str, str]
    target: str | None
    cache_from: str | None


@dataclass(frozen=True)
class BuiltImage:
    name: str
    repository: str
    tags: tuple[str, ...]
    image_id: str
    seconds: float
    buildkit: bool

    @property
    def local_ref(self) -> str:
        return f"{self.repository}:{self.tags[0]}"


class BuildLog:
    """The whole build output in one file; a full disk is a one-line fault, never a traceback. Images
    built side by side write through `part(name)`: each line of the file then starts with the image's
    name, and each part keeps the tail of its own build for its error message."""

    def __init__(self, path: Path):
        import threading
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise _disk_error(e, path) from None
        self.tail: deque[str] = deque(maxlen=40)
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            self.tail.append(line.rstrip("\n"))
            try:
                self._f.write(line if line.endswith("\n") else line + "\n")
                self._f.flush()
            except OSError as e:
                raise _disk_error(e, self.path) from None

    def part(self, name: str) -> BuildLogPart:
        return BuildLogPart(self, name)

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:
            pass


class BuildLogPart:
    """One image's lines in a shared BuildLog, each prefixed with its name, and its own tail."""

    def __init__(self, log: BuildLog, name: str):
        self.log, self.name, self.path = log, name, log.path
        self.tail: deque[str] = deque(maxlen=40)

    def write(self, line: str) -> None:
        self.tail.append(line.rstrip("\n"))
        self.log.write(f"{self.name} | {line}")


def _disk_error(e: OSError, path: Path) -> FaultError:
    if e.errno == errno.ENOSPC:
        return DiskFullError(f"disk full writing {path}: free space (or point STACKPATCH_CACHE_DIR elsewhere) "
                             "and ship again; nothing was pushed")
    return FaultError(f"cannot write {path} ({e.strerror}): fix the permissions or set STACKPATCH_CACHE_DIR")


def rfc3339_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def ensure_cache_image(client: docker.DockerClient, ref: str | None, creds: Credentials | None,
                       log: BuildLog) -> str | None:
    """The deployed image, pulled when absent locally; None (and a log line) when it cannot be had."""
    if not ref:
        return None
    from stackpatch.targets.base import ImageRef
    r = ImageRef.parse(ref)
    local = f"{r.repository}@{r.digest}" if r.digest else str(r)
    try:
        client.api.inspect_image(local)
        return local
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.APIError:
        return None
    try:
        for rec in client.api.pull(r.repository, tag=r.digest or r.tag or "latest", stream=True, decode=True,
                                   auth_config=creds.auth_config() if creds else None):
            if "error" in rec or "errorDetail" in rec:
                log.write(f"stackpatch: cache image {local} not pulled: {rec.get('error') or rec['errorDetail']}")
                return None
        client.api.inspect_image(local)
        return local
    except docker.errors.DockerException as e:
        log.write(f"stackpatch: cache image {local} not pulled: {str(e).splitlines()[0]}")
        return None


def build_argv(spec: BuildSpec, workdir: Path, labels: dict[str, str], buildkit: bool,
               cache_from: str | None) -> list[str]:
    argv = [docker_cli(), "build", "--file", str(workdir / spec.dockerfile)]
    for t in spec.tags:
        argv += ["--tag", f"{spec.repository}:{t}"]
    for k, v in spec.build_args.items():
        argv += ["--build-arg", f"{k}={v}"]
    for k, v in labels.items():
        argv += ["--label", f"{k}={v}"]
    if spec.target:
        argv += ["--target", spec.target]
    if cache_from:
        argv += ["--cache-from", cache_from]
    if buildkit:
        argv += ["--progress", "plain", "--build-arg", "BUILDKIT_INLINE_CACHE=1"]
    argv.append(str(workdir / spec.context))
    return argv


def _is_step(line: str, buildkit: bool) -> bool:
    if buildkit:
        head = line[:16]
        return line.startswith("#") and (" [" in head or " ERROR" in line)
    return line.startswith("Step ") or line.startswith("Successfully")


class BuildCancelled(FaultError):
    """Another image's build, run beside this one, failed first: this one was stopped."""


def build(client: docker.DockerClient, spec: BuildSpec, workdir: Path, *, version: str, revision: str,
          source: str, log: BuildLog | BuildLogPart, creds: Credentials | None, deadline: float,
          reporter: Reporter, side_by_side: Builds | None = None) -> BuiltImage:
    """Build one image; BuildError with the log's tail shown when the Dockerfile fails. With
    `side_by_side` (several images built at once) its build process can be stopped from another thread,
    and its progress lines are prefixed with the image's name."""
    ctx = workdir / spec.context
    dockerfile = workdir / spec.dockerfile
    if not ctx.is_dir():
        raise BuildError(f"image {spec.name!r}: build context {spec.context!r} does not exist at {revision[:7]}: "
                         f"fix images.{spec.name}.context or commit the directory")
    if not dockerfile.is_file():
        raise BuildError(f"image {spec.name!r}: Dockerfile {spec.dockerfile!r} does not exist at {revision[:7]}: "
                         f"fix images.{spec.name}.dockerfile or commit the file")
    bk = buildkit_available()
    labels = {OCI_REVISION: revision, OCI_VERSION: version, OCI_SOURCE: source, OCI_CREATED: rfc3339_now()}
    log.write(f"==> stackpatch: building image {spec.name} ({'BuildKit' if bk else 'legacy builder'})")
    cache = ensure_cache_image(client, spec.cache_from, creds, log)
    argv = build_argv(spec, workdir, labels, bk, cache)
    log.write("==> " + " ".join(argv))
    t0 = time.monotonic()
    who = f"{spec.name}: " if side_by_side is not None else ""
    if side_by_side is not None and side_by_side.cancelled.is_set():
        raise BuildCancelled(f"image {spec.name!r}: not built, another image's build failed")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, errors="replace", env=cli_env(DOCKER_BUILDKIT="1" if bk else "0"))
    if side_by_side is not None:
        side_by_side.started(proc)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if _is_step(line, bk):
                reporter.info("  " + who + line.rstrip()[:160])
            if time.monotonic() > deadline:
                proc.kill()
                raise FaultError(f"image {spec.name!r}: the build exceeded timeouts.build; log: {log.path}")
        rc = proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    seconds = time.monotonic() - t0
    if rc != 0 and side_by_side is not None and side_by_side.cancelled.is_set():
        raise BuildCancelled(f"image {spec.name!r}: build stopped, another image's build failed; log: {log.path}")
    if rc != 0:
        tail = list(log.tail)[-15:]
        reporter.warn(f"build of {spec.name} failed; last lines of {log.path}:")
        for ln in tail:
            reporter.info("  " + ln)
        text = "\n".join(log.tail).lower()
        if "no space left on device" in text:
            raise DiskFullError(f"image {spec.name!r}: the disk is full (no space left on device); free space "
                                f"and ship again; nothing was pushed; log: {log.path}")
        reason = next((ln.strip() for ln in reversed(tail) if "error" in ln.lower()), tail[-1] if tail else "")
        raise BuildError(f"image {spec.name!r} failed to build (exit {rc}): {reason[:200]}; log: {log.path}")
    try:
        info = client.api.inspect_image(f"{spec.repository}:{spec.tags[0]}")
    except docker.errors.DockerException as e:
        raise FaultError(f"image {spec.name!r} built but {spec.repository}:{spec.tags[0]} is not there "
                         f"({e}); log: {log.path}") from None
    got = ((info.get("Config") or {}).get("Labels") or {}).get(OCI_REVISION)
    if got != revision:
        raise FaultError(f"image {spec.name!r} has revision label {got!r}, expected {revision}: the Dockerfile "
                         "overrides org.opencontainers.image.revision; remove that LABEL")
    log.write(f"==> stackpatch: built {spec.repository}:{spec.tags[0]} = {info['Id']} in {seconds:.1f}s")
    return BuiltImage(spec.name, spec.repository, spec.tags, info["Id"], seconds, bk)


class Builds:
    """The build processes of images built side by side: the first failure stops the others."""

    def __init__(self):
        import threading
        self.cancelled = threading.Event()
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()

    def started(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.append(proc)
            stop = self.cancelled.is_set()
        if stop:
            _kill(proc)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            procs = list(self._procs)
        for p in procs:
            _kill(p)


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.kill()
        except OSError:
            pass
