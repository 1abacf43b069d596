"""`stackpatch deploy | resume | abort | rollback | status | history | unlock | purge`."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import click

from stackpatch import config as config_mod
from stackpatch import report, ui
from stackpatch.errors import UserError

REPO = click.option("--repo", "repo", default=".", show_default=True,
                    type=click.Path(file_okay=False, dir_okay=True),
                    help="The app repo holding stackpatch.toml and the journal (.stackpatch/runs/).")
YES = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")


def register(main: click.Group) -> None:
    for c in (deploy_cmd, resume_cmd, abort_cmd, rollback_cmd, status_cmd, history_cmd, unlock_cmd, purge_cmd):
        main.add_command(c)


def _cfg(repo: str):
    return config_mod.load(Path(repo))


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not ui.is_tty():
        raise UserError(f"{what} needs confirmation and there is no terminal: pass --yes")
    if not click.confirm(f"{what}?", default=False, err=True):
        raise UserError("cancelled: nothing was changed")


def _report(res, as_json: bool) -> None:
    if as_json:
        ui.emit_json(res.to_json())
        return
    total = res.timings.get("total")
    ui.ok(f"run {res.run_id}: {res.state}" + (f" in {total:.1f}s" if total else ""))
    for k, v in res.timings.items():
        if k != "total":
            ui.info(f"  {k:<24} {v:6.1f}s")
    if res.purge_error:
        ui.warn(f"deployed, CDN purge failed ({res.purge_error}): `stackpatch purge` retries it")


def _ts(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


@click.command("deploy")
@REPO
@click.option("--release", "release_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Release JSON written by `ship --until pushed --json` (version, revision, pushed images).")
@click.option("--pause", is_flag=True, help="After the canary wave, wait for a person to check inside it.")
@YES
@JSON
def deploy_cmd(repo: str, release_file: str, pause: bool, yes: bool, as_json: bool) -> None:
    """Roll out images already pushed (the second half of `ship`).

    \b
    Takes the lock on the target, then for each wave (canary first): points each service at the
    digest-pinned image, waits until every task runs it healthy, runs the gate checks; after the
    canary, the release phase (migrations) runs once from the new image. Any failure rolls back
    every changed service to the exact recorded previous image. Ctrl-C rolls back too.
    Journal: .stackpatch/runs/<run-id>.jsonl.
    """
    from stackpatch.release.deploy import deploy
    from stackpatch.release.model import Release
    cfg = _cfg(repo)
    try:
        data = json.loads(Path(release_file).read_text())
        release = Release.from_json(data.get("release", data))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{release_file} is not a release JSON ({e}): use the output of "
                        "`stackpatch ship --until pushed --json`") from None
    with report.after_run(cfg.root):
        res = deploy(cfg, release, yes=yes, pause=pause, reporter=ui.reporter)
    _report(res, as_json)


@click.command("resume")
@REPO
@YES
@JSON
def resume_cmd(repo: str, yes: bool, as_json: bool) -> None:
    """Continue an interrupted run (killed, or the target went away) from its last completed step.

    Re-reads the live stack: services already on the new image are not touched again. Takes over
    the lock only if it is held by that same run.
    """
    from stackpatch.release.deploy import resume
    cfg = _cfg(repo)
    with report.after_run(cfg.root):
        res = resume(cfg, yes=yes, reporter=ui.reporter)
    _report(res, as_json)


@click.command("abort")
@REPO
@YES
@JSON
def abort_cmd(repo: str, yes: bool, as_json: bool) -> None:
    """Give up an interrupted run: every service it may have changed goes back to its recorded
    previous image, then the lock is released. Migrations already run are not reversed."""
    from stackpatch.release.deploy import abort
    cfg = _cfg(repo)
    _confirm(f"Restore the previous images on stack {cfg.target.stack}", yes)
    with report.after_run(cfg.root):
        res = abort(cfg, reporter=ui.reporter)
    _report(res, as_json)


@click.command("rollback")
@REPO
@click.option("--to", "to", metavar="VERSION", help="A version listed by `stackpatch history` "
                                                    "(default: the release before the last run).")
@YES
@JSON
def rollback_cmd(repo: str, to: str | None, yes: bool, as_json: bool) -> None:
    """Return every service to the exact images of a recorded release, then check the front serves
    its revision. Never Swarm's one-level rollback: images come from the journal. Migrations are not
    reversed."""
    from stackpatch.release.deploy import rollback
    cfg = _cfg(repo)
    _confirm(f"Roll stack {cfg.target.stack} back to {to or 'the previous release'}", yes)
    with report.after_run(cfg.root):
        res = rollback(cfg, to=to, reporter=ui.reporter)
    _report(res, as_json)


@click.command("status")
@REPO
@JSON
def status_cmd(repo: str, as_json: bool) -> None:
    """What runs now: per service the version, revision, digest and replicas; the lock; the last run."""
    from stackpatch.release.deploy import status
    st = status(_cfg(repo))
    if as_json:
        ui.emit_json(st)
        return
    from rich.table import Table
    t = Table(title=f"stack {st['stack']} on {st['engine']}", title_justify="left")
    for col in ("service", "version", "revision", "digest", "replicas", "update"):
        t.add_column(col)
    for name, s in st["services"].items():
        r = s["replicas"]
        t.add_row(name, s["version"] or "-", (s["revision"] or "-")[:12], (s["digest"] or "unpinned")[:19],
                  f"{r['running']}/{r['desired'] if r['desired'] is not None else 'global'}",
                  s["update_state"] or "-")
    ui.out.print(t)
    lock = st["lock"]
    ui.out.print(f"lock: {lock['holder']}" if lock else "lock: free", markup=False)
    last = st["last_run"]
    if last:
        ui.out.print(f"last run: {last['run_id']} {last['op']} {last['from_version'] or '?'} → "
                     f"{last['version'] or '?'}: {last['state']}"
                     + (f" (at {last['last_step']})" if last["state"] not in ("deployed",) and last["last_step"]
                        else ""), markup=False)


@click.command("history")
@REPO
@click.option("--offline", is_flag=True, help="Do not ask the target which run is live: the journal only.")
@click.option("--html", is_flag=True, help="Write .stackpatch/runs/index.html linking every run's report page; "
                                           "print its path.")
@JSON
def history_cmd(repo: str, offline: bool, html: bool, as_json: bool) -> None:
    """Every run recorded in this repo, newest first: who, when, from which version to which, result.
    Marks the run the target's labels say is live; a target that does not answer is an error that
    names it (`--offline` reads the journal only)."""
    from stackpatch import targets
    from stackpatch.release import history
    cfg = _cfg(repo)
    if html:
        ui.out.print(str(report.write_index(cfg.root)), markup=False)
        return
    runs = history.runs(cfg.root)
    live: set[str] = set()
    if not offline:
        state = targets.for_config(cfg).read_state(image_labels=False)
        live = {s.labels.get("stackpatch.run-id") for s in state.services.values()}
    rows = [{**v.to_json(), "live": v.run_id in live} for v in runs]
    if as_json:
        ui.emit_json(rows)
        return
    if not rows:
        ui.out.print("no runs recorded yet", markup=False)
        return
    for r in rows:  # one line per run: greppable, never wrapped into a table
        took = f"{r['ended_at'] - r['started_at']:.0f}s" if r["ended_at"] else "-"
        ui.out.print(f"{r['run_id']}{' *' if r['live'] else '  '} {r['op']:<8} "
                     f"{(r['from_version'] or '?') + ' → ' + (r['version'] or '?'):<22} {r['state']:<22} "
                     f"{took:>5}  {_ts(r['started_at'])}  {r['owner']}@{r['host']}", markup=False)
    if live:
        ui.out.print("* live on the target (its service labels name this run)", markup=False)


@click.command("unlock")
@REPO
@click.option("--force", is_flag=True, help="Break the lock. Only an EXPIRED lock can be broken.")
def unlock_cmd(repo: str, force: bool) -> None:
    """Break an expired deploy lock. A lock that has not expired is refused with its holder's name."""
    from stackpatch import targets
    from stackpatch.release import lock
    cfg = _cfg(repo)
    holder = lock.break_lock(targets.for_config(cfg), force=force)
    if holder is None:
        ui.ok(f"stack {cfg.target.stack} is not locked")
    else:
        ui.ok(f"broke the expired lock of {lock.describe(holder, time.time())}")


@click.command("purge")
@REPO
@JSON
def purge_cmd(repo: str, as_json: bool) -> None:
    """Retry only the CDN purge of the last run, when it ended `deployed, purge failed`."""
    from stackpatch.release.deploy import purge
    cfg = _cfg(repo)
    with report.after_run(cfg.root):
        res = purge(cfg, reporter=ui.reporter)
    _report(res, as_json)
    if res.purge_error:
        from stackpatch.errors import FaultError
        raise FaultError(f"the CDN purge failed again: {res.purge_error}")
