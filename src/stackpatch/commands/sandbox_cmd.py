"""`stackpatch sandbox up|status|down`: the local world to try stackpatch on."""

from __future__ import annotations

from pathlib import Path

import click

from stackpatch import ui

DIR_HELP = "Sandbox directory (registry storage, credentials, app repo). Default: .sandbox here."


def register(main: click.Group) -> None:
    main.add_command(sandbox_group)


@click.group("sandbox")
def sandbox_group() -> None:
    """A local world to run the hotfix routine on, built offline.

    \b
    `up` makes: a private registry with auth (docker-registry on 127.0.0.1, credentials in
    DIR/registry.env), the engine as a one-node swarm, a base image (mmdebstrap, cached),
    the example app repo DIR/NAME with a bare origin DIR/NAME-origin.git (git-flow, release
    26.11.1), and the stack NAME-prod (phpfiles, phpha, web, db) deployed from that release.
    `up --nodes 3` makes a swarm of its own instead: a manager and two workers, each a dockerd
    in its own network namespace, the registry on their bridge with TLS (README: Sandbox).
    """


@sandbox_group.command("up")
@click.option("--dir", "dir_", default=".sandbox", show_default=True, type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--name", default="acme", show_default=True,
              help="Name of the example app: repo DIR/NAME, stack NAME-prod, registry namespace NAME.")
@click.option("--registry-port", type=int, default=None,
              help="Port of the registry on 127.0.0.1 (first `up` only). Default: a free port.")
@click.option("--with-staging", is_flag=True,
              help="Also deploy NAME-staging beside NAME-prod; the app's stackpatch.toml then names them "
                   "[targets.staging] and [targets.production] and requires --target.")
@click.option("--nodes", type=int, default=1, show_default=True,
              help="Swarm nodes. 1: this engine as a one-node swarm. N > 1 (root): a manager and N-1 workers, "
                   "each a dockerd in its own network namespace with an empty image store, on a bridge in "
                   "198.18.0.0/15; the registry on that bridge with TLS (the sandbox's own CA); the manager "
                   "reachable over its unix socket, ssh:// and tcp://:2376 with TLS (see `status`).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (same keys as `status --json`).")
def up_cmd(dir_: str, name: str, registry_port: int | None, with_staging: bool, nodes: int, as_json: bool) -> None:
    """Bring the sandbox up. Idempotent: a second run reuses what is there and rebuilds nothing.

    Progress, with timings, goes to stderr. Ends when the stack is at full healthy replicas and
    the front answers /version with release 26.11.1 and the full sha of its tag (or, when
    stackpatch has patched the stack since, with the release it runs: `up` leaves it as it is).
    """
    from stackpatch.sandbox import api
    info = api.up(Path(dir_), name=name, registry_port=registry_port, with_staging=with_staging, nodes=nodes)
    if as_json:
        ui.emit_json(info.to_json())
        return
    what = f"built {', '.join(info.built)}" if info.built else "rebuilt nothing"
    ui.ok(f"sandbox up in {info.seconds:.1f}s ({what}; reused {len(info.reused)} things)")
    serving = info.serving or {"release": info.release, "revision": info.revision}
    ui.out.print(f"front {info.front_url} serves {serving['release']} ({serving['revision']}); stack {info.stack}; "
                 f"app repo {info.app_dir}; details: stackpatch sandbox status --dir {info.dir}", markup=False)


@sandbox_group.command("status")
@click.option("--dir", "dir_", default=".sandbox", show_default=True, type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON: front_url, registry, registry_env_file, "
              "app_dir, origin_dir, stack, services {name: image, replicas_running, replicas_desired, "
              "tasks [{node, state, image}]}, nodes [{name, role, addr, docker_host, state}], connect, ….")
def status_cmd(dir_: str, as_json: bool) -> None:
    """Show what the sandbox runs: front URL, registry, repo, and each service's healthy replicas."""
    from stackpatch.sandbox import api
    info = api.status(Path(dir_))
    if as_json:
        ui.emit_json(info.to_json())
        return
    _print(info)


@sandbox_group.command("down")
@click.option("--dir", "dir_", default=".sandbox", show_default=True, type=click.Path(file_okay=False), help=DIR_HELP)
@click.option("--all", "all_", is_flag=True, help="Also remove the cached base image (next `up` rebuilds it).")
def down_cmd(dir_: str, all_: bool) -> None:
    """Remove what `up` made, as DIR/state.json records it: the stack's services, volumes and
    networks (by id), the registry process, the images' local tags, and what `up` wrote in DIR.

    Anything it cannot prove it made is left alone and named (another sandbox's stack of the
    same name, a process it did not start). The cached base image stays unless --all. The swarm
    is left as it is.
    """
    from stackpatch.sandbox import api
    api.down(Path(dir_), all=all_)
    ui.ok("sandbox down")


def _print(info) -> None:
    from rich.table import Table
    o = ui.out
    o.print(f"front      {info.front_url}   (try: curl {info.front_url}/version)", markup=False)
    o.print(f"registry   {info.registry}   {'running' if info.registry_running else 'NOT RUNNING'}"
            f"   credentials: {info.registry_env_file}", markup=False)
    o.print(f"app repo   {info.app_dir}   origin: {info.origin_dir}", markup=False)
    o.print(f"config     {info.config_path}", markup=False)
    o.print(f"release    {info.release} at {info.revision}", markup=False)
    o.print(f"docker     DOCKER_CONFIG={info.docker_config} (logged in to the registry)", markup=False)
    for n in info.nodes:
        o.print(f"node       {n['name']} {n['role']} {n['addr']} {n['state']}   docker -H {n['docker_host']}", markup=False)
    if info.connect:
        o.print(f"manager    docker -H {info.connect['ssh']}   or   docker -H {info.connect['tcp']} --tlsverify "
                f"--tlscacert {info.connect['tls_cert_path']}/ca.pem --tlscert {info.connect['tls_cert_path']}/cert.pem "
                f"--tlskey {info.connect['tls_cert_path']}/key.pem", markup=False)
    t = Table(title=f"stack {info.stack}", title_justify="left")
    t.add_column("service")
    t.add_column("replicas")
    t.add_column("image", overflow="fold")
    for n, s in info.services.items():
        ok = s["replicas_running"] >= s["replicas_desired"]
        t.add_row(n, f"[{'green' if ok else 'red'}]{s['replicas_running']}/{s['replicas_desired']}[/]", s["image"])
    if not info.services:
        t.add_row("(none)", "-", "the stack is not deployed: run `stackpatch sandbox up`")
    o.print(t)
