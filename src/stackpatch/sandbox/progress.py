"""Progress lines with timings, on stderr."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from stackpatch import ui


class Report:
    """What one `up` did and what it reused; the test of idempotency reads it."""

    def __init__(self) -> None:
        self.built: list[str] = []
        self.reused: list[str] = []
        self.started = time.monotonic()

    def did(self, what: str) -> None:
        self.built.append(what)

    def reuse(self, what: str) -> None:
        self.reused.append(what)
        ui.ok(f"reused {what}")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def timed(msg: str) -> Iterator[None]:
    ui.step(f"{msg} …")
    t0 = time.monotonic()
    yield
    ui.ok(f"{msg} ({time.monotonic() - t0:.1f}s)")
