"""Deciding the deploy (pure): config + release + the target's services → an ordered list of steps.

Each step is a plain dict (it is written as is into the journal):
  update   {id, kind, wave, service, full_name, image, previous_image, labels, previous_labels}
  gate     {id, kind, wave, checks, pause, version, revision}   checks naming {revision} run in the last gate only
  migrate  {id, kind, service, full_name, image, command, env, timeout}
  serving  {id, kind, url, revision}            the front serves the expected revision
  purge    {id, kind}                           CDN purge, after success only
No Docker, no network: tests of this half need nothing running.
"""

from __future__ import annotations

from collections import Counter

from stackpatch.config import Config, HttpCheck
from stackpatch.errors import UserError
from stackpatch.release.model import Release
from stackpatch.target.base import (LABEL_PREVIOUS, LABEL_REVISION, LABEL_RUN_ID, LABEL_VERSION, ServiceState)

STACKPATCH_LABELS = (LABEL_VERSION, LABEL_REVISION, LABEL_PREVIOUS, LABEL_RUN_ID)


def deployed_from(services: dict[str, ServiceState], names: list[str]) -> tuple[str | None, str | None]:
    """(version, revision) most of the configured services run now."""
    versions = Counter(s.version for n, s in services.items() if n in names and s.version)
    revisions = Counter(s.revision for n, s in services.items() if n in names and s.revision)
    return (versions.most_common(1)[0][0] if versions else None,
            revisions.most_common(1)[0][0] if revisions else None)


def _check_json(c: HttpCheck) -> dict:
    return c.model_dump(mode="json")


def release_check(c: HttpCheck) -> bool:
    """A check that names `{revision}`/`{version}` can only pass once every wave runs the release
    (the front answers from the last wave's services), so it runs in the last gate only."""
    text = " ".join([c.body_contains or "", c.url or "", *(c.command or [])])
    return "{revision}" in text or "{version}" in text


def _check_in_gate(c: HttpCheck, i: int, waves: list) -> bool:
    """Which gates run a check: every gate, except a release check (naming {revision}/{version}) that
    can only pass once its service runs the release: from that service's wave on (a command check),
    or in the last gate only (a URL check: the front answers from the last wave's services)."""
    if i == len(waves) - 1 or not release_check(c):
        return True
    if c.command is not None:
        first = next((k for k, w in enumerate(waves) if c.service in w.services), len(waves) - 1)
        return i >= first
    return False


def plan_deploy(cfg: Config, release: Release, services: dict[str, ServiceState], run_id: str,
                *, pause: bool = False) -> list[dict]:
    """The steps of the second half of `ship`: waves, gates, release phase, serving check, purge."""
    tcfg = cfg.target
    stack = tcfg.stack
    missing = [s for s in tcfg.services if s not in services]
    if missing:
        raise UserError(f"stack {stack} has no service {', '.join(missing)}: fix target.services or deploy "
                        "the stack first")
    new_images: dict[str, str] = {}
    for svc, img_name in tcfg.services.items():
        pushed = release.images.get(img_name)
        if pushed is None:
            raise UserError(f"release {release.version} has no image {img_name!r} for service {svc}: "
                            "build and push it (`stackpatch ship`)")
        new_images[svc] = pushed.ref
    waves = tcfg.resolved_waves()
    in_waves = [s for w in waves for s in w.services]
    extra = [s for s in tcfg.services if s not in in_waves]
    if extra:  # configured services no wave names: they go last
        from stackpatch.config import WaveConfig
        waves = [*waves, WaveConfig(name="rest", services=extra)]

    m = cfg.migrations
    mig_service = m.service or waves[0].services[0]
    migrate_steps: list[dict] = []
    if m.when != "never" and m.command:
        tenants = m.tenants or [None]
        for t in tenants:
            migrate_steps.append({
                "id": f"migrate:{t}" if t else "migrate",
                "kind": "migrate", "service": mig_service, "full_name": f"{stack}_{mig_service}",
                "image": new_images[mig_service], "command": list(m.command),
                "env": {m.tenant_env: t} if t else {}, "timeout": m.timeout})

    steps: list[dict] = []
    if m.when == "before-rollout":
        steps += migrate_steps
    for i, w in enumerate(waves):
        for svc in w.services:
            cur = services[svc]
            prev_labels = {k: cur.labels.get(k) for k in STACKPATCH_LABELS}
            steps.append({
                "id": f"update:{svc}", "kind": "update", "wave": w.name, "service": svc,
                "full_name": cur.full_name, "image": new_images[svc], "previous_image": str(cur.image),
                "previous_pinned": bool(cur.image.digest),
                "labels": {LABEL_VERSION: release.version, LABEL_REVISION: release.revision,
                           LABEL_PREVIOUS: str(cur.image), LABEL_RUN_ID: run_id},
                "previous_labels": prev_labels,
                "timeout": cfg.timeouts.converge})
        steps.append({"id": f"gate:{w.name}", "kind": "gate", "wave": w.name,
                      "checks": [_check_json(c) for c in tcfg.checks if _check_in_gate(c, i, waves)],
                      "pause": bool(w.pause or (pause and i == 0)),
                      "version": release.version, "revision": release.revision,
                      "timeout": cfg.timeouts.check})
        if i == 0 and m.when == "after-canary":
            steps += migrate_steps
    if tcfg.front_url:
        steps.append({"id": "serving", "kind": "serving", "url": tcfg.front_url.rstrip("/") + "/version",
                      "revision": release.revision, "timeout": cfg.timeouts.check})
    if cfg.cdn is not None and cfg.cdn.provider != "none":
        steps.append({"id": "purge", "kind": "purge"})
    return steps


def plan_rollback(cfg: Config, services: dict[str, ServiceState], images: dict[str, str], version: str | None,
                  revision: str | None, run_id: str) -> list[dict]:
    """Steps that put every service back on `images` (service → exact recorded image), last wave first
    so the front keeps talking to an app it knows, then check the old revision is serving."""
    tcfg = cfg.target
    waves = tcfg.resolved_waves()
    order = [s for w in reversed(waves) for s in w.services]
    order += [s for s in images if s not in order]
    steps: list[dict] = []
    for svc in order:
        if svc not in images:
            continue
        cur = services.get(svc)
        if cur is None:
            raise UserError(f"stack {tcfg.stack} has no service {svc} to roll back")
        labels = {LABEL_VERSION: version, LABEL_REVISION: revision, LABEL_PREVIOUS: str(cur.image),
                  LABEL_RUN_ID: run_id}
        steps.append({"id": f"update:{svc}", "kind": "update", "wave": "rollback", "service": svc,
                      "full_name": cur.full_name, "image": images[svc], "previous_image": str(cur.image),
                      "previous_pinned": bool(cur.image.digest), "labels": labels,
                      "previous_labels": {k: cur.labels.get(k) for k in STACKPATCH_LABELS},
                      "timeout": cfg.timeouts.converge})
    if tcfg.front_url and revision:
        steps.append({"id": "serving", "kind": "serving", "url": tcfg.front_url.rstrip("/") + "/version",
                      "revision": revision, "timeout": cfg.timeouts.check})
    return steps


def undo_order(steps: list[dict], done: list[str]) -> list[dict]:
    """The update steps to undo, newest first: those done plus the one that was under way."""
    by_id = {s["id"]: s for s in steps}
    out = [by_id[i] for i in done if i in by_id and by_id[i]["kind"] == "update"]
    return list(reversed(out))
