"""Verify the exact images that will be pushed: a throwaway stack on the local engine, checks, teardown.

The stack file (`verify.stack_file`, from the clean build dir) gets `${IMAGE_<NAME>}` set to the local
tags just built (the same image ids that are pushed next), plus `STACKPATCH_VERIFY_PORT` and its alias
`FRONT_PORT` (a free host port it may publish), `STACKPATCH_VERSION` and `STACKPATCH_REVISION`. Checks may use `{front_url}`/
`{verify_url}` (http://127.0.0.1:<the first published port>), `{revision}` and `{version}`.
The stack and its volumes are always removed, pass or fail.
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from stackpatch.images.engine import cli_env, docker_cli
from stackpatch.images.image import BuiltImage
from stackpatch.config import Config, HttpCheck
from stackpatch.errors import FaultError, UserError
from stackpatch.reporter import Reporter

STACK_LABEL = "com.docker.stack.namespace"


class VerifyError(UserError):
    """The built images failed verification: no release tag was pushed, nothing was deployed."""


@dataclass(frozen=True)
class VerifyResult:
    stack: str
    seconds: float
    checks: tuple[str, ...]
    teardown: "Teardown | None" = None   # the stack's removal, when it goes on in the background


class Teardown:
    """The removal of a verify stack that passed, in a thread of its own (its own engine connection), so
    that the deploy does not wait for it. Crash-safe as before: the stack's record is removed only once
    the stack is gone, so the next ship removes a stack a killed one left (`remove_stale`). The thread
    is not a daemon: the process ends only once the stack is gone."""

    def __init__(self, stack: str, docker_host: str | None, record: Path):
        import threading
        self.stack = stack
        self.seconds: float | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, args=(docker_host, record), name="verify-teardown")
        self._thread.start()

    def _run(self, docker_host: str | None, record: Path) -> None:
        from stackpatch.images.engine import local_client
        t0 = time.monotonic()
        try:
            teardown(local_client(docker_host), self.stack, docker_host)
            record.unlink(missing_ok=True)
        except Exception as e:  # noqa: BLE001 - the next ship removes what is left (its record stays)
            self.error = " ".join(str(e).split())[:200]
        finally:
            self.seconds = time.monotonic() - t0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the removal; True once it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()


def env_name(image: str) -> str:
    return "IMAGE_" + re.sub(r"[^A-Z0-9]", "_", image.upper())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _subst(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def _stack_services(client: docker.DockerClient, stack: str) -> list[dict]:
    return client.api.services(filters={"label": f"{STACK_LABEL}={stack}"})


def _published_port(services: list[dict]) -> int | None:
    for s in sorted(services, key=lambda s: s["Spec"]["Name"]):
        for p in (s.get("Endpoint", {}).get("Ports") or s["Spec"].get("EndpointSpec", {}).get("Ports") or []):
            if p.get("PublishedPort"):
                return int(p["PublishedPort"])
    return None


def _health(client: docker.DockerClient, stack: str) -> tuple[bool, str]:
    """(all healthy, what is not yet) over every service of the stack."""
    services = _stack_services(client, stack)
    if not services:
        return False, "no services yet"
    waiting = []
    for s in services:
        name = s["Spec"]["Name"]
        mode = s["Spec"].get("Mode", {})
        desired = mode.get("Replicated", {}).get("Replicas", 1) if "Replicated" in mode else 1
        tasks = client.api.tasks(filters={"service": s["ID"], "desired-state": "running"})
        healthy = 0
        for t in tasks:
            st = t.get("Status", {})
            if st.get("State") != "running":
                continue
            cid = (st.get("ContainerStatus") or {}).get("ContainerID")
            if not cid:
                continue
            try:
                h = client.api.inspect_container(cid)["State"].get("Health")
            except docker.errors.NotFound:
                continue
            if h is None or h.get("Status") == "healthy":
                healthy += 1
        if healthy < desired:
            failed = client.api.tasks(filters={"service": s["ID"]})
            errs = [t["Status"].get("Err") or t["Status"].get("Message") for t in failed
                    if t.get("Status", {}).get("State") in ("failed", "rejected")]
            waiting.append(f"{name} {healthy}/{desired} healthy" + (f" (last task error: {errs[0]})" if errs else ""))
    return not waiting, "; ".join(waiting)


def _container_of(client: docker.DockerClient, stack: str, service: str):
    for s in _stack_services(client, stack):
        if s["Spec"]["Name"] in (f"{stack}_{service}", service):
            for t in client.api.tasks(filters={"service": s["ID"], "desired-state": "running"}):
                cid = (t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
                if cid and t["Status"].get("State") == "running":
                    return client.containers.get(cid)
    return None


def run_check(client: docker.DockerClient, stack: str, check: HttpCheck, values: dict[str, str],
              timeout: float) -> None:
    """Retry one check until it passes or `timeout` runs out; VerifyError with the last reason."""
    deadline = time.monotonic() + timeout
    reason = "not run"
    while True:
        if check.url is not None:
            url = _subst(check.url, values)
            want = _subst(check.body_contains, values) if check.body_contains else None
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    status, body = r.status, r.read().decode(errors="replace")
            except urllib.error.HTTPError as e:
                status, body = e.code, e.read().decode(errors="replace")
            except (urllib.error.URLError, OSError) as e:
                status, body = None, str(getattr(e, "reason", e))
            if status == check.status and (want is None or want in body):
                return
            reason = (f"GET {url} answered {status}, expected {check.status}" if status != check.status
                      else f"GET {url} body does not contain {want!r}")
        else:
            cmd = [_subst(a, values) for a in (check.command or [])]
            c = _container_of(client, stack, check.service or "")
            if c is None:
                reason = f"no running task of service {check.service!r}"
            else:
                code, out = c.exec_run(cmd, demux=False)
                if code == 0:
                    return
                last = (out or b"").decode(errors="replace").strip().splitlines()
                reason = f"`{' '.join(cmd)}` in {check.service} exited {code}" + (f": {last[-1][:120]}" if last else "")
        if time.monotonic() >= deadline:
            raise VerifyError(f"verify check {check.name!r} failed: {reason}; no release tag was pushed, "
                              "nothing was deployed")
        time.sleep(1)


def teardown(client: docker.DockerClient, stack: str, docker_host: str | None, timeout: float = 90) -> None:
    """Remove the stack, then (once its containers are gone) its volumes and networks."""
    subprocess.run([docker_cli(), "stack", "rm", stack], capture_output=True, env=cli_env(docker_host),
                   stdin=subprocess.DEVNULL, timeout=120)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = client.api.containers(all=True, filters={"label": f"{STACK_LABEL}={stack}"})
        if not left:
            break
        for c in left:  # a throwaway stack needs no graceful stop: do not wait out the grace periods
            try:
                client.api.remove_container(c["Id"], force=True, v=True)
            except docker.errors.APIError:
                pass
        time.sleep(0.3)
    for v in client.api.volumes(filters={"label": f"{STACK_LABEL}={stack}"}).get("Volumes") or []:
        for _ in range(20):
            try:
                client.api.remove_volume(v["Name"], force=True)
                break
            except docker.errors.NotFound:
                break
            except docker.errors.APIError:
                time.sleep(0.5)
    for n in client.api.networks(filters={"label": f"{STACK_LABEL}={stack}"}):
        try:
            client.api.remove_network(n["Id"])
        except docker.errors.APIError:
            pass


def records_dir() -> Path:
    """Where each verify stack is recorded (name, host, pid) before it is deployed: the proof that a
    stack left by a killed ship is ours to remove."""
    from stackpatch.images.workdir import cache_root
    return cache_root() / "verify-stacks"


def _record(stack: str, docker_host: str | None) -> Path:
    import json
    import os
    d = records_dir()
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{stack}.json"
    p.write_text(json.dumps({"stack": stack, "host": socket.gethostname(), "pid": os.getpid(),
                             "docker_host": docker_host}))
    return p


def _dead(rec: dict) -> bool:
    import os
    if rec.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(rec.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def remove_stale(client: docker.DockerClient, docker_host: str | None, reporter: Reporter) -> list[str]:
    """Remove the verify stacks that a ship on this machine recorded and never tore down (it was killed):
    only those recorded, on the same engine, whose process is gone. Returns their names."""
    import json
    removed = []
    d = records_dir()
    for p in sorted(d.glob("spverify-*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if rec.get("docker_host") != docker_host or not _dead(rec) or not re.fullmatch(r"spverify-[0-9a-f]{8}",
                                                                                    str(rec.get("stack"))):
            continue
        reporter.info(f"verify: removing {rec['stack']}, left by a ship that was killed (pid {rec['pid']})")
        teardown(client, rec["stack"], docker_host)
        p.unlink(missing_ok=True)
        removed.append(rec["stack"])
    return removed


def verify(client: docker.DockerClient, cfg: Config, workdir: Path, built: dict[str, BuiltImage],
           version: str, revision: str, check_timeout: float, reporter: Reporter,
           background_teardown: bool = False) -> VerifyResult:
    """Deploy the throwaway stack, wait until healthy, run the checks; the stack is always removed. With
    `background_teardown`, a stack that passed is removed in the background (`VerifyResult.teardown`),
    one that failed before this returns."""
    v = cfg.verify
    assert v.stack_file
    remove_stale(client, v.docker_host, reporter)
    stack_file = workdir / v.stack_file
    if not stack_file.is_file():
        raise VerifyError(f"verify.stack_file {v.stack_file!r} does not exist at {revision[:7]}: commit it or fix "
                          "the path")
    stack = f"spverify-{secrets.token_hex(4)}"
    port = free_port()
    env = cli_env(v.docker_host, STACKPATCH_VERIFY_PORT=str(port), FRONT_PORT=str(port), STACKPATCH_VERSION=version,
                  STACKPATCH_REVISION=revision, **{env_name(n): b.local_ref for n, b in built.items()})
    t0 = time.monotonic()
    reporter.step(f"verify: deploying throwaway stack {stack} from {v.stack_file}")
    record = _record(stack, v.docker_host)
    passed: VerifyResult | None = None
    try:
        res = subprocess.run([docker_cli(), "stack", "deploy", "--resolve-image", "never", "--prune",
                              "-c", str(stack_file), stack], capture_output=True, text=True, env=env,
                             stdin=subprocess.DEVNULL, timeout=180, cwd=str(stack_file.parent))
        if res.returncode != 0:
            raise VerifyError(f"verify stack {v.stack_file} did not deploy: "
                              f"{(res.stderr or res.stdout).strip().splitlines()[-1][:200]}")
        deadline = time.monotonic() + v.timeout
        last = ""
        while True:
            ok, what = _health(client, stack)
            if ok:
                break
            if what != last:
                reporter.info(f"  verify: waiting: {what}")
                last = what
            if time.monotonic() >= deadline:
                raise VerifyError(f"verify stack never became healthy within {v.timeout:.0f}s ({what}); "
                                  "no release tag was pushed, nothing was deployed")
            time.sleep(1)
        reporter.ok(f"verify: stack healthy in {time.monotonic() - t0:.1f}s")
        pport = _published_port(_stack_services(client, stack)) or port
        url = f"http://127.0.0.1:{pport}"
        values = {"revision": revision, "version": version, "front_url": url, "verify_url": url}
        for c in v.checks:
            run_check(client, stack, c, values, check_timeout)
            reporter.ok(f"verify: check {c.name} passed")
        # the images that ran are the images that will be pushed
        for n, b in built.items():
            if client.api.inspect_image(b.local_ref)["Id"] != b.image_id:
                raise FaultError(f"{b.local_ref} changed during verification; ship again")
        passed = VerifyResult(stack, time.monotonic() - t0, tuple(c.name for c in v.checks),
                              Teardown(stack, v.docker_host, record) if background_teardown else None)
        return passed
    finally:
        if not (passed and passed.teardown):
            teardown(client, stack, v.docker_host)
            record.unlink(missing_ok=True)
