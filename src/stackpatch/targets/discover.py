"""Find the release that runs, for commands that only need its version (`start`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from stackpatch import config as config_mod
from stackpatch.errors import EngineError


def has_target(root: Path) -> bool:
    """Does the repo's stackpatch.toml name a target? (A repo may use stackpatch for git-flow only.)"""
    path = root / config_mod.CONFIG_NAME
    try:
        return "target" in tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
        return path.is_file()  # a broken file: let config.load say what is wrong


def deployed_version(root: Path) -> tuple[str | None, str]:
    """(version running on the configured target, why) — (None, why) when there is no target to ask.

    No stackpatch.toml, or one without a [target] table: no target. An unreachable engine: no target,
    and the reason says so (start then falls back to the newest release on master). A reachable
    target whose services disagree raises, as `plan` does: the user must pick with --from.
    """
    path = root / config_mod.CONFIG_NAME
    if not has_target(root):
        return None, "no [target] in stackpatch.toml" if path.is_file() else "no stackpatch.toml"
    cfg = config_mod.load(path)
    try:
        from stackpatch import targets
        from stackpatch.targets.base import deployed_release
        version, revision = deployed_release(targets.for_config(cfg).read_state(), cfg)
    except EngineError as e:
        return None, f"target unreachable ({e})"
    if version is None:
        return None, f"stack {cfg.target.stack!r} runs {revision[:7]} with no version label"
    return version, f"running on stack {cfg.target.stack!r}"
