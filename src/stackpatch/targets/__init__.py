"""Targets: where a release runs. `base` holds the protocol and its plain data; each backend is a
package (`swarm/`), chosen by `target.kind` through KINDS, the way pre-commit's `all_languages` maps
a language name to its implementation.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from stackpatch.config import Config
    from stackpatch.targets.base import ImageRef, Target

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

# target.kind -> "module:factory"; the factory takes (cfg, image_reader) and returns a Target
KINDS: dict[str, str] = {
    "swarm": "stackpatch.targets.swarm:from_config",
}

ImageReader = Callable[["ImageRef"], "dict | None"]  # an image's config (Labels, Healthcheck), or None


def engine_host(cfg: "Config") -> str:
    """The one engine rule, for every command: `target.docker_host` when the file sets it, else
    DOCKER_HOST, else the default socket."""
    return cfg.target.docker_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST


def for_config(cfg: "Config", image_reader: ImageReader | None = None) -> "Target":
    """The Target the config names. Connecting is lazy: the first call that needs the engine does it.
    Images the engine does not hold are read from the configured registry (`image_reader`'s default)."""
    if image_reader is None:
        from stackpatch.images import registry
        image_reader = registry.image_config_reader(cfg)
    module, _, factory = KINDS[cfg.target.kind].partition(":")
    return getattr(importlib.import_module(module), factory)(cfg, image_reader)
