"""The CI examples (examples/github-actions, examples/gitlab-ci) validate against GitHub's and GitLab's
schemas (check-jsonschema's built-in copies: no network), and do what the README says they do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stackpatch.config import CdnConfig

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "examples" / "github-actions" / "hotfix.yml"
GITLAB = ROOT / "examples" / "gitlab-ci" / "hotfix.gitlab-ci.yml"
CHECK = str(Path(sys.executable).with_name("check-jsonschema"))


def offline() -> list[str]:
    """`unshare -n` (a network namespace with no network) when this user may, to prove no schema is fetched."""
    if os.geteuid() == 0 and shutil.which("unshare") and subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode == 0:
        return ["unshare", "-n"]
    return []


def validate(path: Path, schema: str) -> subprocess.CompletedProcess:
    return subprocess.run([*offline(), CHECK, "--builtin-schema", schema, str(path)], capture_output=True,
                          text=True, timeout=120)


def load(path: Path) -> dict:
    return YAML(typ="safe").load(path.read_text())


@pytest.mark.parametrize("path,schema", [(GITHUB, "vendor.github-workflows"), (GITLAB, "vendor.gitlab-ci")])
def test_the_example_validates_against_the_builtin_schema(path, schema, tmp_path):
    r = validate(path, schema)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "validation done" in r.stdout
    # and the check can fail: the same file with its job's steps or script made invalid
    data = path.read_text()
    broken = tmp_path / path.name
    if schema == "vendor.github-workflows":
        broken.write_text(data.replace("runs-on: ubuntu-24.04", "runs-on: 42\n    timeout-minutes: soon"))
    else:
        broken.write_text(data.replace("  stage: ship\n", "  stage: ship\n  when: sometimes\n"))
    assert broken.read_text() != data
    r = validate(broken, schema)
    assert r.returncode == 1, r.stdout + r.stderr


def _ship_line(script: str) -> str:
    return next(ln for ln in script.splitlines() if "stackpatch ship" in ln)


def test_github_example_ships_the_dispatched_hotfix_with_secrets_and_keeps_the_page():
    wf = load(GITHUB)
    inputs = wf["on"]["workflow_dispatch"]["inputs"]  # YAML 1.2: `on` is a string key
    assert inputs["hotfix"]["required"] is True
    steps = wf["jobs"]["ship"]["steps"]
    ship = next(s for s in steps if "stackpatch ship" in s.get("run", ""))
    line = _ship_line(ship["run"])
    assert "--yes" in line and "--json" in line and '--ref "$HOTFIX"' in line
    assert wf["jobs"]["ship"]["env"]["HOTFIX"] == "${{ inputs.hotfix }}"
    token_env = CdnConfig.model_fields["token_env"].default
    for name in ("REGISTRY_USER", "REGISTRY_PASSWORD", token_env):
        assert ship["env"][name] == f"${{{{ secrets.{name} }}}}", name
    assert any("pip install" in s.get("run", "") for s in steps)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and upload["with"]["include-hidden-files"] is True
    assert ".stackpatch/runs/" in upload["with"]["path"]
    report = next(s for s in steps if "stackpatch report" in s.get("run", ""))
    assert report["if"] == "always()"
    assert "secrets." not in GITHUB.read_text().split("steps:", 1)[0]  # secrets only in the steps that need them


def test_gitlab_example_ships_the_given_hotfix_with_variables_and_keeps_the_page():
    ci = load(GITLAB)
    assert "HOTFIX_BRANCH" in ci["variables"] and ci["variables"]["HOTFIX_BRANCH"]["value"] == ""
    job = ci["ship-hotfix"]
    assert job["rules"][0]["if"].startswith('$CI_PIPELINE_SOURCE == "web"')
    line = _ship_line("\n".join(job["script"]))
    assert "--yes" in line and "--json" in line and '--ref "$HOTFIX_BRANCH"' in line
    assert any("pip install" in ln for ln in job["before_script"])
    assert any("stackpatch report" in ln for ln in job["after_script"])
    assert job["artifacts"]["when"] == "always" and ".stackpatch/runs/" in job["artifacts"]["paths"]
    text = GITLAB.read_text()
    token_env = CdnConfig.model_fields["token_env"].default
    for name in ("REGISTRY_USER", "REGISTRY_PASSWORD", token_env):
        assert name in text
    assert "CI_JOB_TOKEN@" not in text and "${CI_JOB_TOKEN}@" not in text  # never a token in a URL
