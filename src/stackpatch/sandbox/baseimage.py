"""The base image, built offline: mmdebstrap (minbase + a package list) then `docker import`.

Cached as the local tag `stackpatch-base:<hash12>`, where the hash covers everything that shapes the
image (suite, variant, packages, excludes). When that tag exists nothing is rebuilt.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from stackpatch.errors import FaultError, UserError
from stackpatch.sandbox import engine

REPO = "stackpatch-base"
SUITE = "bookworm"
VARIANT = "minbase"
# nginx-light serves the example stack's `web`, haproxy its `edge`; curl is for health checks and the
# web tasks' start (they copy the assets of the release still running)
PACKAGES = ("python3", "python3-psycopg2", "postgresql-15", "ca-certificates", "nginx-light", "haproxy", "curl")
# docs, man pages and locales are dead weight in an image
DPKG_OPTS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/i18n/*",
    # PostgreSQL's JIT (LLVM, z3: ~130 MB) is never used: the stacks run postgres with jit=off
    "path-exclude=/usr/lib/*/libLLVM*",
    "path-exclude=/usr/lib/*/libz3*",
    "path-exclude=/usr/lib/postgresql/*/lib/llvmjit*",
    "path-exclude=/usr/lib/postgresql/*/lib/bitcode/*",
)
# the cluster Debian's postinst creates is not used (the db service initialises its own volume)
HOOKS = ('rm -rf "$1/var/lib/postgresql/15/main" "$1/var/cache/apt/archives/"*.deb',)
LABEL = "org.stackpatch.sandbox.base"


def spec_hash() -> str:
    spec = "\n".join([SUITE, VARIANT, *sorted(PACKAGES), *DPKG_OPTS, *HOOKS, "v2"])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def tag() -> str:
    return f"{REPO}:{spec_hash()}"


def exists(c: docker.DockerClient) -> bool:
    try:
        c.images.get(tag())
        return True
    except ImageNotFound:
        return False


def mmdebstrap() -> str:
    exe = shutil.which("mmdebstrap")
    if not exe:
        raise UserError("mmdebstrap is not installed: `apt-get install mmdebstrap` (or `make setup`) and retry")
    return exe


def build(workdir: Path, timeout: float = 900) -> str:
    """mmdebstrap into a tar under workdir, import it, delete the tar. Returns the tag."""
    exe = mmdebstrap()
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=workdir) as tmp:
        tar = Path(tmp) / "rootfs.tar"
        argv = [exe, f"--variant={VARIANT}", "--include=" + ",".join(PACKAGES), "--quiet",
                *[f"--dpkgopt={o}" for o in DPKG_OPTS], *[f"--customize-hook={h}" for h in HOOKS],
                SUITE, str(tar)]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise UserError(f"mmdebstrap did not finish within {timeout:.0f}s: check the network to the "
                            "Debian mirror, then retry") from None
        if proc.returncode != 0 or not tar.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
            why = next((ln for ln in lines if ln.startswith("E:") or "error" in ln.lower()),
                       lines[-1] if lines else "no output")
            raise UserError(f"building the base image with mmdebstrap failed ({why.strip()[:200]}): check the "
                            "network to the Debian mirror and free disk space, then retry")
        engine.cli("import", "--change", f"LABEL {LABEL}={spec_hash()}",
                   "--message", f"stackpatch sandbox base: {' '.join(PACKAGES)}", str(tar), tag(),
                   what="docker import of the base image")
    return tag()


def remove(c: docker.DockerClient) -> bool:
    try:
        c.images.remove(tag(), force=False)
        return True
    except ImageNotFound:
        return False
    except docker.errors.APIError as e:
        raise FaultError(f"cannot remove {tag()}: {e.explanation or e}") from None
