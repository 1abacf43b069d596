"""Deciding the deploy (pure): config + release + the target's services → an ordered list of steps.

This is the ONE deploy plan: `plan` renders it (with "<digest after push>" before the push), `ship`,
`deploy` and `rollback` journal it as the run-start's `plan` and run it, `resume` and `abort` re-read it
from the journal. Each step is a plain dict typed below (it is written as is into the journal). Steps
name services without the stack prefix: only the target knows how it names them.
No Docker, no network: tests of this half need nothing running.
"""

from __future__ import annotations

from typing import TypedDict

from stackpatch.config import Config, HttpCheck
from stackpatch.errors import UserError
from stackpatch.release.model import Release
from stackpatch.targets.base import (LABEL_PREVIOUS, LABEL_REVISION, LABEL_RUN_ID, LABEL_VERSION, ServiceState)

STACKPATCH_LABELS = (LABEL_VERSION, LABEL_REVISION, LABEL_PREVIOUS, LABEL_RUN_ID)


class UpdateStep(TypedDict):
    """Point one service at a digest-pinned image; undo puts `previous_image` and `previous_labels`
    back. The runner adds the run id label when it acts."""
    id: str                    # update:<service>
    kind: str                  # "update"
    wave: str
    service: str
    image: str                 # repo:tag@sha256:… ("<digest after push>" in `plan` before the push)
    previous_image: str
    previous_pinned: bool
    labels: dict[str, str]
    previous_labels: dict[str, str | None]
    timeout: float


class GateStep(TypedDict):
    """The checks after a wave; a check naming {revision}/{version} runs once its service runs the release."""
    id: str                    # gate:<wave>
    kind: str
    wave: str
    checks: list[dict]
    pause: bool
    version: str
    revision: str
    timeout: float


class MigrateStep(TypedDict):
    """The release phase: the command once (per tenant) from the new image, cloned from `service`."""
    id: str                    # migrate or migrate:<tenant>
    kind: str
    service: str
    image: str
    command: list[str]
    env: dict[str, str]
    timeout: float


class PrepullStep(TypedDict):
    """Before the canary: every node that may run a task of `services` pulls `image` (a job per image),
    so no cut-over waits for a pull, and a node that cannot pull fails the run before anything changed.
    Nothing to undo."""
    id: str                    # prepull
    kind: str
    images: list[dict]         # [{"image": repo:tag@sha256:…, "services": [...]}], in wave order
    timeout: float


class ServingStep(TypedDict):
    """The front serves the expected revision."""
    id: str
    kind: str
    url: str
    revision: str
    timeout: float


class PurgeStep(TypedDict):
    """CDN purge, after success only."""
    id: str
    kind: str


DeployStep = PrepullStep | UpdateStep | GateStep | MigrateStep | ServingStep | PurgeStep


def describe(step: dict) -> str:
    """One line a person reads for a step (what `plan` prints)."""
    k = step["kind"]
    if k == "update":
        return f"{step['wave']}: update {step['service']} {step['previous_image']} → {step['image']}"
    if k == "gate":
        names = ", ".join(c["name"] for c in step["checks"]) or "no checks"
        return f"{step['wave']}: gate ({names})" + (", pause for a person" if step["pause"] else "")
    if k == "migrate":
        env = " ".join(f"{a}={b}" for a, b in step["env"].items())
        return f"release phase: `{' '.join(step['command'])}` once from the new image of {step['service']}" + \
            (f" ({env})" if env else "")
    if k == "prepull":
        parts = "; ".join(f"{i['image']} for {', '.join(i['services'])}" for i in step["images"])
        return f"pre-pull on every node that may run a new task: {parts}"
    if k == "serving":
        return f"check {step['url']} serves revision {step['revision'][:7]}"
    if k == "purge":
        return "purge the CDN cache"
    return k


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


def plan_deploy(cfg: Config, release: Release, services: dict[str, ServiceState],
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
                "kind": "migrate", "service": mig_service,
                "image": new_images[mig_service], "command": list(m.command),
                "env": {m.tenant_env: t} if t else {}, "timeout": m.timeout})

    steps: list[dict] = []
    if tcfg.prepull:
        pulls: dict[str, list[str]] = {}
        for svc in (s for w in waves for s in w.services):
            if new_images[svc] != str(services[svc].image):
                pulls.setdefault(new_images[svc], []).append(svc)
        if pulls:
            steps.append({"id": "prepull", "kind": "prepull", "timeout": cfg.timeouts.prepull,
                          "images": [{"image": img, "services": svcs} for img, svcs in pulls.items()]})
    if m.when == "before-rollout":
        steps += migrate_steps
    for i, w in enumerate(waves):
        for svc in w.services:
            cur = services[svc]
            prev_labels = {k: cur.labels.get(k) for k in STACKPATCH_LABELS}
            steps.append({
                "id": f"update:{svc}", "kind": "update", "wave": w.name, "service": svc,
                "image": new_images[svc], "previous_image": str(cur.image),
                "previous_pinned": bool(cur.image.digest),
                "labels": {LABEL_VERSION: release.version, LABEL_REVISION: release.revision,
                           LABEL_PREVIOUS: str(cur.image)},
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
                  revision: str | None) -> list[dict]:
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
        labels = {LABEL_VERSION: version, LABEL_REVISION: revision, LABEL_PREVIOUS: str(cur.image)}
        steps.append({"id": f"update:{svc}", "kind": "update", "wave": "rollback", "service": svc,
                      "image": images[svc], "previous_image": str(cur.image),
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
