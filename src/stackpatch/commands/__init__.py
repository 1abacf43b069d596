"""One module per command group; each exposes `register(main)`."""

from __future__ import annotations

import importlib

import click

# In the order `stackpatch --help` lists them.
MODULES = (
    "config_cmd",
    "sandbox_cmd",
    "gitflow_cmd",
    "deploy_cmd",
    "ship_cmd",
    "report_cmd",
)


def register_all(main: click.Group) -> None:
    for name in MODULES:
        importlib.import_module(f"stackpatch.commands.{name}").register(main)
