"""A local HTTP server that answers as Cloudflare's documented purge API does.

`POST /client/v4/zones/{zone}/purge_cache`, `Authorization: Bearer <token>`, JSON body with exactly one of
`purge_everything` (true), `files`, `hosts`, `prefixes`, `tags` (a non-empty list of at most `max_items`).
Every answer is Cloudflare's envelope `{"success", "errors": [{"code", "message"}], "messages", "result"}`:
- 401 code 10000 "Authentication error" for a missing or wrong token;
- 400 with an error for a bad body, too many items, or an unknown zone (code 7003);
- scripted faults: `fail_next(n, status=429, retry_after=1)` answers the next n requests with that status;
- 200 with `result.id` otherwise, and the request is recorded in `accepted`.

Use it as a context manager or through the `fake_cloudflare` pytest fixture:

    from tests.fakes.cloudflare import FakeCloudflare, fake_cloudflare  # noqa: F401  (the fixture)

Or run it standalone for a sandbox: `python -m tests.fakes.cloudflare --port 0 --zone Z --token-env T
--record purges.jsonl` prints its API base URL on stdout and appends every accepted purge to the file.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODE_KEYS = ("purge_everything", "files", "hosts", "prefixes", "tags")


@dataclass
class Seen:
    """One request the fake answered."""
    path: str
    status: int
    body: Any
    authorized: bool


@dataclass
class _Fault:
    remaining: int
    status: int
    retry_after: str | None
    errors: list[dict] = field(default_factory=list)
    skip: int = 0


class FakeCloudflare:
    def __init__(self, zone: str = "023e105f4ecef8ad9ca31a8372d0c353", token: str | None = None,
                 max_items: int = 30, record: str | None = None) -> None:
        self.zone = zone
        self.token = token or ("cf-" + secrets.token_urlsafe(24))
        self.max_items = max_items
        self.record = record
        self.accepted: list[dict] = []       # bodies of the purges that succeeded, in order
        self.seen: list[Seen] = []           # every request, answered how
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- scripting ------------------------------------------------------------------------------
    def fail_next(self, n: int, status: int = 429, retry_after: float | int | str | None = None,
                  errors: list[dict] | None = None, after: int = 0) -> None:
        """Answer the next n requests (after the token check) with `status`, once `after` requests
        have been let through; status 0 closes the connection without answering. Scripts queue: each
        starts when the one before it is used up."""
        ra = None if retry_after is None else str(retry_after)
        if errors is None:
            errors = ([{"code": 971, "message": "Please wait and consider throttling your request speed"}]
                      if status == 429 else [{"code": 10000 + status, "message": "Internal Server Error"}])
        with self._lock:
            self._faults.append(_Fault(n, status, ra, errors, after))

    @property
    def api_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/client/v4"

    @property
    def requests(self) -> int:
        return len(self.seen)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self, port: int = 0) -> "FakeCloudflare":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:  # quiet: tests read `seen`
                pass

            def do_POST(self) -> None:  # noqa: N802
                fake._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                fake._reply(self, 405, errors=[{"code": 10405, "message": "Method not allowed"}])

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-cloudflare", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeCloudflare":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- the API --------------------------------------------------------------------------------
    def _reply(self, h: BaseHTTPRequestHandler, status: int, result: Any = None, errors: list | None = None,
               headers: dict[str, str] | None = None) -> None:
        data = json.dumps({"success": status == 200 and not errors, "errors": errors or [], "messages": [],
                           "result": result}).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        authorized = h.headers.get("Authorization") == f"Bearer {self.token}"

        def answer(status: int, **kw: Any) -> None:
            with self._lock:
                self.seen.append(Seen(h.path, status, body, authorized))
            self._reply(h, status, **kw)

        if not authorized:
            return answer(401, errors=[{"code": 10000, "message": "Authentication error"}])
        parts = h.path.split("?")[0].strip("/").split("/")
        if len(parts) != 5 or parts[:2] != ["client", "v4"] or parts[2] != "zones" or parts[4] != "purge_cache":
            return answer(404, errors=[{"code": 7000, "message": "No route for that URI"}])
        if parts[3] != self.zone:
            return answer(400, errors=[{"code": 7003, "message": "Could not route to /zones/"
                                        f"{parts[3]}/purge_cache, perhaps your object identifier is invalid?"}])
        with self._lock:
            fault = next((f for f in self._faults if f.remaining > 0), None)
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None:
                fault.remaining -= 1
        if fault is not None and fault.status == 0:
            with self._lock:
                self.seen.append(Seen(h.path, 0, body, authorized))
            h.close_connection = True
            return
        if fault is not None:
            hdrs = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return answer(fault.status, errors=fault.errors, headers=hdrs)
        if (h.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            return answer(400, errors=[{"code": 6003, "message": "Invalid request headers"}])
        problem = self._validate(body)
        if problem is not None:
            return answer(400, errors=[problem])
        with self._lock:
            self.accepted.append(body)
            if self.record:
                with open(self.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps(body) + "\n")
        answer(200, result={"id": uuid.uuid4().hex})

    def _validate(self, body: Any) -> dict | None:
        if not isinstance(body, dict):
            return {"code": 1012, "message": "Request body must be a JSON object"}
        modes = [k for k in body if k in MODE_KEYS]
        unknown = [k for k in body if k not in MODE_KEYS]
        if unknown or len(modes) != 1:
            return {"code": 1012, "message": 'Request must contain one of "purge_everything", "files", '
                                             '"tags", "hosts" or "prefixes"'}
        key = modes[0]
        value = body[key]
        if key == "purge_everything":
            return None if value is True else {"code": 1012, "message": "purge_everything must be true"}
        if not isinstance(value, list) or not value:
            return {"code": 1012, "message": f"{key} must be a non-empty array"}
        if len(value) > self.max_items:
            return {"code": 1015, "message": f"Only {self.max_items} {key} can be purged per request"}
        for v in value:
            ok = isinstance(v, str) and v.strip() or (key == "files" and isinstance(v, dict)
                                                        and isinstance(v.get("url"), str))
            if not ok:
                return {"code": 1012, "message": f"{key} must be an array of non-empty strings"}
            if key == "files" and isinstance(v, str) and not v.startswith(("http://", "https://")):
                return {"code": 1013, "message": f"Invalid URL in files: {v}"}
        return None


try:  # the fixture, for test modules that import it
    import pytest

    @pytest.fixture
    def fake_cloudflare():
        with FakeCloudflare() as fake:
            yield fake
except ImportError:  # standalone use without pytest
    pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fakes.cloudflare",
                                 description="A local fake of Cloudflare's purge API (127.0.0.1 only).")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    ap.add_argument("--zone", default="023e105f4ecef8ad9ca31a8372d0c353", help="the zone id it accepts")
    ap.add_argument("--token-env", default="CLOUDFLARE_API_TOKEN",
                    help="variable holding the token it accepts (the token itself is never printed)")
    ap.add_argument("--record", help="append every accepted purge body to this JSON-lines file")
    args = ap.parse_args(argv)
    token = os.environ.get(args.token_env)
    if not token:
        print(f"error: set {args.token_env} to the token the fake must accept", file=sys.stderr)
        return 2
    fake = FakeCloudflare(zone=args.zone, token=token, record=args.record).start(args.port)
    print(fake.api_url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
