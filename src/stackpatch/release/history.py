"""What was shipped, from the journals in the app repo (pure reading, no Docker).

`shipped(repo_root, version)` is what `finish` asks before merging a hotfix: True when a run deployed
that version, False when runs exist but none deployed it, None when this repo has no journal at all.
"""

from __future__ import annotations

from pathlib import Path

from stackpatch.release import journal as J


def runs(repo_root: Path) -> list[J.RunView]:
    """Every run of this repo, newest first."""
    return sorted(J.iter_runs(repo_root), key=lambda v: v.started_at, reverse=True)


def last_run(repo_root: Path) -> J.RunView | None:
    rs = runs(repo_root)
    return rs[0] if rs else None


def unfinished(repo_root: Path, stack: str | None = None) -> J.RunView | None:
    """The newest run that did not reach a final state (killed, target lost, rollback failed)."""
    for v in runs(repo_root):
        if stack and v.start.get("stack") != stack:
            continue
        if not v.finished:
            return v
        return None  # only the newest run can be resumed: anything older was superseded
    return None


def find(repo_root: Path, run_id: str) -> J.RunView | None:
    for v in runs(repo_root):
        if v.run_id == run_id or v.run_id.startswith(run_id):
            return v
    return None


def shipped(repo_root: Path, version: str) -> bool | None:
    if not J.runs_dir(repo_root).is_dir():
        return None
    return any(v.op == "deploy" and v.version == version and v.state in (J.DEPLOYED, J.PURGE_FAILED)
               for v in J.iter_runs(repo_root))


def images_of(v: J.RunView, which: str) -> dict[str, str]:
    """service → image a run set ("new") or found ("previous"), from its recorded plan."""
    key = "image" if which == "new" else "previous_image"
    return {s["service"]: s[key] for s in v.plan if s.get("kind") == "update"}


def rollback_source(repo_root: Path, stack: str, to: str | None) -> tuple[dict[str, str], str | None, str | None]:
    """(images by service, version, revision) to roll back to.

    Without `to`: the images the newest successful run replaced. With `to`: the newest record of that
    version, either as what a run deployed or as what a run replaced.
    """
    ok_states = (J.DEPLOYED, J.PURGE_FAILED)
    for v in runs(repo_root):
        if v.start.get("stack") != stack or v.state not in ok_states:
            continue
        if to is None:
            return images_of(v, "previous"), v.from_version, v.start.get("from_revision")
        if v.version == to:
            return images_of(v, "new"), v.version, v.start.get("revision")
        if v.from_version == to:
            return images_of(v, "previous"), v.from_version, v.start.get("from_revision")
    from stackpatch.errors import UserError
    if to is None:
        raise UserError(f"no successful run on stack {stack} is recorded in {J.runs_dir(repo_root)}: "
                        "nothing to roll back to (see `stackpatch history`)")
    raise UserError(f"version {to} is not recorded for stack {stack} in {J.runs_dir(repo_root)}: "
                    "pick one listed by `stackpatch history`")
