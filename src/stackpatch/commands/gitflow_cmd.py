"""`stackpatch start`, `stackpatch finish`, `stackpatch hotfix list`: the git-flow hotfix lifecycle."""

from __future__ import annotations

import click

from stackpatch import gitflow, ui

REPO = click.option("--repo", "repo", type=click.Path(exists=True, file_okay=False), default=None,
                    help="The app's git repository (default: the current directory).")


def register(main: click.Group) -> None:
    main.add_command(start_cmd)
    main.add_command(finish_cmd)
    main.add_command(hotfix_group)


@click.command("start")
@click.argument("version", required=False)
@click.option("--from", "from_release", metavar="RELEASE",
              help="Release tag to start from (default: the newest release tag reachable from master).")
@click.option("--no-push", is_flag=True, help="Do not push the new branch (git-flow's default).")
@REPO
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def start_cmd(version: str | None, from_release: str | None, no_push: bool, repo: str | None,
              as_json: bool) -> None:
    """Start hotfix/VERSION from the release that runs.

    \b
    The base is --from RELEASE, else the release running on the target of stackpatch.toml
    (read from the stack's labels), else the newest release tag reachable from master
    (by version order). Without VERSION it takes the next free hotfix letter of that
    release: 26.11.1 -> 26.11.1b, then c, d ... A letter is taken when a branch or tag of
    that name exists locally or on the remote (fetched first). After z it refuses: pass
    VERSION explicitly (e.g. the next release number).

    \b
    Refuses (exit 2, nothing changed): a dirty tree, a bad VERSION, an existing tag or
    branch (local or remote), a second open hotfix unless `git config gitflow.multi-hotfix true`.
    Records gitflow.branch.hotfix/VERSION.base like git-flow AVH, and pushes with upstream.
    In a fresh clone, a master or develop that only the remote has is created locally,
    tracking it (as `git checkout develop` would); a diverged one is refused.
    """
    deployed = None
    if not from_release:
        from stackpatch import git
        from stackpatch.targets.discover import deployed_version
        deployed, why = deployed_version(git.toplevel(repo))
        if deployed:
            ui.step(f"deployed release: {deployed} ({why})")
        elif why.startswith("target unreachable"):
            ui.warn(f"{why}; starting from the newest release on master instead (or pass --from)")
    res = gitflow.start(repo, version, from_release, push=not no_push, deployed_version=deployed,
                        progress=ui.step)
    if as_json:
        ui.emit_json(res)
        return
    base = res["base"]
    ui.ok(f"created {res['branch']} from {base['tag']} ({base['reason']})"
          + (f" and pushed it to {res['settings']['remote']}" if res["pushed"] else ""))
    if res["base_older_than_main"]:
        ui.warn(f"{base['tag']} is older than {base['newest_on_main']}, the newest release on "
                f"{res['settings']['main']}: finish will merge into {res['settings']['main']} as git-flow does "
                "(see docs/gitflow.md, 'A base older than master')")
    ui.info("Next: commit the fix on this branch and push it, ship it, then run `stackpatch finish`.")


@click.command("finish")
@click.option("--no-push", is_flag=True,
              help="Do the local merges and tag only; nothing goes to the remote. Run `finish` again to push.")
@click.option("--keep-branch", is_flag=True, help="Keep the hotfix branch (local and remote).")
@click.option("-m", "--message", help="Tag message (default: 'Hotfix VERSION'; never prompts).")
@click.option("--continue", "cont", is_flag=True,
              help="Continue an interrupted finish; redoes a conflicting merge in place for you to resolve.")
@click.option("--abort", "abort_", is_flag=True, help="Undo the local merges and tag of an unpushed finish.")
@REPO
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--force", is_flag=True,
              help="Finish even though no successful ship of this hotfix is recorded in the journal.")
def finish_cmd(no_push: bool, keep_branch: bool, message: str | None, cont: bool, abort_: bool,
               repo: str | None, as_json: bool, force: bool) -> None:
    """Finish the hotfix checked out: like `git flow hotfix finish -F -p`, but safe.

    \b
    1. fetch; the hotfix must equal its remote branch, master and develop not be behind theirs
    2. merge the hotfix --no-ff into master, tag that merge (annotated), merge the tag into develop
    3. push master, develop and the tag in ONE `git push --atomic` (all or nothing)
    4. delete the remote hotfix branch, then the local one; you end on develop

    \b
    Every step is skipped when already done, so finish can be re-run. A conflicting merge is
    undone (nothing pushed), with the files listed: fix it on the hotfix branch and run
    finish again, or run `finish --continue` to redo the merge in place, resolve, `git add`,
    and `finish --continue` again. `finish --abort` undoes the local merges and tag.

    \b
    When stackpatch.toml has a [target], finish refuses a hotfix that no successful
    `stackpatch ship` recorded in .stackpatch/runs (so an untested fix never reaches master
    by accident); --force finishes anyway.
    """
    if cont and abort_:
        raise click.UsageError("--continue and --abort exclude each other")
    if abort_:
        res = gitflow.abort(repo, progress=ui.step)
        if as_json:
            ui.emit_json(res)
            return
        for line in res["undone"]:
            ui.ok(line)
        ui.info(f"You are on {res['on']}.")
        return
    if not force and not cont:
        _require_shipped(repo)
    res = gitflow.finish(repo, push=not no_push, keep_branch=keep_branch, message=message, cont=cont,
                         progress=ui.step)
    if as_json:
        ui.emit_json(res)
        return
    for line in res["done"]:
        ui.ok(line)
    if res["complete"]:
        ui.ok(f"{res['version']} is finished; you are on {res['on']}")
    else:
        ui.info(f"Next: {res['next']}")


@click.group("hotfix")
def hotfix_group() -> None:
    """Inspect hotfix branches."""


@hotfix_group.command("list")
@REPO
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(repo: str | None, as_json: bool) -> None:
    """Open hotfix branches (local, or on the remote as last fetched), their base and commits."""
    rows = gitflow.hotfix_list(repo)
    if as_json:
        ui.emit_json(rows)
        return
    if not rows:
        ui.info("No open hotfix. Start one with `stackpatch start`.")
        return
    for r in rows:
        where = "local+remote" if r["local"] and r["on_remote"] else ("local" if r["local"] else "remote only")
        mark = "*" if r["current"] else " "
        ui.out.print(f"{mark} {r['branch']}  based on {r['base'] or '?'}  ({where}, "
                     f"{len(r['commits'])} commit{'s' if len(r['commits']) != 1 else ''})", markup=False)
        for c in r["commits"]:
            ui.out.print(f"    {c['sha']} {c.get('subject', '')}", markup=False)


def _require_shipped(repo: str | None) -> None:
    """Refuse to finish a hotfix the journal has no successful ship of, when there is a target."""
    from stackpatch import git
    from stackpatch.errors import UserError
    from stackpatch.release import history
    from stackpatch.targets.discover import has_target
    root = git.toplevel(repo)
    if not has_target(root):
        return
    prefix = gitflow.load_settings(root).hotfix_prefix
    branch = git.current_branch(root) or ""
    if not branch.startswith(prefix):
        return  # finish itself says what is wrong
    version = branch[len(prefix):]
    if history.shipped(root, version):
        return
    raise UserError(f"{version} was never shipped successfully (no deployed run in .stackpatch/runs): "
                    "run `stackpatch ship` first, or pass --force to finish it anyway")
