"""CDN purge after a successful deploy: pick the provider from `[cdn]` and purge.

A failed purge raises `PurgeError` (a FaultError): the caller marks the run *deployed, purge failed*,
not failed, and `stackpatch purge` retries only this step.
"""

from __future__ import annotations

import os
from typing import Mapping

from stackpatch.cdn.base import MODES, NoPurger, Progress, PurgeError, Purger, PurgeResult
from stackpatch.cdn.cloudflare import CloudflarePurger
from stackpatch.errors import UserError

__all__ = ["purge", "purger_for", "Purger", "PurgeResult", "PurgeError", "CloudflarePurger", "NoPurger", "MODES"]


def purger_for(cdn_cfg, env: Mapping[str, str] | None = None) -> Purger:
    """The provider named by `cdn_cfg.provider`, with its token read from the environment."""
    env = os.environ if env is None else env
    if cdn_cfg.provider == "none":
        return NoPurger()
    if cdn_cfg.provider == "cloudflare":
        token = (env.get(cdn_cfg.token_env) or "").strip()
        if not token:
            raise UserError(f"the CDN API token is missing: export {cdn_cfg.token_env}=<a Cloudflare API token "
                            f"with Cache Purge permission> (cdn.token_env names that variable)")
        return CloudflarePurger(cdn_cfg.api_url, cdn_cfg.zone, token, batch_size=cdn_cfg.batch_size,
                                retries=cdn_cfg.retries)
    raise UserError(f"unknown cdn.provider {cdn_cfg.provider!r}: use \"cloudflare\" or \"none\"")


def purge(cdn_cfg, env: Mapping[str, str] | None = None, progress: Progress | None = None,
          purger: Purger | None = None) -> PurgeResult:
    """Purge what `[cdn]` says. No `[cdn]` section or provider "none": a successful no-op."""
    if cdn_cfg is None:
        return NoPurger().purge()
    p = purger if purger is not None else purger_for(cdn_cfg, env)
    items = [] if cdn_cfg.purge == "everything" else list(cdn_cfg.items)
    return p.purge(cdn_cfg.purge, items, progress=progress)
