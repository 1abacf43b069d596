"""stackpatch.toml: valid files resolve; each bad file gets one line naming file, key and problem, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VALID = """
[registry]
host = "registry.example.com"
namespace = "acme"
username_env = "REG_USER"
password_env = "REG_PASSWORD"

[images.app]
dockerfile = "docker/app/Dockerfile"
repository = "app"

[images.front]
dockerfile = "docker/front/Dockerfile"
repository = "front"
build_args = { BASE = "x" }

[target]
stack = "acme-prod"
services = { phpfiles = "app", phpha = "app", web = "front" }

[[target.waves]]
name = "canary"
services = ["phpfiles"]

[[target.waves]]
name = "rest"
services = ["phpha", "web"]

[migrations]
service = "phpfiles"
command = ["python3", "/app/migrate.py"]
tenants = ["alpha", "beta"]

[cdn]
zone = "zone-1"
token_env = "CF_TOKEN"
purge = "files"
items = ["https://example.com/app.css"]
"""


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "stackpatch", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stackpatch.toml"
    p.write_text(text)
    return p


def test_valid_config_resolves_with_defaults_and_masks_secrets(tmp_path):
    write(tmp_path, VALID)
    r = run_cli("config", "check", "--json", cwd=tmp_path,
                env={"REG_USER": "deployer", "REG_PASSWORD": "s3cret-pass-123", "CF_TOKEN": "cf-tok-456"})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    cfg = data["config"]
    assert cfg["git"]["main"] == "master" and cfg["git"]["hotfix_prefix"] == "hotfix/"
    assert cfg["images"]["app"]["context"] == "."
    assert [w["name"] for w in cfg["target"]["waves"]] == ["canary", "rest"]
    assert cfg["registry"]["password"] == "***" and cfg["cdn"]["token"] == "***"
    for secret in ("s3cret-pass-123", "cf-tok-456"):
        assert secret not in r.stdout and secret not in r.stderr


def test_human_output_names_the_file_and_keys(tmp_path):
    write(tmp_path, VALID)
    r = run_cli("config", "check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "is valid" in r.stderr
    assert "target.stack = 'acme-prod'" in r.stdout


def test_default_waves_are_first_service_then_the_rest(tmp_path):
    from stackpatch import config
    text = VALID.split("[[target.waves]]")[0] + "\n[migrations]\n"
    cfg = config.load(write(tmp_path, text))
    waves = cfg.target.resolved_waves()
    assert [(w.name, w.services) for w in waves] == [("canary", ["phpfiles"]), ("rest", ["phpha", "web"])]
    assert cfg.image_ref("front") == "registry.example.com/acme/front"


BAD = [
    # (id, transform of VALID or full text, expected fragments of the one line)
    ("not-toml", lambda v: v + "\n[registry\n", ["not valid TOML"]),
    ("unknown-top-key", lambda v: v + "\n[taget]\nstack='x'\n", ["unknown key 'taget'", "did you mean 'target'"]),
    ("unknown-nested-key", lambda v: v.replace('namespace = "acme"', 'namspace = "acme"'),
     ["registry.namspace", "did you mean 'namespace'"]),
    ("unknown-key-in-image", lambda v: v.replace('repository = "front"', 'repository = "front"\ndockerfil = "x"'),
     ["images.front.dockerfil", "did you mean 'dockerfile'"]),
    ("wrong-type", lambda v: v.replace('tenants = ["alpha", "beta"]', 'tenants = "alpha"'),
     ["migrations.tenants", "list"]),
    ("wrong-type-number", lambda v: v + "\n[timeouts]\nconverge = \"soon\"\n", ["timeouts.converge", "number"]),
    ("secret-in-clear", lambda v: v.replace('password_env = "REG_PASSWORD"', 'password_env = "hunter2!x"'),
     ["registry.password_env", "NAME of an environment variable"]),
    ("secret-key", lambda v: v.replace('password_env = "REG_PASSWORD"', 'password = "hunter2"'),
     ["registry", "secrets never go in the file", "password_env"]),
    ("missing-required", lambda v: v.replace('stack = "acme-prod"\n', ""), ["target.stack", "required"]),
    ("unknown-service-in-wave", lambda v: v.replace('services = ["phpha", "web"]', 'services = ["phpha", "wbe"]'),
     ["target", "'wbe'"]),
    ("unknown-image", lambda v: v.replace('web = "front"', 'web = "nginx"'), ["'nginx'", "[images]"]),
    ("bad-enum", lambda v: v.replace('purge = "files"', 'purge = "all"'), ["cdn.purge"]),
    ("cdn-items-needed", lambda v: v.replace('items = ["https://example.com/app.css"]', ""), ["cdn", "needs `items`"]),
]


@pytest.mark.parametrize("case,transform,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_config_one_line_exit_2(tmp_path, case, transform, fragments):
    path = write(tmp_path, transform(VALID))
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("config", "check", cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    line = lines[0]
    assert "Traceback" not in r.stderr
    assert str(path) in line
    for frag in fragments:
        assert frag in line, (frag, line)
    assert "hunter2" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_missing_file_one_line(tmp_path):
    r = run_cli("config", "check", cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert "no stackpatch.toml found" in r.stderr
    r = run_cli("config", "check", "nope.toml", cwd=tmp_path)
    assert r.returncode == 2 and "nope.toml: no such file" in r.stderr


def test_usage_error_exit_2(tmp_path):
    r = run_cli("config", "check", "--bogus", cwd=tmp_path)
    assert r.returncode == 2
