"""The lint of a stack's update settings (pure: plain data in, warnings out).

Settings that make a rolling update lie about its success, stall, or fight stackpatch's own rollback.
`plan` and `ship` print these as warnings; `stackpatch doctor` prints them with the engine checks.
The data comes from the Target (`ServiceState.update`, an `UpdateSettings`); for Swarm, from the
live service spec (`update_config`, the healthcheck of the service or else of its image, the ports).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from stackpatch.targets.base import UpdateSettings


@dataclass(frozen=True)
class LintWarning:
    service: str
    code: str          # short-monitor | start-first-host-port | delay-over-monitor | no-healthcheck | swarm-rollback
    message: str       # one line: what is wrong, why it matters, what to set

    def __str__(self) -> str:
        return f"{self.service}: {self.message}"

    def to_json(self) -> dict:
        return asdict(self)


def _s(x: float) -> str:
    return f"{x:g}s"


def lint_service(name: str, u: UpdateSettings) -> list[LintWarning]:
    """Every warning for one patched service."""
    out: list[LintWarning] = []
    if u.healthcheck in ("service", "image") and u.health_interval and u.health_retries:
        needed = u.health_interval * u.health_retries
        if u.monitor < needed:
            out.append(LintWarning(name, "short-monitor", (
                f"update_config.monitor ({_s(u.monitor)}) is shorter than the healthcheck's interval × retries "
                f"({_s(u.health_interval)} × {u.health_retries} = {_s(needed)}): Swarm can call the update done before "
                f"a bad task is marked unhealthy (moby#37972); set monitor to at least {_s(needed)}")))
    if u.order == "start-first" and u.host_ports:
        ports = ", ".join(str(p) for p in u.host_ports)
        out.append(LintWarning(name, "start-first-host-port", (
            f"update_config.order start-first with port {ports} published in host mode: the new task cannot bind "
            "the port while the old one holds it and the update stalls (moby#36934); stackpatch updates it "
            "stop-first, `docker stack deploy` does not: set order: stop-first, or publish through a proxy")))
    if u.delay > u.monitor:
        out.append(LintWarning(name, "delay-over-monitor", (
            f"update_config.delay ({_s(u.delay)}) is longer than monitor ({_s(u.monitor)}): a task that fails "
            "after the monitor window is not counted as a failed update, and the next one is replaced anyway; "
            f"set monitor to at least {_s(u.delay)}")))
    if u.healthcheck in ("none", "disabled"):
        what = "has no healthcheck" if u.healthcheck == "none" else "disables its healthcheck (NONE)"
        out.append(LintWarning(name, "no-healthcheck", (
            f"the service {what}: a new task counts as ready as soon as its process starts, so a broken release "
            "converges and only the gate checks can catch it; add a healthcheck to the service or its image")))
    if u.failure_action == "rollback":
        out.append(LintWarning(name, "swarm-rollback", (
            "update_config.failure_action is rollback: Swarm rolls the service back by itself (one level, to "
            "whatever ran before), which fights stackpatch's rollback to the recorded image; set "
            "failure_action: pause")))
    return out


def lint(services: dict[str, UpdateSettings | None], patched: list[str]) -> list[LintWarning]:
    """Warnings for the services stackpatch patches (`target.services`), in their order. A service the
    target could not describe (None) gets none."""
    out: list[LintWarning] = []
    for name in patched:
        u = services.get(name)
        if u is not None:
            out += lint_service(name, u)
    return out


def lint_state(state, cfg) -> list[LintWarning]:
    """The lint over a TargetState for the configured services."""
    return lint({n: s.update for n, s in state.services.items()}, list(cfg.target.services))
