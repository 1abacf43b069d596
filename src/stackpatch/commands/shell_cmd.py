"""`stackpatch shell [SERVICE]` and `stackpatch logs SERVICE`: the developers' look inside the stack."""

from __future__ import annotations

import re
import time

import click

from stackpatch import ui
from stackpatch.commands.deploy_cmd import REPO, TARGET, _cfg
from stackpatch.errors import UserError

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def register(main: click.Group) -> None:
    main.add_command(shell_cmd)
    main.add_command(logs_cmd)


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """`10m`, `2h`, `30s`, `1d` (or seconds) ago, as a Unix time; None for no limit."""
    if value is None:
        return None
    m = DURATION.match(value.strip())
    if not m:
        raise UserError(f"--since {value!r} is not a duration: use e.g. 30s, 10m, 2h or 1d")
    return (now if now is not None else time.time()) - float(m.group(1)) * UNIT[m.group(2)]


@click.command("shell", context_settings={"ignore_unknown_options": True})
@click.argument("service", required=False)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
@REPO
@TARGET
def shell_cmd(service: str | None, argv: tuple[str, ...], repo: str, target_name: str | None) -> None:
    """Open an interactive shell in a running task of SERVICE (default: the canary).

    \b
    Says which task and node it opened, then attaches this terminal to `/bin/sh` in the task's
    container (or to ARGV after `--`). Exit the shell to come back; its exit status is ours.
      stackpatch shell                     # the canary (the first service of the first wave)
      stackpatch shell phpha -- bash -l
    Needs a terminal: without one it refuses (exit 2); `stackpatch logs` works without one.
    """
    if not ui.is_tty():
        raise UserError("shell needs a terminal and stdin is not one: run it in a terminal, or read the "
                        "service's output with `stackpatch logs SERVICE`")
    from stackpatch import targets
    cfg = _cfg(repo, target_name)
    svc = service or cfg.target.resolved_waves()[0].services[0]
    target = targets.for_config(cfg)
    task = target.running_task(svc)
    ui.info(f"shell in task {task.task} ({task.task_id[:12]}) on node {task.node}; stack {target.stack} on "
            f"{target.where}; exit the shell to come back")
    code = target.open_shell(task, list(argv) or ["/bin/sh"])
    if code:
        raise click.exceptions.Exit(code)


@click.command("logs")
@click.argument("service")
@click.option("--since", metavar="DURATION", help="Only output newer than this: 30s, 10m, 2h, 1d.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until Ctrl-C.")
@REPO
@TARGET
def logs_cmd(service: str, since: str | None, follow: bool, repo: str, target_name: str | None) -> None:
    """Show SERVICE's output (stdout and stderr) across its tasks, each line prefixed by task@node.

    \b
      stackpatch logs phpfiles --since 10m
      stackpatch logs web -f
    Works without a terminal (pipe it, grep it).
    """
    from stackpatch import targets
    start = parse_since(since)
    cfg = _cfg(repo, target_name)
    target = targets.for_config(cfg)
    try:
        for line in target.logs(service, since=start, follow=follow):
            ui.out.print(f"{line.source} | {line.text}", markup=False, highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        return
