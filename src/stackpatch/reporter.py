"""The small interface the engine talks to people through, passed down from `commands/`.

Nothing under `release/`, `targets/` or `images/` imports click, rich or `ui`: they get a Reporter.
`ui.RichReporter` renders it for a terminal (and plain lines when stderr is not one); `Recorder` keeps
what was said (tests, and callers that want the messages as data).
"""

from __future__ import annotations

from typing import Protocol


class Transfer(Protocol):
    """Progress of one transfer made of parts (the layers of a push)."""

    def update(self, part: str, state: str, current: int, total: int | None) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    def step(self, msg: str) -> None:
        """A step starts (a long one may follow)."""

    def ok(self, msg: str) -> None:
        """A step finished well."""

    def info(self, msg: str) -> None:
        """Detail: progress lines, the release command's output. Plain text, never markup."""

    def warn(self, msg: str) -> None:
        """Something a person should know; the run goes on."""

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question. Only called when `interactive` is true."""

    @property
    def interactive(self) -> bool:
        """A person answers at a terminal (stdin is a TTY)."""

    def transfer(self, label: str) -> Transfer:
        """A progress display for one transfer."""


class _NoTransfer:
    def update(self, part: str, state: str, current: int, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass


class Recorder:
    """A Reporter that keeps every message as (kind, text); never interactive unless given answers."""

    def __init__(self, answers: list[bool] | None = None):
        self.messages: list[tuple[str, str]] = []
        self._answers = list(answers or [])

    def _add(self, kind: str, msg: str) -> None:
        self.messages.append((kind, msg))

    def step(self, msg: str) -> None:
        self._add("step", msg)

    def ok(self, msg: str) -> None:
        self._add("ok", msg)

    def info(self, msg: str) -> None:
        self._add("info", msg)

    def warn(self, msg: str) -> None:
        self._add("warn", msg)

    @property
    def interactive(self) -> bool:
        return bool(self._answers)

    def confirm(self, question: str) -> bool:
        self._add("confirm", question)
        return self._answers.pop(0) if self._answers else False

    def transfer(self, label: str) -> Transfer:
        return _NoTransfer()

    def text(self) -> str:
        return "\n".join(m for _, m in self.messages)


class Locked:
    """A Reporter two threads can share (verify runs while the push does): each message, and each
    update of a transfer's display, goes through one lock. Never interactive (nothing asks a question
    from two threads)."""

    def __init__(self, inner: Reporter):
        import threading
        self.inner = inner
        self._lock = threading.Lock()

    def _say(self, fn, msg: str) -> None:
        with self._lock:
            fn(msg)

    def step(self, msg: str) -> None:
        self._say(self.inner.step, msg)

    def ok(self, msg: str) -> None:
        self._say(self.inner.ok, msg)

    def info(self, msg: str) -> None:
        self._say(self.inner.info, msg)

    def warn(self, msg: str) -> None:
        self._say(self.inner.warn, msg)

    @property
    def interactive(self) -> bool:
        return False

    def confirm(self, question: str) -> bool:
        return False

    def transfer(self, label: str) -> Transfer:
        with self._lock:
            return _LockedTransfer(self.inner.transfer(label), self._lock)


class _LockedTransfer:
    def __init__(self, inner: Transfer, lock):
        self.inner, self._lock = inner, lock

    def update(self, part: str, state: str, current: int, total: int | None) -> None:
        with self._lock:
            self.inner.update(part, state, current, total)

    def close(self) -> None:
        with self._lock:
            self.inner.close()
