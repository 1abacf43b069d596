"""The deploy lock, kept ON the target so every machine sees it: a Swarm config object.

Creating a config whose name exists fails (409), which makes `acquire` atomic across machines. The
config's data is JSON: owner, host, pid, version, run id, start and expiry (no secrets). Configs are
immutable; releasing removes the object.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import docker
from docker.errors import APIError, NotFound

from stackpatch.errors import EngineError, UserError
from stackpatch.target.base import LockInfo

LOCK_LABEL = "stackpatch.lock"


class LockHeld(UserError):
    """Someone else holds the lock."""


def lock_name(stack: str) -> str:
    name = f"stackpatch-lock-{stack}"
    if len(name) <= 64:  # Swarm object names are at most 64 characters
        return name
    import hashlib
    return f"stackpatch-lock-{stack[:34]}-{hashlib.sha256(stack.encode()).hexdigest()[:12]}"


def describe(info: LockInfo, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = max(0, int(now - info.started_at))
    left = int(info.expires_at - now)
    when = f"expires in {left}s" if left > 0 else f"expired {-left}s ago"
    return (f"{info.owner} on {info.host} (pid {info.pid}, run {info.run_id}, version {info.version}, "
            f"started {age}s ago, {when})")


def _find(client: docker.DockerClient, stack: str) -> dict | None:
    name = lock_name(stack)
    for c in client.api.configs(filters={"name": name}):
        if c["Spec"]["Name"] == name:
            return c
    return None


def read(client: docker.DockerClient, stack: str) -> LockInfo | None:
    c = _find(client, stack)
    if c is None:
        return None
    return _decode(c)


def _decode(c: dict) -> LockInfo:
    import base64
    try:
        data = json.loads(base64.b64decode(c["Spec"].get("Data") or b"").decode())
        return LockInfo(owner=str(data["owner"]), host=str(data["host"]), pid=int(data["pid"]),
                        version=str(data["version"]), run_id=str(data["run_id"]),
                        started_at=float(data["started_at"]), expires_at=float(data["expires_at"]))
    except (ValueError, KeyError, TypeError):
        # unreadable lock: treat as held by an unknown owner, expired (so unlock --force can clear it)
        return LockInfo("unknown", "unknown", 0, "?", "?", 0.0, 0.0)


def acquire(client: docker.DockerClient, stack: str, info: LockInfo, *, take_over_run: bool = False) -> LockInfo:
    """Take the lock or raise LockHeld naming the holder.

    With take_over_run, a lock held by the SAME run id (a run resumed after kill -9) is replaced by a
    fresh one; any other holder is refused.
    """
    data = json.dumps(asdict(info)).encode()
    name = lock_name(stack)
    for _ in range(2):
        try:
            client.api.create_config(name, data, labels={LOCK_LABEL: "1", "stackpatch.stack": stack})
            return info
        except APIError as e:
            if e.status_code != 409 and "already exists" not in str(e):
                raise EngineError(f"the engine refused to create the lock {name}: "
                                  f"{e.explanation or e}: check the engine is a swarm manager") from None
        holder = read(client, stack)
        if holder is None:
            continue  # released between our create and read: try once more
        if take_over_run and holder.run_id == info.run_id:
            _remove(client, stack, holder.run_id)
            continue
        hint = ("it has expired: `stackpatch unlock --force` breaks it"
                if holder.expired(time.time()) else "wait for it, or ask them")
        raise LockHeld(f"stack {stack} is locked by {describe(holder)}: {hint}")
    raise LockHeld(f"stack {stack}: the lock changed hands while taking it; retry")


def release(client: docker.DockerClient, stack: str, run_id: str) -> bool:
    """Remove the lock if `run_id` holds it. True when removed."""
    holder = read(client, stack)
    if holder is None or holder.run_id != run_id:
        return False
    return _remove(client, stack, run_id)


def _remove(client: docker.DockerClient, stack: str, run_id: str | None) -> bool:
    c = _find(client, stack)
    if c is None:
        return False
    if run_id is not None and _decode(c).run_id != run_id:
        return False
    try:
        client.api.remove_config(c["ID"])
        return True
    except NotFound:
        return False


def break_lock(client: docker.DockerClient, stack: str, *, force: bool, now: float | None = None) -> LockInfo | None:
    """`unlock --force`: remove an EXPIRED lock. A live lock is refused with its holder's name."""
    holder = read(client, stack)
    if holder is None:
        return None
    now = time.time() if now is None else now
    if not holder.expired(now):
        raise LockHeld(f"stack {stack} is locked by {describe(holder, now)}: it has not expired; "
                       "it is released when that run ends (or `stackpatch abort` on their machine)")
    if not force:
        raise UserError(f"stack {stack} has an expired lock of {describe(holder, now)}: "
                        "break it with `stackpatch unlock --force`")
    c = _find(client, stack)
    if c is not None:
        try:
            client.api.remove_config(c["ID"])
        except NotFound:
            pass
    return holder
