"""The registry's v2 API (manifests, config blobs, login check) and where credentials come from.

Credentials: `[registry]` variables (environment, then env_file), else the docker config's plain
`auths` entry for the host. The password is held in memory only; it is never printed or logged.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stackpatch.config import Config, registry_credentials
from stackpatch.errors import FaultError, UserError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
LIST_TYPES = MANIFEST_TYPES[2:]


class RegistryError(UserError):
    """The registry refused a request (login, namespace) or cannot be reached."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str           # "environment", "env file", "docker config": shown, never the secret

    def auth_config(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}

    def __repr__(self) -> str:  # never leak the password through a repr in a traceback or log
        return f"Credentials(username={self.username!r}, password='***', source={self.source!r})"


def docker_config_path() -> Path:
    d = os.environ.get("DOCKER_CONFIG")
    return Path(d) / "config.json" if d else Path.home() / ".docker" / "config.json"


def _from_docker_config(host: str) -> Credentials | None:
    p = docker_config_path()
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    auths = data.get("auths") or {}
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, pw = base64.b64decode(entry["auth"]).decode().split(":", 1)
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, pw, f"docker config {p}")
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"], f"docker config {p}")
    return None


def credentials(cfg: Config) -> Credentials | None:
    user, pw = registry_credentials(cfg)
    if user and pw:
        src = "environment" if os.environ.get(cfg.registry.password_env or "") else "env file"
        return Credentials(user, pw, src)
    if cfg.registry.use_docker_config:
        return _from_docker_config(cfg.registry.host)
    return None


def is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0].strip("[]") if host.count(":") <= 1 or host.startswith("[") else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


CERTS_D = Path("/etc/docker/certs.d")


def tls_context(host: str) -> ssl.SSLContext | None:
    """The registry client trusts what dockerd trusts for that registry: a private CA in
    /etc/docker/certs.d/HOST[:PORT]/ca.crt (Docker's convention) is added to the system's CAs."""
    ca = CERTS_D / host / "ca.crt"
    if not ca.is_file():
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=str(ca))
    return ctx


def split_repository(repository: str) -> tuple[str, str]:
    """`host:port/ns/app` → (`host:port`, `ns/app`)."""
    host, _, name = repository.partition("/")
    return host, name


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: dict
    raw: bytes = b""          # the exact bytes (the digest is theirs): what a copy puts back


class Registry:
    """A minimal v2 client: basic auth, or the bearer-token flow when the registry asks for it."""

    def __init__(self, host: str, creds: Credentials | None, timeout: float = 30.0):
        self.host = host
        self.creds = creds
        self.timeout = timeout
        self.base = f"{'http' if is_local(host) else 'https'}://{host}"
        self._tls = None if is_local(host) else tls_context(host)
        self._tokens: dict[str, str] = {}

    # -------------------------------------------------------- transport
    def _basic(self) -> str | None:
        if not self.creds:
            return None
        raw = f"{self.creds.username}:{self.creds.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _open(self, method: str, path: str, headers: dict[str, str], scope: str | None, data: bytes | None = None):
        url = self.base + path
        auth = self._tokens.get(scope or "") or self._basic()
        for attempt in range(2):
            h = dict(headers)
            if auth:
                h["Authorization"] = auth
            req = urllib.request.Request(url, method=method, headers=h, data=data)
            try:
                return urllib.request.urlopen(req, timeout=self.timeout, context=self._tls)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "") if e.headers else ""
                if e.code == 401 and attempt == 0 and challenge.lower().startswith("bearer"):
                    auth = "Bearer " + self._token(challenge, scope)
                    self._tokens[scope or ""] = auth
                    continue
                raise
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                raise RegistryError(f"cannot reach registry {self.host} ({reason}): check registry.host and "
                                    "that the registry is running") from None
        raise AssertionError("unreachable")

    def _token(self, challenge: str, scope: str | None) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"registry {self.host} asked for a bearer token without a realm: check the "
                                "registry's auth configuration")
        if scope and "scope" not in params:
            params["scope"] = scope
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
        h = {}
        if self._basic():
            h["Authorization"] = self._basic()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=self.timeout,
                                        context=self._tls) as r:
                data = json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise self._refused(e.code, "token") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise RegistryError(f"cannot get a token for registry {self.host} from {realm} ({e})") from None
        tok = data.get("token") or data.get("access_token")
        if not tok:
            raise RegistryError(f"registry {self.host}'s token service returned no token: check the credentials")
        return tok

    def _refused(self, code: int, what: str) -> RegistryError:
        who = f"user {self.creds.username!r}" if self.creds else "anonymous access"
        if code == 401:
            return RegistryError(f"registry {self.host} refused the login for {who} (401): check the registry "
                                 "user/password variables or `docker login " + self.host + "`")
        if code == 403:
            return RegistryError(f"registry {self.host} forbids {what} for {who} (403): ask for access to the "
                                 "namespace or fix registry.namespace")
        return RegistryError(f"registry {self.host} answered {code} for {what}: check registry.host/namespace")

    # -------------------------------------------------------- API
    def check_login(self) -> None:
        """GET /v2/ with the credentials: raises RegistryError when the registry refuses them."""
        try:
            with self._open("GET", "/v2/", {}, None):
                return
        except urllib.error.HTTPError as e:
            raise self._refused(e.code, "the login") from None

    def manifest(self, name: str, reference: str, method: str = "GET") -> Manifest | None:
        """The manifest of `name:reference` (a tag or digest); None when the registry has no such tag."""
        scope = f"repository:{name}:pull"
        try:
            with self._open(method, f"/v2/{name}/manifests/{reference}",
                            {"Accept": ", ".join(MANIFEST_TYPES)}, scope) as r:
                raw = r.read() if method == "GET" else b""
                digest = r.headers.get("Docker-Content-Digest", "")
                mtype = (r.headers.get("Content-Type") or "").split(";")[0]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise self._refused(e.code, f"reading {name}:{reference}") from None
        body = json.loads(raw) if raw else {}
        if not digest and raw:
            import hashlib
            digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        return Manifest(digest, mtype or body.get("mediaType", ""), body, raw)

    def copy_tag(self, name: str, digest: str, tag: str) -> None:
        """Point `tag` at the manifest `digest` of the same repository (a tag an interrupted push did not
        write): the manifest's exact bytes are read by digest and put back under the tag, then the tag is
        checked to hold that digest. No layer moves."""
        import hashlib
        m = self.manifest(name, digest)
        if m is None:
            raise FaultError(f"registry {self.host} has no manifest {digest[:19]} in {name} any more: ship again")
        if "sha256:" + hashlib.sha256(m.raw).hexdigest() != digest:
            raise FaultError(f"registry {self.host} returned a manifest for {name}@{digest[:19]} whose bytes have "
                             "another digest: check the registry")
        try:
            with self._open("PUT", f"/v2/{name}/manifests/{tag}", {"Content-Type": m.media_type},
                            f"repository:{name}:pull,push", data=m.raw):
                pass
        except urllib.error.HTTPError as e:
            raise self._refused(e.code, f"tagging {name}:{tag}") from None
        require_digest_match(self, name, tag, digest)

    def tags(self, name: str) -> list[str]:
        """Tags of repository `name` ([] when the repository does not exist)."""
        try:
            with self._open("GET", f"/v2/{name}/tags/list", {}, f"repository:{name}:pull") as r:
                return sorted(json.loads(r.read()).get("tags") or [])
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise self._refused(e.code, f"listing the tags of {name}") from None

    def head_digest(self, name: str, reference: str) -> str | None:
        m = self.manifest(name, reference, method="HEAD")
        return m.digest if m else None

    def blob_json(self, name: str, digest: str) -> dict:
        try:
            with self._open("GET", f"/v2/{name}/blobs/{digest}", {}, f"repository:{name}:pull") as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise self._refused(e.code, f"reading blob {digest[:19]} of {name}") from None

    def image_labels(self, name: str, reference: str) -> tuple[str, dict[str, str]] | None:
        """(manifest digest, image config labels) of `name:reference`, or None if the tag does not exist."""
        m = self.manifest(name, reference)
        if m is None:
            return None
        body = m.body
        if m.media_type in LIST_TYPES or "manifests" in body:
            pick = next((x for x in body.get("manifests", [])
                         if x.get("platform", {}).get("architecture") in ("amd64", None)), None)
            if pick is None:
                return m.digest, {}
            inner = self.manifest(name, pick["digest"])
            body = inner.body if inner else {}
        cfg_digest = (body.get("config") or {}).get("digest")
        if not cfg_digest:
            return m.digest, {}
        conf = self.blob_json(name, cfg_digest)
        labels = (conf.get("config") or {}).get("Labels") or {}
        return m.digest, dict(labels)


def for_config(cfg: Config) -> Registry:
    return Registry(cfg.registry.host, credentials(cfg), timeout=30)


def require_digest_match(reg: Registry, name: str, tag: str, digest: str) -> None:
    got = reg.head_digest(name, tag)
    if got != digest:
        raise FaultError(f"registry {reg.host} reports {name}:{tag} at {got or 'nothing'}, but the push stream "
                         f"said {digest}: the tag was changed by someone else; re-run `stackpatch ship`")
