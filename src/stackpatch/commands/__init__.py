"""One module per command group; each exposes `register(main)`."""

from __future__ import annotations

import click


def register_all(main: click.Group) -> None:
    from stackpatch.commands import config_cmd
    config_cmd.register(main)
    from stackpatch.commands import deploy_cmd; deploy_cmd.register(main)  # noqa: E702
