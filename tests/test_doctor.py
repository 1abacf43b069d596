"""`stackpatch doctor` on the sandbox: every check passes and the example stack lints clean; then the
stack is redeployed from a stack file seeded with each bad update setting, and doctor warns about each."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from deploy_helpers import cli
from test_build import hotfix

pytestmark = pytest.mark.docker

SEEDED = {
    "phpfiles": {"short-monitor", "delay-over-monitor", "swarm-rollback"},
    "phpha": {"no-healthcheck"},
    "web": {"start-first-host-port"},
}


def seed(text: str, port: int) -> str:
    """The example stack file with every bad setting: phpfiles monitors 1s (< 2s × 2), waits 3s between
    tasks and lets Swarm roll back; phpha disables its healthcheck; web publishes a host-mode port and
    updates start-first."""
    line = "update_config: {parallelism: 1, order: start-first, failure_action: pause, monitor: 5s}"
    assert text.count(line) == 3
    text = text.replace(line, "update_config: {parallelism: 1, order: start-first, failure_action: rollback, "
                              "monitor: 1s, delay: 3s}", 1)
    text, n = re.subn(r"(?m)^  phpha:\n    <<: \*app\n", "  phpha:\n    <<: *app\n    healthcheck: {disable: true}\n", text)
    assert n == 1
    text, n = re.subn(r"(?m)^  web:\n    image: \$\{IMAGE_FRONT\}\n",
                      "  web:\n    image: ${IMAGE_FRONT}\n"
                      f"    ports: [{{target: 8080, published: {port}, protocol: tcp, mode: host}}]\n", text)
    assert n == 1
    return text


def doctor(app: Path) -> tuple[int, dict, str]:
    r = cli("doctor", "--json", cwd=app)
    t = cli("doctor", cwd=app)
    assert "Traceback" not in r.stderr + t.stderr
    return r.returncode, json.loads(r.stdout), t.stderr


def test_doctor_passes_on_the_sandbox_and_warns_on_each_seeded_setting(sandbox, fork, tmp_path):
    from stackpatch.images.verify import free_port
    from stackpatch.sandbox import stack as stack_mod
    code, data, text = doctor(fork.app_dir)
    assert code == 0, text
    assert {c["name"]: c["ok"] for c in data["checks"]} == {
        "engine reachable": True, "swarm manager": True, "clock skew": True, "registry login": True, "stack": True}
    assert data["warnings"] == [], data["warnings"]
    assert "update settings: nothing to warn about" in text

    seeded = tmp_path / "stack-seeded.yml"  # outside the repo: plan refuses a dirty tree
    shutil.copytree(fork.app_dir / "deploy" / "edge", tmp_path / "edge")  # the edge's config, beside it
    seeded.write_text(seed((fork.app_dir / "deploy" / "stack.yml").read_text(), free_port()))
    env = {"IMAGE_APP": sandbox.images["app"], "IMAGE_FRONT": sandbox.images["front"],
           "IMAGE_DB": sandbox.images["db"], "IMAGE_EDGE": sandbox.images["edge"],
           "FRONT_PORT": str(fork.front_port), "RELEASE_VERSION": sandbox.release,
           "RELEASE_REVISION": sandbox.revision}
    stack_mod.deploy(fork.stack, seeded, env, sandbox.docker_config)
    code, data, text = doctor(fork.app_dir)
    assert code == 0, text  # warnings alone do not fail
    got: dict[str, set[str]] = {}
    for w in data["warnings"]:
        got.setdefault(w["service"], set()).add(w["code"])
    assert got == SEEDED, data["warnings"]
    for ref in ("moby#37972", "moby#36934", "failure_action: pause", "add a healthcheck", "set monitor to at least 3s"):
        assert ref in text, text
    warn_lines = [ln for ln in text.splitlines() if "update settings:" in ln]
    assert len(warn_lines) == 5
    # plan shows the same warnings (ship renders the same plan)
    hotfix(fork, "26.11.1w")
    r = cli("plan", cwd=fork.app_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(ln.split("update settings: ", 1)[1] for ln in r.stderr.splitlines() if "update settings: " in ln) \
        == sorted(ln.split("update settings: ", 1)[1] for ln in warn_lines)
    assert len(json.loads(cli("plan", "--json", cwd=fork.app_dir).stdout)["warnings"]) == 5


def test_doctor_names_an_unreachable_engine_and_exits_1(fork, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    cfg = Path(fork.config_path)
    text = cfg.read_text()
    cfg.write_text(re.sub(r'(?m)^docker_host = ".*"$', f'docker_host = "tcp://127.0.0.1:{port}"', text, count=1)
                   if re.search(r'(?m)^docker_host = ', text)
                   else text.replace("[target]\n", f'[target]\ndocker_host = "tcp://127.0.0.1:{port}"\n', 1))
    try:
        r = cli("doctor", "--json", cwd=fork.app_dir)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert not checks["engine reachable"]["ok"] and f"127.0.0.1:{port}" in checks["engine reachable"]["detail"]
        assert checks["registry login"]["ok"]  # the registry check does not depend on the engine
    finally:
        cfg.write_text(text)


def test_doctor_checks_each_node_host(fork):
    """target.node_hosts: an entry for this engine's own node passes; a node the swarm does not have, and a
    node whose engine does not answer, each fail with a line that says what to fix (exit 1)."""
    import socket
    import subprocess
    node = subprocess.run(["docker", "info", "--format", "{{.Name}}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = Path(fork.config_path)
    text = cfg.read_text()
    host = re.search(r'(?m)^docker_host = "(.*)"$', text)
    own = host.group(1) if host else "unix:///var/run/docker.sock"
    try:
        cfg.write_text(text.replace("[target]\n", f'[target]\nnode_hosts = {{ "{node}" = "{own}" }}\n', 1))
        r = cli("doctor", "--json", cwd=fork.app_dir)
        assert r.returncode == 0, r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        assert checks[f"node host {node}"]["ok"] and f"answers as {node}" in checks[f"node host {node}"]["detail"]

        cfg.write_text(text.replace("[target]\n", f'[target]\nnode_hosts = {{ "ghost-node" = "{own}", '
                                                 f'"{node}" = "tcp://127.0.0.1:{port}" }}\n', 1))
        r = cli("doctor", "--json", cwd=fork.app_dir)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
        ghost = checks["node host ghost-node"]
        assert not ghost["ok"] and "no node ghost-node in the swarm" in ghost["detail"] and node in ghost["detail"]
        mine = checks[f"node host {node}"]
        assert not mine["ok"] and f"127.0.0.1:{port}" in mine["detail"]
        assert checks["engine reachable"]["ok"] and checks["stack"]["ok"]  # the rest is unaffected
        t = cli("doctor", cwd=fork.app_dir)
        assert t.returncode == 1 and "ghost-node" in t.stderr + t.stdout
    finally:
        cfg.write_text(text)
