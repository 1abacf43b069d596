"""`stackpatch report [RUN-ID] [--open] [--index] [--json]`: a run's page, or the index of every run."""

from __future__ import annotations

import os
import sys
import webbrowser
from pathlib import Path

import click
import click.shell_completion

from stackpatch import ui
from stackpatch.errors import UserError


def register(main: click.Group) -> None:
    main.add_command(report_cmd)


def repo_root(repo: str) -> Path:
    """The directory of stackpatch.toml found from `repo` up to the git root, else `repo` itself."""
    from stackpatch.config import find_config
    start = Path(repo)
    if not start.is_dir():
        raise UserError(f"{repo} is not a directory: pass your app's repo with --repo")
    p = find_config(start)
    return p.parent if p is not None else start.resolve()


def _can_open() -> bool:
    """A browser can show a window here (a display, or macOS/Windows); never a text browser in this terminal."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _complete_run_ids(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list:
    """Shell completion of RUN-ID: the runs recorded in the repo (newest first)."""
    from stackpatch.release import history
    try:
        root = repo_root(ctx.params.get("repo") or ".")
        return [click.shell_completion.CompletionItem(v.run_id, help=f"{v.op} {v.version} {v.state}")
                for v in history.runs(root) if v.run_id.startswith(incomplete)]
    except Exception:  # noqa: BLE001 - completion never fails loudly
        return []


@click.command("report")
@click.argument("run_id", required=False, metavar="[RUN-ID]", shell_complete=_complete_run_ids)
@click.option("--repo", "repo", default=".", show_default=True, type=click.Path(file_okay=False),
              help="The app repo holding the journal (.stackpatch/runs/).")
@click.option("--index", "index", is_flag=True,
              help="Write the index page linking every run (.stackpatch/runs/index.html) and print its path.")
@click.option("--open", "open_", is_flag=True, help="Also open the page in the default browser (needs a display).")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, state, path, written} as JSON.")
def report_cmd(run_id: str | None, repo: str, index: bool, open_: bool, as_json: bool) -> None:
    """Print the path of a run's report page, writing it when it is missing or older than the journal.

    \b
    The page (.stackpatch/runs/<run-id>.html) is one self-contained HTML file, with no script and
    no external asset: send it, attach it to a ticket, keep it as a CI artifact. It shows who ran
    what against which stack and the result; a timeline of the phases drawn to scale (build,
    verify, push, each wave and service, migrations, gates, serving check, purge, rollback); each
    service's version, revision and digest before and after; the commits deployed..hotfix; the
    CDN purge and its items; for a failure, the failing step and what to do next.

    \b
    RUN-ID: a run listed by `stackpatch history` (a unique prefix is enough); default: the newest.
      stackpatch report                  the newest run's page
      stackpatch report 20261126T1012    that run's page
      stackpatch report --index --open   the index of every run, in a browser
    """
    from stackpatch import report
    from stackpatch.release import history
    from stackpatch.release import journal as J
    root = repo_root(repo)
    if index and run_id:
        raise UserError("--index writes the page of every run: give either RUN-ID or --index, not both")
    runs = history.runs(root)
    if not runs:
        raise UserError(f"no run recorded in {J.runs_dir(root)}: ship first (`stackpatch ship`), or pass "
                        "the app's repo with --repo")
    if index:
        path = report.write_index(root)
        data = {"path": str(path), "runs": len(runs)}
    else:
        if run_id:
            matches = [v for v in runs if v.run_id.startswith(run_id)]
            if not matches:
                raise UserError(f"no run {run_id!r} in {J.runs_dir(root)}: pick one listed by `stackpatch history`")
            if len(matches) > 1 and not any(v.run_id == run_id for v in matches):
                raise UserError(f"run id prefix {run_id!r} matches {len(matches)} runs: give more of it "
                                "(see `stackpatch history`)")
            v = next((m for m in matches if m.run_id == run_id), matches[0])
        else:
            v = runs[0]
        written = report.is_stale(root, v.run_id)
        path = report.write_for_run(root, v.run_id) if written else report.page_path(root, v.run_id)
        data = {"run_id": v.run_id, "state": v.state, "path": str(path), "written": written}
    if open_:
        if _can_open() and webbrowser.open(path.resolve().as_uri()):
            data["opened"] = True
        else:
            data["opened"] = False
            ui.warn(f"no browser window can be opened here (no display): open {path} yourself")
    if as_json:
        ui.emit_json(data)
    else:
        ui.out.print(str(path), markup=False, highlight=False)
