"""`promote`: deploy to one target the exact images (digests) another target runs, with no rebuild.

Look: the source target's live state (one read) and its journal history. Decide (pure,
`release_running`): the Release the source runs, refusing a source that is mid-run, was rolled back,
or runs different digests of one image. Act: `deploy.deploy` on the destination, as `ship` would
after its push (the same waves, gates, release phase, rollback, lock, hooks and notifications).
"""

from __future__ import annotations

from stackpatch import targets
from stackpatch.errors import UserError
from stackpatch.release import history
from stackpatch.release import journal as J
from stackpatch.release.model import PushedImage, Release
from stackpatch.reporter import Reporter
from stackpatch.targets.base import Target, TargetState, deployed_release

ROLLED_BACK_STATES = (J.ROLLED_BACK, J.ABORTED, J.ROLLBACK_FAILED)
SWARM_ROLLBACK = ("rollback_started", "rollback_paused", "rollback_completed")


def release_running(cfg_from, state: TargetState, dest_images: set[str]) -> Release:
    """The Release the source target runs: per image, the one digest its services run. Pure."""
    name = cfg_from.target_name
    if state.lock is not None:
        raise UserError(f"target {name} (stack {state.stack}) is mid-run: it is locked by run "
                        f"{state.lock.run_id} ({state.lock.owner}); wait for it, or `stackpatch resume`/`abort` "
                        f"--target {name}")
    rolled = [s for s in cfg_from.target.services if state.services.get(s) is not None
              and state.services[s].update_state in SWARM_ROLLBACK]
    if rolled:
        raise UserError(f"target {name}: Swarm rolled back {', '.join(rolled)}: it does not run a release "
                        "that passed; ship the fix to it again first")
    version, revision = deployed_release(state, cfg_from)   # refuses missing services and mixed revisions
    images: dict[str, PushedImage] = {}
    for svc, img in cfg_from.target.services.items():
        ref = state.services[svc].image
        if not ref.digest:
            raise UserError(f"{svc} on target {name} runs {ref}, which is not pinned to a digest: promote "
                            "moves exact digests; ship to it with stackpatch first")
        have = images.get(img)
        if have is not None and have.digest != ref.digest:
            raise UserError(f"services of image {img!r} on target {name} run different digests ({have.digest[:19]}, "
                            f"{ref.digest[:19]}): finish or roll back the half-done deploy there first")
        images[img] = PushedImage(img, ref.repository, (ref.tag or f"git-commit-{revision[:7]}",), ref.digest)
    missing = sorted(dest_images - set(images))
    if missing:
        raise UserError(f"target {name} runs no service of image {', '.join(missing)}, which the destination "
                        "needs: nothing to promote for it")
    if version is None:
        raise UserError(f"target {name} runs {revision[:7]} without a version label: ship it with stackpatch first")
    return Release(version, revision, images)


def _refuse_unsettled(cfg_from) -> None:
    """The source's newest run must have ended deployed: not running, not rolled back."""
    root = cfg_from.root
    stack = cfg_from.target.stack
    name = cfg_from.target_name
    for v in history.runs(root):
        if v.start.get("stack") != stack:
            continue
        if not v.finished:
            raise UserError(f"target {name} is mid-run (run {v.run_id}, {v.state}): `stackpatch resume` or "
                            f"`stackpatch abort` --target {name} first")
        if v.state in ROLLED_BACK_STATES or (v.op == "rollback"):
            raise UserError(f"target {name}'s last run {v.run_id} ({v.op} of {v.version or '?'}) ended "
                            f"{v.state if v.op != 'rollback' else 'in a rollback'}: it runs an earlier release "
                            "again; ship the fix to it first")
        return


def promote(cfg_from, cfg_to, *, yes: bool, pause: bool, reporter: Reporter, source: Target | None = None,
            target: Target | None = None):
    """Deploy to `cfg_to`'s target the exact digests `cfg_from`'s target runs."""
    from stackpatch.release.deploy import deploy, refuse_unattended_pause
    if cfg_from.target.stack == cfg_to.target.stack and targets.engine_host(cfg_from) == targets.engine_host(cfg_to):
        raise UserError(f"--from {cfg_from.target_name} and --to {cfg_to.target_name} are the same stack "
                        f"({cfg_to.target.stack}): promote moves a release between two targets")
    refuse_unattended_pause(pause, yes, reporter)
    _refuse_unsettled(cfg_from)
    source = source or targets.for_config(cfg_from)
    rel = release_running(cfg_from, source.read_state(), set(cfg_to.target.services.values()))
    reporter.info(f"promote {rel.version} ({rel.revision[:7]}) from target {cfg_from.target_name} "
                  f"(stack {cfg_from.target.stack}) to target {cfg_to.target_name} (stack {cfg_to.target.stack}): "
                  + ", ".join(f"{i.name} {i.digest[:19]}" for i in rel.images.values()))
    return rel, deploy(cfg_to, rel, yes=yes, pause=pause, reporter=reporter, target=target,
                       promoted_from=cfg_from.target_name)
