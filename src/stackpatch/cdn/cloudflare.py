"""Cloudflare's purge API: `POST {api}/zones/{zone}/purge_cache` with a Bearer token.

One request per batch of at most `batch_size` items (Cloudflare counts every URL, host, prefix or tag as
one operation per request). 429 and 5xx answers, and network errors, are retried: after `Retry-After`
seconds when the answer has it, else after an exponential backoff; every wait is capped at `max_wait`.
Any other 4xx fails at once. Every failure reports Cloudflare's `errors[]` and never the token.

Standard library only (urllib.request): no runtime dependency for one POST.
"""

from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Sequence

from stackpatch.cdn.base import MODES, Progress, PurgeError, PurgeMode, PurgeResult
from stackpatch.errors import UserError

log = logging.getLogger("stackpatch.cdn")

_TOKEN_CHARS = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: what a header value can carry
_BODY_KEY = {"files": "files", "hosts": "hosts", "prefixes": "prefixes", "tags": "tags"}
_REDACTED = "[token]"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CloudflarePurger:
    name = "cloudflare"

    def __init__(self, api_url: str, zone: str, token: str, batch_size: int = 30, retries: int = 5,
                 timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 max_wait: float = 60.0, backoff: float = 1.0) -> None:
        parsed = urllib.parse.urlsplit(api_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UserError(f"cdn.api_url {api_url!r} is not an http(s) URL: use e.g. https://api.cloudflare.com/client/v4")
        if not zone or not zone.strip():
            raise UserError("cdn.zone is empty: set it to the Cloudflare zone id")
        if not token or not _TOKEN_CHARS.match(token):
            # never echo the value: it is (or is meant to be) the secret
            raise UserError("the Cloudflare API token is empty or holds spaces or non-ASCII characters: "
                            "set the variable named by cdn.token_env to the token alone")
        if batch_size < 1:
            raise UserError(f"cdn.batch_size must be at least 1, not {batch_size}")
        if retries < 0:
            raise UserError(f"cdn.retries must be 0 or more, not {retries}")
        self.api_url = api_url.rstrip("/")
        self.zone = zone.strip()
        self._token = token
        self.batch_size = batch_size
        self.retries = retries
        self.timeout = timeout
        self.sleep = sleep
        self.max_wait = max_wait
        self.backoff = backoff
        # Honour http(s)_proxy for the real API, never for a loopback URL (a local fake or a tunnel).
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # no token in reprs, tracebacks or debug dumps
        return f"CloudflarePurger(api_url={self.api_url!r}, zone={self.zone!r}, batch_size={self.batch_size})"

    @property
    def endpoint(self) -> str:
        return f"{self.api_url}/zones/{urllib.parse.quote(self.zone, safe='')}/purge_cache"

    # ---- deciding: the request bodies ---------------------------------------------------------------
    def bodies(self, mode: PurgeMode, items: Sequence[str] = ()) -> list[dict[str, Any]]:
        """The JSON bodies to send, in order. Pure."""
        if mode not in MODES:
            raise UserError(f"unknown purge mode {mode!r}: use one of {', '.join(MODES)}")
        if mode == "everything":
            return [{"purge_everything": True}]
        clean = list(dict.fromkeys(i.strip() for i in items if i and i.strip()))  # keep order, drop repeats
        if not clean:
            raise UserError(f"purge mode {mode!r} needs items: list them in cdn.items")
        key = _BODY_KEY[mode]
        return [{key: clean[i:i + self.batch_size]} for i in range(0, len(clean), self.batch_size)]

    # ---- acting ---------------------------------------------------------------------------------------
    def purge(self, mode: PurgeMode = "everything", items: Sequence[str] = (),
              progress: Progress | None = None) -> PurgeResult:
        bodies = self.bodies(mode, items)
        total = 0 if mode == "everything" else sum(len(next(iter(b.values()))) for b in bodies)
        result = PurgeResult(ok=False, provider=self.name, mode=mode, total=total,
                             items=[i for b in bodies for i in next(iter(b.values()))] if mode != "everything" else [])
        for n, body in enumerate(bodies, 1):
            self._send(body, n, len(bodies), result)
            if mode != "everything":
                result.purged += len(next(iter(body.values())))
            if progress is not None:
                progress(n, len(bodies))
        result.ok = True
        log.info("cloudflare purge %s: %d request(s), %d item(s), %d retr%s", mode, result.requests,
                 result.purged, result.retries, "y" if result.retries == 1 else "ies")
        return result

    def _send(self, body: dict[str, Any], n: int, of: int, result: PurgeResult) -> None:
        attempt = 0
        while True:
            result.requests += 1
            log.debug("POST %s (request %d of %d, attempt %d)", self.endpoint, n, of, attempt + 1)
            status, headers, envelope, problem = self._post(body)
            if status is not None and 200 <= status < 300 and envelope is not None and envelope.get("success") is True:
                rid = (envelope.get("result") or {}).get("id") if isinstance(envelope.get("result"), dict) else None
                if rid:
                    result.ids.append(str(rid))
                return
            errors = self._errors(envelope)
            retryable = status is None or status == 429 or status >= 500
            what = f"HTTP {status}" if status is not None else problem
            if status is not None and 200 <= status < 300:
                what = f"HTTP {status} without a successful Cloudflare envelope"
            if retryable and attempt < self.retries:
                wait = self._wait(headers, attempt)
                attempt += 1
                result.retries += 1
                log.info("cloudflare answered %s on request %d of %d; retry %d of %d in %.1fs",
                         what, n, of, attempt, self.retries, wait)
                self.sleep(wait)
                continue
            result.errors.extend(errors or [what or "no answer"])
            done = f"{result.purged} of {result.total} {result.mode} purged" if result.mode != "everything" \
                else "nothing purged"
            tried = f" after {attempt + 1} attempts" if attempt else ""
            hint = "check the token's Cache Purge permission and cdn.zone" if status in (401, 403) \
                else "check cdn.items and cdn.batch_size" if status == 400 \
                else "try again later"
            detail = "; ".join(errors) if errors else what
            raise PurgeError(
                self._redact(f"Cloudflare purge failed on request {n} of {of} ({what}{tried}): {detail}; "
                             f"{done}; {hint}, then run `stackpatch purge`"),
                result)

    def _post(self, body: dict[str, Any]) -> tuple[int | None, Any, dict | None, str]:
        """One POST. Returns (status or None, headers, parsed envelope or None, problem text)."""
        req = urllib.request.Request(
            self.endpoint, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json",
                     "Accept": "application/json", "User-Agent": "stackpatch"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            status, headers = e.code, e.headers
            try:
                raw = e.read()
            except (OSError, http.client.HTTPException):
                raw = b""
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            return None, None, None, self._redact(f"no answer from {self.api_url} ({reason})")
        try:
            envelope = json.loads(raw.decode("utf-8", "replace")) if raw else None
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            envelope = None
        return status, headers, envelope, f"HTTP {status}"

    def _errors(self, envelope: dict | None) -> list[str]:
        out = []
        errs = (envelope or {}).get("errors")
        for e in errs if isinstance(errs, list) else []:
            if isinstance(e, dict):
                code, msg = e.get("code"), e.get("message")
                text = f"{code}: {msg}" if code is not None else str(msg)
                out.append(self._redact(" ".join(text.split())))
            else:
                out.append(self._redact(" ".join(str(e).split())))
        return out

    def _wait(self, headers: Any, attempt: int) -> float:
        ra = headers.get("Retry-After") if headers is not None else None
        if ra is not None:
            ra = ra.strip()
            try:
                secs = float(ra)
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(ra)
                    secs = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    secs = self.backoff * (2 ** attempt)
        else:
            secs = self.backoff * (2 ** attempt)
        return max(0.0, min(self.max_wait, secs))

    def _redact(self, text: str) -> str:
        return text.replace(self._token, _REDACTED) if self._token else text
