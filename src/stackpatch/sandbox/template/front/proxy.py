"""The example front, shaped like the routine's nginx: static assets from the image, the rest proxied.

Listens on 0.0.0.0:8080. /static/* is served from /front/static (unless SERVE_STATIC=0: the edge
in front of web runs this same proxy with UPSTREAM=tasks.web). Everything else goes to the app,
found by resolving UPSTREAM (default `tasks.phpha`, one address per running task) every second; on a
connect error the next address is tried. The response carries `X-Served-By: <app revision>`.
/_front/health answers for the proxy itself (its healthcheck), without touching the app.
"""

from __future__ import annotations

import http.client
import itertools
import mimetypes
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

UPSTREAM = os.environ.get("UPSTREAM", "tasks.phpha")
UPSTREAM_PORT = int(os.environ.get("UPSTREAM_PORT", "8000"))
PORT = int(os.environ.get("PORT", "8080"))
STATIC = Path(os.environ.get("STATIC_DIR", "/front/static")).resolve()
SERVE_STATIC = os.environ.get("SERVE_STATIC", "1") != "0"  # the edge proxies /static/* to web too
REVISION = os.environ.get("APP_REVISION", "unknown")
HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
       "transfer-encoding", "upgrade"}


class Upstreams:
    """The app's task addresses, re-resolved every second in the background."""

    def __init__(self) -> None:
        self.addrs: list[str] = []
        self.lock = threading.Lock()
        self.counter = itertools.count()
        self.refresh()
        threading.Thread(target=self._loop, daemon=True).start()

    def refresh(self) -> None:
        try:
            infos = socket.getaddrinfo(UPSTREAM, UPSTREAM_PORT, socket.AF_INET, socket.SOCK_STREAM)
            addrs = sorted({i[4][0] for i in infos})
        except OSError:
            return  # a failed lookup keeps the last known addresses (a dead one is skipped on connect)
        with self.lock:
            self.addrs = addrs

    def _loop(self) -> None:
        while True:
            time.sleep(1)
            self.refresh()

    def order(self) -> list[str]:
        """All addresses, starting at the next one in round-robin order."""
        with self.lock:
            addrs = list(self.addrs)
        if not addrs:
            self.refresh()
            with self.lock:
                addrs = list(self.addrs)
        if not addrs:
            return []
        k = next(self.counter) % len(addrs)
        return addrs[k:] + addrs[:k]


UP: Upstreams


class Handler(BaseHTTPRequestHandler):
    server_version = "acme-front"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _plain(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _static(self, rel: str) -> None:
        p = (STATIC / rel).resolve()
        if STATIC not in p.parents or not p.is_file():
            return self._plain(404, "not found\n")
        body = p.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(p.name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=60")
        self.send_header("X-Front-Revision", REVISION)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["X-Forwarded-For"] = self.client_address[0]
        last = "no app task is resolvable"
        for addr in UP.order():
            conn = http.client.HTTPConnection(addr, UPSTREAM_PORT, timeout=30)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionError, socket.timeout, OSError) as e:
                last = f"{addr}: {type(e).__name__}"
                conn.close()
                continue  # the task went away: try the next one
            conn.close()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in HOP and k.lower() not in ("content-length", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Served-By", resp.getheader("X-App-Revision") or addr)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self._plain(502, f"bad gateway: {last}\n")

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/_front/health":
            return self._plain(200, "ok\n")
        if SERVE_STATIC and path.startswith("/static/"):
            return self._static(path[len("/static/"):])
        return self._proxy()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _route


class Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's default backlog of 5 drops connections under load


def main() -> None:
    global UP
    UP = Upstreams()
    server = Server(("0.0.0.0", PORT), Handler)

    def stop(signum, frame) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"acme front ({REVISION}) on :{PORT} -> {UPSTREAM}:{UPSTREAM_PORT}\n")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
