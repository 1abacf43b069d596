"""The example app: a tiny stdlib web server, shaped like the routine's php app.

GET  /health   200 "ok"; 503 "draining" once the server has been told to stop
GET  /version  {"release": ..., "revision": <full git sha>, "host": ...}
GET  /files/revision  {"service": "files", "release": ..., "revision": ..., "host": ...}: what the files
               service (phpfiles) answers; the front sends /files/... to its tasks only
GET  /status   an HTML page naming the release, the sha and the database's state
POST /notes    {"request_id": "...", "text": "..."} -> 201 {"id": <row id>, "request_id": ...}: writes one
               row into `notes` every time it is called (not idempotent on purpose: a proxy that replays
               a POST shows up as two rows with the same request_id)

Keep-alive: the front (nginx) keeps connections open to the app; one idle longer than IDLE_TIMEOUT
seconds is closed here, so nginx's own keep-alive timeout must be shorter (it is: 4 s against 5 s).

SIGTERM drains: /health answers 503 at once, the listening socket stops accepting (connections already
queued are still served), requests in flight finish and are answered with `Connection: close`, idle
keep-alive connections are closed, and the process exits 0, at the latest DRAIN_TIMEOUT seconds after
the signal (below the stack's stop_grace_period of 20 s).
"""

from __future__ import annotations

import html
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = os.environ.get("APP_VERSION", "unknown")
REVISION = os.environ.get("APP_REVISION", "unknown")
PORT = int(os.environ.get("PORT", "8000"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
IDLE_TIMEOUT = float(os.environ.get("IDLE_TIMEOUT", "5"))     # seconds an idle keep-alive connection stays
DRAIN_TIMEOUT = float(os.environ.get("DRAIN_TIMEOUT", "15"))  # SIGTERM -> exit, at the latest
DRAIN_LINGER = 0.5    # an idle keep-alive connection still gets this long for a request already on its way
ACCESS_LOG = os.environ.get("ACCESS_LOG", "0") == "1"
DB_CONNECTIONS = int(os.environ.get("DB_CONNECTIONS", "8"))
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def slow(what: str, since: float, limit: float = 0.5) -> None:
    """One line on stderr when `what` took longer than `limit` seconds."""
    took = time.monotonic() - since
    if took > limit:
        sys.stderr.write(f"acme app: {what} took {took:.2f}s\n")


class Database:
    """A small pool of PostgreSQL connections, opened on first use (psycopg2 is imported lazily so that
    the server also runs where it is not installed, without a database)."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.free: list = []
        self.lock = threading.Lock()
        self.size = size
        self.slots = threading.BoundedSemaphore(size)

    def run(self, sql: str, args: tuple = ()) -> list[tuple]:
        import psycopg2
        if not self.url:
            raise RuntimeError("DATABASE_URL is not set")
        with self.slots:
            with self.lock:
                conn = self.free.pop() if self.free else None
            t0 = time.monotonic()
            if conn is None or conn.closed:
                conn = psycopg2.connect(self.url, connect_timeout=3)
                slow("connecting to the database", t0)
            t1 = time.monotonic()
            try:
                with conn, conn.cursor() as cur:  # one transaction: committed on success, rolled back on error
                    cur.execute(sql, args)
                    rows = cur.fetchall() if cur.description else []
                slow(sql.split(None, 1)[0], t1)
            except Exception:
                conn.close()  # a connection that failed never goes back to the pool
                raise
            with self.lock:
                self.free.append(conn)
            return rows

    def warm(self) -> None:
        """Open the whole pool now, at start, before the task is healthy and gets traffic: a connect is a
        new PostgreSQL backend process, which under load took 0.5-0.9 s, and opened on demand it adds to
        the requests that are slow already (measured: POSTs of 1.0-1.6 s while a deploy started tasks)."""
        import psycopg2
        conns = []
        try:
            for _ in range(self.size):
                conns.append(psycopg2.connect(self.url, connect_timeout=3))
        except Exception as e:  # noqa: BLE001 - the database may not be up yet: connect on demand then
            sys.stderr.write(f"acme app: database pool not warmed ({type(e).__name__}); connecting on demand\n")
        with self.lock:
            self.free.extend(conns)

    def close(self) -> None:
        with self.lock:
            for conn in self.free:
                conn.close()
            self.free.clear()


DB = Database(DATABASE_URL, DB_CONNECTIONS)


def db_status() -> str:
    if not DATABASE_URL:
        return "not configured"
    try:
        has = DB.run("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'")[0][0]
        if not has:
            return "up, no migrations applied"
        return f"up, {DB.run('SELECT count(*) FROM schema_migrations')[0][0]} migrations applied"
    except Exception as e:  # noqa: BLE001 - shown on the page, never fatal
        return f"unavailable ({type(e).__name__})"


class Handler(BaseHTTPRequestHandler):
    server_version = "acme-app"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT  # also bounds a client that stops sending in the middle of a request

    def log_message(self, fmt: str, *args) -> None:
        if ACCESS_LOG:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def log_error(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    # -- keep-alive and drain

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection:
            if not self._next_request_arrives():
                return
            self.handle_one_request()

    def _next_request_arrives(self) -> bool:
        """Wait, idle, for the next request on this keep-alive connection: False when the connection has
        been idle for IDLE_TIMEOUT, or for DRAIN_LINGER since the server began to drain."""
        idle_since = time.monotonic()
        while True:
            if select.select([self.connection], [], [], 0.1)[0]:
                return True
            now = time.monotonic()
            if now - idle_since >= IDLE_TIMEOUT:
                return False
            drain = self.server.drain_started
            if drain is not None and now - max(idle_since, drain) >= DRAIN_LINGER:
                return False

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Revision", REVISION)
        self.send_header("X-App-Release", RELEASE)
        self.send_header("Cache-Control", "no-store")
        if self.server.drain_started is not None:
            self.send_header("Connection", "close")  # draining: this connection ends with this answer
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _text(self, status: int, text: str) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8")

    # -- routes

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            if self.server.drain_started is not None:
                self._text(503, "draining\n")
            else:
                self._text(200, "ok\n")
        elif path == "/version":
            self._json(200, {"release": RELEASE, "revision": REVISION, "host": socket.gethostname()})
        elif path == "/files/revision":
            self._json(200, {"service": "files", "release": RELEASE, "revision": REVISION,
                             "host": socket.gethostname()})
        elif path in ("/", "/status"):
            page = (
                "<!doctype html><html><head><meta charset='utf-8'><title>acme</title></head><body>"
                f"<h1>acme {html.escape(RELEASE)}</h1>"
                f"<p>release <b class='release'>{html.escape(RELEASE)}</b>, "
                f"revision <code class='revision'>{html.escape(REVISION)}</code></p>"
                f"<p>served by {html.escape(socket.gethostname())}; database: {html.escape(db_status())}</p>"
                "</body></html>\n")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._text(404, "not found\n")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > 65536:
            self.close_connection = True
            return self._text(400, "Content-Length must be a number up to 65536\n")
        body = self.rfile.read(length) if length else b""
        if path != "/notes":
            return self._text(404, "not found\n")
        try:
            data = json.loads(body or b"{}")
            request_id = str(data.get("request_id", ""))
            text = str(data.get("text", ""))[:1000]
        except (ValueError, AttributeError):
            return self._text(400, "the body must be a JSON object\n")
        if not REQUEST_ID.match(request_id):
            return self._text(400, "request_id must be 1-100 characters of A-Z a-z 0-9 . _ : -\n")
        try:
            row = DB.run("INSERT INTO notes (request_id, body) VALUES (%s, %s) RETURNING id", (request_id, text))
        except Exception as e:  # noqa: BLE001 - the database is down or not migrated: say so, keep serving
            self.log_error("POST /notes failed: %s", f"{type(e).__name__}: {str(e).strip()[:200]}")
            return self._text(503, f"database unavailable ({type(e).__name__})\n")
        self._json(201, {"id": row[0][0], "request_id": request_id})


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins in-flight request threads
    block_on_close = True
    allow_reuse_address = True
    # the listen backlog (socketserver's default is 5): when the app falls behind (a task just started on
    # a busy node), connections wait in the queue instead of their SYNs being dropped, which nginx sees
    # as a connect timeout. 128 overflowed at 100 requests/s on 2 loaded cores.
    request_queue_size = 1024
    drain_started: float | None = None

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away (a health check reads the status line only): nothing to report
        super().handle_error(request, client_address)


def drain(server: Server) -> None:
    """After serve_forever() returned: serve the connections already queued, stop listening, let the
    requests in flight finish (server_close joins their threads), bounded by DRAIN_TIMEOUT."""
    server.timeout = 0
    while select.select([server.socket], [], [], 0)[0]:
        server.handle_request()
    closer = threading.Thread(target=server.server_close, daemon=True)
    closer.start()
    left = DRAIN_TIMEOUT - (time.monotonic() - (server.drain_started or time.monotonic()))
    closer.join(max(0.0, left))
    if closer.is_alive():
        sys.stderr.write(f"acme app: requests still running after {DRAIN_TIMEOUT:g}s of drain: exiting anyway\n")
        sys.stderr.flush()
        os._exit(1)


def main() -> None:
    server = Server(("0.0.0.0", PORT), Handler)

    def stop(signum, frame) -> None:
        if server.drain_started is None:
            server.drain_started = time.monotonic()
            sys.stderr.write(f"acme app draining (signal {signum})\n")
            # shutdown() blocks until serve_forever returns, so call it from another thread
            threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if DATABASE_URL:
        threading.Thread(target=DB.warm, daemon=True).start()
    sys.stderr.write(f"acme app {RELEASE} ({REVISION}) listening on :{PORT}\n")
    server.serve_forever(poll_interval=0.1)
    drain(server)
    DB.close()
    sys.stderr.write("acme app stopped\n")


if __name__ == "__main__":
    main()
