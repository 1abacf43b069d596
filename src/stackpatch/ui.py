"""Rendering: Rich for people, JSON for CI. Progress goes to stderr so stdout stays parseable."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def info(msg: str) -> None:
    err.print(msg)


def step(msg: str) -> None:
    err.print(f"[bold cyan]→[/] {msg}")


def ok(msg: str) -> None:
    err.print(f"[green]✓[/] {msg}")


def warn(msg: str) -> None:
    err.print(f"[yellow]![/] {msg}")


def fail(msg: str) -> None:
    # plain write: the one-line error must not be re-wrapped or styled into several lines
    sys.stderr.write(f"stackpatch: error: {msg}\n")
    sys.stderr.flush()


class _RichTransfer:
    """Bytes per part: a Rich progress bar on a terminal, plain lines at each part's end otherwise."""

    def __init__(self, label: str):
        self.label = label
        self.printed: dict[str, str] = {}
        self._tasks: dict[str, int] = {}
        self._progress = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
            self._progress = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                                      console=err, transient=True)
            self._progress.start()

    def update(self, part: str, state: str, current: int, total: int | None) -> None:
        if self._progress is not None:
            if part not in self._tasks:
                self._tasks[part] = self._progress.add_task(f"{self.label} {part[:12]}", total=total or None)
            self._progress.update(self._tasks[part], completed=current, total=total or None,
                                  description=f"{self.label} {part[:12]} {state}")
            return
        if state in ("Pushed", "Layer already exists") or state.startswith("Mounted"):
            if self.printed.get(part) != state:
                self.printed[part] = state
                size = f" {total or current} bytes" if state == "Pushed" else ""
                err.print(f"  {self.label} layer {part[:12]}: {state}{size}", markup=False, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


class RichReporter:
    """The Reporter (stackpatch.reporter) for people: stderr, Rich styling around plain-text messages."""

    def step(self, msg: str) -> None:
        err.print("[bold cyan]→[/] ", end="")
        err.print(msg, markup=False, highlight=False)

    def ok(self, msg: str) -> None:
        err.print("[green]✓[/] ", end="")
        err.print(msg, markup=False, highlight=False)

    def info(self, msg: str) -> None:
        err.print(msg, markup=False, highlight=False)

    def warn(self, msg: str) -> None:
        err.print("[yellow]![/] ", end="")
        err.print(msg, markup=False, highlight=False)

    @property
    def interactive(self) -> bool:
        return is_tty()

    def confirm(self, question: str) -> bool:
        import click
        return click.confirm(question, default=False, err=True)

    def transfer(self, label: str) -> _RichTransfer:
        return _RichTransfer(label)


reporter = RichReporter()
