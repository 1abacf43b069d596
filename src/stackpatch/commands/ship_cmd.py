"""`stackpatch plan` and `stackpatch ship`."""

from __future__ import annotations

import click

from stackpatch import config as config_mod
from stackpatch import ui
from stackpatch.commands.deploy_cmd import TARGET
from stackpatch.errors import UserError


def register(main: click.Group) -> None:
    main.add_command(plan_cmd)
    main.add_command(ship_cmd)

_config_opt = click.option("-c", "--config", "config_path", type=click.Path(),
                           help="stackpatch.toml to use (default: found from here up to the repo root).")
_ref_opt = click.option("--ref", metavar="BRANCH",
                        help="Ship this hotfix branch instead of the one checked out (it must be pushed).")
_mixed_opt = click.option("--allow-mixed", is_flag=True,
                          help="Accept services of one image running different revisions (a half-done deploy); "
                               "the revision most services run counts as deployed.")


def _render_plan(plan, stack: str, name: str | None = None) -> None:
    p = plan.preflight
    ui.out.print(f"target: {name}: stack {stack} on {plan.engine}" if name else
                 f"target: stack {stack} on {plan.engine}", markup=False)
    ui.out.print(f"hotfix [bold]{p.version}[/] = {p.branch} at {p.revision[:7]}; deployed "
                 f"{p.deployed_version or '(unknown version)'} at {p.deployed_revision[:7]}")
    ui.out.print(f"commits {p.deployed_revision[:7]}..{p.revision[:7]} ({len(p.commits)}):")
    for c in p.commits:
        ui.out.print(f"  {c.sha[:7]} {c.subject}", markup=False)
    if p.risky:
        ui.out.print(f"[yellow]risky files changed ({len(p.risky)}):[/]")
        for f in p.risky:
            ui.out.print("  ! " + f, markup=False, style="yellow")
    ui.out.print("images:")
    for i in plan.images:
        ui.out.print(f"  {i.name}: {i.repository}:{', '.join(i.tags)}"
                     + (f" (already pushed {i.already_pushed[:19]})" if i.already_pushed else ""), markup=False)
    ui.out.print("steps:")
    for n, s in enumerate(plan.steps, 1):
        mark = "done" if s.done else s.half
        ui.out.print(f"  {n:2}. [{mark}] {s.intent}", markup=False)
    _warn_settings(plan)


def _warn_settings(plan) -> None:
    """The lint of the stack's update settings: warnings, never a refusal (`stackpatch doctor` too)."""
    for w in plan.warnings:
        ui.warn(f"update settings: {w}")


@click.command("plan")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (stdout); progress stays on stderr.")
@_ref_opt
@_mixed_opt
@_config_opt
@TARGET
def plan_cmd(as_json: bool, ref: str | None, allow_mixed: bool, config_path: str | None,
             target_name: str | None) -> None:
    """Show what `ship` would do, and change nothing.

    \b
    Reads the git repo (after a fetch), the running stack and the registry, then prints:
      - preflight: the hotfix version and sha, the deployed release, the commits
        deployed..hotfix and the risky files among them (migrations, Dockerfiles, lockfiles);
      - the images and tags it would build (git-commit-<sha7> and the version);
      - every step of `ship`, in order, with its intent.
    Refuses with one line (exit 2) when the hotfix cannot ship: not a hotfix branch, dirty tree,
    unpushed commits, deployed commit not an ancestor, a tag already used for other code.
    """
    from stackpatch.release.build_half import plan_for
    cfg = config_mod.load(config_path, target=target_name)
    _, plan = plan_for(cfg, ref, allow_mixed)
    if as_json:
        ui.emit_json(plan.to_json())
    else:
        _render_plan(plan, cfg.target.stack, cfg.target_name if cfg.targets else None)


@click.command("ship")
@click.option("--until", type=click.Choice(["pushed"]), default=None,
              help="Stop after this step: `pushed` = built, verified and pushed, nothing deployed.")
@click.option("--pause", is_flag=True, help="After the canary wave, wait for a person to check inside it "
                                            "(the routine's double-check); needs a terminal.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (required when stdin is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the resulting release (digests, tags, timings) as JSON.")
@_ref_opt
@_mixed_opt
@_config_opt
@TARGET
def ship_cmd(until: str | None, pause: bool, yes: bool, as_json: bool, ref: str | None, allow_mixed: bool,
             config_path: str | None, target_name: str | None) -> None:
    """Ship the pushed hotfix: build, verify, push, then patch the running stack.

    \b
      1. preflight and plan (as `stackpatch plan`): refuses unpushed or dirty code;
      2. sync a clean build dir (a cached clone of the remote at exactly the pushed sha);
      3. build every image (BuildKit when available), tagged git-commit-<sha7> and the version,
         labelled org.opencontainers.image.revision/version/source/created; the log file is printed;
      4. verify the exact images in a throwaway local stack, then tear it down;
      5. push (while 4 runs) under a pre-push tag; once verify passed, put the release tags
         on the pushed manifest; read the digest, cross-check it with the registry;
      --until pushed stops here: nothing is deployed.
      6. take the lock on the target and roll out in waves, canary first, each service pinned
         to repo:tag@sha256:digest; the release phase (migrations) runs once after the canary;
      7. any failure or Ctrl-C rolls every changed service back to its recorded previous image;
      8. purge the CDN; release the lock. Journal: .stackpatch/runs/<run-id>.jsonl.

    \b
    An interrupted run: `stackpatch resume` or `stackpatch abort`. Then: `stackpatch finish`.
    Needs --yes when stdin is not a terminal. Exit 2: refused, nothing changed; exit 1: a fault
    (rolled back; the journal says where the run stopped).
    """
    from stackpatch.release.build_half import plan_for, run_build_half
    from stackpatch.release.deploy import refuse_unattended_pause
    refuse_unattended_pause(pause, yes, ui.reporter)
    cfg = config_mod.load(config_path, target=target_name)
    snap, plan = plan_for(cfg, ref, allow_mixed)
    if not as_json:
        _render_plan(plan, cfg.target.stack, cfg.target_name if cfg.targets else None)
    else:
        _warn_settings(plan)  # stderr: stdout stays the JSON
    if not yes:
        if not ui.is_tty():
            raise UserError("ship changes the registry and needs confirmation: stdin is not a terminal, so pass --yes")
        what = "up to the push" if until == "pushed" else f"to stack {cfg.target.stack}"
        if not click.confirm(f"ship {plan.version} ({plan.revision[:7]}) {what}?", default=False, err=True):
            raise UserError("not confirmed: nothing was changed")
    from stackpatch import hooks
    hooks.pre(cfg.root, cfg.hooks, "pre-ship",
              hooks.variables(cfg, version=plan.version, revision=plan.revision,
                              previous_version=plan.preflight.deployed_version, run_id=None, operation="ship",
                              extra={"STACKPATCH_BRANCH": plan.preflight.branch}),
              ui.reporter, unchanged="nothing was built or pushed")
    result = run_build_half(cfg, plan, snap, ui.reporter)
    if until != "pushed":
        from stackpatch.release.deploy import deploy
        from stackpatch import report
        try:
            with report.after_run(cfg.root):
                run = deploy(cfg, result.release, yes=True, pause=pause, reporter=ui.reporter,
                             build_timings=dict(result.timings), build_beside=result.beside)
        finally:  # the verify stack's removal went on beside the deploy
            result.wait_verify_teardown(ui.reporter)
        if as_json:
            ui.emit_json({**result.to_json(), "run": run.to_json()})
        else:
            _report_ship(result, run)
        return
    result.wait_verify_teardown(ui.reporter)
    if as_json:
        ui.emit_json(result.to_json())
    else:
        for i in result.release.images.values():
            ui.out.print(f"{i.name}: {i.ref} ({i.bytes_pushed} bytes pushed)", markup=False)
        if result.log_path:
            ui.out.print(f"build log: {result.log_path}", markup=False)


def _report_ship(result, run) -> None:
    from stackpatch.commands.deploy_cmd import _report
    for i in result.release.images.values():
        ui.out.print(f"{i.name}: {i.ref} ({i.bytes_pushed} bytes pushed)", markup=False)
    if result.log_path:
        ui.info(f"build log: {result.log_path}")
    for k, v in result.timings.items():
        ui.info(f"  {k:<24} {v:6.1f}s")
    _report(run, as_json=False)
