#!/usr/bin/env python3
"""What a competent Swarm user writes today to ship a hotfix (issue 13, the third contender).

    competent_script.py --repo URL --ref REF --version V --registry HOST[:PORT]/NAMESPACE --stack NAME
                        --base-image IMAGE --workdir DIR [--image NAME=DOCKERFILE ...]
                        [--service SERVICE=IMAGE ...] [--migrate-service SERVICE] [--swarm-host HOST]
                        [--node-host NODE=HOST ...] [-- MIGRATION COMMAND...]

Unlike the manual routine (benchmarks/manual_routine.sh: a fresh clone, `--no-cache`, stop-first), it
keeps its checkout in --workdir between runs (`git fetch` + `checkout --force` + `clean -ffdx`), builds
with BuildKit's cache, pushes, then per service `docker service update --image … --update-order
start-first --with-registry-auth --detach=false` (phpfiles, phpha, web in that order), then runs the
migrations by `docker exec` in a phpfiles task. With a remote swarm (--swarm-host: `docker -H` of the
manager) the builds and pushes stay on this machine's engine, the service commands go to the manager, and
the exec goes to the engine of the node the task runs on (--node-host NODE=HOST, NODE as `docker node ls`
names it: what a person reaches by ssh). No verify, no canary gate, no release phase between
waves, no rollback, no lock, no journal: what stackpatch's safety costs shows next to it.

Phases go to stdout as JSON lines {"phase", "event": "start"|"end", "ts"} (as manual_routine.sh prints
them); everything the tools print goes to stderr. Every command is an argv list (no shell).
env: REGISTRY_USER, REGISTRY_PASSWORD (the registry login; never printed; a private DOCKER_CONFIG).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_IMAGES = ("app=docker/app/Dockerfile", "front=docker/front/Dockerfile")
DEFAULT_SERVICES = ("phpfiles=app", "phpha=app", "web=front")


class Refused(Exception):
    """Bad input: one line, exit 2."""


def mark(phase: str, event: str, **extra: object) -> None:
    print(json.dumps({"phase": phase, "event": event, "ts": time.time(), **extra}), flush=True)


def pairs(values: list[str] | None, default: tuple[str, ...], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values or list(default):
        name, sep, rest = v.partition("=")
        if not sep or not name or not rest:
            raise Refused(f"--{what} {v!r}: expected NAME=VALUE")
        out.append((name, rest))
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    class P(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # one line, exit 2
            raise Refused(f"{message} (see --help)")
    ap = P(description=__doc__.split("\n\n")[0])
    for opt in ("--repo", "--ref", "--version", "--registry", "--stack", "--base-image", "--workdir"):
        ap.add_argument(opt, required=True)
    ap.add_argument("--image", action="append", help="NAME=DOCKERFILE (repeatable)")
    ap.add_argument("--service", action="append", help="SERVICE=IMAGE, in update order (repeatable)")
    ap.add_argument("--migrate-service", default="phpfiles")
    ap.add_argument("--swarm-host", help="the swarm manager's engine (docker -H) for the service commands")
    ap.add_argument("--node-host", action="append", help="NODE=HOST: the engine of node NODE, for the exec")
    ap.add_argument("migrate", nargs="*", help="the migration command (default python3 /app/migrate.py)")
    args = ap.parse_args(argv)
    args.images = pairs(args.image, DEFAULT_IMAGES, "image")
    args.services = pairs(args.service, DEFAULT_SERVICES, "service")
    args.node_hosts = dict(pairs(args.node_host, (), "node-host"))
    args.migrate = args.migrate or ["python3", "/app/migrate.py"]
    if args.swarm_host is not None and not args.swarm_host:
        raise Refused("--swarm-host needs a docker host (unix://…, ssh://…, tcp://…)")
    if "/" not in args.registry:
        raise Refused(f"--registry {args.registry!r}: expected HOST[:PORT]/NAMESPACE")
    if not os.environ.get("REGISTRY_USER") or not os.environ.get("REGISTRY_PASSWORD"):
        raise Refused("set REGISTRY_USER and REGISTRY_PASSWORD")
    return args


def run(argv: list[str], env: dict[str, str], capture: bool = False, **kw) -> str:
    """One command (argv list); what it prints goes to our stderr, or its stdout is returned with `capture`
    (our stdout carries only the phase lines)."""
    r = subprocess.run(argv, env=env, stdin=kw.pop("stdin", subprocess.DEVNULL),
                       stdout=subprocess.PIPE if capture else sys.stderr, stderr=sys.stderr, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv[:3])} …` exited {r.returncode}")
    return r.stdout


def checkout(repo: str, ref: str, src: Path, env: dict[str, str]) -> str:
    """The kept checkout at `ref` of `repo`: a clone the first time, a fetch afterwards."""
    if not (src / ".git").is_dir():
        src.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "--quiet", "--", repo, str(src)], env)
    run(["git", "-C", str(src), "fetch", "--quiet", "--force", "--", repo, ref], env)
    run(["git", "-C", str(src), "checkout", "--quiet", "--force", "--detach", "FETCH_HEAD"], env)
    run(["git", "-C", str(src), "clean", "-ffdxq"], env)
    return run(["git", "-C", str(src), "rev-parse", "HEAD"], env, capture=True).strip()


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except Refused as e:
        print(f"competent_script: error: {e}", file=sys.stderr)
        return 2
    docker = shutil.which("docker", path="/usr/bin:/usr/local/bin:/bin") or "docker"
    config = tempfile.mkdtemp(prefix="competent-docker-")  # the login never touches the user's ~/.docker
    env = {**os.environ, "DOCKER_CONFIG": config, "DOCKER_BUILDKIT": "1", "DOCKER_CLI_HINTS": "false"}
    try:
        host = args.registry.split("/", 1)[0]
        run([docker, "login", "--username", os.environ["REGISTRY_USER"], "--password-stdin", host], env,
            input=os.environ["REGISTRY_PASSWORD"], stdin=None)

        mark("checkout", "start")
        src = Path(args.workdir) / "src"
        sha = checkout(args.repo, args.ref, src, env)
        tag = f"git-commit-{sha[:7]}"
        mark("checkout", "end")

        for name, dockerfile in args.images:  # BuildKit, with its cache: only changed layers rebuild
            mark(f"build:{name}", "start")
            run([docker, "build", "--quiet", "--build-arg", f"BASE_IMAGE={args.base_image}",
                 "--build-arg", f"REVISION={sha}", "--build-arg", f"VERSION={args.version}", "--file", str(src / dockerfile),
                 "--tag", f"{args.registry}/{name}:{tag}", "--", str(src)], env)
            mark(f"build:{name}", "end")
        for name, _ in args.images:
            mark(f"push:{name}", "start")
            run([docker, "push", "--quiet", f"{args.registry}/{name}:{tag}"], env)
            mark(f"push:{name}", "end")
        swarm = ["-H", args.swarm_host] if args.swarm_host else []  # the manager's engine, else this one
        for svc, name in args.services:
            mark(f"deploy:{svc}", "start")
            run([docker, *swarm, "service", "update", "--detach=false", "--quiet", "--image", f"{args.registry}/{name}:{tag}",
                 "--update-order", "start-first", "--with-registry-auth", "--", f"{args.stack}_{svc}"], env)
            mark(f"deploy:{svc}", "end")

        mark("migrations", "start")
        task = run([docker, *swarm, "service", "ps", "--no-trunc", "--filter", "desired-state=running", "--format",
                    "{{.ID}} {{.Node}}", "--", f"{args.stack}_{args.migrate_service}"], env, capture=True).split()
        if not task:
            raise RuntimeError(f"no running task of {args.stack}_{args.migrate_service}")
        container = run([docker, *swarm, "inspect", "--format", "{{.Status.ContainerStatus.ContainerID}}", "--", task[0]],
                        env, capture=True).strip()
        node = task[1] if len(task) > 1 else ""
        on = ["-H", args.node_hosts[node]] if node in args.node_hosts else swarm
        print(f"migrations: task {task[0][:12]} on node {node}", file=sys.stderr, flush=True)
        run([docker, *on, "exec", "--", container, *args.migrate], env)
        mark("migrations", "end")
        mark("done", "end", revision=sha, tag=tag)
        return 0
    except RuntimeError as e:
        print(f"competent_script: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(config, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
