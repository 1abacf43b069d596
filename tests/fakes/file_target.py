"""The in-memory target with its state in a JSON file, so that several processes share one stack: a run
killed with SIGKILL in one process leaves the stack exactly as it was at that instant, and `resume` or
`abort` in another process finds it there. Each protocol call loads the file, acts on a MemoryTarget,
and writes the file back (atomically, by rename), under an exclusive lock on `<file>.lock`.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from stackpatch.errors import EngineUnreachable

from tests.fakes.memory_target import MemoryTarget

METHODS = ("read_state", "read_service", "update_image", "retry_update", "observe", "start_job", "find_job",
           "job_status", "remove_job", "start_pull", "pull_status", "exec", "read_lock", "create_lock", "remove_lock", "renew_lock",
           "engine_facts", "reconnect")


def save(path: Path, target: MemoryTarget) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(target.to_json()))
    os.replace(tmp, path)


def load(path: Path) -> MemoryTarget:
    return MemoryTarget.from_json(json.loads(Path(path).read_text()))


class FileTarget:
    """A Target whose every call is one transaction on the state file. `after` (method name, result) is
    called once the state is saved: the crash driver kills its process there."""

    kind = "memory"
    poll_s = MemoryTarget.poll_s

    def __init__(self, path: Path, after: Callable[[str, Any], None] | None = None):
        self.path = Path(path)
        self.after = after
        self.stack = load(self.path).stack

    @property
    def where(self) -> str:
        return f"memory://{self.stack}"

    def is_unreachable(self, e: BaseException) -> bool:
        return isinstance(e, EngineUnreachable)

    @contextmanager
    def state(self) -> Iterator[MemoryTarget]:
        """Load, yield for changes, save: one transaction (tests use it to script or read the stack)."""
        with open(f"{self.path}.lock", "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            t = load(self.path)
            try:
                yield t
            finally:  # a call that raises may have changed the stack first (as an engine can)
                save(self.path, t)

    def __getattr__(self, name: str):
        if name not in METHODS:
            raise AttributeError(name)

        def call(*a, **kw):
            with self.state() as t:
                result = getattr(t, name)(*a, **kw)
            if self.after is not None:
                self.after(name, result)
            return result
        return call
