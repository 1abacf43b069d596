"""A local HTTP server that records what webhooks receive (as Slack's incoming webhooks do: POST a JSON
body, answer 200 "ok"). Scripted faults: `fail_next(n, status=500, retry_after=None)` answers the next n
requests with that status (429 with `Retry-After`, 5xx, or 400 that must not be retried).

    with Webhook() as hook:
        env = {"TEAM_WEBHOOK": hook.url}
        ...
        assert [b["text"] for b in hook.bodies] == [...]
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    status: int
    body: Any
    content_type: str | None


class Webhook:
    def __init__(self, path: str = "/services/T000/B000/XXXX") -> None:
        self.path = path
        self.received: list[Received] = []   # every request, answered or failed
        self._faults: list[tuple[int, str | None]] = []
        self._lock = threading.Lock()
        hook = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with hook._lock:
                    fault = hook._faults.pop(0) if hook._faults else None
                status = fault[0] if fault else (200 if self.path == hook.path else 404)
                hook.received.append(Received(self.path, status, body, self.headers.get("Content-Type")))
                answer = b"ok" if status == 200 else b"no_service" if status == 404 else b"try later"
                self.send_response(status)
                if fault and fault[1]:
                    self.send_header("Retry-After", fault[1])
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail_next(self, n: int, status: int = 500, retry_after: str | None = None) -> None:
        with self._lock:
            self._faults.extend([(status, retry_after)] * n)

    @property
    def bodies(self) -> list[Any]:
        """Bodies of the requests that were accepted (200), in order."""
        return [r.body for r in self.received if r.status == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "Webhook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
