"""One engine rule for every command, and one error boundary.

The rule: `target.docker_host` when the file sets it, else DOCKER_HOST, else the default socket. Every
command that reads or changes the stack talks to that engine and names it when it does not answer;
none silently falls back to another. An engine that is not a swarm manager, or that is stopped, gives
one line, never a traceback. No Docker needed: the engines here are a socket nobody listens on and a
local HTTP server that answers as Docker's API does on a node that is not a swarm manager.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingUnixStreamServer

import pytest

from conftest import CLI
from stackpatch.release import journal as J

TOML = """
[registry]
host = "127.0.0.1:5999"
namespace = "acme"
[images.app]
repository = "app"
[target]
stack = "engine-rule-prod"
services = { phpfiles = "app", phpha = "app" }
"""

UNFINISHED = ("resume", "abort")


def _repo(tmp_path: Path, docker_host: str | None = None, journal: str | None = None) -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "master", str(repo)], check=True)
    text = TOML if docker_host is None else TOML.replace("[target]\n", f'[target]\ndocker_host = "{docker_host}"\n')
    (repo / "stackpatch.toml").write_text(text)
    if journal:
        jr = J.Journal.create(repo, "20261127T000000Z-abcdef")
        step = {"id": "update:phpfiles", "kind": "update", "wave": "canary", "service": "phpfiles",
                "image": "127.0.0.1:5999/acme/app:git-commit-2222222@sha256:" + "c" * 64,
                "previous_image": "127.0.0.1:5999/acme/app:git-commit-1111111@sha256:" + "a" * 64,
                "previous_pinned": True, "labels": {}, "previous_labels": {}, "timeout": 5}
        jr.append("run-start", run_id="20261127T000000Z-abcdef", op="deploy", owner="t", host="elsewhere", pid=1,
                  stack="engine-rule-prod", version="26.11.1b", revision="2" * 40, from_version="26.11.1",
                  from_revision="1" * 40, plan=[step], previous={})
        jr.append("intent", step="update:phpfiles", step_kind="update")
        if journal == "deployed":
            jr.append("result", step="update:phpfiles", ok=True)
            jr.append("state", state=J.DEPLOYED)
    return repo


def _release_file(tmp_path: Path) -> str:
    p = tmp_path / "release.json"
    p.write_text(json.dumps({"version": "26.11.1b", "revision": "2" * 40, "images": {"app": {
        "name": "app", "repository": "127.0.0.1:5999/acme/app", "tags": ["git-commit-2222222", "26.11.1b"],
        "digest": "sha256:" + "c" * 64}}}))
    return str(p)


COMMANDS = {
    "plan": ["plan"],
    "ship": ["ship", "--yes"],
    "deploy": ["deploy", "--yes", "--release", "{release}"],
    "resume": ["resume", "--yes"],
    "abort": ["abort", "--yes"],
    "rollback": ["rollback", "--yes"],
    "status": ["status"],
    "history": ["history"],
    "unlock": ["unlock", "--force"],
}


def _run(args: list[str], repo: Path, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    args = [a.replace("{release}", _release_file(tmp_path)) for a in args]
    if args[0] in ("plan", "ship"):
        return subprocess.run([CLI, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    return subprocess.run([CLI, *args, "--repo", str(repo)], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _one_line(res: subprocess.CompletedProcess, code: int) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    assert lines and lines[-1].startswith("stackpatch: error: "), res.stderr
    return lines[-1]


def _dead_socket(tmp_path: Path) -> str:
    """A socket file nobody listens on: a stopped engine (connection refused)."""
    path = tmp_path / "stopped.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return f"unix://{path}"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_uses_DOCKER_HOST_and_names_it_when_it_does_not_answer(command, tmp_path):
    journal = "unfinished" if command in UNFINISHED else ("deployed" if command == "rollback" else None)
    repo = _repo(tmp_path, journal=journal)
    nowhere = f"unix://{tmp_path}/nowhere/docker.sock"
    env = {**os.environ, "DOCKER_HOST": nowhere, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}
    res = _run(COMMANDS[command], repo, env, tmp_path)
    line = _one_line(res, 2)
    assert f"the Docker engine at {nowhere} does not answer" in line, line
    assert "DOCKER_HOST" in line  # says what to fix


def test_target_docker_host_in_the_file_wins_over_DOCKER_HOST(tmp_path):
    in_file = _dead_socket(tmp_path)
    repo = _repo(tmp_path, docker_host=in_file)
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/other.sock"}
    line = _one_line(_run(["status"], repo, env, tmp_path), 2)
    assert f"the Docker engine at {in_file} does not answer" in line and "other.sock" not in line


class _NotAManager(BaseHTTPRequestHandler):
    """Docker's API on a node that is not a swarm manager: /_ping answers, swarm endpoints say 503."""

    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Api-Version", "1.41")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path.endswith("/_ping"):
            return self._send(200, b"OK", "text/plain")
        if path.endswith("/version"):
            return self._send(200, json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode())
        msg = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect '
               'this node to swarm and try again.')
        return self._send(503, json.dumps({"message": msg}).encode())

    do_POST = do_GET  # noqa: N815
    do_DELETE = do_GET  # noqa: N815

    def address_string(self):
        return "local"

    def log_message(self, *a):
        pass


@pytest.fixture
def not_a_manager(tmp_path):
    path = tmp_path / "worker.sock"
    srv = ThreadingUnixStreamServer(str(path), _NotAManager)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"unix://{path}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("command", ["status", "history", "unlock", "plan", "ship"])
def test_an_engine_that_is_not_a_swarm_manager_is_one_line(command, tmp_path, not_a_manager):
    repo = _repo(tmp_path, docker_host=not_a_manager)
    line = _one_line(_run(COMMANDS[command], repo, dict(os.environ), tmp_path), 2)
    assert f"the Docker engine at {not_a_manager} is not a swarm manager" in line, line


@pytest.mark.parametrize("command", ["status", "history", "unlock", "plan", "ship"])
def test_a_stopped_engine_is_one_line(command, tmp_path):
    host = _dead_socket(tmp_path)
    repo = _repo(tmp_path, docker_host=host)
    line = _one_line(_run(COMMANDS[command], repo, dict(os.environ), tmp_path), 2)
    assert f"the Docker engine at {host} does not answer" in line, line


def test_history_offline_reads_the_journal_without_the_target(tmp_path):
    repo = _repo(tmp_path, journal="deployed")
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nowhere.sock"}
    res = _run(["history", "--offline", "--json"], repo, env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r["version"] for r in json.loads(res.stdout)] == ["26.11.1b"]


def test_an_unexpected_error_is_one_line_and_a_log_with_the_traceback(tmp_path):
    """The boundary: the unexpected (here: a journal that is a directory) is one line plus a log path."""
    repo = _repo(tmp_path)
    (repo / ".stackpatch" / "runs" / "20261127T000000Z-abcdef.jsonl").mkdir(parents=True)
    env = {**os.environ, "STACKPATCH_CACHE_DIR": str(tmp_path / "cache")}
    res = subprocess.run([CLI, "history", "--offline", "--repo", str(repo)], env=env, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    line = _one_line(res, 1)
    assert "unexpected" in line and "the traceback is in " in line, line
    log = Path(line.split("the traceback is in ", 1)[1].split(";")[0])
    assert log.is_file() and log.parent == tmp_path / "cache" / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
