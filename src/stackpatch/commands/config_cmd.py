"""`stackpatch config check`."""

from __future__ import annotations

import click

from stackpatch import config as config_mod
from stackpatch import ui


def register(main: click.Group) -> None:
    main.add_command(config_group)


@click.group("config")
def config_group() -> None:
    """Validate and show stackpatch.toml."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=True, file_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the resolved config as JSON.")
def check(path: str | None, as_json: bool) -> None:
    """Validate PATH (default: stackpatch.toml found from here up to the repo root).

    Prints the resolved config with defaults filled in and secrets masked. A bad file gets one
    line naming the file, the key and what is wrong, and exit status 2.
    """
    cfg = config_mod.load(path, select=False)
    data = {"path": str(cfg.path), "config": cfg.masked()}
    if as_json:
        ui.emit_json(data)
        return
    import tomllib  # noqa: F401  (the printed form is TOML-like for familiarity)
    ui.ok(f"{cfg.path} is valid")
    _print_tree(data["config"])


def _print_tree(d: dict, prefix: str = "") -> None:
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and all(isinstance(x, (dict, list, str, int, float, bool, type(None)))
                                             for x in v.values()):
            _print_tree(v, key)
        else:
            ui.out.print(f"{key} = {v!r}", markup=False)
