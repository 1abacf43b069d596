"""`stackpatch doctor`: can stackpatch work here, and does the stack update safely?"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import click

from stackpatch import config as config_mod
from stackpatch import ui
from stackpatch.commands.deploy_cmd import TARGET

CLOCK_SKEW_MAX = 5.0  # seconds: more and lock expiries and journal times disagree between machines


def register(main: click.Group) -> None:
    main.add_command(doctor_cmd)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def run_checks(cfg) -> tuple[list[Check], list]:
    """The engine and registry checks, then the lint of the stack's update settings (warnings)."""
    from stackpatch import targets
    from stackpatch.errors import StackpatchError
    from stackpatch.images import registry as registry_mod
    from stackpatch.lint import lint_state

    checks: list[Check] = []
    warnings: list = []
    target = targets.for_config(cfg)
    try:
        t0 = time.time()
        facts = target.engine_facts()
        t1 = time.time()
        checks.append(Check("engine reachable", True, f"{target.where} (engine {facts.version})"))
    except StackpatchError as e:
        checks.append(Check("engine reachable", False, str(e)))
        facts = None
    if facts is not None:
        checks.append(Check("swarm manager", facts.manager,
                            f"{facts.role}" + ("" if facts.manager else ": point target.docker_host at a manager")))
        if facts.clock is None:
            checks.append(Check("clock skew", False, "the engine did not say its time"))
        else:
            skew = facts.clock - (t0 + t1) / 2
            ok = abs(skew) <= CLOCK_SKEW_MAX + (t1 - t0) / 2
            checks.append(Check("clock skew", ok, f"engine clock {skew:+.1f}s from this machine's" + (
                "" if ok else f" (more than {CLOCK_SKEW_MAX:g}s: lock expiry and run times disagree between "
                              "machines; sync the clocks with NTP)")))
    reg = registry_mod.for_config(cfg)
    try:
        reg.check_login()
        who = f"as {reg.creds.username} ({reg.creds.source})" if reg.creds else "anonymously"
        checks.append(Check("registry login", True, f"{cfg.registry.host} accepts the login {who}"))
    except StackpatchError as e:
        checks.append(Check("registry login", False, str(e)))
    if facts is not None:
        try:
            state = target.read_state(image_labels=False)
            missing = [s for s in cfg.target.services if s not in state.services]
            checks.append(Check("stack", not missing, f"stack {cfg.target.stack}: " + (
                f"{len(state.services)} service(s)" if not missing else
                f"no service {', '.join(missing)}: check target.stack and target.services")))
            warnings = lint_state(state, cfg)
        except StackpatchError as e:
            checks.append(Check("stack", False, str(e)))
    if facts is not None and facts.manager and cfg.target.node_hosts and hasattr(target, "node_host_checks"):
        try:
            checks += [Check(f"node host {node}", ok, detail) for node, ok, detail in target.node_host_checks()]
        except StackpatchError as e:
            checks.append(Check("node hosts", False, str(e)))
    return checks, warnings


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks and warnings as JSON on stdout.")
@click.option("-c", "--config", "config_path", type=click.Path(),
              help="stackpatch.toml to use (default: found from here up to the repo root).")
@TARGET
def doctor_cmd(as_json: bool, config_path: str | None, target_name: str | None) -> None:
    """Check that stackpatch can work here, and lint the stack's update settings. Changes nothing.

    \b
    Checks: the engine answers (target.docker_host, else DOCKER_HOST, else the local socket); it is
    a Swarm manager; its clock is within 5 s of this machine's; the registry accepts the login; the
    stack has the configured services; each target.node_hosts engine answers and is its node's.
    Then warns about update settings of the patched services that make an update lie, stall or
    fight stackpatch's rollback (the same warnings `plan` and `ship` print):
      - update_config.monitor shorter than the healthcheck's interval × retries (moby#37972);
      - order start-first with a port published in host mode (moby#36934);
      - update_config.delay longer than monitor;
      - a patched service without a healthcheck;
      - failure_action rollback.
    Exit 1 when a check fails; warnings alone exit 0.
    """
    cfg = config_mod.load(config_path, target=target_name)
    checks, warnings = run_checks(cfg)
    if as_json:
        ui.emit_json({"stack": cfg.target.stack, "checks": [c.to_json() for c in checks],
                      "warnings": [w.to_json() for w in warnings]})
    else:
        for c in checks:
            (ui.ok if c.ok else ui.warn)(f"{c.name}: {c.detail}")
        for w in warnings:
            ui.warn(f"update settings: {w}")
        if not warnings and any(c.name == "stack" and c.ok for c in checks):
            ui.ok("update settings: nothing to warn about")
    if not all(c.ok for c in checks):
        click.get_current_context().exit(1)
