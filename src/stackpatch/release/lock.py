"""The deploy lock's policy, over any Target: take it (atomically, naming the holder when refused),
hand it back, break an expired one. The lock itself lives ON the target (Target.create_lock), so every
machine sees it; its data is owner, host, pid, boot id, version, run id, start and expiry (no secrets).

Whether its holder still lives (`holder_alive`) is decided from what can be proven: on the machine that
took it (same hostname AND same boot id) the pid answers; on the same hostname after a reboot (another
boot id) the holder is dead; from any other machine nothing can be proven, so only the expiry frees it.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from stackpatch.errors import UserError
from stackpatch.targets.base import LockInfo, Target


class LockHeld(UserError):
    """Someone else holds the lock."""


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str:
    """This machine's boot id (changes at every boot); "" where the kernel does not say."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def holder_alive(holder: LockInfo, now: float | None = None) -> bool:
    """Whether the run holding the lock may still be running. False only when that is proven: the lock
    expired, or the holder's machine is this one (same hostname and boot id) and its pid is gone, or it
    is this hostname and the machine rebooted since (another boot id). A lock taken on another machine
    is alive until it expires: its pid means nothing here, whatever the hostname says."""
    now = time.time() if now is None else now
    if holder.expired(now):
        return False
    if holder.host != socket.gethostname():
        return True
    mine = boot_id()
    if holder.boot_id and mine and holder.boot_id != mine:
        return False   # this hostname, another boot: every process of that boot is gone
    if not holder.boot_id or not mine:
        return True    # cannot tell that this is the machine that took it
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(info: LockInfo, now: float | None = None) -> str:
    now = time.time() if now is None else now
    age = max(0, int(now - info.started_at))
    left = int(info.expires_at - now)
    when = f"expires in {left}s" if left > 0 else f"expired {-left}s ago"
    return (f"{info.owner} on {info.host} (pid {info.pid}, run {info.run_id}, version {info.version}, "
            f"started {age}s ago, {when})")


def acquire(target: Target, info: LockInfo, *, take_over_run: bool = False) -> LockInfo:
    """Take the lock or raise LockHeld naming the holder.

    With take_over_run, a lock held by the SAME run id (a run resumed after kill -9) is replaced by a
    fresh one; any other holder is refused.
    """
    stack = target.stack
    for _ in range(2):
        if target.create_lock(info):
            return info
        holder = target.read_lock()
        if holder is None:
            continue  # released between our create and read: try once more
        if take_over_run and holder.run_id == info.run_id:
            target.remove_lock(holder.run_id)
            continue
        hint = ("it has expired: `stackpatch unlock --force` breaks it"
                if holder.expired(time.time()) else "wait for it, or ask them")
        raise LockHeld(f"stack {stack} is locked by {describe(holder)}: {hint}")
    raise LockHeld(f"stack {stack}: the lock changed hands while taking it; retry")


def release(target: Target, run_id: str) -> bool:
    """Remove the lock if `run_id` holds it. True when removed."""
    return target.remove_lock(run_id)


def renew(target: Target, run_id: str, ttl: float) -> bool:
    """The heartbeat: the lock of `run_id` expires `ttl` seconds from now. False when it is not held
    by that run any more."""
    return target.renew_lock(run_id, time.time() + ttl)


def break_lock(target: Target, *, force: bool, now: float | None = None) -> LockInfo | None:
    """`unlock --force`: remove an EXPIRED lock. A live lock is refused with its holder's name."""
    stack = target.stack
    holder = target.read_lock()
    if holder is None:
        return None
    now = time.time() if now is None else now
    if not holder.expired(now):
        raise LockHeld(f"stack {stack} is locked by {describe(holder, now)}: it has not expired; "
                       "it is released when that run ends (or `stackpatch abort` on their machine)")
    if not force:
        raise UserError(f"stack {stack} has an expired lock of {describe(holder, now)}: "
                        "break it with `stackpatch unlock --force`")
    target.remove_lock(None)
    return holder
