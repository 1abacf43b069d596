"""The registry v2 client against a local server that follows the documented token-auth flow
(https://distribution.github.io/distribution/spec/auth/token/): 401 + `WWW-Authenticate: Bearer realm=…,
service=…,scope=…`, a token endpoint taking basic auth, then `Authorization: Bearer`. The sandbox
registry (htpasswd) covers basic auth in the docker tests; this covers the bearer half.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stackpatch.images.registry import Credentials, Registry, RegistryError

USER, PASSWORD = "ci", "s3cret-pw"
CONFIG = json.dumps({"config": {"Labels": {"org.opencontainers.image.revision": "a" * 40}}}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"digest": CONFIG_DIGEST}, "layers": []}).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class Handler(BaseHTTPRequestHandler):
    tokens: set[str] = set()
    scopes: list[str] = []

    def log_message(self, *a):  # quiet
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self, scope: str) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[7:] in self.tokens:
            return True
        host = self.headers["Host"]
        self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
            "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="test-registry",scope="{scope}"'})
        return False

    def do_GET(self):  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/token":
            auth = self.headers.get("Authorization", "")
            if auth != "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode():
                return self._send(401, b'{"details":"incorrect username or password"}')
            self.scopes.append(self.path.split("scope=", 1)[-1])
            tok = hashlib.sha256(self.path.encode()).hexdigest()
            self.tokens.add(tok)
            return self._send(200, json.dumps({"token": tok}).encode())
        if path == "/v2/":
            if self._authorized(""):
                self._send(200, b"{}")
            return
        if path.startswith("/v2/acme/app/"):
            if not self._authorized("repository:acme/app:pull"):
                return
            if path.endswith("/manifests/26.11.1b") or path.endswith(f"/manifests/{MANIFEST_DIGEST}"):
                return self._send(200, MANIFEST, {"Docker-Content-Digest": MANIFEST_DIGEST,
                                                  "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
            if path.endswith(f"/blobs/{CONFIG_DIGEST}"):
                return self._send(200, CONFIG)
            if path.endswith("/tags/list"):
                return self._send(200, json.dumps({"name": "acme/app", "tags": ["26.11.1b"]}).encode())
            return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        self._send(404)

    do_HEAD = do_GET


@pytest.fixture
def server():
    Handler.tokens = set()
    Handler.scopes = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_bearer_flow_login_manifest_digest_and_labels(server):
    reg = Registry(server, Credentials(USER, PASSWORD, "test"))
    reg.check_login()
    assert reg.head_digest("acme/app", "26.11.1b") == MANIFEST_DIGEST
    digest, labels = reg.image_labels("acme/app", "26.11.1b")
    assert digest == MANIFEST_DIGEST and labels == {"org.opencontainers.image.revision": "a" * 40}
    assert reg.tags("acme/app") == ["26.11.1b"]
    assert reg.manifest("acme/app", "no-such-tag") is None
    assert any("repository%3Aacme%2Fapp%3Apull" in s or "repository:acme/app:pull" in s for s in Handler.scopes)


def test_bearer_flow_with_a_wrong_password_is_one_line(server):
    reg = Registry(server, Credentials(USER, "wrong", "test"))
    with pytest.raises(RegistryError, match=rf"registry {server} refused the login for user 'ci' \(401\)") as e:
        reg.check_login()
    assert "wrong" not in str(e.value) and "\n" not in str(e.value)


def test_an_unreachable_registry_is_one_line():
    reg = Registry("127.0.0.1:9", Credentials(USER, PASSWORD, "test"), timeout=3)
    with pytest.raises(RegistryError, match=r"cannot reach registry 127\.0\.0\.1:9 .*registry is running"):
        reg.check_login()


def test_credentials_never_show_the_password():
    assert PASSWORD not in repr(Credentials(USER, PASSWORD, "env"))


def test_credentials_from_the_environment_then_the_docker_config(tmp_path, monkeypatch):
    from build_helpers import TOML, make_repo

    from stackpatch import config as config_mod
    from stackpatch.images.registry import credentials
    toml = TOML.replace('namespace = "acme"', 'namespace = "acme"\nusername_env = "T_REG_USER"\n'
                                              'password_env = "T_REG_PASSWORD"')
    repo, _, _ = make_repo(tmp_path, toml)
    cfg = config_mod.load(repo / "stackpatch.toml")
    monkeypatch.delenv("T_REG_USER", raising=False)
    monkeypatch.delenv("T_REG_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert credentials(cfg) is None
    (tmp_path / "dc").mkdir()
    auth = base64.b64encode(b"dcuser:dc-pass").decode()
    (tmp_path / "dc" / "config.json").write_text(json.dumps({"auths": {"127.0.0.1:5999": {"auth": auth}}}))
    c = credentials(cfg)
    assert (c.username, c.password) == ("dcuser", "dc-pass") and c.source.startswith("docker config")
    monkeypatch.setenv("T_REG_USER", "envuser")
    monkeypatch.setenv("T_REG_PASSWORD", "env-pass")
    c = credentials(cfg)
    assert (c.username, c.password, c.source) == ("envuser", "env-pass", "environment")
