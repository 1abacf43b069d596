"""The example app: a tiny stdlib web server, shaped like the routine's php app.

GET /health   200 "ok" (and whether the database answers)
GET /version  {"release": ..., "revision": <full git sha>}
GET /         an HTML page naming the release and the sha

SIGTERM: stop accepting, let in-flight requests finish, exit 0.
"""

from __future__ import annotations

import html
import json
import os
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RELEASE = os.environ.get("APP_VERSION", "unknown")
REVISION = os.environ.get("APP_REVISION", "unknown")
PORT = int(os.environ.get("PORT", "8000"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")


def db_status() -> str:
    if not DATABASE_URL:
        return "not configured"
    try:
        import psycopg2
        with psycopg2.connect(DATABASE_URL, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'")
            has = cur.fetchone()[0]
            if not has:
                return "up, no migrations applied"
            cur.execute("SELECT count(*) FROM schema_migrations")
            return f"up, {cur.fetchone()[0]} migrations applied"
    except Exception as e:  # noqa: BLE001 - shown on the page, never fatal
        return f"unavailable ({type(e).__name__})"


class Handler(BaseHTTPRequestHandler):
    server_version = "acme-app"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:  # one short line per request on stderr
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-App-Revision", REVISION)
        self.send_header("X-App-Release", RELEASE)
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/version":
            body = json.dumps({"release": RELEASE, "revision": REVISION,
                               "host": socket.gethostname()}).encode()
            self._send(200, body, "application/json")
        elif path == "/":
            page = (
                "<!doctype html><html><head><meta charset='utf-8'><title>acme</title>"
                "<link rel='stylesheet' href='/static/style.css'></head><body>"
                f"<h1>acme {html.escape(RELEASE)}</h1>"
                f"<p>release <b class='release'>{html.escape(RELEASE)}</b>, "
                f"revision <code class='revision'>{html.escape(REVISION)}</code></p>"
                f"<p>served by {html.escape(socket.gethostname())}; database: {html.escape(db_status())}</p>"
                "<script src='/static/app.js'></script></body></html>\n")
            self._send(200, page.encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins in-flight request threads
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default backlog of 5 drops connections under load


def main() -> None:
    server = Server(("0.0.0.0", PORT), Handler)

    def stop(signum, frame) -> None:
        # shutdown() blocks until serve_forever returns, so call it from another thread
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"acme app {RELEASE} ({REVISION}) listening on :{PORT}\n")
    server.serve_forever()
    server.server_close()  # stop accepting, wait for in-flight requests
    sys.stderr.write("acme app stopped\n")


if __name__ == "__main__":
    main()
