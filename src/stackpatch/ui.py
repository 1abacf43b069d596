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
