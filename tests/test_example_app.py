"""The sandbox's example app server (template/app/server.py) as a real process on 127.0.0.1, without
Docker or a database: keep-alive, and the drain on SIGTERM that the stack's stop_grace_period counts on."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "src" / "stackpatch" / "sandbox" / "template" / "app" / "server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def app():
    port = free_port()
    env = {**os.environ, "PORT": str(port), "APP_VERSION": "1.2.3", "APP_REVISION": "f" * 40,
           "DATABASE_URL": "", "IDLE_TIMEOUT": "5", "DRAIN_TIMEOUT": "6"}
    proc = subprocess.Popen([sys.executable, str(SERVER)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
            time.sleep(0.05)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def request(sock: socket.socket, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request on an open connection and read one answer (Content-Length framed)."""
    sock.sendall(raw)
    f = sock.makefile("rb")
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline().strip()):
        k, v = line.decode().split(":", 1)
        headers[k.lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_keep_alive_serves_several_requests_on_one_connection(app):
    proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for _ in range(3):
            status, headers, body = request(s, get("/version"))
            assert status == 200 and b'"release": "1.2.3"' in body and headers.get("connection") != "close"
        status, _, body = request(s, get("/health"))
        assert status == 200 and body == b"ok\n"


def test_the_files_service_answers_its_revision(app):
    """What the front's /files/... reaches (the phpfiles tasks): the release and revision of the image."""
    import json
    proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        status, headers, body = request(s, get("/files/revision"))
        data = json.loads(body)
        assert status == 200 and data["service"] == "files"
        assert (data["release"], data["revision"]) == ("1.2.3", "f" * 40) and data["host"] == socket.gethostname()
        assert headers["cache-control"] == "no-store"
        assert request(s, get("/files/nothing-here"))[0] == 404


def test_post_without_a_database_is_503_and_bad_input_400(app):
    proc, port = app
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        body = b'{"request_id": "r-1", "text": "x"}'
        status, _, text = request(s, b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert status == 503 and b"database unavailable" in text
        bad = b'{"request_id": "no spaces allowed"}'
        status, _, text = request(s, b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(bad), bad))
        assert status == 400 and b"request_id" in text


def test_sigterm_drains_in_flight_requests_then_exits(app):
    proc, port = app
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert request(idle, get("/version"))[0] == 200  # a keep-alive connection, now idle
    busy = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b'{"request_id": "r-2", "text": "in flight"}'
    # a request in flight: the headers and half of the body are sent before the signal
    busy.sendall(b"POST /notes HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    # the health check fails as soon as the drain starts: 503 while the listener still accepts, then refused
    deadline = time.monotonic() + 2
    health = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                health = request(s, get("/health"))[0]
        except (ConnectionError, OSError):
            health = "refused"
        if health != 200:
            break
        time.sleep(0.02)
    assert health in (503, "refused"), health
    # no new connection is accepted once the listener is closed
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(0.05)
        except ConnectionRefusedError:
            break
    else:
        pytest.fail("the app still accepts connections 2 s after SIGTERM")
    assert proc.poll() is None  # still finishing the request in flight
    # the idle keep-alive connection was closed by the app (EOF), not left to the client
    idle.settimeout(3)
    assert idle.recv(1) == b""
    busy.sendall(body[10:])
    status, headers, text = request(busy, b"")
    assert status == 503 and headers.get("connection") == "close"  # answered (no database here), then closed
    assert proc.wait(10) == 0
    assert time.monotonic() - t0 < 6
    err = proc.stderr.read()
    assert "draining (signal 15)" in err and "acme app stopped" in err
